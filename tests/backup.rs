//! `livecanvas backup DIR` while the server runs and people draw: the copy is consistent (every
//! room as it stood at one moment) and `--data-dir DIR` serves the same pictures, pixel for pixel.

mod common;

use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{draw_at, http_get, Client, Image, Server, EVENT_DEADLINE};
use serde_json::json;

/// Runs `livecanvas ARGS backup DIR` (ARGS: the server's own settings): exit code and output.
fn backup(dir: &Path, args: &[String]) -> (Option<i32>, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_livecanvas"))
        .args(args)
        .arg("backup")
        .arg(dir)
        .env_remove("LIVECANVAS_DATA_DIR")
        .output()
        .expect("livecanvas backup runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.code(), text)
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|arg| arg.to_string()).collect()
}

async fn picture(server: &Server, room: &str) -> (u16, Vec<u8>) {
    let url = server.http_url(&format!(
        "/api/rooms/{room}/canvas.png?background=transparent"
    ));
    let (status, _, body) = tokio::task::spawn_blocking(move || http_get(&url))
        .await
        .expect("a blocking GET");
    (status, body)
}

/// Most strokes drawn in the busy room (rows 8 px apart fit the canvas).
const BUSY_STROKES: u32 = 100;

/// A stroke `n` of the busy room: a short line in a row of its own.
fn numbered_stroke(n: u32) -> serde_json::Value {
    let y = 20.0 + f64::from(n) * 8.0;
    json!({"type": "draw", "color": "#cc0000", "startX": 100.0, "startY": y,
           "endX": 300.0, "endY": y, "size": 4, "tool": "pen"})
}

fn shows_stroke(image: &Image, n: u32) -> bool {
    let y = 20 + n * 8;
    image.pixel(200, y)[3] == 255
}

#[tokio::test]
async fn a_backup_taken_mid_drawing_serves_the_same_pictures() {
    let data = common::data_dir();
    let data_path = data.path().to_str().expect("a UTF-8 path").to_owned();
    let server = Server::start_with(&["--data-dir", &data_path, "--metrics-bind", "127.0.0.1:0"]);
    let metrics = server
        .metrics_addr
        .expect("the operations listener")
        .to_string();

    // A finished picture in one room...
    let mut drawer = server.join("finished").await;
    let mut watcher = server.join("finished").await;
    for i in 0..20 {
        drawer
            .send_json(draw_at(50.0 + f64::from(i) * 30.0, 400.0))
            .await;
        watcher.next_of_type("draw").await;
    }
    drop((drawer, watcher));
    let (before_status, before) = picture(&server, "finished").await;
    assert_eq!(before_status, 200);
    // ...and one where drawing goes on during the backup: a stroke every few milliseconds (the
    // pace only spreads the strokes around the backup), until the backup is done.
    let busy_url = server.ws_url("busy");
    let stop = Arc::new(AtomicBool::new(false));
    let (progress, mut seen) = tokio::sync::watch::channel(0u32);
    let busy = tokio::spawn({
        let stop = stop.clone();
        async move {
            let mut drawer = Client::join(&busy_url).await;
            let mut watcher = Client::join(&busy_url).await;
            let mut drawn = 0;
            while drawn < BUSY_STROKES && !stop.load(Ordering::SeqCst) {
                drawer.send_json(numbered_stroke(drawn)).await;
                watcher.next_of_type("draw").await;
                drawn += 1;
                let _ = progress.send(drawn);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            drawn
        }
    });
    seen.wait_for(|&drawn| drawn >= 5)
        .await
        .expect("the busy room is being drawn in");
    let target = common::data_dir();
    let copy = target.path().join("copy");
    let (code, output) = tokio::task::spawn_blocking({
        let copy = copy.clone();
        let (data_path, metrics) = (data_path.clone(), metrics.clone());
        move || {
            backup(
                &copy,
                &strings(&["--data-dir", &data_path, "--metrics-bind", &metrics]),
            )
        }
    })
    .await
    .expect("the backup ran");
    assert_eq!(code, Some(0), "{output}");
    assert!(
        output.contains("backed up by the running server"),
        "{output}"
    );
    // A few more strokes after the backup: they must not be in it.
    let at_the_end = *seen.borrow();
    seen.wait_for(|&drawn| drawn >= at_the_end + 3)
        .await
        .expect("the busy room's drawing goes on after the backup");
    stop.store(true, Ordering::SeqCst);
    let drawn = busy.await.expect("the busy room's drawing went on");
    drop(server);

    let restored = Server::start_with(&["--data-dir", copy.to_str().expect("a UTF-8 path")]);
    let (status, after) = picture(&restored, "finished").await;
    assert_eq!(status, 200);
    assert!(
        Image::decode(&after) == Image::decode(&before),
        "the restored picture differs from the served one"
    );
    // The busy room is as it stood at one moment: its first strokes, and none after a gap; the
    // strokes drawn before the backup began are in, those drawn after it ended are not.
    let (status, busy) = picture(&restored, "busy").await;
    assert_eq!(status, 200, "the busy room is in the copy");
    let image = Image::decode(&busy);
    let shown = (0..BUSY_STROKES)
        .take_while(|&n| shows_stroke(&image, n))
        .count() as u32;
    assert!(
        (shown..BUSY_STROKES).all(|n| !shows_stroke(&image, n)),
        "the copy has stroke {shown} missing but a later one: not one moment"
    );
    assert!(
        shown >= 5,
        "strokes drawn before the backup are missing ({shown})"
    );
    assert!(
        shown < drawn,
        "drawing went on after the backup, yet the copy has all {drawn} strokes: not taken \
         mid-drawing"
    );
    eprintln!("the backup caught the busy room after {shown} of {drawn} strokes");
}

#[tokio::test]
async fn a_backup_without_a_running_server_copies_the_database_itself() {
    let data = common::data_dir();
    let data_path = data.path().to_str().expect("a UTF-8 path").to_owned();
    let server = Server::start_with(&["--data-dir", &data_path]);
    let mut drawer = server.join("offline").await;
    let mut watcher = server.join("offline").await;
    drawer.send_json(draw_at(500.0, 500.0)).await;
    watcher.next_of_type("draw").await;
    drop((drawer, watcher));
    let (_, before) = picture(&server, "offline").await;
    let mut server = server;
    server.terminate();
    server
        .wait_for_exit(EVENT_DEADLINE)
        .expect("the server stops");

    let target = common::data_dir();
    let (code, output) = backup(target.path(), &strings(&["--data-dir", &data_path]));
    assert_eq!(code, Some(0), "{output}");
    let restored = Server::start_with(&["--data-dir", target.path().to_str().expect("UTF-8")]);
    let (status, after) = picture(&restored, "offline").await;
    assert_eq!(status, 200);
    assert!(Image::decode(&after) == Image::decode(&before));
}

#[tokio::test]
async fn a_backup_never_overwrites_a_database() {
    let data = common::data_dir();
    let data_path = data.path().to_str().expect("a UTF-8 path").to_owned();
    let server = Server::start_with(&["--data-dir", &data_path, "--metrics-bind", "127.0.0.1:0"]);
    let metrics = server
        .metrics_addr
        .expect("the operations listener")
        .to_string();
    let target = common::data_dir();
    let args = strings(&["--data-dir", &data_path, "--metrics-bind", &metrics]);
    let path = target.path().to_path_buf();
    let twice = tokio::task::spawn_blocking(move || {
        let first = backup(&path, &args);
        let copy = std::fs::read(path.join("livecanvas.db")).expect("the copy");
        let second = backup(&path, &args);
        let after = std::fs::read(path.join("livecanvas.db")).expect("the copy");
        (first, second, copy == after)
    });
    let (first, (code, output), unchanged) = twice.await.expect("ran");
    assert_eq!(first.0, Some(0), "{}", first.1);
    assert_eq!(code, Some(1), "{output}");
    assert!(output.contains("exists already"), "{output}");
    assert!(unchanged, "the first copy was overwritten");
    drop(server);
}

#[tokio::test]
async fn a_running_server_without_an_operations_listener_is_named_as_the_reason() {
    let data = common::data_dir();
    let data_path = data.path().to_str().expect("a UTF-8 path").to_owned();
    let _server = Server::start_with(&["--data-dir", &data_path]);
    let target = common::data_dir();
    let path = target.path().to_path_buf();
    let (code, output) =
        tokio::task::spawn_blocking(move || backup(&path, &strings(&["--data-dir", &data_path])))
            .await
            .expect("ran");
    assert_eq!(code, Some(1), "{output}");
    assert!(output.contains("--metrics-bind"), "{output}");
}

#[test]
fn the_backup_route_refuses_a_relative_directory() {
    let server = Server::start_with(&["--metrics-bind", "127.0.0.1:0"]);
    let url = format!("http://{}/backup", server.metrics_addr.expect("listener"));
    let answer = match ureq::post(&url).send_json(json!({"dir": "relative/dir"})) {
        Ok(response) => response.status(),
        Err(ureq::Error::Status(code, _)) => code,
        Err(err) => panic!("{err}"),
    };
    assert_eq!(answer, 400);
}
