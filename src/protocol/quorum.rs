//! Adopting a value announced by a set of replicas.
//!
//! The stability threshold (Section III-D) and the current view (Section III-E) are announced by
//! 2f+1 replicas each. A receiver adopts the (f+1)-th highest value reported by distinct senders:
//! at least one correct sender vouches for it, and every receiver eventually adopts it even if f
//! senders crash.

/// The highest value reported by each sender, and the (f+1)-th highest among them.
#[derive(Clone, Debug)]
pub struct Announced {
    highest: Vec<u64>,
    rank: usize,
    adopted: u64,
    scratch: Vec<u64>,
}

impl Announced {
    /// Tracks `senders` senders and adopts the `rank`-th highest value (rank = f+1).
    pub fn new(senders: usize, rank: usize, initial: u64) -> Announced {
        assert!(rank >= 1 && rank <= senders, "rank {rank} of {senders} senders");
        Announced { highest: vec![initial; senders], rank, adopted: initial, scratch: Vec::new() }
    }

    /// Records that `sender` reported `value`; returns the adopted value if it rose.
    ///
    /// Reports are idempotent and may arrive in any order: only the highest value of each sender
    /// counts. A sender index out of range (a misrouted tuple) is ignored.
    pub fn report(&mut self, sender: u32, value: u64) -> Option<u64> {
        let slot = self.highest.get_mut(sender as usize)?;
        if value <= *slot {
            return None;
        }
        *slot = value;
        let candidate = self.rank_value();
        if candidate > self.adopted {
            self.adopted = candidate;
            return Some(candidate);
        }
        None
    }

    /// The adopted value: the `rank`-th highest of the senders' reports.
    pub fn adopted(&self) -> u64 {
        self.adopted
    }

    /// The highest value reported by `sender`.
    pub fn reported_by(&self, sender: u32) -> Option<u64> {
        self.highest.get(sender as usize).copied()
    }

    fn rank_value(&mut self) -> u64 {
        self.scratch.clear();
        self.scratch.extend_from_slice(&self.highest);
        self.scratch.sort_unstable_by(|a, b| b.cmp(a));
        self.scratch[self.rank - 1]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (sender, value) reports in arrival order.
    type Reports<'a> = &'a [(u32, u64)];

    /// Section III-D: the threshold is the (f+1)-th highest report of distinct senders.
    #[test]
    fn adopts_the_f_plus_one_highest_report() {
        // (reports in order, adopted value after each) for f = 1, three senders.
        let cases: &[(Reports, &[u64])] = &[
            (&[(0, 10)], &[0]),
            (&[(0, 10), (1, 5)], &[0, 5]),
            (&[(0, 10), (1, 5), (2, 7)], &[0, 5, 7]),
            // One sender repeating itself never makes a quorum.
            (&[(0, 10), (0, 20), (0, 30)], &[0, 0, 0]),
            // Lower and repeated reports are ignored.
            (&[(0, 10), (1, 10), (1, 3), (0, 10)], &[0, 10, 10, 10]),
            // A misrouted sender index is ignored.
            (&[(7, 10), (0, 10)], &[0, 0]),
        ];
        for (reports, expected) in cases {
            let mut a = Announced::new(3, 2, 0);
            let adopted: Vec<u64> = reports
                .iter()
                .map(|(sender, value)| {
                    a.report(*sender, *value);
                    a.adopted()
                })
                .collect();
            assert_eq!(&adopted, expected, "reports {reports:?}");
        }
    }

    #[test]
    fn report_returns_only_rises() {
        let mut a = Announced::new(3, 2, 0);
        assert_eq!(a.report(0, 4), None);
        assert_eq!(a.report(1, 4), Some(4));
        assert_eq!(a.report(2, 4), None);
        assert_eq!(a.report(2, 9), None);
        assert_eq!(a.report(0, 9), Some(9));
    }
}
