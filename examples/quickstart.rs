//! Start an embedded f = 1 cluster replicating a key-value store, write and read a key, stop.
//!
//! `cargo run --release --example quickstart`

use tara::app::kv::{KvOp, KvResult, KvStore};
use tara::cluster::{Cluster, Description};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let cluster = Cluster::start(&Description::embedded(), |_replica| KvStore::default())?;
    let mut client = cluster.client();
    client.invoke(KvOp::Put { key: "greeting".into(), value: b"hello".to_vec() }.encode())?;
    let answer = KvResult::decode(&client.invoke(KvOp::Get { key: "greeting".into() }.encode())?)?;
    println!("greeting = {answer:?}");
    let report = cluster.stop();
    println!("executors agree: {}", report.digests_agree());
    Ok(())
}
