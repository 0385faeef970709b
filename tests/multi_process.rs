//! Multi-process clusters started by `tara cluster`, driven over TCP, with real process
//! crashes (kill -9) and hangs (SIGSTOP). Everything on 127.0.0.1, free ports, bounded time; the
//! harness kills every process it started.

mod common;
#[path = "common/coord_workload.rs"]
mod coord_workload;
#[path = "common/linearizability.rs"]
mod linearizability;
#[path = "common/procs.rs"]
mod procs;

use std::time::{Duration, Instant};

use common::within;
use coord_workload::{Workload, answer, check_creates, create_znodes, read_every_register};
use procs::LocalCluster;
use tara::app::coordination::{CoordError, CoordOp, CoordResponse};
use tara::client::{Client, ClientPool};

/// A 3-process f = 1 cluster started by `tara cluster` serves several TCP clients with
/// the right results, and its three executors (one per process) agree.
#[test]
fn three_processes_serve_several_clients_and_executors_agree() {
    within(180, || {
        let cluster = LocalCluster::start("");
        let mut admin = Client::new(cluster.pool());
        assert!(matches!(
            answer(&mut admin, CoordOp::Create { path: "/app".into(), data: vec![], sequential: false }),
            Ok(CoordResponse::Created { .. })
        ));
        let handles: Vec<_> = (0..4)
            .map(|c| {
                let pool = cluster.pool();
                std::thread::spawn(move || {
                    let mut client = Client::new(pool);
                    let path = format!("/app/c{c}");
                    let created = answer(
                        &mut client,
                        CoordOp::Create { path: path.clone(), data: b"0".to_vec(), sequential: false },
                    );
                    assert_eq!(created, Ok(CoordResponse::Created { path: path.clone() }));
                    for i in 1..=50u32 {
                        let data = format!("{c}-{i}").into_bytes();
                        let set = answer(
                            &mut client,
                            CoordOp::SetData { path: path.clone(), data: data.clone(), version: Some(i - 1) },
                        );
                        assert!(matches!(set, Ok(CoordResponse::Set(stat)) if stat.version == i), "{set:?}");
                        let got = answer(&mut client, CoordOp::GetData { path: path.clone() });
                        assert!(matches!(&got, Ok(CoordResponse::Data { data: d, .. }) if *d == data), "{got:?}");
                    }
                    let stale =
                        answer(&mut client, CoordOp::SetData { path: path.clone(), data: vec![1], version: Some(0) });
                    assert!(matches!(stale, Err(CoordError::BadVersion { actual: 50, .. })), "{stale:?}");
                })
            })
            .collect();
        for handle in handles {
            handle.join().expect("a client thread");
        }
        let children = answer(&mut admin, CoordOp::GetChildren { path: "/app".into() });
        assert_eq!(children, Ok(CoordResponse::Children((0..4).map(|c| format!("c{c}")).collect())));
        assert!(cluster.remote().executors_agree(3, Duration::from_secs(30)), "the executors disagree");
    });
}

/// Kill -9 of a process in the middle of a workload. The supervisor restarts the whole
/// cluster, which recovers from its durable state; the clients reconnect and finish. The history
/// is linearizable (so no acknowledged write is lost), every command retried across the restart
/// took effect once, and the executors agree.
#[test]
fn kill_9_mid_workload_restarts_the_cluster_and_loses_nothing() {
    within(240, || {
        let cluster = LocalCluster::start("checkpoint_interval = 32\nwindow = 64");
        let mut admin = Client::new(cluster.pool());
        create_znodes(&mut admin);
        let mut workload = Workload::new(cluster.pool(), 8);
        workload.run_for(Duration::from_secs(2));
        let before = workload.history.iter().filter(|o| o.response.is_some()).count();
        cluster.signal(1, "-KILL");
        let killed = Instant::now();
        workload.run_for(Duration::from_secs(1));
        assert!(cluster.wait_for("serving again", 0, Duration::from_secs(60)), "the cluster did not come back");
        eprintln!("kill -9 to service: {} ms", killed.elapsed().as_millis());
        assert!(cluster.lines("restart 1: process 1 exited (signal: 9").len() == 1, "the restart names its cause");
        workload.run_for(Duration::from_secs(2));
        assert!(workload.drain(Duration::from_secs(60)), "commands outstanding after the restart");
        let completed = workload.history.iter().filter(|o| o.response.is_some()).count();
        assert!(completed > before, "no progress after the restart ({before} then {completed})");
        assert!(workload.retried > 0, "no command was retried across the restart");
        read_every_register(&mut admin, &mut workload);
        linearizability::check(&workload.history).expect("the history is linearizable");
        check_creates(&mut admin, &workload.creates);
        assert!(cluster.remote().executors_agree(3, Duration::from_secs(30)), "the executors disagree");
    });
}

/// SIGSTOP of a process stalls timely silently; the supervisor's health probe notices,
/// restarts the cluster, and the service comes back.
#[test]
fn a_stopped_process_is_detected_and_the_cluster_restarted() {
    within(180, || {
        let cluster = LocalCluster::start("probe_timeout_ms = 1500\nprobe_interval_ms = 100");
        let mut client = Client::new(cluster.pool());
        assert!(
            answer(&mut client, CoordOp::Create { path: "/before".into(), data: vec![1], sequential: false }).is_ok()
        );
        cluster.signal(0, "-STOP");
        assert!(
            cluster.wait_for("restart 1: process 0 did not answer a status request", 0, Duration::from_secs(30)),
            "no stall detected"
        );
        assert!(cluster.wait_for("serving again", 0, Duration::from_secs(60)), "the cluster did not come back");
        let got = answer(&mut client, CoordOp::GetData { path: "/before".into() });
        assert!(matches!(got, Ok(CoordResponse::Data { ref data, .. }) if *data == vec![1]), "{got:?}");
        assert!(
            answer(&mut client, CoordOp::Create { path: "/after".into(), data: vec![2], sequential: false }).is_ok()
        );
    });
}

fn tara(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_tara")).args(args).output().expect("tara runs")
}

/// `tara client` runs each coordination operation over TCP, prints the answer, and says
/// clearly what went wrong (exit 1 for a service error, 2 for an unreachable or refusing
/// cluster); any front end will do, also that of a process without a request source.
#[test]
fn the_client_command_runs_every_operation_with_clear_errors() {
    within(180, || {
        let cluster = LocalCluster::start("");
        // The start line says where the durable state is, and that it outlives the run.
        let start = cluster.lines("clients connect to").pop().expect("a start line");
        let state = cluster.dir.path().join("state");
        assert!(start.contains(&format!("durable state in {}", state.display())), "{start}");
        assert!(start.contains("--fresh"), "{start}");
        let connect = cluster.sources.join(",");
        let run = |args: &[&str]| {
            let mut all = vec!["client", "--connect", &connect, "--timeout-ms", "10000"];
            all.extend_from_slice(args);
            let out = tara(&all);
            let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
            (out.status.code(), text(&out.stdout), text(&out.stderr))
        };
        assert_eq!(run(&["create", "/app", "hello"]), (Some(0), "created /app\n".into(), String::new()));
        let (code, out, _) = run(&["create", "/app/job-", "x", "--sequential"]);
        assert_eq!((code, out.as_str()), (Some(0), "created /app/job-0000000000\n"));
        assert_eq!(run(&["get", "/app"]).1, "hello\nversion 0, 1 children\n");
        assert_eq!(run(&["set", "/app", "bye", "--version", "0"]).1, "version 1\n");
        let (code, _, err) = run(&["set", "/app", "again", "--version", "0"]);
        assert_eq!(code, Some(1));
        assert!(err.contains("bad version: /app is at version 1"), "{err}");
        assert_eq!(run(&["ls", "/app"]).1, "job-0000000000\n");
        // `exists` answers like `test`: 0 if the znode exists, 1 if not.
        assert_eq!(run(&["exists", "/nope"]), (Some(1), "false\n".into(), String::new()));
        assert_eq!(run(&["exists", "/app"]).0, Some(0));
        // Global options may also follow the operation.
        let out = tara(&["client", "get", "/app", "--connect", &connect, "--timeout-ms", "10000"]);
        assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(String::from_utf8_lossy(&out.stdout), "bye\nversion 1, 1 children\n");
        let (code, _, err) = run(&["delete", "/app"]);
        assert_eq!(code, Some(1));
        assert!(err.contains("not empty"), "{err}");
        assert_eq!(run(&["delete", "/app/job-0000000000"]).1, "deleted\n");
        let (code, _, err) = run(&["get", "/app/job-0000000000"]);
        assert_eq!(code, Some(1));
        assert!(err.contains("no node"), "{err}");
        let (code, _, err) = run(&["create", "relative", "x"]);
        assert_eq!(code, Some(1));
        assert!(err.contains("must start with '/'"), "{err}");

        // The front end of the process without a request source forwards the command.
        let sourceless = cluster.every.iter().find(|a| !cluster.sources.contains(a)).expect("one process has none");
        let out = tara(&["client", "--connect", sourceless, "--timeout-ms", "3000", "get", "/app"]);
        assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(String::from_utf8_lossy(&out.stdout), "bye\nversion 1, 0 children\n");
        let closed = format!("127.0.0.1:{}", procs::free_port());
        let out = tara(&["client", "--connect", &closed, "--timeout-ms", "1500", "ls", "/"]);
        assert_eq!(out.status.code(), Some(2));
        assert!(String::from_utf8_lossy(&out.stderr).contains(&closed), "{}", String::from_utf8_lossy(&out.stderr));
    });
}

/// Ctrl-C (SIGINT) stops `tara cluster` cleanly: it exits with success and leaves no
/// process behind.
#[test]
fn ctrl_c_stops_the_cluster_and_its_processes() {
    within(120, || {
        let mut cluster = LocalCluster::start("");
        let pids: Vec<u32> = (0..3).map(|i| cluster.pid(i)).collect();
        let status = cluster.interrupt(Duration::from_secs(20)).expect("the supervisor exits after Ctrl-C");
        assert!(status.success(), "{status}");
        assert!(cluster.wait_for("tara cluster: stopped after 0 restarts", 0, Duration::from_secs(5)));
        for pid in pids {
            let alive = std::path::Path::new(&format!("/proc/{pid}")).exists()
                && !std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default().contains(") Z ");
            assert!(!alive, "process {pid} outlived the cluster");
        }
    });
}

/// `tara run` as a timely user starts any timely program: three processes started by
/// hand with `-p`, `-w`, `-n` and a hostfile (`-h`) whose addresses replace the description's
/// timely addresses. They form a cluster that serves clients, and each logs its role assignment.
#[test]
fn processes_started_by_hand_with_timely_flags_form_a_cluster() {
    within(120, || {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let (config, _) = procs::write_description(dir.path(), "");
        let text = std::fs::read_to_string(&config).expect("written");
        std::fs::write(&config, text.replace("workers = 1", "workers = 2")).expect("written");
        let hosts: Vec<String> = procs::free_ports(3).into_iter().map(|p| format!("127.0.0.1:{p}")).collect();
        let hostfile = dir.path().join("hosts.txt");
        std::fs::write(&hostfile, hosts.join("\n") + "\n").expect("written");
        let sources =
            tara::cluster::Description::from_file(config.as_ref()).and_then(|d| d.client_addresses()).expect("ok");
        let (config, hostfile) = (config.as_str(), hostfile.to_str().expect("UTF-8"));
        let mut children: Vec<std::process::Child> = (0..3)
            .map(|i| {
                let args = ["run", "--config", config, "-p", &i.to_string(), "-w", "1", "-n", "3", "-h", hostfile];
                std::process::Command::new(env!("CARGO_BIN_EXE_tara"))
                    .args(args)
                    .env_remove("RUST_LOG")
                    .stderr(std::process::Stdio::piped())
                    .spawn()
                    .expect("tara run starts")
            })
            .collect();
        let logs: Vec<_> = children
            .iter_mut()
            .map(|child| {
                let stderr = child.stderr.take().expect("piped");
                std::thread::spawn(move || std::io::read_to_string(stderr).unwrap_or_default())
            })
            .collect();
        let mut client = Client::new(tara::client::tcp::pool(&sources, LocalCluster::options()).expect("a pool"));
        client.set_deadline(Duration::from_secs(30));
        let created =
            answer(&mut client, CoordOp::Create { path: "/by-hand".into(), data: vec![1], sequential: false });
        for child in &mut children {
            let _ = child.kill();
            let _ = child.wait();
        }
        assert_eq!(created, Ok(CoordResponse::Created { path: "/by-hand".into() }));
        for (i, log) in logs.into_iter().enumerate() {
            let log = log.join().expect("the log reader");
            let role = format!("process {i} of 3 (timely {}", hosts[i]);
            assert!(log.contains(&role) && log.contains("1 worker threads"), "process {i} log:\n{log}");
            assert!(log.contains(&format!("process {i}: committers {i} on worker {i}")), "process {i} log:\n{log}");
        }
    });
}

/// A process whose peers never come (not started, or unreachable) does not wait
/// forever as timely would: after `connect_timeout_ms` it names the process and address it
/// waited for and exits with the runtime code 1, which `tara cluster` answers with a restart.
/// (It used to exit with 2, the configuration-error code, so a peer slow to come back during a
/// restart made the supervisor give up for good.)
#[test]
fn a_process_whose_peers_never_come_says_which_and_exits() {
    within(60, || {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let (config, description) = procs::write_description(dir.path(), "connect_timeout_ms = 300");
        let config = config.as_str();
        let out = tara(&["run", "--config", config, "--process", "1"]);
        assert_eq!(out.status.code(), Some(1));
        let err = String::from_utf8_lossy(&out.stderr);
        let expected = format!("cannot reach process 0 at {}", description.process[0].timely);
        assert!(err.contains(&expected), "{err}");
        let out = tara(&["run", "--config", config, "--process", "0"]);
        assert_eq!(out.status.code(), Some(1));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("processes 1, 2 did not connect in time"), "{err}");
    });
}

/// Stops the supervisor, kills process 1 with SIGKILL (the others stop with it: timely is
/// fail-stop), lets `damage` change committer 1's record log while everything is down, and
/// lets the supervisor go on, which restarts the cluster on that state.
fn kill_9_and_damage(cluster: &LocalCluster, damage: impl FnOnce(&std::path::Path)) {
    cluster.signal_supervisor("-STOP");
    cluster.signal(1, "-KILL");
    let until = Instant::now() + Duration::from_secs(20);
    while !(0..3).all(|i| cluster.exited(i)) {
        assert!(Instant::now() < until, "the other processes did not stop");
        std::thread::sleep(Duration::from_millis(10));
    }
    damage(&cluster.dir.path().join("state/committer-1/records.log"));
    cluster.signal_supervisor("-CONT");
}

/// A kill -9 in the middle of a write leaves a torn entry at the end of a committer's log
/// (here: the first bytes of a header, written over the preallocated zeros). The restarted committer cuts it back to the last whole
/// entry, says so, and the cluster serves again without losing an acknowledged write.
#[test]
fn kill_9_with_a_torn_committer_log_recovers_and_loses_nothing() {
    within(240, || {
        let cluster = LocalCluster::start("checkpoint_interval = 32\nwindow = 64");
        let mut admin = Client::new(cluster.pool());
        create_znodes(&mut admin);
        let mut workload = Workload::new(cluster.pool(), 8);
        workload.run_for(Duration::from_secs(1));
        kill_9_and_damage(&cluster, |log| {
            // Where the next entry would have gone: right after the last whole one, in the
            // preallocated zeros.
            let bytes = std::fs::read(log).expect("the log exists");
            let end = tara::storage::log::scan(&bytes).expect("an intact log").whole_bytes as u64;
            let file = std::fs::OpenOptions::new().write(true).open(log).expect("the log opens");
            std::os::unix::fs::FileExt::write_all_at(&file, &[0x2a, 0, 0, 0, 0x11, 0x22, 0x33], end).expect("written");
        });
        workload.run_for(Duration::from_secs(1));
        assert!(cluster.wait_for("serving again", 0, Duration::from_secs(60)), "the cluster did not come back");
        assert!(cluster.wait_for("cut a torn tail of 7 bytes", 0, Duration::from_secs(5)), "the torn tail was not cut");
        workload.run_for(Duration::from_secs(1));
        assert!(workload.drain(Duration::from_secs(60)), "commands outstanding after the restart");
        read_every_register(&mut admin, &mut workload);
        linearizability::check(&workload.history).expect("the history is linearizable");
        check_creates(&mut admin, &workload.creates);
        assert!(cluster.remote().executors_agree(3, Duration::from_secs(30)), "the executors disagree");
    });
}

/// A kill -9 followed by damage in the middle of a committer's log (a flipped bit): the restarted
/// process refuses to start with its own exit code and names the file; the supervisor reports
/// it and stops instead of restarting in a loop.
#[test]
fn kill_9_with_a_damaged_committer_log_stops_the_supervisor_with_the_file_named() {
    within(180, || {
        let mut cluster = LocalCluster::start("");
        let mut admin = Client::new(cluster.pool());
        create_znodes(&mut admin);
        kill_9_and_damage(&cluster, |log| {
            let mut bytes = std::fs::read(log).expect("the log exists");
            let middle = bytes.len() / 2;
            bytes[middle] ^= 0x08;
            std::fs::write(log, bytes).expect("written");
        });
        let status = cluster.wait_exit(Duration::from_secs(60)).expect("the supervisor stops by itself");
        assert!(!status.success(), "{status}");
        let named = cluster.lines("committer-1/records.log is damaged");
        assert!(!named.is_empty(), "no error names the damaged log");
        assert!(!cluster.lines("do not delete it").is_empty(), "no advice for the operator");
        let cause = cluster.lines("process 1 refused to start: a replica's durable state is damaged");
        assert!(cause.iter().any(|l| l.contains("not restarting")), "the supervisor did not say it stops");
        assert!(cluster.lines("restart 2").is_empty(), "the supervisor restarted in a loop");
    });
}

/// A client transport for a partitioned cluster: client ids spread round-robin over the
/// partitions (partition = client mod P), and each client's commands go to the front ends of
/// the processes that host a request source of its partition.
struct ByPartition {
    /// One transport per partition, to that partition's front ends.
    partitions: Vec<tara::client::TcpTransport>,
    next: u64,
}

impl ByPartition {
    /// The front ends of each partition's request sources, from the cluster's description.
    fn front_ends(cluster: &LocalCluster) -> Vec<Vec<String>> {
        use tara::protocol::{Stage, topology};
        let description = tara::cluster::Description::from_file(&cluster.config).expect("the description");
        let (params, processes) = (description.params().expect("valid"), description.processes(None).expect("valid"));
        let placement = description.placement_in(&params, processes.len()).expect("valid");
        (0..params.partitions as u32)
            .map(|partition| {
                let mut hosting: Vec<usize> = (placement.stage(Stage::Source).iter().enumerate())
                    .filter(|(replica, _)| topology::locate(Stage::Source, *replica as u32, &params).0 == partition)
                    .map(|(_, worker)| placement.process_of(*worker))
                    .collect();
                hosting.sort_unstable();
                hosting.dedup();
                hosting.into_iter().map(|p| processes[p].clients.clone()).collect()
            })
            .collect()
    }

    fn pool(cluster: &LocalCluster) -> ClientPool {
        let partitions = Self::front_ends(cluster)
            .iter()
            .map(|addresses| tara::client::TcpTransport::new(addresses).expect("a transport"))
            .collect();
        let transport = ByPartition { partitions, next: 0 };
        ClientPool::new(Box::new(transport), LocalCluster::options(), crossbeam_channel::unbounded())
    }

    fn partition_of(&self, client: u64) -> usize {
        (client % self.partitions.len() as u64) as usize
    }
}

impl tara::client::Transport for ByPartition {
    fn routes(&self) -> u32 {
        self.partitions.iter().map(|t| t.routes()).max().unwrap_or(1)
    }

    fn new_client_id(&mut self) -> u64 {
        let p = self.partitions.len() as u64;
        let partition = self.next % p;
        self.next += 1;
        loop {
            let id = (rand::random::<u64>() >> 8) / p * p + partition;
            if id != 0 {
                return id;
            }
        }
    }

    fn register(&mut self, client: u64, mailbox: &crossbeam_channel::Sender<tara::client::Replies>) {
        self.partitions.iter_mut().for_each(|t| t.register(client, mailbox));
    }

    fn unregister(&mut self, client: u64) {
        self.partitions.iter_mut().for_each(|t| t.unregister(client));
    }

    fn submit(&mut self, route: u32, command: tara::protocol::Command) -> Result<(), tara::client::ClientError> {
        let partition = self.partition_of(command.client);
        self.partitions[partition].submit(route, command)
    }

    fn flush(&mut self) -> Result<(), tara::client::ClientError> {
        // Every partition's transport flushes, whatever the others did.
        let flushed: Vec<_> = self.partitions.iter_mut().map(|t| t.flush()).collect();
        flushed.into_iter().collect()
    }

    fn stopped(&self) -> bool {
        false
    }
}

/// Section IV through a real crash: kill -9 of one process of a 3-process cluster with two
/// partitions, whose clients are spread over both (partition = client mod 2). The supervisor
/// restarts the whole cluster; afterwards clients of each partition get answers again, among
/// them commands retried across the restart, the merged history is linearizable, every
/// acknowledged create took effect once, and the executors agree.
#[test]
fn kill_9_with_two_partitions_every_partition_recovers() {
    within(240, || {
        let cluster = LocalCluster::start("partitions = 2\ncheckpoint_interval = 32\nwindow = 64");
        let front_ends = ByPartition::front_ends(&cluster);
        assert!(front_ends.len() == 2 && front_ends.iter().all(|f| !f.is_empty()), "{front_ends:?}");
        let mut admin = Client::new(ByPartition::pool(&cluster));
        create_znodes(&mut admin);
        let mut workload = Workload::new(ByPartition::pool(&cluster), 8);
        let partition = |client: u64| (client % 2) as usize;
        let mut clients = [0; 2];
        workload.ids.iter().for_each(|c| clients[partition(*c)] += 1);
        assert_eq!(clients, [4, 4], "the clients are spread over both partitions: {:?}", workload.ids);
        workload.run_for(Duration::from_secs(2));
        let mut before = [0; 2];
        workload.answered.iter().for_each(|(c, _, _)| before[partition(*c)] += 1);
        assert!(before.iter().all(|n| *n > 0), "both partitions serve before the crash: {before:?}");
        let killed_us = workload.now_us();
        cluster.signal(1, "-KILL");
        workload.run_for(Duration::from_secs(1));
        assert!(cluster.wait_for("serving again", 0, Duration::from_secs(60)), "the cluster did not come back");
        let served_us = workload.now_us();
        assert!(cluster.lines("restart 1: process 1 exited (signal: 9").len() == 1, "the restart names its cause");
        workload.run_for(Duration::from_secs(2));
        assert!(workload.drain(Duration::from_secs(60)), "commands outstanding after the restart");
        let (mut after, mut retried) = ([0; 2], [0; 2]);
        for (client, at_us, retransmitted) in &workload.answered {
            // Answered once the restarted cluster served (the others may answer for a moment
            // after the kill, until they notice), and retried across the crash.
            after[partition(*client)] += usize::from(*at_us > served_us);
            retried[partition(*client)] += usize::from(*at_us > killed_us && *retransmitted);
        }
        eprintln!(
            "answers per partition: {before:?} before the crash, {after:?} after the restart ({retried:?} retried)"
        );
        assert!(after.iter().all(|n| *n > 0), "a partition did not recover: {after:?} answers after the restart");
        assert!(
            retried.iter().all(|n| *n > 0),
            "no command of a partition was retried across the restart: {retried:?} retried answers"
        );
        read_every_register(&mut admin, &mut workload);
        linearizability::check(&workload.history).expect("the history is linearizable");
        check_creates(&mut admin, &workload.creates);
        assert!(cluster.remote().executors_agree(3, Duration::from_secs(30)), "the executors disagree");
    });
}
