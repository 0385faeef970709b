//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::time::Duration;

use tara::cluster::Description;

/// Runs `f` on its own thread and fails the test if it takes longer than `seconds`: a hung
/// cluster must fail a test, not stall CI.
pub fn within<T: Send + 'static>(seconds: u64, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    let handle = std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    match rx.recv_timeout(Duration::from_secs(seconds)) {
        Ok(value) => {
            let _ = handle.join();
            value
        }
        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => match handle.join() {
            Err(panic) => std::panic::resume_unwind(panic),
            Ok(()) => panic!("the test body ended without a result"),
        },
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => panic!("test did not finish within {seconds} s"),
    }
}

/// The embedded f = 1 description with some keys replaced (TOML lines).
pub fn description(overrides: &str) -> Description {
    let mut text = tara::cluster::config::EMBEDDED_F1.to_string();
    for line in overrides.lines().filter(|l| !l.trim().is_empty()) {
        let key = line.split('=').next().unwrap_or("").trim();
        text = text.lines().filter(|l| l.split('=').next().unwrap_or("").trim() != key).collect::<Vec<_>>().join("\n");
        text = format!("{line}\n{text}");
    }
    Description::from_toml(&text).expect("test description parses")
}
