//! What `/metrics` shows beyond the room figures: the version, the process's own figures, and in
//! a cluster each call to Redis and the calls that failed.

mod common;

use common::{Redis, Server, EVENT_DEADLINE};

fn metrics_text(server: &Server) -> String {
    let (status, _, body) = common::http_get(&server.http_url("/metrics"));
    assert_eq!(status, 200);
    String::from_utf8(body).expect("text")
}

/// The sum of every series of `name` (labels or not).
fn total(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let bare = series.split('{').next()?;
            (bare == name).then(|| value.parse::<f64>().ok()).flatten()
        })
        .sum()
}

#[test]
fn the_version_and_the_process_figures_are_exposed() {
    let server = Server::start();
    let text = metrics_text(&server);
    assert!(
        text.contains(&format!(
            "livecanvas_build_info{{version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        )),
        "{text}"
    );
    assert!(
        total(&text, "process_resident_memory_bytes") > 1e6,
        "{text}"
    );
    assert!(total(&text, "process_open_fds") > 3.0, "{text}");
    assert!(
        text.contains("# TYPE process_cpu_seconds_total counter"),
        "{text}"
    );
    assert!(
        text.contains("# TYPE livecanvas_store_failures_total counter"),
        "{text}"
    );
    // A single node has no Redis figures.
    assert!(!text.contains("livecanvas_redis_"), "{text}");
}

#[test]
fn a_cluster_node_counts_its_calls_to_redis_and_the_failed_ones() {
    let mut redis = Redis::start();
    let server = Server::start_with(&["--redis-url", &redis.url(), "--node-id", "n1"]);
    common::wait_for_status(&server.http_url("/readyz"), 200, EVENT_DEADLINE);
    let text = metrics_text(&server);
    assert!(
        total(&text, "livecanvas_redis_round_trip_seconds_count") > 0.0,
        "{text}"
    );
    assert_eq!(total(&text, "livecanvas_redis_errors_total"), 0.0, "{text}");
    redis.kill();
    // The node pings Redis every second: its failures show without anything else happening.
    let deadline = std::time::Instant::now() + EVENT_DEADLINE;
    while total(&metrics_text(&server), "livecanvas_redis_errors_total") == 0.0 {
        assert!(
            std::time::Instant::now() < deadline,
            "no Redis error counted after Redis died"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}
