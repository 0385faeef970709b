//! The parameters that every stage of one deployment shares, and the limits they must respect.

use serde::{Deserialize, Serialize};

/// Upper bound of `f`: committer votes are kept in a 64-bit mask, one bit per committer.
pub const F_MAX: usize = 31;
/// Upper bound of the window: every stage preallocates its window, so it must stay modest.
pub const WINDOW_MAX: u64 = 1 << 20;
/// Upper bound of the number of commands in one request.
pub const BATCH_SIZE_MAX: usize = 1 << 16;
/// Upper bound of the number of commands one client may have outstanding.
pub const CLIENT_WINDOW_MAX: u64 = 1 << 16;
/// Upper bound of the client sessions an executor holds.
pub const MAX_SESSIONS_MAX: usize = 1 << 24;
/// Lower bound of the session timeout, in execution slots.
pub const SESSION_TIMEOUT_MIN: u64 = 1024;
/// Upper bound of the number of partitions: every partition adds f+1 sources and proposers and
/// 2f+1 committers and controllers, and executors hold a window of `window` slots per partition.
pub const PARTITIONS_MAX: usize = 64;
/// Upper bound of the proposer throttle (one second between proposals is already a stalled
/// service; the throttle exists to reproduce the paper's resource-constrained proposer).
pub const PROPOSER_DELAY_MAX_US: u64 = 1_000_000;

/// Protocol parameters of one TARA deployment.
///
/// Replica counts follow the paper (Section III-A): f+1 request sources and proposers,
/// 2f+1 committers, executors and garbage-collection sources, so that each stage tolerates f
/// crashed replicas.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Params {
    /// Crashes tolerated per stage.
    pub f: usize,
    /// Sequence numbers held above the stability threshold (Section III-D).
    pub window: u64,
    /// Commands per request at most (Section VI-B).
    pub batch_size: usize,
    /// A partial batch is sent once its oldest command waited this long.
    pub batch_timeout_us: u64,
    /// Executors checkpoint before every sequence number divisible by this (Section III-D);
    /// with partitions, every this many slots of each partition (execution slots divisible by
    /// `checkpoint_interval * partitions`).
    pub checkpoint_interval: u64,
    /// Results remembered per client for duplicate detection: a client may have at most this
    /// many commands outstanding.
    pub client_window: u64,
    /// Client sessions an executor holds at most; opening one more ends the least recently
    /// active session.
    pub max_sessions: usize,
    /// A client session ends when this many execution slots passed since its latest command
    /// (keep-alives included); at least [`SESSION_TIMEOUT_MIN`] and the executors' window.
    pub session_timeout: u64,
    /// Controllers start a new view when executors make no progress for this long while work is
    /// outstanding (Section III-E). Progress reports go out four times per timeout.
    pub view_timeout_us: u64,
    /// Independent ordering groups (Section IV): each has its own sources, proposers,
    /// committers and controllers; executors and garbage-collection sources are shared.
    pub partitions: usize,
    /// A proposer waits at least this long between two proposals (the resource-constrained
    /// proposer of the paper's Figure 7); 0 means no throttle.
    pub proposer_delay_us: u64,
    /// Consensus instances a proposer keeps proposed and not yet committed, at most; `None`
    /// means `window` (full pipelining). `Some(1)` orders one instance at a time, as BFT-SMaRt
    /// does (the sequential baseline of Section VI-B), while the window and the checkpoint
    /// interval stay as they are.
    pub max_in_flight: Option<u64>,
}

impl Default for Params {
    fn default() -> Self {
        Params {
            f: 1,
            window: 256,
            batch_size: 64,
            batch_timeout_us: 0,
            checkpoint_interval: 128,
            client_window: 64,
            max_sessions: 1 << 16,
            session_timeout: 1 << 20,
            view_timeout_us: 500_000,
            partitions: 1,
            proposer_delay_us: 0,
            max_in_flight: None,
        }
    }
}

/// A parameter that is out of range, with what to change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParamError {
    /// The name of the offending field, as in description files.
    pub field: &'static str,
    /// What is wrong and how to fix it.
    pub message: String,
}

impl std::fmt::Display for ParamError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "`{}`: {}", self.field, self.message)
    }
}

impl std::error::Error for ParamError {}

fn error(field: &'static str, message: String) -> Result<(), ParamError> {
    Err(ParamError { field, message })
}

impl Params {
    /// Request sources (f+1) per partition.
    pub fn sources(&self) -> usize {
        self.f + 1
    }
    /// Proposers (f+1) per partition; the active one in view v is v mod (f+1).
    pub fn proposers(&self) -> usize {
        self.f + 1
    }
    /// Committers (2f+1) per partition.
    pub fn committers(&self) -> usize {
        2 * self.f + 1
    }
    /// Executors (2f+1).
    pub fn executors(&self) -> usize {
        2 * self.f + 1
    }
    /// Garbage-collection sources (2f+1).
    pub fn gc_sources(&self) -> usize {
        2 * self.f + 1
    }
    /// Controllers (2f+1) per partition.
    pub fn controllers(&self) -> usize {
        2 * self.f + 1
    }
    /// How often sources and executors report progress, and controllers repeat their view.
    pub fn report_interval_us(&self) -> u64 {
        (self.view_timeout_us / 4).max(1)
    }
    /// True if `max_in_flight` is below the window, so that proposers must hear commits to
    /// keep it (at the window it is implied by the window: see [`Params::in_flight_bound`]).
    pub fn in_flight_bounded(&self) -> bool {
        self.in_flight_bound() < self.window
    }
    /// Consensus instances proposed and not yet committed, at most (`max_in_flight`, by
    /// default the window).
    pub fn in_flight_bound(&self) -> u64 {
        self.max_in_flight.unwrap_or(self.window)
    }
    /// Matching votes needed: f+1 (a majority of 2f+1).
    pub fn quorum(&self) -> usize {
        self.f + 1
    }

    /// Checks every bound; the error names the field and the fix.
    pub fn validate(&self) -> Result<(), ParamError> {
        if self.f == 0 {
            return error(
                "f",
                "must be at least 1: with f = 0 a single crash stops the service; set f = 1 \
                 (3 committers and executors) or more"
                    .into(),
            );
        }
        if self.f > F_MAX {
            return error("f", format!("must be at most {F_MAX}, got {}", self.f));
        }
        if self.window == 0 || self.window > WINDOW_MAX {
            return error(
                "window",
                format!("must be between 1 and {WINDOW_MAX}, got {}; 256 is a good start", self.window),
            );
        }
        if self.batch_size == 0 || self.batch_size > BATCH_SIZE_MAX {
            return error("batch_size", format!("must be between 1 and {BATCH_SIZE_MAX}, got {}", self.batch_size));
        }
        if self.checkpoint_interval == 0 || self.checkpoint_interval > self.window {
            return error(
                "checkpoint_interval",
                format!(
                    "must be between 1 and the window ({}), got {}: the window only moves when \
                     executors checkpoint, so a checkpoint must fit in it; window / 2 is a good value",
                    self.window, self.checkpoint_interval
                ),
            );
        }
        if let Some(bound) = self.max_in_flight
            && (bound == 0 || bound > self.window)
        {
            return error(
                "max_in_flight",
                format!(
                    "must be between 1 and the window ({}), got {bound}: 1 orders one instance at a \
                     time (the sequential baseline), leaving it out pipelines the whole window",
                    self.window
                ),
            );
        }
        if self.view_timeout_us < 1_000 {
            return error(
                "view_timeout_ms",
                format!("must be at least 1 ms, got {} us; a few hundred ms suits most clusters", self.view_timeout_us),
            );
        }
        if self.partitions == 0 || self.partitions > PARTITIONS_MAX {
            return error(
                "partitions",
                format!(
                    "must be between 1 and {PARTITIONS_MAX}, got {}; 1 orders everything in one group",
                    self.partitions
                ),
            );
        }
        if self.window * self.partitions as u64 > WINDOW_MAX {
            return error(
                "partitions",
                format!(
                    "executors hold window x partitions = {} slots, more than {WINDOW_MAX}; lower the window",
                    self.window * self.partitions as u64
                ),
            );
        }
        if self.proposer_delay_us > PROPOSER_DELAY_MAX_US {
            return error(
                "proposer_delay_us",
                format!(
                    "must be at most {PROPOSER_DELAY_MAX_US} us, got {}; 0 turns the throttle off",
                    self.proposer_delay_us
                ),
            );
        }
        if self.client_window == 0 || self.client_window > CLIENT_WINDOW_MAX {
            return error(
                "client_window",
                format!("must be between 1 and {CLIENT_WINDOW_MAX}, got {}", self.client_window),
            );
        }
        if self.max_sessions == 0 || self.max_sessions > MAX_SESSIONS_MAX {
            return error(
                "max_sessions",
                format!("must be between 1 and {MAX_SESSIONS_MAX}, got {}", self.max_sessions),
            );
        }
        let least = SESSION_TIMEOUT_MIN.max(self.window * self.partitions as u64);
        if self.session_timeout < least {
            return error(
                "session_timeout",
                format!(
                    "must be at least {least} execution slots (and the window x partitions), got {}",
                    self.session_timeout
                ),
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        Params::default().validate().unwrap();
    }

    #[test]
    fn out_of_range_fields_are_named() {
        let cases: Vec<(Params, &str)> = vec![
            (Params { f: 0, ..Params::default() }, "f"),
            (Params { f: 40, ..Params::default() }, "f"),
            (Params { window: 0, ..Params::default() }, "window"),
            (Params { batch_size: 0, ..Params::default() }, "batch_size"),
            (Params { checkpoint_interval: 512, ..Params::default() }, "checkpoint_interval"),
            (Params { checkpoint_interval: 0, ..Params::default() }, "checkpoint_interval"),
            (Params { client_window: 0, ..Params::default() }, "client_window"),
            (Params { max_sessions: 0, ..Params::default() }, "max_sessions"),
            (Params { session_timeout: 10, ..Params::default() }, "session_timeout"),
            (Params { view_timeout_us: 10, ..Params::default() }, "view_timeout_ms"),
            (Params { partitions: 0, ..Params::default() }, "partitions"),
            (Params { max_in_flight: Some(0), ..Params::default() }, "max_in_flight"),
            (Params { max_in_flight: Some(257), ..Params::default() }, "max_in_flight"),
            (Params { partitions: PARTITIONS_MAX + 1, ..Params::default() }, "partitions"),
            (Params { proposer_delay_us: PROPOSER_DELAY_MAX_US + 1, ..Params::default() }, "proposer_delay_us"),
        ];
        for (params, field) in cases {
            let err = params.validate().unwrap_err();
            assert_eq!(err.field, field, "{err}");
        }
    }

    #[test]
    fn the_in_flight_bound_defaults_to_the_window() {
        assert_eq!(Params::default().in_flight_bound(), 256);
        let sequential = Params { max_in_flight: Some(1), ..Params::default() };
        sequential.validate().unwrap();
        assert_eq!(sequential.in_flight_bound(), 1);
        let full = Params { max_in_flight: Some(256), ..Params::default() };
        full.validate().unwrap();
    }

    #[test]
    fn replica_counts_follow_the_paper() {
        let p = Params { f: 2, ..Params::default() };
        assert_eq!((p.sources(), p.proposers(), p.committers(), p.executors()), (3, 3, 5, 5));
        assert_eq!(p.quorum(), 3);
    }
}
