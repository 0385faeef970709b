//! The deterministic merge of partitions (Section IV, "Parallelization"): P ordering groups,
//! one execution order.
//!
//! Each partition numbers its own consensus instances `s_i = 0, 1, 2, ...`. The merge interleaves
//! them round-robin: partition `i`'s slot `s_i` is execution slot `s_exec = s_i * P + i`. Every
//! executor replica applies the same rule to the same committed slots, so every replica executes
//! the same merged sequence. The functions here are the whole rule; [`Merge`] applies it to the
//! commits in front of an executor replica, and the executor counts the quorum of each execution
//! slot among the committers of the one partition that owns it, in that partition's view.
//!
//! ```
//! use tara::protocol::merge;
//!
//! assert_eq!(merge::exec_sequence(1, 5, 4), 21);
//! assert_eq!(merge::slot_of(21, 4), (1, 5));
//! // Everything below execution slot 21 executed: partition 1 has executed its slots 0 to 4,
//! // partition 0 its slots 0 to 5.
//! assert_eq!(merge::partition_stable(21, 1, 4), 5);
//! assert_eq!(merge::partition_stable(21, 0, 4), 6);
//! ```

use super::params::Params;
use super::tuple::Commit;

/// The execution slot of partition `partition`'s slot `sequence`: `s_i * P + i`.
pub fn exec_sequence(partition: u32, sequence: u64, partitions: usize) -> u64 {
    debug_assert!((partition as usize) < partitions, "partition {partition} of {partitions}");
    sequence * partitions as u64 + partition as u64
}

/// The partition that owns execution slot `exec`, and that partition's own slot number.
pub fn slot_of(exec: u64, partitions: usize) -> (u32, u64) {
    let p = partitions as u64;
    ((exec % p) as u32, exec / p)
}

/// How many slots of `partition` lie below execution slot `exec`. For the stability threshold
/// (every execution slot below `exec` has executed), it is that partition's own threshold: its
/// slots below the returned number have executed. It is also how far a partition must have filled
/// its slots for every execution slot below `exec` to be decided.
///
/// Partition `i`'s slot `s` is below `exec` iff `s * P + i < exec`, iff `s < ceil((exec - i) / P)`.
pub fn partition_stable(exec: u64, partition: u32, partitions: usize) -> u64 {
    let (p, i) = (partitions as u64, partition as u64);
    exec.saturating_sub(i).div_ceil(p)
}

/// The partition a replica of a partitioned stage belongs to, from its global index and the
/// number of replicas each partition has of that stage.
pub fn partition_of(replica: u32, per_partition: usize) -> u32 {
    replica / per_partition as u32
}

/// The merge in front of one executor replica: it renumbers each commit into the execution
/// order and names its committer by its index within its partition, so that the executor's
/// quorum of f+1 distinct committers is counted among that partition's committers.
#[derive(Clone, Debug)]
pub struct Merge {
    partitions: usize,
    committers: usize,
    merged: u64,
}

impl Merge {
    /// The merge of a deployment with `params`.
    pub fn new(params: &Params) -> Merge {
        Merge { partitions: params.partitions, committers: params.committers(), merged: 0 }
    }

    /// A commit from any partition's committer, in execution numbering; `None` if its committer
    /// belongs to no partition (a misrouted tuple).
    pub fn commit(&mut self, mut commit: Commit) -> Option<Commit> {
        let partition = partition_of(commit.committer, self.committers);
        if partition as usize >= self.partitions {
            return None;
        }
        commit.committer %= self.committers as u32;
        commit.sequence = exec_sequence(partition, commit.sequence, self.partitions);
        self.merged += 1;
        Some(commit)
    }

    /// Commits merged so far.
    pub fn merged(&self) -> u64 {
        self.merged
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::tuple::Request;

    /// The translation of the stability threshold, from a table: an off-by-one here lets a
    /// partition discard a record that a take-over still needs, or keep a window that never moves.
    #[test]
    fn the_threshold_translates_into_each_partitions_numbering() {
        // (P, exec threshold, expected threshold of partitions 0, 1, ...)
        let cases: &[(usize, u64, &[u64])] = &[
            (1, 0, &[0]),
            (1, 1, &[1]),
            (1, 128, &[128]),
            (2, 0, &[0, 0]),
            (2, 1, &[1, 0]),
            (2, 2, &[1, 1]),
            (2, 3, &[2, 1]),
            (2, 128, &[64, 64]),
            (3, 0, &[0, 0, 0]),
            (3, 1, &[1, 0, 0]),
            (3, 2, &[1, 1, 0]),
            (3, 3, &[1, 1, 1]),
            (3, 4, &[2, 1, 1]),
            (3, 128, &[43, 43, 42]),
            (8, 0, &[0; 8]),
            (8, 7, &[1, 1, 1, 1, 1, 1, 1, 0]),
            (8, 8, &[1; 8]),
            (8, 9, &[2, 1, 1, 1, 1, 1, 1, 1]),
            (8, 128, &[16; 8]),
            (8, 130, &[17, 17, 16, 16, 16, 16, 16, 16]),
        ];
        for (partitions, exec, expected) in cases {
            let got: Vec<u64> = (0..*partitions as u32).map(|i| partition_stable(*exec, i, *partitions)).collect();
            assert_eq!(&got, expected, "P = {partitions}, threshold {exec}");
        }
    }

    /// The translated threshold is exact: partition slot s is below it iff its execution slot is
    /// below the execution threshold.
    #[test]
    fn the_translation_agrees_with_the_interleaving() {
        for partitions in [1, 2, 3, 8] {
            for exec in 0..100 {
                for i in 0..partitions as u32 {
                    let stable = partition_stable(exec, i, partitions);
                    for s in 0..40 {
                        assert_eq!(s < stable, exec_sequence(i, s, partitions) < exec, "P {partitions} i {i} s {s}");
                    }
                }
            }
        }
    }

    #[test]
    fn round_robin_interleaving_is_a_bijection() {
        for partitions in [1, 2, 3, 8] {
            for exec in 0..200 {
                let (i, s) = slot_of(exec, partitions);
                assert_eq!(exec_sequence(i, s, partitions), exec);
            }
        }
    }

    #[test]
    fn commits_are_renumbered_and_committers_named_within_their_partition() {
        let params = Params { partitions: 3, ..Params::default() };
        let mut merge = Merge::new(&params);
        let request = Request::noop();
        let commit = Commit { committer: 4, sequence: 7, view: 2, request: request.clone() };
        let merged = merge.commit(commit).unwrap();
        assert_eq!((merged.committer, merged.sequence, merged.view), (1, 7 * 3 + 1, 2));
        assert!(merge.commit(Commit { committer: 9, sequence: 0, view: 0, request }).is_none(), "no partition 3");
        assert_eq!(merge.merged(), 1);
    }
}
