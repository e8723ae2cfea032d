//! Two container details symphonia 0.6 does not handle, read here from seekable inputs:
//!
//! - RF64 (WAV files over 4 GiB, or written by tools that always use it): symphonia's WAVE
//!   reader rejects the `RF64` marker. [`Rf64Patch`] rewrites the header on the fly into a plain
//!   RIFF header with the sizes from the `ds64` chunk (clamped to 32 bits), so the same reader
//!   decodes the PCM.
//! - MP4 edit lists (`elst`): symphonia parses them but does not apply them, so priming samples
//!   that an edit list skips (and audio past its end) would be played. [`mp4_edit`] reads the
//!   first audio track's edit and mdhd/mvhd timescales to trim exactly as players do.
//!
//! Both are small, bounded box/chunk walkers (no crate does just this; pulling in a full MP4
//! library to read two boxes would be heavier than the walker). Every size read from the file is
//! checked against the bytes present and a fixed budget before anything is allocated.

use std::io::{self, Read, Seek, SeekFrom};

/// Largest `moov` box read into memory to look for an edit list.
const MAX_MOOV_BYTES: u64 = 32 << 20;

/// Byte patches applied to a reader's output at fixed offsets.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Rf64Patch {
    patches: Vec<(u64, [u8; 4])>,
}

impl Rf64Patch {
    /// Looks at the start of `r` (restoring its position): `Some` when it is an RF64 file with a
    /// readable `ds64` chunk and a `data` chunk.
    pub(crate) fn detect<R: Read + Seek>(r: &mut R) -> io::Result<Option<Self>> {
        let start = r.stream_position()?;
        let result = Self::scan(r, start);
        r.seek(SeekFrom::Start(start))?;
        match result {
            Ok(p) => Ok(p),
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn scan<R: Read + Seek>(r: &mut R, start: u64) -> io::Result<Option<Self>> {
        let mut hdr = [0u8; 12];
        r.read_exact(&mut hdr)?;
        if &hdr[0..4] != b"RF64" || &hdr[8..12] != b"WAVE" {
            return Ok(None);
        }
        let mut riff_size: Option<u64> = None;
        let mut data_size: Option<u64> = None;
        let mut pos = start + 12;
        // Walk at most 64 chunks before `data`.
        for _ in 0..64 {
            let mut ch = [0u8; 8];
            r.seek(SeekFrom::Start(pos))?;
            r.read_exact(&mut ch)?;
            let id = [ch[0], ch[1], ch[2], ch[3]];
            let size = u64::from(u32::from_le_bytes([ch[4], ch[5], ch[6], ch[7]]));
            if &id == b"ds64" {
                let mut ds = [0u8; 16];
                r.read_exact(&mut ds)?;
                riff_size = Some(u64::from_le_bytes(ds[0..8].try_into().unwrap_or_default()));
                data_size = Some(u64::from_le_bytes(ds[8..16].try_into().unwrap_or_default()));
            } else if &id == b"data" {
                let (Some(riff), Some(data)) = (riff_size, data_size) else {
                    return Ok(None);
                };
                let clamp = |v: u64| u32::try_from(v).unwrap_or(u32::MAX).to_le_bytes();
                let patches = vec![
                    (start, *b"RIFF"),
                    (start + 4, clamp(riff)),
                    (pos + 4, clamp(data)),
                ];
                return Ok(Some(Rf64Patch { patches }));
            }
            // Chunks are word-aligned.
            pos = pos
                .saturating_add(8)
                .saturating_add(size)
                .saturating_add(size & 1);
        }
        Ok(None)
    }

    /// Applies the patches to `buf`, which holds the bytes at `offset..offset + buf.len()`.
    pub(crate) fn apply(&self, offset: u64, buf: &mut [u8]) {
        let end = offset + buf.len() as u64;
        for (at, bytes) in &self.patches {
            for (i, b) in bytes.iter().enumerate() {
                let p = at + i as u64;
                if p >= offset && p < end {
                    if let Some(slot) = buf.get_mut((p - offset) as usize) {
                        *slot = *b;
                    }
                }
            }
        }
    }
}

/// A reader with [`Rf64Patch`] applied.
#[derive(Debug)]
pub(crate) struct Patched<R> {
    inner: R,
    pos: u64,
    patch: Rf64Patch,
}

impl<R: Read + Seek> Patched<R> {
    pub(crate) fn new(mut inner: R, patch: Rf64Patch) -> io::Result<Self> {
        let pos = inner.stream_position()?;
        Ok(Patched { inner, pos, patch })
    }
}

impl<R: Read> Read for Patched<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.patch.apply(self.pos, &mut buf[..n]);
        self.pos += n as u64;
        Ok(n)
    }
}

impl<R: Seek> Seek for Patched<R> {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        self.pos = self.inner.seek(pos)?;
        Ok(self.pos)
    }
}

/// The edit of an MP4 audio track, as stored (media and movie timescale units).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Mp4Edit {
    media_time: u64,
    media_ts: u64,
    duration: u64,
    movie_ts: u64,
}

/// An edit in frames of the decoded audio.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FrameEdit {
    /// Frames to drop at the start (priming, or a deliberate offset).
    pub skip: u64,
    /// Frames to keep after that, when the edit gives a duration.
    pub keep: Option<u64>,
}

impl Mp4Edit {
    /// The edit in frames at `sample_rate`; `None` when it changes nothing.
    pub(crate) fn to_frames(self, sample_rate: u32) -> Option<FrameEdit> {
        let rate = u128::from(sample_rate);
        let skip = (u128::from(self.media_time) * rate / u128::from(self.media_ts)) as u64;
        let keep = (self.duration > 0)
            .then(|| (u128::from(self.duration) * rate / u128::from(self.movie_ts)) as u64);
        (skip > 0 || keep.is_some()).then_some(FrameEdit { skip, keep })
    }
}

/// Reads the edit list of the first sound track of an MP4 file (restoring the position).
/// `None` when the file is not MP4, has no edit list, or the edit is the identity.
pub(crate) fn mp4_edit<R: Read + Seek>(r: &mut R) -> io::Result<Option<Mp4Edit>> {
    let start = r.stream_position()?;
    let result = find_moov(r, start).map(|moov| moov.and_then(|m| parse_moov(&m)));
    r.seek(SeekFrom::Start(start))?;
    match result {
        Ok(e) => Ok(e),
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(None),
        Err(e) => Err(e),
    }
}

fn find_moov<R: Read + Seek>(r: &mut R, start: u64) -> io::Result<Option<Vec<u8>>> {
    let end = r.seek(SeekFrom::End(0))?;
    let mut pos = start;
    for _ in 0..1024 {
        if pos.saturating_add(8) > end {
            return Ok(None);
        }
        r.seek(SeekFrom::Start(pos))?;
        let mut h = [0u8; 8];
        r.read_exact(&mut h)?;
        let mut size = u64::from(u32::from_be_bytes([h[0], h[1], h[2], h[3]]));
        let mut header = 8;
        if size == 1 {
            let mut l = [0u8; 8];
            r.read_exact(&mut l)?;
            size = u64::from_be_bytes(l);
            header = 16;
        } else if size == 0 {
            size = end - pos;
        }
        if size < header {
            return Ok(None);
        }
        if &h[4..8] == b"moov" {
            let body = size - header;
            if body > MAX_MOOV_BYTES || pos + size > end {
                return Ok(None);
            }
            let mut buf = vec![0u8; body as usize];
            r.read_exact(&mut buf)?;
            return Ok(Some(buf));
        }
        if pos == start && &h[4..8] != b"ftyp" {
            return Ok(None);
        }
        pos = pos.saturating_add(size);
    }
    Ok(None)
}

/// Iterates the child boxes of a box body: `(type, body)`.
fn boxes(mut data: &[u8]) -> impl Iterator<Item = ([u8; 4], &[u8])> {
    std::iter::from_fn(move || {
        if data.len() < 8 {
            return None;
        }
        let size = u32::from_be_bytes([data[0], data[1], data[2], data[3]]) as usize;
        let kind = [data[4], data[5], data[6], data[7]];
        let (hdr, size) = if size == 1 {
            let l = data.get(8..16)?;
            (
                16,
                usize::try_from(u64::from_be_bytes(l.try_into().ok()?)).ok()?,
            )
        } else if size == 0 {
            (8, data.len())
        } else {
            (8, size)
        };
        if size < hdr || size > data.len() {
            return None;
        }
        let body = &data[hdr..size];
        data = &data[size..];
        Some((kind, body))
    })
}

fn child<'a>(data: &'a [u8], kind: &[u8; 4]) -> Option<&'a [u8]> {
    boxes(data).find(|(k, _)| k == kind).map(|(_, b)| b)
}

fn be_u32(d: &[u8], at: usize) -> Option<u64> {
    Some(u64::from(u32::from_be_bytes(
        d.get(at..at + 4)?.try_into().ok()?,
    )))
}

fn be_u64(d: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_be_bytes(d.get(at..at + 8)?.try_into().ok()?))
}

/// Timescale of an mvhd or mdhd body.
fn timescale(full_box: &[u8]) -> Option<u64> {
    match full_box.first()? {
        1 => be_u32(full_box, 20),
        _ => be_u32(full_box, 12),
    }
}

fn parse_moov(moov: &[u8]) -> Option<Mp4Edit> {
    let movie_ts = timescale(child(moov, b"mvhd")?)?;
    for (kind, trak) in boxes(moov) {
        if &kind != b"trak" {
            continue;
        }
        let mdia = child(trak, b"mdia")?;
        let hdlr = child(mdia, b"hdlr")?;
        if hdlr.get(8..12)? != b"soun" {
            continue;
        }
        let media_ts = timescale(child(mdia, b"mdhd")?)?;
        let elst = child(child(trak, b"edts")?, b"elst")?;
        let version = *elst.first()?;
        let count = be_u32(elst, 4)?;
        // Use the first edit that is not an empty one (media_time -1 is a delay of silence).
        let entry_len = if version == 1 { 20 } else { 12 };
        for i in 0..count.min(16) as usize {
            let at = 8 + i * entry_len;
            let (dur, media_time) = if version == 1 {
                (be_u64(elst, at)?, be_u64(elst, at + 8)? as i64)
            } else {
                (
                    be_u32(elst, at)?,
                    i64::from(be_u32(elst, at + 4)? as u32 as i32),
                )
            };
            if media_time < 0 {
                continue;
            }
            if movie_ts == 0 || media_ts == 0 {
                return None;
            }
            return Some(Mp4Edit {
                media_time: media_time as u64,
                media_ts,
                duration: dur,
                movie_ts,
            });
        }
        return None;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    #[test]
    fn rf64_header_is_rewritten() {
        let mut f = Vec::new();
        f.extend_from_slice(b"RF64");
        f.extend_from_slice(&u32::MAX.to_le_bytes());
        f.extend_from_slice(b"WAVE");
        f.extend_from_slice(b"ds64");
        f.extend_from_slice(&28u32.to_le_bytes());
        f.extend_from_slice(&100u64.to_le_bytes());
        f.extend_from_slice(&8u64.to_le_bytes());
        f.extend_from_slice(&[0u8; 12]);
        f.extend_from_slice(b"data");
        f.extend_from_slice(&u32::MAX.to_le_bytes());
        f.extend_from_slice(&[1u8; 8]);
        let mut c = Cursor::new(f);
        let patch = Rf64Patch::detect(&mut c).unwrap().unwrap();
        let mut p = Patched::new(c, patch).unwrap();
        let mut out = Vec::new();
        p.read_to_end(&mut out).unwrap();
        assert_eq!(&out[0..4], b"RIFF");
        assert_eq!(u32::from_le_bytes(out[4..8].try_into().unwrap()), 100);
        assert_eq!(u32::from_le_bytes(out[52..56].try_into().unwrap()), 8);
    }

    #[test]
    fn non_mp4_and_garbage_have_no_edit() {
        let mut c = Cursor::new(vec![0u8; 64]);
        assert_eq!(mp4_edit(&mut c).unwrap(), None);
        let mut c =
            Cursor::new(b"\x00\x00\x00\x10ftypM4A \x00\x00\x00\x00\xff\xff\xff\xffmoov".to_vec());
        assert_eq!(mp4_edit(&mut c).unwrap(), None);
    }
}
