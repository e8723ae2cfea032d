//! Now-playing metadata and its ICY delivery: the `StreamTitle` blocks that Icecast-style servers
//! interleave into the audio every `icy-metaint` bytes for listeners that sent `Icy-MetaData: 1`.

use bytes::Bytes;

/// What is playing now.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct NowPlaying {
    /// Song title.
    pub title: Option<String>,
    /// Artist.
    pub artist: Option<String>,
    /// A URL about the song or the station.
    pub url: Option<String>,
}

impl NowPlaying {
    /// From an Icecast `song` value ("Artist - Title" by convention; kept whole as the title).
    pub fn from_song(song: &str) -> Self {
        Self {
            title: Some(song.to_owned()),
            ..Self::default()
        }
    }

    /// The text players show: "Artist - Title", or whichever is known.
    pub fn stream_title(&self) -> String {
        match (self.artist.as_deref(), self.title.as_deref()) {
            (Some(a), Some(t)) if !a.is_empty() => format!("{a} - {t}"),
            (_, Some(t)) => t.to_owned(),
            (Some(a), None) => a.to_owned(),
            (None, None) => String::new(),
        }
    }
}

/// The most metadata bytes an ICY block can carry (its length byte counts 16-byte units).
pub const ICY_MAX_BLOCK: usize = 255 * 16;

/// Renders an ICY metadata block: one length byte (in 16-byte units), then
/// `StreamTitle='...';` (and `StreamUrl='...';` when set), zero-padded. Text that would not fit
/// is cut at a character boundary. The sequence `';`, which would end the field early in
/// players' parsers, is replaced by `'`.
pub fn icy_block(np: &NowPlaying) -> Bytes {
    fn clean(s: &str) -> String {
        s.replace("';", "'").replace(['\r', '\n', '\0'], " ")
    }
    let title = clean(&np.stream_title());
    let url = np.url.as_deref().map(clean);
    let tail = url
        .as_ref()
        .map_or(String::new(), |u| format!("StreamUrl='{u}';"));
    let fixed = "StreamTitle='';".len() + tail.len();
    let mut title = title.as_str();
    if fixed + title.len() > ICY_MAX_BLOCK {
        let mut cut = ICY_MAX_BLOCK.saturating_sub(fixed);
        while cut > 0 && !title.is_char_boundary(cut) {
            cut -= 1;
        }
        title = &title[..cut];
    }
    let mut text = format!("StreamTitle='{title}';{tail}");
    if text.len() > ICY_MAX_BLOCK {
        // Only an absurdly long URL gets here: drop it.
        text = format!("StreamTitle='{title}';");
    }
    let units = text.len().div_ceil(16);
    let mut out = Vec::with_capacity(1 + units * 16);
    out.push(u8::try_from(units).expect("at most 255 units after the cut"));
    out.extend_from_slice(text.as_bytes());
    out.resize(1 + units * 16, 0);
    Bytes::from(out)
}

/// The shared, pre-rendered metadata of a stream: render once per change with
/// [`IcyMetadata::set`], hand to every listener's [`IcyInterleaver`].
#[derive(Debug, Clone)]
pub struct IcyMetadata {
    block: Bytes,
    version: u64,
}

impl Default for IcyMetadata {
    fn default() -> Self {
        Self::new()
    }
}

impl IcyMetadata {
    /// No metadata yet (listeners get empty blocks).
    pub fn new() -> Self {
        Self {
            block: Bytes::from_static(&[0]),
            version: 0,
        }
    }

    /// Sets the now-playing text (a new version if it differs).
    pub fn set(&mut self, np: &NowPlaying) {
        let block = icy_block(np);
        if block != self.block {
            self.block = block;
            self.version += 1;
        }
    }

    /// The current block.
    pub fn block(&self) -> &Bytes {
        &self.block
    }

    /// Increases at every change.
    pub fn version(&self) -> u64 {
        self.version
    }
}

/// A listener's ICY state: how many audio bytes remain before the next metadata block and which
/// metadata version it has. Audio chunks are sliced (no copy) around the blocks.
#[derive(Debug, Clone)]
pub struct IcyInterleaver {
    metaint: usize,
    until_meta: usize,
    sent_version: u64,
}

/// An empty metadata block: nothing changed since the last one.
static EMPTY_BLOCK: [u8; 1] = [0];

impl IcyInterleaver {
    /// A listener with `icy-metaint: metaint` (at least 1; servers use 8192 or 16000).
    pub fn new(metaint: usize) -> Self {
        let metaint = metaint.max(1);
        Self {
            metaint,
            until_meta: metaint,
            sent_version: 0,
        }
    }

    /// The interval in audio bytes.
    pub fn metaint(&self) -> usize {
        self.metaint
    }

    /// Splits `audio` into the pieces to send, with metadata blocks where the interval falls,
    /// and calls `emit` for each piece in order. A block carries the metadata when it changed
    /// since this listener's last block, else it is one zero byte. Allocates nothing.
    pub fn interleave(
        &mut self,
        mut audio: Bytes,
        meta: &IcyMetadata,
        mut emit: impl FnMut(Bytes),
    ) {
        while !audio.is_empty() {
            if self.until_meta == 0 {
                if meta.version != self.sent_version {
                    self.sent_version = meta.version;
                    emit(meta.block.clone());
                } else {
                    emit(Bytes::from_static(&EMPTY_BLOCK));
                }
                self.until_meta = self.metaint;
            }
            let n = audio.len().min(self.until_meta);
            emit(audio.split_to(n));
            self.until_meta -= n;
        }
        if self.until_meta == 0 {
            // The block is due right after this audio: send it now so a player sees titles
            // without waiting for more audio.
            if meta.version != self.sent_version {
                self.sent_version = meta.version;
                emit(meta.block.clone());
            } else {
                emit(Bytes::from_static(&EMPTY_BLOCK));
            }
            self.until_meta = self.metaint;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Parses an ICY stream back into audio and titles, as a player does.
    fn parse(stream: &[u8], metaint: usize) -> (Vec<u8>, Vec<String>) {
        let mut audio = Vec::new();
        let mut titles = Vec::new();
        let mut i = 0;
        while i < stream.len() {
            let n = metaint.min(stream.len() - i);
            audio.extend_from_slice(&stream[i..i + n]);
            i += n;
            if i >= stream.len() {
                break;
            }
            let len = stream[i] as usize * 16;
            let text = &stream[i + 1..i + 1 + len];
            if len > 0 {
                let s = String::from_utf8_lossy(text)
                    .trim_end_matches('\0')
                    .to_string();
                titles.push(s);
            }
            i += 1 + len;
        }
        (audio, titles)
    }

    #[test]
    fn blocks_fall_every_metaint_bytes_whatever_the_chunking() {
        let mut meta = IcyMetadata::new();
        meta.set(&NowPlaying {
            title: Some("Song".into()),
            artist: Some("Band".into()),
            url: None,
        });
        let audio: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        for chunk in [1usize, 417, 1000, 16_000, 70_000] {
            let mut il = IcyInterleaver::new(16_000);
            let mut out = Vec::new();
            for c in audio.chunks(chunk) {
                il.interleave(Bytes::copy_from_slice(c), &meta, |b| {
                    out.extend_from_slice(&b)
                });
            }
            let (a, titles) = parse(&out, 16_000);
            assert_eq!(a, audio, "chunk {chunk}");
            // The first block carries the title, later ones are empty.
            assert_eq!(titles, vec!["StreamTitle='Band - Song';".to_string()]);
        }
    }

    #[test]
    fn a_change_is_sent_once_at_the_next_block() {
        let mut meta = IcyMetadata::new();
        let mut il = IcyInterleaver::new(100);
        let mut out = Vec::new();
        let mut push = |il: &mut IcyInterleaver, meta: &IcyMetadata, n: usize| {
            il.interleave(Bytes::from(vec![7u8; n]), meta, |b| {
                out.extend_from_slice(&b)
            });
        };
        push(&mut il, &meta, 250);
        meta.set(&NowPlaying::from_song("A - B"));
        push(&mut il, &meta, 250);
        meta.set(&NowPlaying::from_song("A - B")); // same: no new version
        push(&mut il, &meta, 250);
        let (a, titles) = parse(&out, 100);
        assert_eq!(a.len(), 750);
        assert_eq!(titles, vec!["StreamTitle='A - B';".to_string()]);
    }

    #[test]
    fn long_and_hostile_titles_fit_one_block() {
        let np = NowPlaying::from_song(&"é';".repeat(3000));
        let b = icy_block(&np);
        assert_eq!(b.len(), 1 + b[0] as usize * 16);
        assert!(b.len() <= 1 + ICY_MAX_BLOCK);
        let text = std::str::from_utf8(&b[1..]).unwrap().trim_end_matches('\0');
        assert!(text.starts_with("StreamTitle='é'é'"));
        assert!(text.ends_with("';"));
        assert_eq!(text.matches("';").count(), 1);
    }
}
