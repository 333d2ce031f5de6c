//! The load generator (`livecanvas-load`) against the real server, with tiny numbers, so that it
//! keeps working: a few seconds of the `smoke` preset must deliver every segment exactly once, and
//! the `join-latency` mode must time every newcomer, warm and cold, with the whole picture.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::{Server, ONE_ADDRESS_CROWD};
use serde_json::Value;

/// The smoke run takes about 2 s of drawing plus connecting and draining; this only turns a hang
/// into a failure.
const RUN_DEADLINE: Duration = Duration::from_secs(60);

/// The load generator's binary: `$LIVECANVAS_LOAD_BIN` if set, else built here. It is another
/// crate of the workspace (crates/livecanvas-load), so cargo gives this test no
/// `CARGO_BIN_EXE_livecanvas-load`: it is built once per run, with this test's profile into this
/// test's target directory, where `cargo build -p livecanvas-load` puts it too.
fn load_generator() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(bin) = std::env::var_os("LIVECANVAS_LOAD_BIN") {
            return bin.into();
        }
        // This test runs from <target dir>/<profile dir>/deps/.
        let exe = std::env::current_exe().expect("the test's own path");
        let profile_dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("<profile dir>/deps");
        let target_dir = profile_dir.parent().expect("<target dir>/<profile dir>");
        let profile = match profile_dir.file_name().and_then(|n| n.to_str()) {
            Some("debug") => "dev",
            Some(name) => name,
            None => panic!("{}: no profile directory", profile_dir.display()),
        };
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let output = Command::new(cargo)
            .args([
                "build",
                "--quiet",
                "-p",
                "livecanvas-load",
                "--profile",
                profile,
            ])
            .arg("--target-dir")
            .arg(target_dir)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .expect("cargo runs");
        assert!(
            output.status.success(),
            "cargo build -p livecanvas-load failed ({}):\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        let bin = profile_dir.join(format!("livecanvas-load{}", std::env::consts::EXE_SUFFIX));
        assert!(bin.is_file(), "{} was not built", bin.display());
        bin
    })
}

/// Runs the load generator to completion (killing it past the deadline).
fn run_load(args: &[&str]) -> Output {
    let mut child = Command::new(load_generator())
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
    let server = Server::start_with(&ONE_ADDRESS_CROWD);
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

#[test]
fn join_latency_times_every_newcomer_with_the_whole_picture_warm_and_cold() {
    // Checkpoints every 10 operations and never for quietness, so that the rooms hold a tail of
    // operations after their checkpoint that newcomers must get after the picture.
    let mut flags = ONE_ADDRESS_CROWD.to_vec();
    flags.extend([
        "--draws-per-second",
        "100000",
        "--draw-burst",
        "100000",
        "--checkpoint-ops",
        "10",
        "--checkpoint-idle",
        "1h",
    ]);
    let server = Server::start_with(&flags);
    let url = format!("ws://{}/ws", server.addr);
    let output = run_load(&[
        "join-latency",
        "--url",
        url.as_str(),
        "--history",
        "0,25",
        "--newcomers",
        "3",
        "--cold",
        "2",
        "--seeders",
        "2",
        "--seed-rate",
        "1000",
        "--settle",
        "300ms",
        "--tail",
        "5",
        "--batch",
        "--json",
    ]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let stdout = String::from_utf8(output.stdout).expect("UTF-8 report");
    assert!(
        output.status.success(),
        "livecanvas-load join-latency failed ({}):\n{stdout}\n{stderr}",
        output.status
    );
    let report: Value = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|err| panic!("the report is one JSON object ({err}):\n{stdout}\n{stderr}"));
    assert_eq!(report["mode"], "join-latency", "{report}");
    assert_eq!(report["batch"], Value::Bool(true), "{report}");
    let runs = report["runs"].as_array().expect("runs");
    assert_eq!(runs.len(), 2, "{report}");
    for (run, history, picture) in [
        (&runs[0], 0.0, "canvasEmpty"),
        (&runs[1], 25.0, "canvasState"),
    ] {
        assert!(run["error"].is_null(), "{run}");
        assert_eq!(number(run, "history"), history, "{run}");
        assert_eq!(run["picture"], picture, "{run}");
        // --tail 5 tops the room up to 5 operations after its checkpoint; it may hold up to 9.
        let tail = number(run, "tail_ops");
        assert!((5.0..10.0).contains(&tail), "{run}");
        let warm = &run["warm"];
        assert_eq!(number(warm, "complete"), 3.0, "{run}");
        assert_eq!(warm["failures"], serde_json::json!({}), "{run}");
        assert_eq!(number(&warm["pictures"], picture), 3.0, "{run}");
        for key in [
            "welcome_p50_ms",
            "picture_p50_ms",
            "p50_ms",
            "p99_ms",
            "max_ms",
        ] {
            assert!(number(warm, key) > 0.0, "{key} in {run}");
        }
        // Everybody left: the room unloaded and was read back, its tail drawn into the picture.
        let cold = &run["cold"];
        assert_eq!(number(cold, "complete"), 2.0, "{run}");
        assert_eq!(cold["failures"], serde_json::json!({}), "{run}");
        assert_eq!(number(&cold["pictures"], "canvasState"), 2.0, "{run}");
        assert!(number(cold, "p50_ms") > 0.0, "{run}");
    }
    assert!(number(&runs[1], "canvas_state_bytes") > 0.0, "{report}");
}
