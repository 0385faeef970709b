//! Deliberately broken variants of the protocol. Stages can only be broken with the `mutations`
//! feature (their `mutate` methods exist only then); without it every check is a constant false.
//!
//! The deterministic simulator (tests/simulation.rs) must catch each of them; a mutation it
//! does not catch shows a hole in its checks or its fault schedules. Never enable in a
//! deployment.

/// One deliberate bug.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Mutation {
    /// Executors execute a retransmitted duplicate again instead of answering from the cache
    /// (breaks Section III-C's duplicate detection).
    SkipDuplicateCheck,
    /// Executors execute every committed instance at once instead of in sequence order
    /// (breaks Section III-C's ordered execution).
    ExecuteOutOfOrder,
    /// Restoring a checkpoint restores the application but not the duplicate-detection table
    /// (breaks Section III-D: a checkpoint must hold `T_exec` and the result cache).
    CheckpointForgetsClients,
    /// Executors count a request as committed after f commits instead of f+1 (breaks Section
    /// III-C; only a view change can expose it, when a new proposer fills the slot otherwise).
    CommitAfterF,
    /// A restarted committer has lost its records and its view (the "amnesia" case of
    /// Section III-E: a host that does not keep the record log durable).
    CommitterForgetsRecords,
    /// Executors open a session for any command that claims no answers (`answered_below` at
    /// most 1), not only for a client's first command: a client whose session ended and that
    /// retransmits unanswered commands sees them execute a second time (breaks exactly-once
    /// across session expiry).
    UnansweredCommandsOpenSessions,
    /// A request source ignores the batch size and holds commands until its timeout forever
    /// (a liveness bug: commands are never proposed).
    SourceNeverFlushes,
}

/// The hook a stage calls: is this stage broken in this way? Always false without the feature.
#[cfg(feature = "mutations")]
pub(crate) fn applies(set: Option<Mutation>, mutation: Mutation) -> bool {
    set == Some(mutation)
}

/// The hook a stage calls: is this stage broken in this way? Always false without the feature.
#[cfg(not(feature = "mutations"))]
pub(crate) fn applies(_: Option<Mutation>, _: Mutation) -> bool {
    false
}
