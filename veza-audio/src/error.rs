//! The one error type of the crate, grouped by what the caller should do next.

use std::fmt;

/// What a caller can do after an [`AudioError`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recovery {
    /// Skip the packet (or the bad bytes) and go on decoding: the stream is still usable.
    Skip,
    /// Nothing more can come of this input or this job: give up.
    GiveUp,
}

/// Every way a decode, encode, transcode or analysis can fail.
///
/// Variants say what went wrong; [`AudioError::recovery`] (and [`AudioError::is_recoverable`])
/// say whether the caller can skip and go on. Third-party errors appear only as sources.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AudioError {
    /// The bytes are not audio in any container this crate reads (or the container holds no
    /// audio track). Remedy: check the file; nothing can be decoded from it.
    #[error("unrecognised input: {0}")]
    UnknownFormat(&'static str),

    /// The input is in a container or codec that this build cannot handle (for example an
    /// encoder whose cargo feature is off, or a codec symphonia does not decode).
    #[error("unsupported: {0}")]
    Unsupported(String),

    /// One packet or frame was malformed; decoding can skip it and go on.
    /// Remedy: skip the packet (the error is recoverable).
    #[error("corrupt packet: {0}")]
    CorruptPacket(String),

    /// The stream is malformed beyond repair (headers, container structure), or it ended in
    /// the middle of a structure that cannot be completed. Remedy: give up on this input.
    #[error("malformed stream: {0}")]
    Malformed(String),

    /// The input ended before any audio could be read (an empty or truncated file).
    #[error("truncated input: {0}")]
    Truncated(&'static str),

    /// A size, count or duration in the input (or in the pushed bytes) is past a configured
    /// limit. Inputs that claim gigabytes in a few bytes end here instead of allocating.
    #[error("limit exceeded: {0}")]
    LimitExceeded(String),

    /// The input declares an audio format that cannot be processed: zero channels, zero or
    /// absurd sample rate, too many channels.
    #[error("invalid audio parameters: {0}")]
    InvalidSpec(String),

    /// A setting given by the caller is out of range (bitrate, quality, sample rate, level).
    #[error("invalid setting: {0}")]
    InvalidConfig(String),

    /// An encoder failed. Remedy: give up on this output; other outputs may go on.
    #[error("{codec} encoder failed: {message}")]
    Encoder {
        /// Which encoder.
        codec: &'static str,
        /// What it said.
        message: String,
    },

    /// The caller used the API in the wrong order (for example pushing after `finish()`).
    #[error("invalid use: {0}")]
    InvalidState(&'static str),

    /// Reading or writing failed (a file or a reader given to the one-call APIs).
    #[error("i/o error: {0}")]
    Io(#[source] std::io::Error),
}

impl AudioError {
    /// What the caller can do next: skip the packet and go on, or give up.
    pub fn recovery(&self) -> Recovery {
        match self {
            AudioError::CorruptPacket(_) => Recovery::Skip,
            _ => Recovery::GiveUp,
        }
    }

    /// True when the caller can skip the failing packet and go on decoding.
    pub fn is_recoverable(&self) -> bool {
        self.recovery() == Recovery::Skip
    }

    /// A short, stable snake_case name of the variant, for logs, metrics and API error codes.
    pub fn code(&self) -> &'static str {
        match self {
            AudioError::UnknownFormat(_) => "unknown_format",
            AudioError::Unsupported(_) => "unsupported",
            AudioError::CorruptPacket(_) => "corrupt_packet",
            AudioError::Malformed(_) => "malformed",
            AudioError::Truncated(_) => "truncated",
            AudioError::LimitExceeded(_) => "limit_exceeded",
            AudioError::InvalidSpec(_) => "invalid_spec",
            AudioError::InvalidConfig(_) => "invalid_config",
            AudioError::Encoder { .. } => "encoder",
            AudioError::InvalidState(_) => "invalid_state",
            AudioError::Io(_) => "io",
        }
    }

    /// Builds an [`AudioError::Encoder`].
    pub(crate) fn encoder(codec: &'static str, message: impl fmt::Display) -> Self {
        AudioError::Encoder {
            codec,
            message: message.to_string(),
        }
    }

    /// Builds an [`AudioError::InvalidConfig`].
    pub(crate) fn config(message: impl fmt::Display) -> Self {
        AudioError::InvalidConfig(message.to_string())
    }
}

impl From<std::io::Error> for AudioError {
    fn from(err: std::io::Error) -> Self {
        AudioError::Io(err)
    }
}

/// The crate's result type.
pub type Result<T, E = AudioError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_corrupt_packets_are_recoverable() {
        assert!(AudioError::CorruptPacket("x".into()).is_recoverable());
        assert!(!AudioError::Malformed("x".into()).is_recoverable());
        assert!(!AudioError::LimitExceeded("x".into()).is_recoverable());
        assert_eq!(AudioError::Truncated("x").code(), "truncated");
    }
}
