//! What HTTP clients, caches and monitors expect: HEAD on every GET route, compressed text
//! (negotiated by Accept-Encoding), and caching that can never mix two versions of the frontend
//! (`Cache-Control: no-cache` with an ETag: a browser asks again each time, and gets a 304 while a
//! file is unchanged).

mod common;

use std::io::Read;

use common::Server;

/// `method url` with extra headers (blocking): the status, the headers asked for, and the body.
fn request(method: &str, url: &str, headers: &[(&str, &str)]) -> (u16, ureq::Response) {
    let mut request = ureq::request(method, url);
    for (name, value) in headers {
        request = request.set(name, value);
    }
    match request.call() {
        Ok(response) => (response.status(), response),
        Err(ureq::Error::Status(code, response)) => (code, response),
        Err(err) => panic!("{method} {url}: {err}"),
    }
}

fn body(response: ureq::Response) -> Vec<u8> {
    let mut bytes = Vec::new();
    response
        .into_reader()
        .read_to_end(&mut bytes)
        .expect("a body");
    bytes
}

fn frontend_file(name: &str) -> Vec<u8> {
    std::fs::read(format!("{}/{name}", common::frontend_dir())).expect("a frontend file")
}

// ---- HEAD ----

#[test]
fn every_get_route_answers_head_with_its_headers_and_no_body() {
    let server = Server::start();
    let url = server.http_url("/api/rooms");
    let created: serde_json::Value = ureq::post(&url)
        .call()
        .expect("201")
        .into_json()
        .expect("JSON");
    let room = created["room"].as_str().expect("a room");
    let token = created["viewToken"].as_str().expect("a token");
    let picture = format!("/api/rooms/{room}/canvas.png?token={token}");
    // The picture of a room nothing was drawn in is 404, on GET as on HEAD.
    for (path, status) in [
        ("/", 200),
        ("/r/team-42", 200),
        ("/main.js", 200),
        ("/style.css", 200),
        ("/healthz", 200),
        ("/readyz", 200),
        ("/metrics", 200),
        (picture.as_str(), 404),
    ] {
        let (get_status, get) = request("GET", &server.http_url(path), &[]);
        let get_type = get.content_type().to_owned();
        assert_eq!(get_status, status, "GET {path}");
        let (head_status, head) = request("HEAD", &server.http_url(path), &[]);
        assert_eq!(head_status, status, "HEAD {path}");
        assert_eq!(head.content_type(), get_type, "HEAD {path}");
        assert!(body(head).is_empty(), "HEAD {path} has a body");
    }
}

#[test]
fn a_head_on_the_websocket_route_is_no_upgrade() {
    let server = Server::start();
    let (status, _) = request("HEAD", &server.http_url("/ws/main"), &[]);
    assert!(
        (400..500).contains(&status),
        "HEAD /ws/main answered {status}"
    );
}

// ---- compression ----

#[test]
fn text_files_are_sent_compressed_as_the_client_prefers() {
    let server = Server::start();
    for file in ["main.js", "style.css", "index.html"] {
        let plain = frontend_file(file);
        let url = server.http_url(&format!("/{file}"));

        let (_, br) = request("GET", &url, &[("Accept-Encoding", "br")]);
        assert_eq!(br.header("content-encoding"), Some("br"), "{file}");
        assert!(br
            .header("vary")
            .is_some_and(|v| v.to_ascii_lowercase().contains("accept-encoding")));
        let mut unpacked = Vec::new();
        brotli::Decompressor::new(&body(br)[..], 4096)
            .read_to_end(&mut unpacked)
            .expect("valid brotli");
        assert_eq!(unpacked, plain, "{file} through brotli");

        let (_, gzip) = request("GET", &url, &[("Accept-Encoding", "gzip")]);
        assert_eq!(gzip.header("content-encoding"), Some("gzip"), "{file}");
        let packed = body(gzip);
        assert!(
            packed.len() < plain.len(),
            "{file}: gzip made it no smaller"
        );
        let mut unpacked = Vec::new();
        flate2::read::GzDecoder::new(&packed[..])
            .read_to_end(&mut unpacked)
            .expect("valid gzip");
        assert_eq!(unpacked, plain, "{file} through gzip");

        let (_, identity) = request("GET", &url, &[("Accept-Encoding", "identity")]);
        assert_eq!(identity.header("content-encoding"), None, "{file}");
        assert_eq!(body(identity), plain, "{file} as it is");
    }
}

#[test]
fn pictures_are_not_compressed_again() {
    let server = Server::start();
    let (status, favicon) = request(
        "GET",
        &server.http_url("/favicon.svg"),
        &[("Accept-Encoding", "gzip")],
    );
    assert_eq!(status, 200);
    // SVG is text: compressed. A PNG is compressed already: never.
    assert_eq!(favicon.header("content-encoding"), Some("gzip"));
    let url = server.http_url("/api/rooms");
    let created: serde_json::Value = ureq::post(&url)
        .call()
        .expect("201")
        .into_json()
        .expect("JSON");
    let room = created["room"].as_str().expect("a room").to_owned();
    let edit = created["editToken"].as_str().expect("a token").to_owned();
    // Something drawn, so that there is a picture to fetch.
    let runtime = tokio::runtime::Runtime::new().expect("a runtime");
    runtime.block_on(async {
        let url = format!("{}?token={edit}", server.ws_url(&room));
        let mut editor = common::Client::join(&url).await;
        editor.send_json(common::draw_at(10.0, 10.0)).await;
        let mut other = common::Client::join(&url).await;
        other.wait_for_count(2).await;
    });
    let picture = server.http_url(&format!("/api/rooms/{room}/canvas.png?token={edit}"));
    let (status, png) = request("GET", &picture, &[("Accept-Encoding", "gzip, br")]);
    assert_eq!(status, 200);
    assert_eq!(png.header("content-encoding"), None);
}

// ---- caching ----

#[test]
fn frontend_files_are_revalidated_every_time_and_unchanged_ones_cost_a_304() {
    let server = Server::start();
    for path in [
        "/",
        "/r/team-42",
        "/main.js",
        "/connection.js",
        "/style.css",
    ] {
        let url = server.http_url(path);
        let (status, first) = request("GET", &url, &[]);
        assert_eq!(status, 200, "{path}");
        assert_eq!(first.header("cache-control"), Some("no-cache"), "{path}");
        let etag = first
            .header("etag")
            .unwrap_or_else(|| panic!("{path} has no ETag"))
            .to_owned();
        let (again, revalidated) = request("GET", &url, &[("If-None-Match", &etag)]);
        assert_eq!(again, 304, "{path} unchanged");
        assert!(body(revalidated).is_empty());
        let (changed, _) = request("GET", &url, &[("If-None-Match", "\"another-version\"")]);
        assert_eq!(changed, 200, "{path} with another version cached");
    }
}

#[test]
fn a_changed_file_gets_a_new_etag() {
    // A frontend of the test's own, so that a file can change under a running server.
    let dir = common::data_dir();
    for file in ["index.html", "main.js"] {
        std::fs::write(dir.path().join(file), frontend_file(file)).expect("copy a file");
    }
    let frontend = dir.path().to_str().expect("a UTF-8 path");
    let server = Server::start_with(&["--frontend-dir", frontend]);
    let url = server.http_url("/main.js");
    let (_, first) = request("GET", &url, &[]);
    let etag = first.header("etag").expect("an ETag").to_owned();
    std::fs::write(dir.path().join("main.js"), "// a new version\n").expect("change main.js");
    let (status, fresh) = request("GET", &url, &[("If-None-Match", &etag)]);
    assert_eq!(status, 200, "a changed file must not be answered 304");
    assert_ne!(fresh.header("etag"), Some(etag.as_str()));
    assert_eq!(body(fresh), b"// a new version\n");
}

#[test]
fn the_private_room_api_and_pictures_are_never_cached() {
    let server = Server::start();
    let response = ureq::post(&server.http_url("/api/rooms"))
        .call()
        .expect("201");
    assert_eq!(response.header("cache-control"), Some("no-store"));
}
