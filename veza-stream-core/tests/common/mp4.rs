//! A small reader of the fragmented MP4 boxes the segmenter writes, for checking segments.

/// One top-level box: its type, its body and its total size.
pub struct Mp4Box<'a> {
    pub kind: [u8; 4],
    pub body: &'a [u8],
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(b[at..at + 4].try_into().unwrap())
}

fn be64(b: &[u8], at: usize) -> u64 {
    u64::from_be_bytes(b[at..at + 8].try_into().unwrap())
}

/// The boxes of `b`, which they must cover exactly (32-bit sizes only).
pub fn boxes(mut b: &[u8]) -> Vec<Mp4Box<'_>> {
    let mut v = Vec::new();
    while !b.is_empty() {
        assert!(b.len() >= 8, "a box header is cut");
        let size = be32(b, 0) as usize;
        assert!(
            size >= 8 && size <= b.len(),
            "box size {size} of {}",
            b.len()
        );
        v.push(Mp4Box {
            kind: b[4..8].try_into().unwrap(),
            body: &b[8..size],
        });
        b = &b[size..];
    }
    v
}

/// The body of the first child of `kind` in `body` (a container's body).
pub fn child<'a>(body: &'a [u8], kind: &[u8; 4]) -> &'a [u8] {
    boxes(body)
        .into_iter()
        .find(|b| &b.kind == kind)
        .unwrap_or_else(|| panic!("no {} box", String::from_utf8_lossy(kind)))
        .body
}

/// What one `moof` + `mdat` fragment says and holds.
#[derive(Debug)]
pub struct Fragment {
    pub sequence: u32,
    pub track_id: u32,
    pub base_decode_time: u64,
    pub sizes: Vec<u32>,
    pub durations: Vec<u32>,
    pub data: Vec<u8>,
    /// Bodies of the `emsg` boxes just before the `moof`.
    pub events: Vec<Vec<u8>>,
}

/// The fragments of a segment or part: `moof` + `mdat` pairs (each maybe after `emsg` boxes)
/// covering all its bytes, each `trun` data offset pointing at the start of its `mdat` payload.
pub fn fragments(seg: &[u8]) -> Vec<Fragment> {
    let all = boxes(seg);
    let mut out = Vec::new();
    let mut pos = 0usize;
    let mut events = Vec::new();
    let mut list = Vec::new();
    for b in all {
        if &b.kind == b"emsg" {
            pos += b.body.len() + 8;
            events.push(b.body.to_vec());
        } else {
            list.push((b, std::mem::take(&mut events)));
        }
    }
    assert!(events.is_empty(), "an emsg ends the segment");
    assert!(list.len().is_multiple_of(2), "moof/mdat pairs");
    for pairs in list.chunks(2) {
        let pair = [&pairs[0].0, &pairs[1].0];
        assert!(pairs[1].1.is_empty(), "emsg between moof and mdat");
        assert_eq!(&pair[0].kind, b"moof");
        assert_eq!(&pair[1].kind, b"mdat");
        let moof = pair[0].body;
        let mfhd = child(moof, b"mfhd");
        let sequence = be32(mfhd, 4);
        let traf = child(moof, b"traf");
        let tfhd = child(traf, b"tfhd");
        let tf_flags = be32(tfhd, 0) & 0xFF_FFFF;
        assert!(tf_flags & 0x02_0000 != 0, "default-base-is-moof");
        let track_id = be32(tfhd, 4);
        let mut at = 8;
        assert_eq!(
            tf_flags & 0x03,
            0,
            "no base data offset or description index"
        );
        let mut default_duration = None;
        if tf_flags & 0x08 != 0 {
            default_duration = Some(be32(tfhd, at));
            at += 4;
        }
        let _ = at;
        let tfdt = child(traf, b"tfdt");
        let base_decode_time = if tfdt[0] == 1 {
            be64(tfdt, 4)
        } else {
            u64::from(be32(tfdt, 4))
        };
        let trun = child(traf, b"trun");
        let flags = be32(trun, 0) & 0xFF_FFFF;
        let count = be32(trun, 4) as usize;
        assert!(flags & 0x01 != 0, "data offset present");
        let data_offset = be32(trun, 8) as usize;
        let mut at = 12;
        if flags & 0x04 != 0 {
            at += 4;
        }
        let (mut sizes, mut durations) = (Vec::new(), Vec::new());
        for _ in 0..count {
            if flags & 0x100 != 0 {
                durations.push(be32(trun, at));
                at += 4;
            } else {
                durations.push(default_duration.expect("a default duration"));
            }
            assert!(flags & 0x200 != 0, "sizes present");
            sizes.push(be32(trun, at));
            at += 4;
            if flags & 0x400 != 0 {
                at += 4;
            }
            if flags & 0x800 != 0 {
                at += 4;
            }
        }
        assert_eq!(at, trun.len(), "trun fully read");
        // The data offset is from the start of the moof to the mdat payload.
        assert_eq!(data_offset, moof.len() + 8 + 8, "data offset");
        let data = pair[1].body.to_vec();
        assert_eq!(
            sizes.iter().map(|&s| s as usize).sum::<usize>(),
            data.len(),
            "trun sizes cover the mdat"
        );
        pos += moof.len() + 8 + data.len() + 8;
        out.push(Fragment {
            sequence,
            track_id,
            base_decode_time,
            sizes,
            durations,
            data,
            events: pairs[0].1.clone(),
        });
    }
    assert_eq!(pos, seg.len());
    out
}
