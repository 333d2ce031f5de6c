//! The load generator (`livecanvas-load`) against the real server, with tiny numbers, so that it
//! keeps working: a few seconds of the `smoke` preset must deliver every segment exactly once.

mod common;

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::Server;
use serde_json::Value;

/// The smoke run takes about 2 s of drawing plus connecting and draining; this only turns a hang
/// into a failure.
const RUN_DEADLINE: Duration = Duration::from_secs(60);

/// Per-address limits loose enough for one process opening all the clients at once.
const PERMISSIVE: [&str; 6] = [
    "--max-connections-per-ip",
    "1000",
    "--connection-rate-per-ip",
    "1000",
    "--connection-burst-per-ip",
    "1000",
];

/// Runs the load generator to completion (killing it past the deadline).
fn run_load(args: &[&str]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_livecanvas-load"))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the livecanvas-load binary starts");
    let started = Instant::now();
    while child.try_wait().expect("try_wait").is_none() {
        if started.elapsed() > RUN_DEADLINE {
            let _ = child.kill();
            panic!("livecanvas-load did not finish within {RUN_DEADLINE:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child
        .wait_with_output()
        .expect("the output of livecanvas-load")
}

/// Runs `--preset smoke --json` (plus `extra`) against a fresh server; returns the JSON report.
fn smoke_report(extra: &[&str]) -> Value {
    let server = Server::start_with(&PERMISSIVE);
    let url = format!("ws://{}/ws", server.addr);
    let mut args = vec!["--preset", "smoke", "--json", "--url", url.as_str()];
    args.extend_from_slice(extra);
    let output = run_load(&args);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "livecanvas-load failed ({}):\n{stderr}",
        output.status
    );
    let stdout = String::from_utf8(output.stdout).expect("UTF-8 report");
    serde_json::from_str(stdout.trim())
        .unwrap_or_else(|err| panic!("the report is one JSON object ({err}):\n{stdout}\n{stderr}"))
}

fn number(report: &Value, key: &str) -> f64 {
    report[key]
        .as_f64()
        .unwrap_or_else(|| panic!("{key} is a number in {report}"))
}

fn assert_every_segment_delivered_once(report: &Value) {
    assert_eq!(number(report, "clients"), 6.0, "{report}");
    assert_eq!(number(report, "rooms"), 2.0, "{report}");
    assert_eq!(number(report, "connect_errors"), 0.0, "{report}");
    assert!(number(report, "offered_per_s") > 0.0, "{report}");
    assert!(number(report, "delivered_per_s") > 0.0, "{report}");
    let expected = number(report, "expected");
    assert!(expected > 0.0, "{report}");
    // 3 clients per room: every segment reaches the 2 others.
    assert_eq!(expected, 2.0 * number(report, "sent"), "{report}");
    assert_eq!(number(report, "received"), expected, "{report}");
    assert_eq!(number(report, "lost"), 0.0, "{report}");
    assert_eq!(number(report, "duplicated"), 0.0, "{report}");
    for key in [
        "p50_ms",
        "p90_ms",
        "p99_ms",
        "max_ms",
        "loadgen_cpu_percent",
    ] {
        assert!(number(report, key) >= 0.0, "{key} in {report}");
    }
}

#[test]
fn the_smoke_preset_delivers_every_segment_exactly_once_and_reports_json() {
    let report = smoke_report(&[]);
    assert_eq!(report["batch"], Value::Bool(false), "{report}");
    assert_every_segment_delivered_once(&report);
}

#[test]
fn asking_for_batched_delivery_still_delivers_every_segment_exactly_once() {
    let report = smoke_report(&["--batch"]);
    assert_eq!(report["batch"], Value::Bool(true), "{report}");
    assert_every_segment_delivered_once(&report);
}

#[test]
fn a_target_off_loopback_is_refused_with_exit_code_2() {
    let output = run_load(&["--preset", "smoke", "--url", "ws://192.0.2.1:8080/ws"]);
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("loopback"), "{stderr}");
}
