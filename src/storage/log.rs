//! The append-only entry log under a committer's record log: framing, and telling a torn tail
//! (cut back on start) from damage (refuse to start).
//!
//! Each entry is `length u32 | header check u32 | payload check u64 | payload`, little endian.
//! The header check covers the length, so a damaged length is caught instead of being read as a
//! short, torn entry. A crash during an append leaves a prefix of the bytes being written, so a
//! torn tail is an incomplete header, a payload shorter than its length, or a run of zero bytes
//! (a file system that extended the file without writing it). Anything else that fails a check,
//! including the last whole entry, may have been acknowledged: it is damage.

/// Bytes before each payload.
pub const HEADER_BYTES: usize = 16;

fn header_check(length: u32) -> u32 {
    xxhash_rust::xxh3::xxh3_64_with_seed(&length.to_le_bytes(), 0x7a7a) as u32
}

fn payload_check(payload: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64(payload)
}

/// Appends one framed entry to `into`.
pub fn frame(payload: &[u8], into: &mut Vec<u8>) {
    let length = u32::try_from(payload.len()).expect("a log entry is smaller than 4 GiB");
    into.extend_from_slice(&length.to_le_bytes());
    into.extend_from_slice(&header_check(length).to_le_bytes());
    into.extend_from_slice(&payload_check(payload).to_le_bytes());
    into.extend_from_slice(payload);
}

/// What a scan of a log found.
#[derive(Debug, PartialEq, Eq)]
pub struct Scan<'a> {
    /// The payload of every whole entry, in order.
    pub entries: Vec<&'a [u8]>,
    /// The length of the log up to the end of the last whole entry.
    pub whole_bytes: usize,
    /// Bytes after it: a torn append, to be cut.
    pub torn_bytes: usize,
}

/// Where a log is damaged.
#[derive(Debug, PartialEq, Eq)]
pub struct Damage {
    /// The offset of the first damaged entry.
    pub offset: usize,
    /// What is wrong with it.
    pub reason: &'static str,
}

impl std::fmt::Display for Damage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "entry at byte {}: {}", self.offset, self.reason)
    }
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
}

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    let mut word = [0u8; 8];
    word.copy_from_slice(&bytes[at..at + 8]);
    u64::from_le_bytes(word)
}

/// Reads every whole entry of `bytes`; a torn tail is reported, damage is an error.
pub fn scan(bytes: &[u8]) -> Result<Scan<'_>, Damage> {
    let mut entries = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        let rest = &bytes[at..];
        let torn = || Scan { entries: Vec::new(), whole_bytes: at, torn_bytes: rest.len() };
        if rest.len() < HEADER_BYTES || rest.iter().all(|b| *b == 0) {
            return Ok(Scan { entries, ..torn() });
        }
        let length = u32_at(rest, 0);
        if header_check(length) != u32_at(rest, 4) {
            return Err(Damage { offset: at, reason: "its length does not match its header check" });
        }
        let end = HEADER_BYTES + length as usize;
        if rest.len() < end {
            return Ok(Scan { entries, ..torn() });
        }
        let payload = &rest[HEADER_BYTES..end];
        if payload_check(payload) != u64_at(rest, 8) {
            return Err(Damage { offset: at, reason: "its payload does not match its checksum" });
        }
        entries.push(payload);
        at += end;
    }
    Ok(Scan { entries, whole_bytes: at, torn_bytes: 0 })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log(payloads: &[&[u8]]) -> Vec<u8> {
        let mut bytes = Vec::new();
        payloads.iter().for_each(|p| frame(p, &mut bytes));
        bytes
    }

    fn damaged(bytes: &[u8]) -> bool {
        scan(bytes).is_err()
    }

    /// The policy, from a table of cases: a tail that a crash mid-append can leave is cut back
    /// to the last whole entry; any other damage, at the end too, is refused.
    #[test]
    fn torn_tails_are_cut_and_damage_is_refused() {
        let whole = log(&[b"first", b"second", b"third"]);
        let last = whole.len() - (HEADER_BYTES + 5);
        let second = HEADER_BYTES + 5;
        let flip = |at: usize| {
            let mut bytes = whole.clone();
            bytes[at] ^= 0x04;
            bytes
        };
        let with_zeros = [whole.clone(), vec![0; 40]].concat();
        // (case, bytes, Some(entries kept) if accepted, None if refused)
        let cases: Vec<(&str, Vec<u8>, Option<usize>)> = vec![
            ("intact", whole.clone(), Some(3)),
            ("empty", Vec::new(), Some(0)),
            ("half a header at the end", whole[..last + 7].to_vec(), Some(2)),
            ("a header without its payload", whole[..last + HEADER_BYTES + 2].to_vec(), Some(2)),
            ("zeros after the last entry", with_zeros, Some(3)),
            ("a flipped bit in the last payload", flip(whole.len() - 1), None),
            ("a flipped bit in the last length", flip(last), None),
            ("a flipped bit in a middle payload", flip(second + HEADER_BYTES + 2), None),
            ("a flipped bit in a middle length", flip(second + 1), None),
            ("a flipped bit in a middle checksum", flip(second + 9), None),
            ("garbage after the last entry", [whole.clone(), b"garbage garbage garbage".to_vec()].concat(), None),
        ];
        for (case, bytes, expected) in cases {
            match (scan(&bytes), expected) {
                (Ok(scan), Some(kept)) => {
                    assert_eq!(scan.entries.len(), kept, "{case}");
                    assert_eq!(scan.whole_bytes + scan.torn_bytes, bytes.len(), "{case}");
                }
                (Err(_), None) => {}
                (got, _) => panic!("{case}: {got:?}"),
            }
        }
        assert!(damaged(&flip(3)), "the first entry's length");
    }
}
