//! Several livecanvas processes sharing rooms through one real `redis-server` (`--redis-url`):
//! one order of strokes per room on every node, room-wide counts, the picture kept in Redis, and
//! what happens when a node or Redis dies.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::{draw_at, http_get, wait_for_status, Client, Image, Redis, Server};
use serde_json::Value;

/// How long the state of a node (ready or not) may take to follow Redis's.
const RECOVERY_DEADLINE: Duration = Duration::from_secs(20);

/// A node of the cluster at `redis`, with a short heartbeat so that a dead node's members leave
/// the count within seconds; ready (connected to Redis) when returned, as a load balancer's
/// health check would wait for.
fn node(redis: &Redis, name: &str, extra: &[&str]) -> Server {
    let server = unready_node(redis, name, extra);
    wait_for_status(&server.http_url("/readyz"), 200, RECOVERY_DEADLINE);
    server
}

fn unready_node(redis: &Redis, name: &str, extra: &[&str]) -> Server {
    let url = redis.url();
    let mut args = vec!["--redis-url", &url, "--node-id", name];
    if !extra.contains(&"--client-timeout") {
        args.extend(["--heartbeat-interval", "1s", "--client-timeout", "3s"]);
    }
    args.extend_from_slice(extra);
    Server::start_with(&args)
}

/// The next `n` draws this client gets, as their startX (each test draws at distinct x).
async fn next_draws(client: &mut Client, n: usize) -> Vec<i64> {
    let mut xs = Vec::new();
    while xs.len() < n {
        let message = client.next_json().await;
        match message["type"].as_str() {
            Some("draw") => xs.push(start_x(&message)),
            Some("batch") => {
                for inner in message["messages"]
                    .as_array()
                    .expect("a batch has messages")
                {
                    if inner["type"] == "draw" {
                        xs.push(start_x(inner));
                    }
                }
            }
            _ => {}
        }
    }
    xs
}

fn start_x(draw: &Value) -> i64 {
    draw["startX"].as_f64().expect("a draw has startX") as i64
}

/// A newcomer's picture: whether it starts from a checkpoint, and the draws after it, up to the
/// draw at `last_x`.
async fn picture_until(client: &mut Client, last_x: i64) -> Vec<i64> {
    let first = client.next_event().await;
    assert!(
        first["type"] == "canvasEmpty" || first["type"] == "canvasState",
        "a newcomer first gets its picture: {first}"
    );
    let mut xs = Vec::new();
    loop {
        let draw = client.next_of_type("draw").await;
        xs.push(start_x(&draw));
        if start_x(&draw) == last_x {
            return xs;
        }
    }
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f)
        .await
        .expect("the blocking task")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strokes_cross_nodes_in_one_order_and_never_come_back_to_their_sender() {
    let redis = Redis::start();
    let (n1, n2) = (node(&redis, "n1", &[]), node(&redis, "n2", &[]));
    let mut a = n1.join("order").await;
    let mut b = n2.join("order").await;
    let mut watch1 = n1.join("order").await;
    let mut watch2 = n2.join("order").await;
    for client in [&mut a, &mut b, &mut watch1, &mut watch2] {
        client.wait_for_count(4).await;
    }
    // Both draw at once, interleaved: Redis decides one order, every node follows it.
    for i in 0..20 {
        a.send_json(draw_at(f64::from(100 + i), 10.0)).await;
        b.send_json(draw_at(f64::from(500 + i), 10.0)).await;
    }
    let seen1 = next_draws(&mut watch1, 40).await;
    let seen2 = next_draws(&mut watch2, 40).await;
    assert_eq!(
        seen1, seen2,
        "both nodes deliver the room's strokes in one order"
    );
    let of_a: Vec<i64> = seen1.iter().copied().filter(|x| *x < 500).collect();
    assert_eq!(
        of_a,
        (100..120).collect::<Vec<_>>(),
        "a's strokes keep a's order"
    );
    // Each sender gets exactly the other's 20 strokes, never one of its own.
    assert!(next_draws(&mut a, 20).await.iter().all(|x| *x >= 500));
    assert!(next_draws(&mut b, 20).await.iter().all(|x| *x < 500));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_count_is_room_wide_and_follows_leavers_on_any_node() {
    let redis = Redis::start();
    let (n1, n2) = (node(&redis, "n1", &[]), node(&redis, "n2", &[]));
    let mut a = n1.join("count").await;
    a.wait_for_count(1).await;
    let mut b = n2.join("count").await;
    let c = n2.join("count").await;
    a.wait_for_count(3).await;
    b.wait_for_count(3).await;
    drop(c);
    a.wait_for_count(2).await;
    b.wait_for_count(2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newcomer_on_a_third_node_gets_both_nodes_strokes_and_every_node_serves_one_png() {
    let redis = Redis::start();
    let (n1, n2, n3) = (
        node(&redis, "n1", &[]),
        node(&redis, "n2", &[]),
        node(&redis, "n3", &[]),
    );
    let mut a = n1.join("picture").await;
    let mut b = n2.join("picture").await;
    a.wait_for_count(2).await;
    b.wait_for_count(2).await;
    a.send_json(draw_at(100.0, 100.0)).await;
    assert_eq!(next_draws(&mut b, 1).await, [100]);
    b.send_json(draw_at(200.0, 200.0)).await;
    assert_eq!(next_draws(&mut a, 1).await, [200]);
    // n3 opens the room from Redis: its picture holds both nodes' strokes.
    let mut newcomer = n3.join("picture").await;
    let state = newcomer.next_of_type("canvasState").await;
    let picture = Image::from_data_url(state["data"].as_str().expect("a data URL"));
    assert!(
        picture.pixel(105, 100)[3] > 0,
        "n1's stroke is in the picture"
    );
    assert!(
        picture.pixel(205, 200)[3] > 0,
        "n2's stroke is in the picture"
    );
    let pngs: Vec<Image> = blocking(move || {
        [&n1, &n2, &n3]
            .iter()
            .map(|n| {
                let (status, _, body) = http_get(&n.http_url("/api/rooms/picture/canvas.png"));
                assert_eq!(status, 200);
                Image::decode(&body)
            })
            .collect()
    })
    .await;
    assert!(pngs[0].pixel(105, 100)[3] > 0 && pngs[0].pixel(205, 200)[3] > 0);
    assert!(
        pngs.windows(2).all(|w| w[0] == w[1]),
        "every node serves the same pixels"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_node_leaves_the_others_relaying_and_its_strokes_in_the_room() {
    let redis = Redis::start();
    let mut n1 = node(&redis, "n1", &[]);
    let n2 = node(&redis, "n2", &[]);
    let mut a = n1.join("crash").await;
    let mut b = n2.join("crash").await;
    let mut c = n2.join("crash").await;
    b.wait_for_count(3).await;
    for i in 0..10 {
        a.send_json(draw_at(f64::from(100 + i), 50.0)).await;
    }
    // What n1 relayed before it died: b saw it.
    assert_eq!(next_draws(&mut b, 10).await, (100..110).collect::<Vec<_>>());
    n1.kill_now();
    // Its member drops out of the count without a word from it (within the client timeout).
    b.wait_for_count(2).await;
    // The survivors keep drawing together.
    b.send_json(draw_at(300.0, 50.0)).await;
    assert_eq!(next_draws(&mut c, 11).await.last(), Some(&300));
    // a reconnects (through the load balancer) to n2 and gets the whole picture.
    let mut back = n2.join("crash").await;
    let picture = picture_until(&mut back, 300).await;
    let mut expected: Vec<i64> = (100..110).collect();
    expected.push(300);
    assert_eq!(picture, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_restart_makes_nodes_unready_then_they_recover_with_the_picture_intact() {
    let mut redis = Redis::start();
    let n1 = node(&redis, "n1", &[]);
    let n2 = node(&redis, "n2", &[]);
    let ready1 = n1.http_url("/readyz");
    let ready = ready1.clone();
    blocking(move || wait_for_status(&ready, 200, RECOVERY_DEADLINE)).await;
    let mut a = n1.join("outage").await;
    let mut b = n2.join("outage").await;
    a.wait_for_count(2).await;
    b.wait_for_count(2).await;
    a.send_json(draw_at(100.0, 60.0)).await;
    assert_eq!(next_draws(&mut b, 1).await, [100]);

    redis.kill();
    // Members are told, joins are refused with 1013, readiness says so, nothing crashes.
    let notice = a.next_of_type("error").await;
    assert_eq!(notice["code"], "storage_unavailable", "{notice}");
    let ready = ready1.clone();
    blocking(move || wait_for_status(&ready, 503, RECOVERY_DEADLINE)).await;
    let Err(close) = Client::join_or_close(&n1.ws_url("outage")).await else {
        panic!("a join while Redis is gone was welcomed");
    };
    assert_eq!(u16::from(close.code), 1013, "{close:?}");
    a.send_json(draw_at(150.0, 60.0)).await;
    let refusal = a.next_of_type("error").await;
    assert_eq!(
        refusal["code"], "storage_unavailable",
        "a stroke is refused aloud: {refusal}"
    );

    redis.restart();
    let ready = ready1.clone();
    blocking(move || wait_for_status(&ready, 200, RECOVERY_DEADLINE)).await;
    let ready2 = n2.http_url("/readyz");
    blocking(move || wait_for_status(&ready2, 200, RECOVERY_DEADLINE)).await;
    // Drawing works again across nodes, and the room still holds what was drawn before.
    a.send_json(draw_at(200.0, 60.0)).await;
    assert_eq!(next_draws(&mut b, 1).await, [200]);
    let mut newcomer = n2.join("outage").await;
    assert_eq!(picture_until(&mut newcomer, 200).await, [100, 200]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_started_before_redis_is_unready_until_redis_comes() {
    let mut redis = Redis::start();
    redis.kill();
    let n1 = unready_node(&redis, "n1", &[]);
    let ready = n1.http_url("/readyz");
    assert_eq!(common::http_status(&ready), 503);
    // Alive (liveness does not depend on Redis), and says what it lacks.
    let health = n1.health();
    assert_eq!(health["node"], "n1");
    assert_eq!(health["redis"], "unreachable");
    redis.restart();
    blocking(move || wait_for_status(&ready, 200, RECOVERY_DEADLINE)).await;
    let mut a = n1.join("late").await;
    a.wait_for_count(1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batched_and_unbatched_members_on_different_nodes_get_the_same_strokes() {
    let redis = Redis::start();
    let (n1, n2) = (node(&redis, "n1", &[]), node(&redis, "n2", &[]));
    let mut plain = n1.join("mixed").await;
    let mut batched = Client::join(&format!("{}?batch=1", n2.ws_url("mixed"))).await;
    let mut sender = n2.join("mixed").await;
    sender.wait_for_count(3).await;
    for i in 0..30 {
        sender.send_json(draw_at(f64::from(100 + i), 70.0)).await;
    }
    let expected: Vec<i64> = (100..130).collect();
    assert_eq!(next_draws(&mut plain, 30).await, expected);
    assert_eq!(next_draws(&mut batched, 30).await, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_client_of_a_cluster_node_is_answered_and_nobody_else_is_touched() {
    let redis = Redis::start();
    let (n1, n2) = (node(&redis, "n1", &[]), node(&redis, "n2", &[]));
    let mut rude = n1.join("hostile").await;
    let mut other = n2.join("hostile").await;
    other.wait_for_count(2).await;
    rude.send_text("{not json").await;
    let answer = rude.next_of_type("error").await;
    assert_eq!(answer["code"], "invalid_json", "{answer}");
    rude.send_json(serde_json::json!({"type":"draw","startX":-5e9}))
        .await;
    assert_eq!(rude.next_of_type("error").await["type"], "error");
    rude.send_text(&"x".repeat(70 * 1024)).await;
    assert_eq!(u16::from(rude.expect_close().await.code), 1009);
    // The other node's member saw none of it and still draws with the room.
    let mut newcomer = n1.join("hostile").await;
    other.send_json(draw_at(400.0, 80.0)).await;
    assert_eq!(picture_until(&mut newcomer, 400).await, [400]);
    let xs: HashSet<i64> = next_draws(&mut other, 0).await.into_iter().collect();
    assert!(xs.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkpoint_trims_the_rooms_stream_and_newcomers_still_get_everything() {
    let redis = Redis::start();
    let few = ["--checkpoint-ops", "5"];
    let (n1, n2) = (node(&redis, "n1", &few), node(&redis, "n2", &few));
    let mut a = n1.join("trim").await;
    let mut b = n2.join("trim").await;
    b.wait_for_count(2).await;
    for i in 0..12 {
        a.send_json(draw_at(f64::from(100 + 20 * i), 300.0)).await;
    }
    assert_eq!(next_draws(&mut b, 12).await.len(), 12);
    // One node stored a checkpoint and trimmed what it covers (Redis memory stays bounded).
    let stream = "livecanvas:{trim}:ops";
    let deadline = std::time::Instant::now() + RECOVERY_DEADLINE;
    loop {
        let length: u64 = redis
            .command(&["XLEN", stream])
            .trim_start_matches(':')
            .trim()
            .parse()
            .expect("XLEN");
        if length < 5 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{stream} still holds {length} operations"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let cp_seq = redis.command(&["HGET", "livecanvas:{trim}:meta", "cp_seq"]);
    assert!(
        cp_seq.trim().parse::<u64>().expect("a checkpoint number") >= 5,
        "{cp_seq}"
    );
    // A newcomer on a node that opens the room afresh gets every stroke.
    let n3 = node(&redis, "n3", &few);
    let mut newcomer = n3.join("trim").await;
    let state = newcomer.next_of_type("canvasState").await;
    let picture = Image::from_data_url(state["data"].as_str().expect("a data URL"));
    for i in 0..12 {
        assert!(
            picture.pixel(105 + 20 * i, 300)[3] > 0,
            "stroke {i} is in the picture"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_room_outlives_every_node_that_served_it() {
    let redis = Redis::start();
    let (mut n1, mut n2) = (node(&redis, "n1", &[]), node(&redis, "n2", &[]));
    let mut a = n1.join("lasting").await;
    let mut b = n2.join("lasting").await;
    b.wait_for_count(2).await;
    a.send_json(draw_at(100.0, 400.0)).await;
    b.send_json(draw_at(300.0, 400.0)).await;
    assert_eq!(next_draws(&mut a, 1).await, [300]);
    assert_eq!(next_draws(&mut b, 1).await, [100]);
    n1.kill_now();
    n2.kill_now();
    let n3 = node(&redis, "n3", &[]);
    let mut newcomer = n3.join("lasting").await;
    let state = newcomer.next_of_type("canvasState").await;
    let picture = Image::from_data_url(state["data"].as_str().expect("a data URL"));
    assert!(picture.pixel(105, 400)[3] > 0 && picture.pixel(305, 400)[3] > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_stopped_for_a_rolling_restart_hands_its_members_to_another_without_a_lost_stroke() {
    let redis = Redis::start();
    // No idle checkpoint: however long the stop takes, the newcomer's picture is the blank
    // canvas and then every stroke, each of which must be there.
    let quiet = ["--checkpoint-idle", "1h"];
    let (mut n1, n2) = (node(&redis, "n1", &quiet), node(&redis, "n2", &quiet));
    let mut a = n1.join("rolling").await;
    let mut b = n2.join("rolling").await;
    b.wait_for_count(2).await;
    for i in 0..20 {
        a.send_json(draw_at(f64::from(100 + i), 500.0)).await;
    }
    n1.terminate();
    assert_eq!(
        u16::from(a.expect_close().await.code),
        1001,
        "n1 says it is going away"
    );
    assert!(n1.wait_for_exit(RECOVERY_DEADLINE).is_some(), "n1 stops");
    // Everything a sent before the stop was taken, even what was still on the wire when the
    // stop began: b saw it all, and so does a on reconnecting.
    assert_eq!(next_draws(&mut b, 20).await, (100..120).collect::<Vec<_>>());
    // n1 took its member out of the count as it stopped.
    b.wait_for_count(1).await;
    let mut back = n2.join("rolling").await;
    assert_eq!(
        picture_until(&mut back, 119).await,
        (100..120).collect::<Vec<_>>()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crowds_come_draw_and_go_across_two_long_lived_nodes_and_the_next_newcomer_is_served() {
    let redis = Redis::start();
    let (n1, n2) = (node(&redis, "n1", &[]), node(&redis, "n2", &[]));
    let nodes = [&n1, &n2];
    for round in 0..6 {
        let mut crowd = Vec::new();
        for i in 0..12 {
            crowd.push(nodes[i % 2].join("crowd").await);
        }
        for client in &mut crowd {
            client.wait_for_count(12).await;
        }
        for (i, client) in crowd.iter_mut().enumerate() {
            client
                .send_json(draw_at((100 * round + 5 * i) as f64, 600.0))
                .await;
        }
        // Everyone gets the other eleven strokes of the round.
        for client in &mut crowd {
            assert_eq!(next_draws(client, 11).await.len(), 11);
        }
        drop(crowd);
        for node in nodes {
            let mut newcomer = node.join("crowd").await;
            newcomer.wait_for_count(1).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_password_in_the_url_is_used_and_a_wrong_one_keeps_the_node_unready() {
    let redis = Redis::start_with(&["--requirepass", "s3cret"]);
    let good = format!("redis://:s3cret@127.0.0.1:{}/0", redis.port);
    let bad = format!("redis://:wrong@127.0.0.1:{}/0", redis.port);
    let n1 = Server::start_with(&["--redis-url", &good]);
    let n2 = Server::start_with(&["--redis-url", &bad]);
    let (ready1, ready2) = (n1.http_url("/readyz"), n2.http_url("/readyz"));
    blocking(move || wait_for_status(&ready1, 200, RECOVERY_DEADLINE)).await;
    let (status, _, body) = blocking(move || http_get(&ready2)).await;
    assert_eq!(status, 503);
    let body = String::from_utf8_lossy(&body).into_owned();
    assert!(body.contains("Redis"), "the reason names Redis: {body}");
    assert!(
        !body.contains("wrong"),
        "the password is never shown: {body}"
    );
    let mut a = n1.join("secret").await;
    a.wait_for_count(1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rediss_url_reaches_redis_over_tls() {
    let certified =
        rcgen::generate_simple_self_signed(vec!["localhost".into()]).expect("a certificate");
    let certs = tempfile::tempdir().expect("a directory for the certificate");
    let (cert, key) = (certs.path().join("cert.pem"), certs.path().join("key.pem"));
    std::fs::write(&cert, certified.cert.pem()).expect("write the certificate");
    std::fs::write(&key, certified.signing_key.serialize_pem()).expect("write the key");
    let (cert, key) = (cert.display().to_string(), key.display().to_string());
    let tls_port = common::free_port().to_string();
    // The plain port stays open for the test's own readiness check; the node uses TLS only.
    let redis = Redis::start_with(&[
        "--tls-port",
        &tls_port,
        "--tls-cert-file",
        &cert,
        "--tls-key-file",
        &key,
        "--tls-auth-clients",
        "no",
    ]);
    let url = format!("rediss://localhost:{tls_port}/0");
    // The node trusts the test's certificate as a root (rustls-native-certs reads SSL_CERT_FILE).
    let n1 = Server::start_with_env(&["--redis-url", &url], &[("SSL_CERT_FILE", &cert)]);
    let ready = n1.http_url("/readyz");
    blocking(move || wait_for_status(&ready, 200, RECOVERY_DEADLINE)).await;
    let mut a = n1.join("tls").await;
    a.wait_for_count(1).await;
    let rooms = redis.command(&["SISMEMBER", "livecanvas:rooms", "tls"]);
    assert_eq!(
        rooms.trim(),
        ":1",
        "the room was created through the TLS connection"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_that_hangs_without_closing_is_noticed_and_nothing_waits_for_ever() {
    let redis = Redis::start();
    // Clients that stop reading while the test waits must outlive the wait.
    let patient = ["--client-timeout", "60s"];
    let (n1, n2) = (node(&redis, "n1", &patient), node(&redis, "n2", &patient));
    let mut a = n1.join("frozen").await;
    let mut b = n2.join("frozen").await;
    b.wait_for_count(2).await;
    redis.freeze();
    // The node's pings go unanswered: it says so, and refuses what it cannot keep.
    let notice = a.next_of_type("error").await;
    assert_eq!(notice["code"], "storage_unavailable", "{notice}");
    let ready = n1.http_url("/readyz");
    blocking(move || wait_for_status(&ready, 503, RECOVERY_DEADLINE)).await;
    // Liveness does not hang on Redis.
    let health = blocking({
        let url = n1.http_url("/healthz");
        move || common::http_status(&url)
    })
    .await;
    assert_eq!(health, 200);
    redis.thaw();
    let ready = n1.http_url("/readyz");
    blocking(move || wait_for_status(&ready, 200, RECOVERY_DEADLINE)).await;
    let ready = n2.http_url("/readyz");
    blocking(move || wait_for_status(&ready, 200, RECOVERY_DEADLINE)).await;
    a.send_json(draw_at(100.0, 90.0)).await;
    assert_eq!(next_draws(&mut b, 1).await, [100]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_room_closing_and_opening_again_on_a_node_keeps_hearing_the_other_nodes() {
    let redis = Redis::start();
    let (n1, n2) = (node(&redis, "n1", &[]), node(&redis, "n2", &[]));
    let mut b = n2.join("flicker").await;
    for i in 0..15 {
        // Each visit opens the room on n1 again (its last member left the time before).
        let mut a = n1.join("flicker").await;
        a.wait_for_count(2).await;
        b.send_json(draw_at(f64::from(100 + i), 95.0)).await;
        assert_eq!(
            next_draws(&mut a, 1).await,
            [i64::from(100 + i)],
            "visit {i} hears n2"
        );
        drop(a);
        b.wait_for_count(1).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_cannot_hand_strokes_to_redis_fast_enough_refuses_more_aloud_instead_of_queueing(
) {
    let redis = Redis::start();
    let fast = [
        "--client-timeout",
        "60s",
        "--draws-per-second",
        "100000",
        "--draw-burst",
        "100000",
        "--flood-close-after",
        "100000",
        // The bound, lowered (8,192 by default) so that the node reaches it long before its
        // pings notice the frozen Redis (3 s), however slow the machine.
        "--redis-max-in-flight",
        "16",
    ];
    let n1 = node(&redis, "n1", &fast);
    let mut a = n1.join("saturated").await;
    a.wait_for_count(1).await;
    // Redis stops answering (without closing): what the node reads piles up on its way there,
    // up to its bound, and then is refused.
    redis.freeze();
    for i in 0..100 {
        a.send_json(draw_at(f64::from(i % 1500), 100.0)).await;
    }
    let refusal = a.next_of_type("error").await;
    assert_eq!(refusal["code"], "storage_unavailable", "{refusal}");
    let message = refusal["message"].as_str().expect("a message");
    assert!(message.contains("as fast as it can"), "{message}");
    redis.thaw();
    let ready = n1.http_url("/readyz");
    blocking(move || wait_for_status(&ready, 200, RECOVERY_DEADLINE)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rooms_size_in_redis_is_bounded_by_the_room_size_limit_on_every_node() {
    let redis = Redis::start();
    let small = ["--max-room-bytes", "2000", "--checkpoint-idle", "1h"];
    let (n1, n2) = (node(&redis, "n1", &small), node(&redis, "n2", &small));
    let mut a = n1.join("bounded").await;
    let mut b = n2.join("bounded").await;
    b.wait_for_count(2).await;
    let mut refused = None;
    for i in 0..100 {
        a.send_json(draw_at(f64::from(10 * i), 120.0)).await;
        // Each stroke either reaches b on the other node or is refused to a.
        tokio::select! {
            draw = b.next_of_type("draw") => assert_eq!(start_x(&draw), i64::from(10 * i)),
            error = a.next_of_type("error") => { refused = Some((i, error)); break; }
        }
    }
    let (at, error) = refused.expect("the room filled up");
    assert!(at > 3, "refused only at stroke {at}");
    assert_eq!(error["code"], "room_full", "{error}");
    // The other node refuses too: it counts the same operations.
    b.send_json(draw_at(5.0, 130.0)).await;
    assert_eq!(b.next_of_type("error").await["code"], "room_full");
    let length = redis.command(&["XLEN", "livecanvas:{bounded}:ops"]);
    let length: u64 = length.trim_start_matches(':').trim().parse().expect("XLEN");
    assert_eq!(
        length,
        u64::try_from(at).expect("a count"),
        "Redis holds what was taken, no more"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_that_answers_but_refuses_writes_makes_the_node_unready_until_it_takes_them_again()
{
    let redis = Redis::start();
    let patient = ["--client-timeout", "60s"];
    let n1 = node(&redis, "n1", &patient);
    let mut a = n1.join("full").await;
    a.wait_for_count(1).await;
    // Out of memory under `noeviction`: pings still answer, every write is refused.
    assert!(redis
        .command(&["CONFIG", "SET", "maxmemory-policy", "noeviction"])
        .starts_with("+OK"));
    assert!(redis
        .command(&["CONFIG", "SET", "maxmemory", "1"])
        .starts_with("+OK"));
    let notice = a.next_of_type("error").await;
    assert_eq!(notice["code"], "storage_unavailable", "{notice}");
    let ready = n1.http_url("/readyz");
    let (status, _, body) = blocking(move || {
        wait_for_status(&ready, 503, RECOVERY_DEADLINE);
        http_get(&ready)
    })
    .await;
    assert_eq!(status, 503);
    let body = String::from_utf8_lossy(&body).into_owned();
    assert!(body.contains("refuses writes"), "{body}");
    assert!(redis
        .command(&["CONFIG", "SET", "maxmemory", "0"])
        .starts_with("+OK"));
    let ready = n1.http_url("/readyz");
    blocking(move || wait_for_status(&ready, 200, RECOVERY_DEADLINE)).await;
    let mut b = n1.join("full").await;
    b.wait_for_count(2).await;
    a.send_json(draw_at(100.0, 140.0)).await;
    assert_eq!(next_draws(&mut b, 1).await, [100]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_that_comes_back_without_the_rooms_last_strokes_makes_its_members_reload() {
    // No AOF: a restart loses everything, as a crash of Redis without persistence would.
    let mut redis = Redis::start_with(&["--appendonly", "no"]);
    let patient = ["--client-timeout", "60s"];
    let n1 = node(&redis, "n1", &patient);
    let mut a = n1.join("amnesia").await;
    let mut b = n1.join("amnesia").await;
    b.wait_for_count(2).await;
    a.send_json(draw_at(100.0, 150.0)).await;
    assert_eq!(next_draws(&mut b, 1).await, [100]);
    redis.kill();
    redis.restart();
    // The node cannot pretend its room matches Redis: its members reconnect and get the room as
    // Redis has it (blank).
    assert_eq!(u16::from(b.expect_close().await.code), 1012);
    let ready = n1.http_url("/readyz");
    blocking(move || wait_for_status(&ready, 200, RECOVERY_DEADLINE)).await;
    let mut attempts = 0;
    let mut again = loop {
        // The old room may still be on its way out: a join it refuses (1013) is tried again.
        attempts += 1;
        assert!(attempts <= 50, "the room never opened again");
        match Client::join_or_close(&n1.ws_url("amnesia")).await {
            Ok(client) => break client,
            Err(close) => assert_eq!(u16::from(close.code), 1013, "{close:?}"),
        }
    };
    assert_eq!(again.next_event().await["type"], "canvasEmpty");
}

// ---- undo across nodes ----

const ADA: &str = "ada-secret-0123456789abcdef";
const BOB: &str = "bob-secret-0123456789abcdef";

/// Joins as the browser with `secret` and reads the picture the node sends first.
async fn join_as(server: &Server, room: &str, secret: &str) -> Client {
    let mut client = Client::join(&format!("{}?author={secret}", server.ws_url(room))).await;
    let first = client.next_event().await;
    assert!(
        first["type"] == "canvasEmpty" || first["type"] == "canvasState",
        "{first}"
    );
    client
}

/// Stroke `id`: one red segment across y.
fn stroke_segment(id: &str, y: f64) -> Value {
    serde_json::json!({"type":"draw","strokeId":id,"color":"#ff0000","startX":100.0,"startY":y,
        "endX":700.0,"endY":y,"size":10,"tool":"pen"})
}

/// Whether the node's picture of `room` has red at (400, y), once the node has caught up: each
/// node applies what Redis relays in its own time, so this polls until `want` (or the deadline).
async fn node_shows(server: &Server, room: &str, y: u32, want: bool) -> bool {
    let url = server.http_url(&format!(
        "/api/rooms/{room}/canvas.png?background=transparent"
    ));
    let deadline = tokio::time::Instant::now() + common::EVENT_DEADLINE;
    loop {
        let url = url.clone();
        let (status, _, body) = blocking(move || http_get(&url)).await;
        let shows = status == 200 && Image::decode(&body).pixel(400, y) == [255, 0, 0, 255];
        if shows == want || tokio::time::Instant::now() >= deadline {
            return shows;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_undo_on_one_node_removes_the_stroke_on_every_node() {
    let redis = Redis::start();
    let (n1, n2) = (node(&redis, "n1", &[]), node(&redis, "n2", &[]));
    let mut ada = join_as(&n1, "undo", ADA).await;
    let mut bob = join_as(&n2, "undo", BOB).await;
    ada.wait_for_count(2).await;
    ada.send_json(stroke_segment("s1", 100.0)).await;
    ada.send_json(stroke_segment("s2", 200.0)).await;
    assert_eq!(bob.next_of_type("draw").await["strokeId"], "s1");
    assert_eq!(bob.next_of_type("draw").await["strokeId"], "s2");

    let error = {
        bob.send_json(serde_json::json!({"type":"undo","strokeId":"s1"}))
            .await;
        bob.next_of_type("error").await
    };
    assert_eq!(error["code"], "not_yours", "{error}");
    ada.send_json(serde_json::json!({"type":"undo","strokeId":"s1"}))
        .await;
    assert_eq!(
        bob.next_of_type("undo").await,
        serde_json::json!({"type":"undo","strokeId":"s1"})
    );
    for server in [&n1, &n2] {
        assert!(
            !node_shows(server, "undo", 100, false).await,
            "undone on every node"
        );
        assert!(node_shows(server, "undo", 200, true).await);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_author_can_undo_on_another_node_what_it_drew_on_the_first() {
    let redis = Redis::start();
    let (n1, n2) = (node(&redis, "n1", &[]), node(&redis, "n2", &[]));
    let mut watcher = join_as(&n2, "undo-moved", BOB).await;
    let mut ada = join_as(&n1, "undo-moved", ADA).await;
    watcher.wait_for_count(2).await;
    ada.send_json(stroke_segment("s1", 100.0)).await;
    assert_eq!(watcher.next_of_type("draw").await["strokeId"], "s1");
    drop(ada);
    // Ada's page comes back through the load balancer, to the other node.
    let mut ada = join_as(&n2, "undo-moved", ADA).await;
    ada.send_json(serde_json::json!({"type":"undo","strokeId":"s1"}))
        .await;
    assert_eq!(watcher.next_of_type("undo").await["strokeId"], "s1");
    assert!(!node_shows(&n1, "undo-moved", 100, false).await);
}
