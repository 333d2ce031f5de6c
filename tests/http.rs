//! The HTTP side: pages, assets, health, refusals, and start-up configuration errors.

mod common;

use common::{run_binary, Server};

fn get(url: &str) -> ureq::Response {
    match ureq::get(url).call() {
        Ok(response) => response,
        Err(ureq::Error::Status(_, response)) => response,
        Err(err) => panic!("GET {url}: {err}"),
    }
}

#[test]
fn the_root_serves_the_canvas_page_with_a_strict_content_security_policy() {
    let server = Server::start();
    let response = get(&server.http_url("/"));
    assert_eq!(response.status(), 200);
    assert!(response.content_type().starts_with("text/html"));
    let csp = response
        .header("content-security-policy")
        .unwrap_or_default()
        .to_owned();
    assert!(csp.contains("default-src 'self'"), "{csp}");
    assert!(!csp.contains("unsafe-inline"), "{csp}");
    assert_eq!(response.header("x-content-type-options"), Some("nosniff"));
    let body = response.into_string().expect("a body");
    assert!(body.contains("id=\"board\""));
}

#[test]
fn a_room_url_serves_the_same_page() {
    let server = Server::start();
    let root = get(&server.http_url("/")).into_string().expect("body");
    let room = get(&server.http_url("/r/team-42"));
    assert_eq!(room.status(), 200);
    assert_eq!(room.into_string().expect("body"), root);
}

#[test]
fn a_room_url_with_a_bad_name_is_refused_with_400() {
    let server = Server::start();
    for path in [
        "/r/a%20b",
        "/r/caf%C3%A9",
        &format!("/r/{}", "x".repeat(65)),
    ] {
        assert_eq!(get(&server.http_url(path)).status(), 400, "{path}");
    }
}

#[test]
fn frontend_assets_are_served_from_disk_with_their_types() {
    let server = Server::start();
    let script = get(&server.http_url("/main.js"));
    assert_eq!(script.status(), 200);
    assert!(
        script.content_type().contains("javascript"),
        "{}",
        script.content_type()
    );
    let style = get(&server.http_url("/style.css"));
    assert_eq!(style.content_type(), "text/css");
}

#[test]
fn unknown_paths_and_paths_outside_the_frontend_are_404() {
    let server = Server::start();
    for path in ["/nope.js", "/../Cargo.toml", "/%2e%2e/Cargo.toml"] {
        assert_eq!(get(&server.http_url(path)).status(), 404, "{path}");
    }
}

#[test]
fn healthz_answers_200_with_a_small_json_body() {
    let server = Server::start();
    let response = get(&server.http_url("/healthz"));
    assert_eq!(response.status(), 200);
    let body: serde_json::Value = response.into_json().expect("JSON");
    assert_eq!(body["status"], "ok");
    assert_eq!(body["connections"], 0);
}

#[test]
fn healthz_is_answered_by_a_probe_that_joined_a_room() {
    let server = Server::start();
    let body: serde_json::Value = get(&server.http_url("/healthz")).into_json().expect("JSON");
    let probe_ms = body["probe_ms"].as_f64().expect("the probe's time");
    assert!(probe_ms > 0.0, "{body}");
    // The probe's room and connection are not the clients' own.
    assert_eq!(
        (body["rooms"].as_u64(), body["connections"].as_u64()),
        (Some(0), Some(0))
    );
}

#[tokio::test]
async fn healthz_counts_connections_and_rooms() {
    let server = Server::start();
    let mut alice = server.join("one").await;
    let _bob = server.join("two").await;
    alice.wait_for_count(1).await;
    let url = server.http_url("/healthz");
    let body: serde_json::Value = tokio::task::spawn_blocking(move || get(&url).into_json())
        .await
        .expect("join")
        .expect("JSON");
    assert_eq!(
        (body["connections"].as_u64(), body["rooms"].as_u64()),
        (Some(2), Some(2))
    );
}

#[test]
fn a_bad_option_stops_start_up_with_one_line_naming_it() {
    let (code, stderr) = run_binary(&["--heartbeat-interval", "10s", "--client-timeout", "2s"]);
    assert_eq!(code, Some(2));
    assert!(stderr.contains("--client-timeout"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn an_unparsable_value_names_the_option() {
    let (code, stderr) = run_binary(&["--bind", "not-an-address"]);
    assert_eq!(code, Some(2));
    assert!(stderr.contains("--bind"), "{stderr}");
}

#[test]
fn a_missing_frontend_directory_is_named_at_start_up() {
    let (code, stderr) = run_binary(&["--frontend-dir", "/nonexistent/livecanvas-ui"]);
    assert_eq!(code, Some(2));
    assert!(stderr.contains("/nonexistent/livecanvas-ui"), "{stderr}");
}

#[test]
fn a_port_in_use_is_a_clear_error_not_a_panic() {
    let server = Server::start();
    let bind = server.addr.to_string();
    let frontend = common::frontend_dir();
    let (code, stderr) = run_binary(&["--bind", &bind, "--frontend-dir", &frontend]);
    assert_eq!(code, Some(1));
    assert!(stderr.contains(&bind), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}
