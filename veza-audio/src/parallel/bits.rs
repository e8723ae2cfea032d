//! A most-significant-bit-first reader over a byte slice, for the few header fields the splicer
//! reads (MP3 side information, the start of an AAC raw data block).
//!
//! Written here: it is a dozen lines, and the bit readers of the codec crates in the tree are
//! private to them.

/// Reads bits MSB first; reading past the end yields `None`.
pub(crate) struct BitReader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> BitReader<'a> {
    /// A reader at the first bit of `data`.
    pub(crate) fn new(data: &'a [u8]) -> Self {
        BitReader { data, pos: 0 }
    }

    /// The next `n` bits (at most 32) as an unsigned number.
    pub(crate) fn read(&mut self, n: u32) -> Option<u32> {
        let mut v = 0u32;
        for _ in 0..n {
            let byte = *self.data.get(self.pos / 8)?;
            let bit = (byte >> (7 - (self.pos % 8))) & 1;
            v = (v << 1) | u32::from(bit);
            self.pos += 1;
        }
        Some(v)
    }

    /// Skips `n` bits.
    pub(crate) fn skip(&mut self, n: usize) {
        self.pos += n;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_msb_first_across_bytes() {
        let mut r = BitReader::new(&[0b1010_0000, 0b1111_0001]);
        assert_eq!(r.read(3), Some(0b101));
        r.skip(5);
        assert_eq!(r.read(4), Some(0b1111));
        assert_eq!(r.read(4), Some(0b0001));
        assert_eq!(r.read(1), None);
    }
}
