//! The entry log under a committer's record log: framing, and telling a torn tail (cut back on
//! start) from damage (refuse to start).
//!
//! Each entry is `length u32 | header check u32 | payload check u64 | payload | end mark`,
//! little endian, where the end mark is the one byte [`END_MARK`]. The header check covers the
//! length, so a damaged length is caught instead of being read as a short, torn entry.
//!
//! The log is written into space that is already zero (preallocated, see
//! [`super::records`]), and a crash during a write leaves a prefix of the bytes being written
//! followed by those zeros. So the log ends at the first entry that is not whole, and that
//! entry is torn (never acknowledged) exactly when the last byte that is not zero comes before
//! the byte that would end it: a header cut short, or a payload without its end mark. An entry
//! that fails a check although its end mark is in place was written whole and may have been
//! acknowledged: that is damage, as is anything that is not zero after the end of the log
//! other than a torn entry (a write never starts beyond the end).

/// Bytes before each payload.
pub const HEADER_BYTES: usize = 16;
/// The last byte of every entry: never zero, so that an entry whose payload ends in zeros is
/// still told from one whose last bytes were never written.
pub const END_MARK: u8 = 0xa5;

fn header_check(length: u32) -> u32 {
    xxhash_rust::xxh3::xxh3_64_with_seed(&length.to_le_bytes(), 0x7a7a) as u32
}

fn payload_check(payload: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64(payload)
}

/// The bytes one entry with a payload of `length` bytes takes.
pub fn framed_len(length: usize) -> usize {
    HEADER_BYTES + length + 1
}

/// Appends one framed entry to `into`.
pub fn frame(payload: &[u8], into: &mut Vec<u8>) {
    let length = u32::try_from(payload.len()).expect("a log entry is smaller than 4 GiB");
    into.extend_from_slice(&length.to_le_bytes());
    into.extend_from_slice(&header_check(length).to_le_bytes());
    into.extend_from_slice(&payload_check(payload).to_le_bytes());
    into.extend_from_slice(payload);
    into.push(END_MARK);
}

/// What a scan of a log found.
#[derive(Debug, PartialEq, Eq)]
pub struct Scan<'a> {
    /// The payload of every whole entry, in order.
    pub entries: Vec<&'a [u8]>,
    /// The length of the log up to the end of the last whole entry: where the next entry goes.
    pub whole_bytes: usize,
    /// Bytes of a torn entry after it, not zero: to be cut (zeroed) before the log is written.
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

/// The entry at the start of `rest`, of which the first `written` bytes are not part of the
/// zero tail: its payload and length, `Ok(None)` if the log ends here (zeros, or a torn
/// entry), or the damage.
fn entry(rest: &[u8], written: usize) -> Result<Option<(&[u8], usize)>, &'static str> {
    // Nothing written past the length and its check: a header cut short, or nothing at all.
    if written <= 8 {
        return Ok(None);
    }
    let length = u32_at(rest, 0);
    if header_check(length) != u32_at(rest, 4) {
        return Err("its length does not match its header check");
    }
    let end = framed_len(length as usize);
    if end > written {
        // Its end mark was never written: a write cut short by a crash.
        return Ok(None);
    }
    let payload = &rest[HEADER_BYTES..end - 1];
    if rest[end - 1] != END_MARK {
        return Err("its end mark is wrong");
    }
    if payload_check(payload) != u64_at(rest, 8) {
        return Err("its payload does not match its checksum");
    }
    Ok(Some((payload, end)))
}

/// Reads every whole entry of `bytes`; a torn tail is reported, damage is an error.
pub fn scan(bytes: &[u8]) -> Result<Scan<'_>, Damage> {
    let written = bytes.iter().rposition(|b| *b != 0).map_or(0, |last| last + 1);
    let mut entries = Vec::new();
    let mut at = 0;
    while at < written {
        match entry(&bytes[at..], written - at) {
            Ok(Some((payload, end))) => {
                entries.push(payload);
                at += end;
            }
            Ok(None) => return Ok(Scan { entries, whole_bytes: at, torn_bytes: written - at }),
            Err(reason) => return Err(Damage { offset: at, reason }),
        }
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

    /// The policy, from a table of cases: a tail that a crash mid-write can leave is cut back
    /// to the last whole entry; any other damage, at the end or in the zero tail too, is refused.
    #[test]
    fn torn_tails_are_cut_and_damage_is_refused() {
        let whole = log(&[b"first", b"second", b"third"]);
        let last = whole.len() - framed_len(5);
        let second = framed_len(5);
        let flip = |bytes: &[u8], at: usize| {
            let mut bytes = bytes.to_vec();
            bytes[at] ^= 0x04;
            bytes
        };
        let zeros = |bytes: &[u8], n: usize| [bytes, &vec![0; n][..]].concat();
        let padded = zeros(&whole, 64);
        let torn_at = |cut: usize| zeros(&whole[..cut], whole.len() - cut + 64);
        // (case, bytes, Some((entries kept, torn bytes)) if accepted, None if refused)
        type Case = (&'static str, Vec<u8>, Option<(usize, usize)>);
        let cases: Vec<Case> = vec![
            ("intact", whole.clone(), Some((3, 0))),
            ("empty", Vec::new(), Some((0, 0))),
            ("all zeros (a fresh preallocated log)", vec![0; 100], Some((0, 0))),
            ("zeros after the last entry", padded.clone(), Some((3, 0))),
            ("half a header at the end", whole[..last + 7].to_vec(), Some((2, 7))),
            ("half a header in preallocated space", torn_at(last + 7), Some((2, 7))),
            ("a header without its payload", torn_at(last + HEADER_BYTES + 2), Some((2, HEADER_BYTES + 2))),
            ("a payload without its end mark", torn_at(whole.len() - 1), Some((2, framed_len(5) - 1))),
            ("a flipped bit in the last payload", flip(&padded, whole.len() - 2), None),
            ("a flipped bit in the last end mark", flip(&padded, whole.len() - 1), None),
            ("a flipped bit in the last length", flip(&padded, last), None),
            ("a flipped bit in a middle payload", flip(&padded, second + HEADER_BYTES + 2), None),
            ("a flipped bit in a middle length", flip(&padded, second + 1), None),
            ("a flipped bit in a middle checksum", flip(&padded, second + 9), None),
            ("a flipped bit far into the zero tail", flip(&padded, whole.len() + 40), None),
            ("garbage after the last entry", [whole.clone(), b"garbage garbage garbage".to_vec()].concat(), None),
            ("zeros inside an entry", flip(&torn_at(last + 3), last + 20), None),
        ];
        for (case, bytes, expected) in cases {
            match (scan(&bytes), expected) {
                (Ok(scan), Some((kept, torn))) => {
                    assert_eq!((scan.entries.len(), scan.torn_bytes), (kept, torn), "{case}");
                    assert!(scan.whole_bytes + scan.torn_bytes <= bytes.len(), "{case}");
                    assert!(bytes[scan.whole_bytes + scan.torn_bytes..].iter().all(|b| *b == 0), "{case}");
                }
                (Err(_), None) => {}
                (got, _) => panic!("{case}: {got:?}"),
            }
        }
        assert!(damaged(&flip(&whole, 3)), "the first entry's length");
    }

    /// An entry whose payload ends in zeros is whole: the end mark tells it from a torn one.
    #[test]
    fn a_payload_ending_in_zeros_is_whole() {
        let bytes = [log(&[b"a\0\0\0"]), vec![0; 32]].concat();
        let scan = scan(&bytes).unwrap();
        assert_eq!(scan.entries, vec![&b"a\0\0\0"[..]]);
        assert_eq!(scan.torn_bytes, 0);
    }
}
