//! The operator's view: logs without escape codes when stderr is a file.

#[path = "common/procs.rs"]
mod procs;

use std::process::{Command, Stdio};

/// `tara run` with stderr to a file writes plain text: level names without colour codes.
#[test]
fn logs_to_a_file_carry_no_escape_codes() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    // Nobody else runs: the process logs its roles, waits 300 ms for its peers, gives up.
    let (config, _) = procs::write_description(dir.path(), "connect_timeout_ms = 300");
    let log = dir.path().join("stderr.log");
    let file = std::fs::File::create(&log).expect("a log file");
    let status = Command::new(env!("CARGO_BIN_EXE_tara"))
        .args(["run", "--config", &config, "--process", "0"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(file)
        .status()
        .expect("tara runs");
    assert!(!status.success(), "a process without its peers fails");
    let bytes = std::fs::read(&log).expect("the log");
    let text = String::from_utf8_lossy(&bytes);
    assert!(text.contains("INFO") && text.contains("process 0 of 3"), "the log has its lines: {text}");
    assert!(!bytes.contains(&0x1b), "an escape byte in a log file: {text:?}");
}

/// `tara status` prints one row per replica of every process, with the column heads the README
/// names, and executors within the lag their counters allow.
#[test]
fn status_prints_every_replica_of_the_cluster() {
    let cluster = procs::LocalCluster::start("");
    let mut client = tara::client::Client::new(cluster.pool());
    let op = tara::app::coordination::CoordOp::Create { path: "/s".into(), data: Vec::new(), sequential: false };
    client.invoke(op.encode()).expect("the cluster answers");
    let output = Command::new(env!("CARGO_BIN_EXE_tara"))
        .args(["status", "--connect", &cluster.every.join(",")])
        .output()
        .expect("tara status runs");
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{text}\n{}", String::from_utf8_lossy(&output.stderr));
    let mut lines = text.lines();
    let head: Vec<&str> = lines.next().expect("a header").split_whitespace().collect();
    let wanted = ["process", "stage", "replica", "partition", "view", "next", "stable", "lag", "executed", "restarts"];
    assert_eq!(&head[..wanted.len()], &wanted[..], "{text}");
    let rows: Vec<Vec<&str>> = lines.map(|l| l.split_whitespace().collect()).collect();
    let executors: Vec<&Vec<&str>> = rows.iter().filter(|r| r[1] == "executors").collect();
    assert_eq!(executors.len(), 3, "2f+1 executors: {text}");
    for stage in ["sources", "proposers", "committers", "executors", "gc", "controllers"] {
        assert!(rows.iter().any(|r| r[1] == stage), "no {stage}: {text}");
    }
    for row in &executors {
        let next: u64 = row[5].parse().expect("next is a number");
        assert!(next >= 1, "an executor executed the create: {text}");
        assert!(row[7].parse::<u64>().is_ok() && row[10] == "up", "{text}");
    }
}

/// `n` consecutive free ports (the counter of `procs::free_ports` hands them out in order).
fn consecutive_free_ports(n: usize) -> u16 {
    loop {
        let ports = procs::free_ports(n);
        if ports.windows(2).all(|w| w[1] == w[0] + 1) {
            return ports[0];
        }
    }
}

/// One HTTP GET on `address`: the status line and the body.
fn http_get(address: &str, path: &str) -> (String, String) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(address).expect("the metrics endpoint listens");
    stream.set_read_timeout(Some(std::time::Duration::from_secs(30))).expect("a timeout");
    write!(stream, "GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n").expect("the request is sent");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("a response");
    let (head, body) = response.split_once("\r\n\r\n").expect("an HTTP response");
    (head.lines().next().unwrap_or_default().to_string(), body.to_string())
}

/// The value of the sample `name{labels}` whose labels contain every one of `having`.
fn sample(text: &str, name: &str, having: &[&str]) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|line| {
        let (series, value) = line.rsplit_once(' ')?;
        let (metric, labels) = series.split_once('{').unwrap_or((series, ""));
        (metric == name && having.iter().all(|h| labels.contains(h))).then(|| value.parse().ok())?
    })
}

/// Every process serves its counters on `metrics_addr` + its index, in the Prometheus text
/// format: the commands its front end took and answered, the latency histogram of those
/// answers, and every executor's executed count.
#[test]
fn every_process_serves_its_metrics() {
    let base = consecutive_free_ports(3);
    let cluster = procs::LocalCluster::start(&format!("metrics_addr = \"127.0.0.1:{base}\""));
    let mut client = tara::client::Client::new(cluster.pool());
    let commands = 20;
    for i in 0..commands {
        let op =
            tara::app::coordination::CoordOp::Create { path: format!("/m{i}"), data: Vec::new(), sequential: false };
        client.invoke(op.encode()).expect("the cluster answers");
    }
    let mut replied = 0.0;
    let mut answered = 0.0;
    let mut executors = 0;
    for process in 0..3u16 {
        let address = format!("127.0.0.1:{}", base + process);
        let (status, text) = http_get(&address, "/metrics");
        assert!(status.contains("200"), "{status}: {text}");
        assert!(text.ends_with("# EOF\n"), "a complete exposition: {text}");
        let me = format!("process=\"{process}\"");
        replied += sample(&text, "tara_front_end_replied_total", &[&me]).expect("replies are counted");
        answered += sample(&text, "tara_command_latency_seconds_count", &[&me]).expect("a latency histogram");
        let inf = sample(&text, "tara_command_latency_seconds_bucket", &[&me, "le=\"+Inf\""]).expect("an +Inf bucket");
        assert_eq!(inf, sample(&text, "tara_command_latency_seconds_count", &[&me]).unwrap(), "{text}");
        assert!(sample(&text, "tara_process_start_time_seconds", &[]).is_some_and(|t| t > 0.0), "{text}");
        for replica in 0..3 {
            let labels = [me.as_str(), "stage=\"executors\"", &format!("replica=\"{replica}\"")];
            if let Some(executed) = sample(&text, "tara_replica_executed_total", &labels) {
                executors += 1;
                assert!(executed >= commands as f64, "executor {replica} executed every create: {text}");
                assert_eq!(sample(&text, "tara_replica_up", &labels), Some(1.0), "{text}");
            }
        }
    }
    assert_eq!(executors, 3, "the 2f+1 executors are spread over the processes");
    // The client may have retried a command through a second front end: each answers it.
    assert!(replied >= commands as f64, "every command was answered through some front end: {replied}");
    assert!(answered >= commands as f64 && answered <= replied, "one latency per answered command: {answered}");
    let (status, _) = http_get(&format!("127.0.0.1:{base}"), "/");
    assert!(status.contains("404"), "{status}");
}
