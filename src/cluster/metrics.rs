//! The Prometheus endpoint of one process of a multi-process cluster (`metrics_addr`).
//!
//! `tara run` serves `GET /metrics` on `metrics_addr` with its port raised by the process's
//! index. Each scrape asks the process's own front end, over the client protocol, for the
//! counters of its replicas and of the front end itself (what `tara status` shows), and encodes
//! them in the OpenMetrics text format with the `prometheus-client` crate:
//!
//! - per replica (labels `process`, `stage`, `replica`, `partition`): `tara_replica_next`,
//!   `_view`, `_stable`, `_held`, `_up` (gauges), `tara_replica_executed_total` and
//!   `tara_replica_restarts_total` (counters);
//! - per front end (label `process`): connections, outstanding commands and buffered bytes with
//!   their bounds (gauges), refused connections, busy answers, overruns, commands submitted and
//!   replies sent (counters; `rate(tara_front_end_replied_total[1m])` is the throughput the
//!   front end serves), and `tara_command_latency_seconds`, a histogram of how long commands
//!   waited for their first reply;
//! - `tara_process_start_time_seconds`: changes whenever the supervisor restarts the process.
//!
//! The module is part of the `cli` feature, like the rest of what only the binary needs: the
//! library's front end keeps the counters and the latency buckets without any dependency.

use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prometheus_client::encoding::{EncodeLabelSet, EncodeMetric, MetricEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::{MetricType, TypedMetric};
use prometheus_client::registry::Registry;

use crate::client::tcp;
use crate::net::{FrontEndCounters, LATENCY_BOUNDS_US, ReplicaStatus};

/// How long one scrape may wait for the front end, and for the scraper's request.
const TIMEOUT: Duration = Duration::from_secs(2);
/// The longest HTTP request head accepted.
const MAX_REQUEST_BYTES: usize = 8 * 1024;
/// The content type of the OpenMetrics text format.
const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Starts serving the metrics of process `process`, whose front end listens on `front_end`, on
/// `listener`, on a thread of its own that lives as long as the process.
pub fn spawn(listener: TcpListener, process: usize, front_end: String) -> io::Result<()> {
    let started = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64());
    let endpoint = Endpoint { process, front_end, started };
    std::thread::Builder::new().name("tara-metrics".into()).spawn(move || {
        for stream in listener.incoming() {
            match stream {
                Ok(stream) => endpoint.answer(stream),
                Err(e) => tracing::warn!("metrics: accept failed: {e}"),
            }
        }
    })?;
    Ok(())
}

struct Endpoint {
    process: usize,
    front_end: String,
    started: f64,
}

impl Endpoint {
    /// Answers one HTTP request (one at a time: scrapes are seconds apart).
    fn answer(&self, mut stream: TcpStream) {
        let _ = stream.set_read_timeout(Some(TIMEOUT));
        let _ = stream.set_write_timeout(Some(TIMEOUT));
        let (status, body) = match read_request_line(&mut stream) {
            Ok(line) => self.route(&line),
            Err(e) => ("400 Bad Request", format!("{e}\n")),
        };
        let content_type = if status.starts_with("200") { CONTENT_TYPE } else { "text/plain; charset=utf-8" };
        let head = format!(
            "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        let _ = stream.write_all(head.as_bytes()).and_then(|()| stream.write_all(body.as_bytes()));
    }

    fn route(&self, request_line: &str) -> (&'static str, String) {
        let mut parts = request_line.split_whitespace();
        match (parts.next(), parts.next()) {
            (Some("GET"), Some("/metrics")) => match self.scrape() {
                Ok(text) => ("200 OK", text),
                Err(e) => {
                    ("503 Service Unavailable", format!("the front end {} does not answer: {e}\n", self.front_end))
                }
            },
            (Some("GET"), Some(_)) => ("404 Not Found", "the metrics are at /metrics\n".into()),
            _ => ("405 Method Not Allowed", "only GET /metrics\n".into()),
        }
    }

    /// The process's counters, asked from its front end now, as OpenMetrics text.
    fn scrape(&self) -> Result<String, String> {
        let replicas = tcp::status(&self.front_end, TIMEOUT).map_err(|e| e.to_string())?;
        let front_end = tcp::counters(&self.front_end, TIMEOUT).map_err(|e| e.to_string())?;
        let mut registry = Registry::with_prefix("tara");
        registry.register(
            "process_start_time_seconds",
            "When this process started, in seconds since the Unix epoch",
            ConstGauge::new(self.started),
        );
        register_replicas(&mut registry, self.process, &replicas);
        register_front_end(&mut registry, self.process, &front_end);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).map_err(|e| e.to_string())?;
        Ok(text)
    }
}

/// Reads an HTTP request head and returns its first line.
fn read_request_line(stream: &mut TcpStream) -> Result<String, String> {
    let mut head = Vec::new();
    let mut buffer = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        if head.len() > MAX_REQUEST_BYTES {
            return Err(format!("request head over {MAX_REQUEST_BYTES} bytes"));
        }
        match stream.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => head.extend_from_slice(&buffer[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(format!("cannot read the request: {e}")),
        }
    }
    let text = String::from_utf8_lossy(&head);
    text.lines().next().filter(|l| !l.is_empty()).map(str::to_string).ok_or_else(|| "empty request".into())
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReplicaLabels {
    process: u64,
    stage: String,
    replica: u32,
    partition: u32,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProcessLabels {
    process: u64,
}

/// One series per replica: its name, its help text, and how to read it from a status.
type Series = (&'static str, &'static str, fn(&ReplicaStatus) -> u64);

fn register_replicas(registry: &mut Registry, process: usize, replicas: &[ReplicaStatus]) {
    let gauges: [Series; 5] = [
        ("replica_next", "Next sequence number (executors), proposals (proposers), view (committers)", |r| r.next),
        ("replica_view", "The view the replica is in", |r| r.view),
        ("replica_stable", "The stability threshold the replica adopted", |r| r.stable),
        ("replica_held", "Entries the replica holds in memory", |r| r.held),
        ("replica_up", "1 while the replica runs, 0 while it is crashed", |r| u64::from(!r.down)),
    ];
    let counters: [Series; 2] = [
        ("replica_executed", "Executors: commands executed (duplicates excluded); proposers: proposals", |r| {
            r.executed
        }),
        ("replica_restarts", "Times the replica was restarted since its process started", |r| r.restarts),
    ];
    let labels = |r: &ReplicaStatus| ReplicaLabels {
        process: process as u64,
        stage: r.stage.clone(),
        replica: r.replica,
        partition: r.partition,
    };
    for (name, help, value) in gauges {
        let family = Family::<ReplicaLabels, Gauge>::default();
        for replica in replicas {
            family.get_or_create(&labels(replica)).set(i64::try_from(value(replica)).unwrap_or(i64::MAX));
        }
        registry.register(name, help, family);
    }
    for (name, help, value) in counters {
        let family = Family::<ReplicaLabels, Counter>::default();
        for replica in replicas {
            family.get_or_create(&labels(replica)).inc_by(value(replica));
        }
        registry.register(name, help, family);
    }
}

fn register_front_end(registry: &mut Registry, process: usize, c: &FrontEndCounters) {
    let labels = ProcessLabels { process: process as u64 };
    let gauges = [
        ("front_end_connections", "Client connections open now", c.connections),
        ("front_end_max_connections", "The bound on open connections (max_connections)", c.max_connections),
        ("front_end_outstanding", "Commands awaiting their reply now, over every connection", c.outstanding),
        ("front_end_max_outstanding", "The bound on commands outstanding per connection", c.max_outstanding),
        ("front_end_buffered_bytes", "Bytes buffered now, over every connection", c.buffered_bytes),
        ("front_end_peak_connection_bytes", "The most bytes one connection ever had buffered", c.peak_connection_bytes),
        ("front_end_max_connection_bytes", "The bound on bytes buffered per connection", c.max_connection_bytes),
    ];
    let counters = [
        ("front_end_refused_connections", "Connections refused at max_connections", c.refused_connections),
        ("front_end_busy", "Commands answered busy at max_outstanding", c.busy),
        ("front_end_overruns", "Connections closed because their client did not read its replies", c.overruns),
        ("front_end_submitted", "Commands taken into the dataflow", c.submitted),
        ("front_end_replied", "Replies sent to the connections awaiting them", c.replied),
    ];
    for (name, help, value) in gauges {
        let family = Family::<ProcessLabels, Gauge>::default();
        family.get_or_create(&labels).set(i64::try_from(value).unwrap_or(i64::MAX));
        registry.register(name, help, family);
    }
    for (name, help, value) in counters {
        let family = Family::<ProcessLabels, Counter>::default();
        family.get_or_create(&labels).inc_by(value);
        registry.register(name, help, family);
    }
    let sub = registry.sub_registry_with_label(("process".into(), process.to_string().into()));
    sub.register(
        "command_latency_seconds",
        "How long commands waited at this front end for their first reply, from their first submission",
        Latencies::of(c),
    );
}

/// The front end's latency buckets as a histogram (the front end counts; this only encodes).
#[derive(Debug)]
struct Latencies {
    sum_seconds: f64,
    count: u64,
    /// (upper bound in seconds, count in this bucket alone), the last bound infinite.
    buckets: Vec<(f64, u64)>,
}

impl Latencies {
    fn of(counters: &FrontEndCounters) -> Latencies {
        let bounds = LATENCY_BOUNDS_US.iter().map(|us| *us as f64 / 1e6).chain([f64::INFINITY]);
        let counts = counters.latency_buckets.iter().copied().chain(std::iter::repeat(0));
        let buckets: Vec<(f64, u64)> = bounds.zip(counts).collect();
        Latencies {
            sum_seconds: counters.latency_sum_us as f64 / 1e6,
            count: buckets.iter().map(|(_, n)| n).sum(),
            buckets,
        }
    }
}

impl TypedMetric for Latencies {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for Latencies {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        encoder.encode_histogram::<prometheus_client::encoding::NoLabelSet>(
            self.sum_seconds,
            self.count,
            &self.buckets,
            None,
        )
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latencies_encode_as_a_cumulative_histogram() {
        let mut counters = FrontEndCounters::default();
        for micros in [100, 300, 300, 40_000_000] {
            counters.observe_latency(micros);
        }
        let mut registry = Registry::with_prefix("tara");
        register_front_end(&mut registry, 4, &counters);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert!(text.contains("tara_command_latency_seconds_bucket{process=\"4\",le=\"0.00025\"} 1"), "{text}");
        assert!(text.contains("tara_command_latency_seconds_bucket{process=\"4\",le=\"0.0005\"} 3"), "{text}");
        assert!(text.contains("tara_command_latency_seconds_bucket{process=\"4\",le=\"+Inf\"} 4"), "{text}");
        assert!(text.contains("tara_command_latency_seconds_count{process=\"4\"} 4"), "{text}");
        assert!(text.contains("tara_front_end_replied_total{process=\"4\"} 0"), "{text}");
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}
