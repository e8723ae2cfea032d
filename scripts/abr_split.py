#!/usr/bin/env python3
"""Split the ABR development traces into a design part and a held-out part, by trace group.

Usage: python3 scripts/abr_split.py TRACES_DIR OUT_DIR

TRACES_DIR is `../shared/abr-traces` (with manifest.csv); OUT_DIR gets `design/traces/` and
`holdout/traces/`, folders of symbolic links to the trace files. A group (the manifest's `group`
column: an FCC unit, a Puffer session, a route log) goes to the held-out part when the first 8 hex
digits of SHA-256("veza-abr-holdout-v1:" + group), as an integer, are 0 modulo 3. Every trace of a
group lands in the same part, so the held-out traces share no measurement run with the design
traces. See docs/abr.md.
"""
import csv
import hashlib
import os
import sys


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    traces, out = sys.argv[1], sys.argv[2]
    counts = {"design": 0, "holdout": 0}
    with open(os.path.join(traces, "manifest.csv"), newline="") as f:
        for row in csv.DictReader(f):
            digest = hashlib.sha256(("veza-abr-holdout-v1:" + row["group"]).encode()).hexdigest()
            part = "holdout" if int(digest[:8], 16) % 3 == 0 else "design"
            src = os.path.abspath(os.path.join(traces, row["file"]))
            dest_dir = os.path.join(out, part, "traces")
            os.makedirs(dest_dir, exist_ok=True)
            dest = os.path.join(dest_dir, os.path.basename(src))
            if not os.path.lexists(dest):
                os.symlink(src, dest)
            counts[part] += 1
    print(f"design {counts['design']} traces, holdout {counts['holdout']} traces")


if __name__ == "__main__":
    main()
