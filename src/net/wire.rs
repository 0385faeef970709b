//! The client protocol: length-prefixed frames over TCP.
//!
//! A frame is `length u32 (little endian) | version u8 | bincode body`, where `length` counts the
//! version byte and the body. A frame longer than the receiver's limit, with another version, or
//! with a body that does not decode is answered with an [`ServerFrame::Error`] and the
//! connection is closed; nothing else is affected. Many commands may be outstanding on one
//! connection; replies come back in any order.

use serde::{Deserialize, Serialize};

use crate::protocol::{Command, Reply};

/// The protocol version this build speaks.
pub const VERSION: u8 = 1;
/// The default limit on a frame's length.
pub const MAX_FRAME_BYTES: usize = 1 << 20;

/// From a client to a front end.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub enum ClientFrame {
    /// Order and execute this command.
    Submit(Command),
    /// Report the counters of the replicas this process hosts.
    Status,
    /// Describe the cluster: its shape, the clients' retry timeout, every front end.
    Describe,
    /// Report the counters and bounds of this front end ([`ServerFrame::Counters`]).
    Counters,
}

/// A cluster as its front ends describe it ([`ClientFrame::Describe`]), so that a client or a
/// benchmark given only addresses uses the cluster's own settings.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ClusterInfo {
    /// Crash faults tolerated.
    pub f: usize,
    /// Partitions (Section IV).
    pub partitions: usize,
    /// Timely worker threads per process.
    pub workers: usize,
    /// Commands per request.
    pub batch_size: usize,
    /// Sequence numbers in flight.
    pub window: u64,
    /// Sequence numbers between checkpoints.
    pub checkpoint_interval: u64,
    /// Results the executors remember per client.
    pub client_window: u64,
    /// How long clients should wait before retransmitting a command.
    pub retry_timeout_ms: u64,
    /// The client front end of every process, in process order; each one takes commands.
    pub front_ends: Vec<String>,
    /// Per front end (in the same order), the partitions whose commands it hands to a request
    /// source of its own process; it forwards the others through the dataflow, which costs them
    /// a hop each way. Clients prefer a front end that takes their partition directly.
    pub direct: Vec<Vec<u32>>,
}

/// The counters of one replica, as reported by [`ClientFrame::Status`].
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ReplicaStatus {
    /// The stage's name.
    pub stage: String,
    /// The replica index.
    pub replica: u32,
    /// Next sequence number (executors), proposals (proposers), view (committers).
    pub next: u64,
    /// Executors: commands executed (duplicates excluded). Proposers: proposals made.
    pub executed: u64,
    /// The view the replica is in.
    pub view: u64,
    /// The stability threshold it adopted.
    pub stable: u64,
    /// Executors: the hash chain over everything executed.
    pub history: u64,
    /// Entries held in memory now.
    pub held: u64,
    /// True while crashed by fault injection.
    pub down: bool,
    /// The partition it serves (0 for stages that are not partitioned, Section IV).
    pub partition: u32,
    /// Times it was restarted (by fault injection) since its process started.
    pub restarts: u64,
}

/// From a front end to a client.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub enum ServerFrame {
    /// The first executor reply to a submitted command.
    Reply(Reply),
    /// The counters of this process's replicas.
    Status(Vec<ReplicaStatus>),
    /// The last frame was rejected: it was malformed, of another version or oversized (the
    /// connection then closes), or asked for something this front end cannot tell.
    Error(String),
    /// The description of the cluster ([`ClientFrame::Describe`]).
    Cluster(ClusterInfo),
    /// The error frame of one command: this front end will not answer it (its cluster is
    /// stopping, say); the connection stays open. The client sends it elsewhere at once.
    Refused {
        /// The command's client.
        client: u64,
        /// The command's timestamp.
        timestamp: u64,
        /// Why.
        message: String,
    },
    /// The front end is at one of its bounds and did not take what it names; nothing else is
    /// affected. `command: Some((client, timestamp))`: the connection has as many commands
    /// outstanding as it may (`max_outstanding`); the command was not submitted, and the client
    /// may send it again later (to this or another front end). `command: None`: the front end
    /// serves as many connections as it may (`max_connections`); it closes this one.
    Busy {
        /// The command not taken, if the bound is a connection's.
        command: Option<(u64, u64)>,
        /// Which bound, and what to do.
        message: String,
    },
    /// The counters of this front end ([`ClientFrame::Counters`]).
    Counters(FrontEndCounters),
}

/// What a front end holds and did, against its bounds ([`ClientFrame::Counters`]).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct FrontEndCounters {
    /// Connections open now.
    pub connections: u64,
    /// The bound on open connections (`max_connections`).
    pub max_connections: u64,
    /// Connections refused because `max_connections` were open.
    pub refused_connections: u64,
    /// Commands submitted and waiting for their reply now, over every connection.
    pub outstanding: u64,
    /// The bound on outstanding commands per connection (`max_outstanding`).
    pub max_outstanding: u64,
    /// Commands answered with [`ServerFrame::Busy`] because their connection was at
    /// `max_outstanding`.
    pub busy: u64,
    /// Bytes buffered now (received but not handled, plus queued to send), over every connection.
    pub buffered_bytes: u64,
    /// The most bytes one connection ever had buffered.
    pub peak_connection_bytes: u64,
    /// The bound on bytes buffered per connection (`max_connection_bytes`).
    pub max_connection_bytes: u64,
    /// Connections closed because their client did not read its replies, so that sending one
    /// more would have passed `max_connection_bytes`.
    pub overruns: u64,
    /// Commands taken into the dataflow.
    pub submitted: u64,
    /// Replies sent to the connections awaiting them.
    pub replied: u64,
    /// Commands answered, by how long the first reply took since the command's first submission
    /// to this front end: entry `i` counts those above bound `i - 1` and within bound `i` of
    /// [`LATENCY_BOUNDS_US`]; the last entry counts those above every bound. Empty until the
    /// first reply.
    pub latency_buckets: Vec<u64>,
    /// The sum of those latencies, in microseconds.
    pub latency_sum_us: u64,
}

/// The upper bounds, in microseconds, of the buckets of [`FrontEndCounters::latency_buckets`]:
/// from a quarter of a millisecond (a reply of an idle cluster on one host) to 10 s (a retry
/// after a failover).
pub const LATENCY_BOUNDS_US: [u64; 16] = [
    250, 500, 1_000, 2_000, 5_000, 10_000, 20_000, 50_000, 100_000, 200_000, 500_000, 1_000_000, 2_000_000, 5_000_000,
    10_000_000, 30_000_000,
];

impl FrontEndCounters {
    /// Counts one command answered `micros` after its submission.
    ///
    /// ```
    /// use tara::net::FrontEndCounters;
    /// let mut counters = FrontEndCounters::default();
    /// counters.observe_latency(300);
    /// counters.observe_latency(u64::MAX);
    /// assert_eq!(counters.latency_buckets[1], 1, "300 µs is within the second bound (500 µs)");
    /// assert_eq!(counters.latency_buckets.last(), Some(&1), "above every bound");
    /// assert_eq!(counters.latency_buckets.iter().sum::<u64>(), 2);
    /// ```
    pub fn observe_latency(&mut self, micros: u64) {
        self.latency_buckets.resize(LATENCY_BOUNDS_US.len() + 1, 0);
        let bucket = LATENCY_BOUNDS_US.partition_point(|bound| *bound < micros);
        self.latency_buckets[bucket] += 1;
        self.latency_sum_us = self.latency_sum_us.saturating_add(micros);
    }
}

/// Why a received frame was rejected.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WireError {
    /// Longer than the limit.
    Oversized {
        /// The announced length.
        length: usize,
        /// The limit.
        limit: usize,
    },
    /// Another protocol version.
    Version(u8),
    /// An empty frame or a body that does not decode.
    Malformed(String),
}

impl std::fmt::Display for WireError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WireError::Oversized { length, limit } => {
                write!(f, "frame of {length} bytes exceeds the limit of {limit} bytes")
            }
            WireError::Version(v) => {
                write!(f, "protocol version {v} is not supported; this server speaks version {VERSION}")
            }
            WireError::Malformed(why) => write!(f, "malformed frame: {why}"),
        }
    }
}

impl std::error::Error for WireError {}

/// Encodes `frame` as a length-prefixed, versioned frame.
pub fn encode<T: Serialize>(frame: &T) -> Vec<u8> {
    let body = bincode::serialize(frame).unwrap_or_default();
    let mut bytes = Vec::with_capacity(5 + body.len());
    bytes.extend_from_slice(&((body.len() + 1) as u32).to_le_bytes());
    bytes.push(VERSION);
    bytes.extend_from_slice(&body);
    bytes
}

/// Splits a byte stream into frames.
#[derive(Debug)]
pub struct FrameReader {
    buffer: Vec<u8>,
    limit: usize,
}

impl FrameReader {
    /// A reader that rejects frames longer than `limit` bytes.
    pub fn new(limit: usize) -> FrameReader {
        FrameReader { buffer: Vec::new(), limit }
    }

    /// Adds bytes read from the stream.
    pub fn extend(&mut self, bytes: &[u8]) {
        self.buffer.extend_from_slice(bytes);
    }

    /// The next complete frame, `None` if more bytes are needed. After an error the stream
    /// cannot be trusted any more: the caller closes it.
    pub fn next_frame<T: for<'de> Deserialize<'de>>(&mut self) -> Option<Result<T, WireError>> {
        let header: [u8; 4] = self.buffer.get(..4)?.try_into().ok()?;
        let length = u32::from_le_bytes(header) as usize;
        if length > self.limit {
            return Some(Err(WireError::Oversized { length, limit: self.limit }));
        }
        if length == 0 {
            return Some(Err(WireError::Malformed("empty frame".into())));
        }
        let frame = self.buffer.get(4..4 + length)?;
        let result = match frame[0] {
            VERSION => bincode::deserialize(&frame[1..]).map_err(|e| WireError::Malformed(e.to_string())),
            other => Err(WireError::Version(other)),
        };
        self.buffer.drain(..4 + length);
        Some(result)
    }

    /// Bytes buffered but not yet part of a complete frame.
    pub fn buffered(&self) -> usize {
        self.buffer.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_in_pieces() {
        let frames = [ClientFrame::Submit(Command::new(1, 2, vec![3; 40])), ClientFrame::Status];
        let bytes: Vec<u8> = frames.iter().flat_map(encode).collect();
        let mut reader = FrameReader::new(MAX_FRAME_BYTES);
        let mut got = Vec::new();
        for chunk in bytes.chunks(3) {
            reader.extend(chunk);
            while let Some(frame) = reader.next_frame::<ClientFrame>() {
                got.push(frame.unwrap());
            }
        }
        assert_eq!(got, frames);
        assert_eq!(reader.buffered(), 0);
    }

    #[test]
    fn bad_frames_are_rejected() {
        let mut reader = FrameReader::new(16);
        reader.extend(&100u32.to_le_bytes());
        assert_eq!(reader.next_frame::<ClientFrame>(), Some(Err(WireError::Oversized { length: 100, limit: 16 })));

        let mut reader = FrameReader::new(1024);
        let mut bytes = encode(&ClientFrame::Status);
        bytes[4] = 9;
        reader.extend(&bytes);
        assert_eq!(reader.next_frame::<ClientFrame>(), Some(Err(WireError::Version(9))));

        let mut reader = FrameReader::new(1024);
        reader.extend(&[3, 0, 0, 0, VERSION, 0xff, 0xff]);
        assert!(matches!(reader.next_frame::<ClientFrame>(), Some(Err(WireError::Malformed(_)))));

        let mut reader = FrameReader::new(1024);
        reader.extend(&[0, 0, 0, 0]);
        assert!(matches!(reader.next_frame::<ClientFrame>(), Some(Err(WireError::Malformed(_)))));
    }
}
