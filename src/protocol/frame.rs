//! The checkpoint frame: a checkpoint's bytes as stored on disk and sent to a lagging executor,
//! with a header that lets the receiver detect corruption (Section III-D asks that a checkpoint
//! survives; a corrupt one must never be restored).
//!
//! Layout (little endian): magic `TARACKPT` | sequence u64 | payload length u64 |
//! xxh3-64 of the payload seeded with the sequence number | payload.

/// The first eight bytes of every checkpoint.
pub const MAGIC: &[u8; 8] = b"TARACKPT";
/// Header bytes before the payload.
pub const HEADER_BYTES: usize = 32;

/// Why a checkpoint was rejected.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FrameError {
    /// Shorter than a header, or shorter than the length it announces.
    Truncated {
        /// Bytes present.
        got: usize,
        /// Bytes the header announces (or the header size).
        expected: usize,
    },
    /// The magic bytes are wrong: not a tara checkpoint.
    NotACheckpoint,
    /// The payload does not match its checksum.
    Checksum,
    /// Bytes follow the payload.
    TrailingBytes(usize),
}

impl std::fmt::Display for FrameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FrameError::Truncated { got, expected } => write!(f, "truncated checkpoint: {got} of {expected} bytes"),
            FrameError::NotACheckpoint => f.write_str("not a tara checkpoint (bad magic bytes)"),
            FrameError::Checksum => f.write_str("checkpoint checksum mismatch: the bytes are corrupt"),
            FrameError::TrailingBytes(n) => write!(f, "{n} unexpected bytes after the checkpoint"),
        }
    }
}

impl std::error::Error for FrameError {}

/// Frames `payload` as the checkpoint at `sequence`.
pub fn frame(sequence: u64, payload: &[u8]) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(HEADER_BYTES + payload.len());
    bytes.extend_from_slice(MAGIC);
    bytes.extend_from_slice(&sequence.to_le_bytes());
    bytes.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    bytes.extend_from_slice(&checksum(sequence, payload).to_le_bytes());
    bytes.extend_from_slice(payload);
    bytes
}

/// The checksum covers the payload and the sequence number it claims.
fn checksum(sequence: u64, payload: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64_with_seed(payload, sequence)
}

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    let mut word = [0u8; 8];
    word.copy_from_slice(&bytes[at..at + 8]);
    u64::from_le_bytes(word)
}

/// Checks a framed checkpoint; returns its sequence number and payload.
pub fn unframe(bytes: &[u8]) -> Result<(u64, &[u8]), FrameError> {
    if bytes.len() < HEADER_BYTES {
        return Err(FrameError::Truncated { got: bytes.len(), expected: HEADER_BYTES });
    }
    if &bytes[..8] != MAGIC {
        return Err(FrameError::NotACheckpoint);
    }
    let (sequence, length, stored) = (u64_at(bytes, 8), u64_at(bytes, 16), u64_at(bytes, 24));
    let end = HEADER_BYTES.saturating_add(usize::try_from(length).unwrap_or(usize::MAX));
    if bytes.len() < end {
        return Err(FrameError::Truncated { got: bytes.len(), expected: end });
    }
    if bytes.len() > end {
        return Err(FrameError::TrailingBytes(bytes.len() - end));
    }
    let payload = &bytes[HEADER_BYTES..end];
    if checksum(sequence, payload) != stored {
        return Err(FrameError::Checksum);
    }
    Ok((sequence, payload))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let framed = frame(128, b"state");
        assert_eq!(unframe(&framed), Ok((128, &b"state"[..])));
    }

    /// Every kind of damage is detected: a flipped bit anywhere, truncation, garbage, extra bytes.
    #[test]
    fn damage_is_detected() {
        let framed = frame(7, &[1, 2, 3, 4, 5, 6, 7, 8]);
        for at in 0..framed.len() {
            let mut bad = framed.clone();
            bad[at] ^= 0x10;
            assert!(unframe(&bad).is_err(), "a flipped bit at byte {at} went unnoticed");
        }
        assert!(matches!(unframe(&framed[..framed.len() - 1]), Err(FrameError::Truncated { .. })));
        assert!(matches!(unframe(&framed[..10]), Err(FrameError::Truncated { .. })));
        assert_eq!(unframe(b"GARBAGE!GARBAGE!GARBAGE!GARBAGE!"), Err(FrameError::NotACheckpoint));
        let mut longer = framed.clone();
        longer.push(0);
        assert_eq!(unframe(&longer), Err(FrameError::TrailingBytes(1)));
    }
}
