//! The SQLite store's tests: real databases in temporary directories.

use super::*;
use std::io::{BufRead, Write};
use tempfile::TempDir;

fn options() -> StoreOptions {
    StoreOptions {
        flush_interval: Duration::from_millis(20),
        max_rooms: 100,
        ..StoreOptions::default()
    }
}

/// A store whose database cannot grow (SQLite's own limit: a full disk without root).
fn full(max_held_bytes: u64) -> (TempDir, Store) {
    let dir = TempDir::new().unwrap();
    let store = Store::open(
        dir.path(),
        StoreOptions {
            max_page_count: Some(1),
            max_held_bytes,
            ..options()
        },
    )
    .unwrap();
    (dir, store)
}

/// An op big enough that a few of them need a new page.
fn big_draw(n: u64) -> String {
    format!(r#"{{"type":"draw","n":{n},"pad":"{}"}}"#, "x".repeat(1500))
}

/// Waits (polling `flush`) until every held op is written.
async fn until_written(store: &Store) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while store.flush().await.is_err() {
        assert!(Instant::now() < deadline, "the held ops were never written");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "current_thread")]
async fn ops_that_cannot_be_written_are_held_and_written_in_order_once_space_is_back() {
    let (_dir, store) = full(u64::MAX);
    let main = room("main");
    for n in 1..=20 {
        store.append(&main, n, ByteString::from(big_draw(n)));
    }
    let err = store.flush().await.unwrap_err();
    assert!(
        matches!(err, StoreError::WriteFailed { held: 20, .. }),
        "{err}"
    );
    assert!(store.health().is_failing());
    assert!(store.health().held_bytes() > 20 * 1500);
    assert!(store
        .health()
        .failure()
        .is_some_and(|why| why.contains("full")));
    // Appended while failing: held behind the others, in order.
    for n in 21..=30 {
        store.append(&main, n, ByteString::from(big_draw(n)));
    }
    store.set_max_page_count(100_000);
    until_written(&store).await;
    assert!(!store.health().is_failing());
    assert_eq!(store.health().held_bytes(), 0);
    assert!(store.health().failures() >= 1);
    let stored = store.load(main).await.unwrap();
    assert_eq!(seqs(&stored), (1..=30).collect::<Vec<_>>());
    store.close().await;
}

#[tokio::test(flavor = "current_thread")]
async fn a_load_while_ops_are_held_includes_them() {
    let (_dir, store) = full(u64::MAX);
    let main = room("main");
    for n in 1..=10 {
        store.append(&main, n, ByteString::from(big_draw(n)));
    }
    assert!(store.flush().await.is_err());
    let stored = store.load(main.clone()).await.unwrap();
    assert_eq!(seqs(&stored), (1..=10).collect::<Vec<_>>());
    store.close().await;
}

#[tokio::test(flavor = "current_thread")]
async fn a_checkpoint_while_ops_are_held_leaves_them_in_place() {
    let (_dir, store) = full(u64::MAX);
    let main = room("main");
    for n in 1..=10 {
        store.append(&main, n, ByteString::from(big_draw(n)));
    }
    store.checkpoint(&main, 10, 10, 10, fake_png(1));
    assert!(store.flush().await.is_err());
    store.set_max_page_count(100_000);
    until_written(&store).await;
    let stored = store.load(main).await.unwrap();
    assert_eq!(stored.checkpoint_seq, 0, "the checkpoint was not written");
    assert_eq!(seqs(&stored), (1..=10).collect::<Vec<_>>());
    store.close().await;
}

#[tokio::test(flavor = "current_thread")]
async fn beyond_the_bound_new_ops_must_be_refused() {
    let (_dir, store) = full(4 * 1024);
    let main = room("main");
    store.append(&main, 1, ByteString::from(big_draw(1)));
    assert!(store.flush().await.is_err());
    assert!(!store.health().must_refuse(), "one op is under the bound");
    for n in 2..=5 {
        store.append(&main, n, ByteString::from(big_draw(n)));
    }
    // The bound is checked as the writer takes the ops in.
    let deadline = Instant::now() + Duration::from_secs(20);
    while !store.health().must_refuse() {
        assert!(Instant::now() < deadline, "the bound was never reached");
        let _ = store.flush().await;
    }
    store.set_max_page_count(100_000);
    until_written(&store).await;
    assert!(!store.health().must_refuse());
    store.close().await;
}

/// A flush interval that never elapses during a test: only ordering commits.
fn lazy() -> StoreOptions {
    StoreOptions {
        flush_interval: Duration::from_secs(3600),
        ..options()
    }
}

fn room(name: &str) -> Arc<str> {
    Arc::from(name)
}

fn draw(n: u64) -> String {
    format!(r##"{{"type":"draw","x0":{n},"y0":0,"x1":1,"y1":1,"color":"#000000","size":4}}"##)
}

fn append_draws(store: &Store, room: &Arc<str>, seqs: std::ops::RangeInclusive<u64>) {
    for seq in seqs {
        store.append(room, seq, ByteString::from(draw(seq)));
    }
}

fn seqs(stored: &StoredRoom) -> Vec<u64> {
    stored.ops.iter().map(|(seq, _)| *seq).collect()
}

fn fake_png(tag: u8) -> Vec<u8> {
    let mut png = PNG_SIGNATURE.to_vec();
    png.extend([tag; 24]);
    png
}

fn db_path(dir: &TempDir) -> PathBuf {
    dir.path().join(FILE_NAME)
}

/// Opens the file with plain rusqlite (the store must be closed), runs `sql`, closes it.
fn tamper(dir: &TempDir, sql: &str) {
    let conn = Connection::open(db_path(dir)).unwrap();
    conn.execute_batch(sql).unwrap();
    conn.close().unwrap();
}

/// The error message names the file, and the file is exactly as it was.
fn assert_refused_untouched(dir: &TempDir, err: &StoreError, before: &[u8]) {
    let path = db_path(dir);
    assert!(
        err.to_string().contains(&path.display().to_string()),
        "{err} does not name {}",
        path.display()
    );
    assert_eq!(
        std::fs::read(&path).unwrap(),
        before,
        "{err}: file modified"
    );
    for suffix in ["-wal", "-shm", "-journal"] {
        let side = dir.path().join(format!("{FILE_NAME}{suffix}"));
        assert!(!side.exists(), "{err}: {} was created", side.display());
    }
}

#[test]
fn the_handle_is_send_and_sync() {
    fn assert_send_sync<T: Send + Sync + Clone>() {}
    assert_send_sync::<Store>();
}

#[tokio::test(flavor = "current_thread")]
async fn appended_ops_load_in_order() {
    let dir = TempDir::new().unwrap();
    let store = Store::open(dir.path(), options()).unwrap();
    assert_eq!(store.path(), Some(db_path(&dir).as_path()));
    let main = room("main");
    let fresh = store.load(main.clone()).await.unwrap();
    assert!(!fresh.existed);
    assert_eq!(fresh, StoredRoom::default());
    append_draws(&store, &main, 1..=10);
    store.append(&main, 11, ByteString::from_static(r#"{"type":"clear"}"#));
    store.flush().await.unwrap();
    let stored = store.load(main.clone()).await.unwrap();
    assert!(stored.existed);
    assert_eq!(seqs(&stored), (1..=11).collect::<Vec<_>>());
    assert_eq!(stored.ops[3].1, draw(4));
    assert_eq!(stored.ops[10].1, r#"{"type":"clear"}"#);
    let bytes: usize = stored.ops.iter().map(|(_, op)| op.len()).sum();
    assert_eq!(stored.stored_bytes, bytes as u64);
    assert_eq!(stored.checkpoint, None);
    assert_eq!(stored.checkpoint_seq, 0);
    store.close().await;
}

#[tokio::test(flavor = "current_thread")]
async fn ops_queued_before_a_load_are_visible_to_it() {
    let dir = TempDir::new().unwrap();
    let store = Store::open(dir.path(), lazy()).unwrap();
    let main = room("main");
    store.load(main.clone()).await.unwrap();
    append_draws(&store, &main, 1..=5);
    // No flush, and the interval is an hour: the load itself must commit them first.
    let stored = store.load(main.clone()).await.unwrap();
    assert_eq!(seqs(&stored), vec![1, 2, 3, 4, 5]);
    // The request is queued by the call, not by the first poll: what was appended before it
    // is there even if the future is polled later.
    append_draws(&store, &main, 6..=6);
    let load = store.load(main.clone());
    append_draws(&store, &main, 7..=7);
    assert_eq!(seqs(&load.await.unwrap())[..6], [1, 2, 3, 4, 5, 6]);
    let read = store.read(main.clone()).await.unwrap().unwrap();
    assert_eq!(seqs(&read), vec![1, 2, 3, 4, 5, 6, 7]);
    store.close().await;
}

#[tokio::test(flavor = "current_thread")]
async fn appended_ops_are_committed_within_the_flush_interval() {
    let dir = TempDir::new().unwrap();
    let store = Store::open(dir.path(), options()).unwrap();
    let main = room("main");
    store.load(main.clone()).await.unwrap();
    let wal = dir.path().join(format!("{FILE_NAME}-wal"));
    let wal_len = || std::fs::metadata(&wal).map_or(0, |meta| meta.len());
    let before = wal_len();
    append_draws(&store, &main, 1..=100);
    // Nothing asks for a commit: the 20 ms interval alone must write them.
    let deadline = Instant::now() + Duration::from_secs(5);
    while wal_len() <= before {
        assert!(Instant::now() < deadline, "no commit within 5 s");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(seqs(&store.load(main.clone()).await.unwrap()).len(), 100);
    store.close().await;
}

#[tokio::test(flavor = "current_thread")]
async fn close_and_reopen_keeps_everything() {
    let dir = TempDir::new().unwrap();
    let (a, b) = (room("a"), room("b"));
    {
        let store = Store::open(dir.path(), lazy()).unwrap();
        store.load(a.clone()).await.unwrap();
        store.load(b.clone()).await.unwrap();
        append_draws(&store, &a, 1..=4);
        store.checkpoint(&a, 2, 1600, 900, fake_png(7));
        append_draws(&store, &b, 1..=3);
        append_draws(&store, &a, 5..=6);
        // No flush: close commits what is queued.
        store.close().await;
        store.close().await;
    }
    let wal = dir.path().join(format!("{FILE_NAME}-wal"));
    assert!(
        std::fs::metadata(&wal).map_or(true, |meta| meta.len() == 0),
        "close leaves the WAL folded in"
    );
    let store = Store::open(dir.path(), lazy()).unwrap();
    let stored_a = store.load(a.clone()).await.unwrap();
    assert!(stored_a.existed);
    assert_eq!(stored_a.checkpoint, Some(fake_png(7)));
    assert_eq!(stored_a.checkpoint_seq, 2);
    assert_eq!(seqs(&stored_a), vec![3, 4, 5, 6]);
    let stored_b = store.load(b.clone()).await.unwrap();
    assert_eq!(seqs(&stored_b), vec![1, 2, 3]);
    assert_eq!(store.room_count().await.unwrap(), 2);
    store.close().await;
}

#[tokio::test(flavor = "current_thread")]
async fn a_checkpoint_prunes_the_ops_it_covers() {
    let dir = TempDir::new().unwrap();
    let store = Store::open(dir.path(), lazy()).unwrap();
    let main = room("main");
    store.load(main.clone()).await.unwrap();
    append_draws(&store, &main, 1..=5);
    store.checkpoint(&main, 3, 1600, 900, fake_png(1));
    append_draws(&store, &main, 6..=7);
    let stored = store.load(main.clone()).await.unwrap();
    assert_eq!(stored.checkpoint, Some(fake_png(1)));
    assert_eq!(stored.checkpoint_seq, 3);
    assert_eq!(seqs(&stored), vec![4, 5, 6, 7]);
    let ops: usize = stored.ops.iter().map(|(_, op)| op.len()).sum();
    assert_eq!(stored.stored_bytes, (fake_png(1).len() + ops) as u64);
    // The covered ops are gone from disk, not just filtered.
    store.close().await;
    let conn = Connection::open(db_path(&dir)).unwrap();
    let (count, min): (i64, Option<i64>) = conn
        .query_row(
            "SELECT count(*), min(seq) FROM ops WHERE last_seq <= 3",
            [],
            |row| Ok((row.get(0)?, row.get::<_, Option<i64>>(1)?)),
        )
        .unwrap();
    assert_eq!((count, min), (0, None));
    let (width, height): (i64, i64) = conn
        .query_row("SELECT width, height FROM rooms", [], |row| {
            Ok((row.get(0)?, row.get(1)?))
        })
        .unwrap();
    assert_eq!((width, height), (1600, 900));
}

#[tokio::test(flavor = "current_thread")]
async fn an_older_checkpoint_arriving_late_is_ignored() {
    let dir = TempDir::new().unwrap();
    let store = Store::open(dir.path(), lazy()).unwrap();
    let main = room("main");
    store.load(main.clone()).await.unwrap();
    append_draws(&store, &main, 1..=8);
    store.checkpoint(&main, 6, 1600, 900, fake_png(6));
    // From an older incarnation of the room: must neither replace nor prune.
    store.checkpoint(&main, 4, 1600, 900, fake_png(4));
    store.checkpoint(&main, 6, 1600, 900, fake_png(9));
    let stored = store.load(main.clone()).await.unwrap();
    assert_eq!(stored.checkpoint, Some(fake_png(6)));
    assert_eq!(stored.checkpoint_seq, 6);
    assert_eq!(seqs(&stored), vec![7, 8]);
    // Not a PNG: refused before it is queued (it would make the file unopenable).
    store.checkpoint(&main, 8, 1600, 900, b"not a png".to_vec());
    let stored = store.load(main.clone()).await.unwrap();
    assert_eq!(stored.checkpoint_seq, 6);
    store.close().await;
}

#[tokio::test(flavor = "current_thread")]
async fn forget_removes_a_room_unless_something_newer_is_stored() {
    let dir = TempDir::new().unwrap();
    let store = Store::open(dir.path(), lazy()).unwrap();
    let (main, other) = (room("main"), room("other"));
    store.load(main.clone()).await.unwrap();
    store.load(other.clone()).await.unwrap();
    append_draws(&store, &main, 1..=3);
    append_draws(&store, &other, 1..=2);
    assert_eq!(store.room_count().await.unwrap(), 2);
    // A new incarnation already wrote op 3: forgetting up to 2 must keep everything.
    store.forget(&main, 2);
    assert_eq!(
        seqs(&store.load(main.clone()).await.unwrap()),
        vec![1, 2, 3]
    );
    store.checkpoint(&main, 3, 10, 10, fake_png(3));
    store.forget(&main, 2);
    assert!(store.load(main.clone()).await.unwrap().existed);
    store.forget(&main, 3);
    assert_eq!(store.room_count().await.unwrap(), 1);
    assert_eq!(store.read(main.clone()).await.unwrap(), None);
    let reloaded = store.load(main.clone()).await.unwrap();
    assert!(!reloaded.existed);
    assert_eq!(reloaded, StoredRoom::default());
    assert_eq!(seqs(&store.load(other.clone()).await.unwrap()), vec![1, 2]);
    store.close().await;
}

#[tokio::test(flavor = "current_thread")]
async fn max_rooms_refuses_new_rooms_but_loads_stored_ones() {
    let dir = TempDir::new().unwrap();
    let limited = StoreOptions {
        max_rooms: 2,
        ..lazy()
    };
    let store = Store::open(dir.path(), limited.clone()).unwrap();
    let (a, b, c) = (room("a"), room("b"), room("c"));
    assert!(!store.load(a.clone()).await.unwrap().existed);
    assert!(!store.load(b.clone()).await.unwrap().existed);
    append_draws(&store, &a, 1..=2);
    let err = store.load(c.clone()).await.unwrap_err();
    assert!(
        matches!(err, StoreError::TooManyRooms { limit: 2 }),
        "{err:?}"
    );
    assert!(err.to_string().contains("limit is 2"), "{err}");
    assert_eq!(store.room_count().await.unwrap(), 2);
    assert_eq!(seqs(&store.load(a.clone()).await.unwrap()), vec![1, 2]);
    assert!(store.load(b.clone()).await.unwrap().existed);
    // The limit holds across restarts, and forgetting frees a slot.
    store.close().await;
    let store = Store::open(dir.path(), limited).unwrap();
    assert!(matches!(
        store.load(c.clone()).await,
        Err(StoreError::TooManyRooms { .. })
    ));
    store.forget(&b, 0);
    assert!(!store.load(c.clone()).await.unwrap().existed);
    store.close().await;
}

#[tokio::test(flavor = "current_thread")]
async fn a_closed_store_answers_with_errors_not_panics() {
    let dir = TempDir::new().unwrap();
    let store = Store::open(dir.path(), lazy()).unwrap();
    let clone = store.clone();
    store.close().await;
    clone.close().await;
    let main = room("main");
    clone.append(&main, 1, ByteString::from(draw(1)));
    clone.checkpoint(&main, 1, 10, 10, fake_png(1));
    clone.forget(&main, 1);
    assert!(matches!(
        clone.load(main.clone()).await,
        Err(StoreError::Stopped { .. })
    ));
    let err = clone.flush().await.unwrap_err();
    assert!(
        err.to_string()
            .contains(&db_path(&dir).display().to_string()),
        "{err}"
    );
    assert!(clone.room_count().await.is_err());
    // The lock was released: the directory opens again.
    Store::open(dir.path(), lazy()).unwrap().close().await;
}

#[tokio::test(flavor = "current_thread")]
async fn the_memory_store_keeps_nothing() {
    let store = Store::without_persistence();
    assert_eq!(store.path(), None);
    let main = room("main");
    store.append(&main, 1, ByteString::from(draw(1)));
    store.checkpoint(&main, 1, 10, 10, fake_png(1));
    let stored = store.load(main.clone()).await.unwrap();
    assert_eq!(stored, StoredRoom::default());
    assert!(!stored.existed);
    assert_eq!(store.read(main.clone()).await.unwrap(), None);
    store.flush().await.unwrap();
    assert_eq!(store.room_count().await.unwrap(), 0);
    store.close().await;
}

#[test]
fn a_garbage_file_is_refused_and_left_alone() {
    let dir = TempDir::new().unwrap();
    let garbage = b"these are not the pages you are looking for\n".repeat(200);
    std::fs::write(db_path(&dir), &garbage).unwrap();
    let err = Store::open(dir.path(), options()).unwrap_err();
    assert!(matches!(err, StoreError::NotADatabase { .. }), "{err:?}");
    assert!(err.to_string().contains("not an SQLite database"), "{err}");
    assert_refused_untouched(&dir, &err, &garbage);
}

#[tokio::test(flavor = "current_thread")]
async fn a_damaged_database_is_refused_and_left_alone() {
    let dir = TempDir::new().unwrap();
    let store = Store::open(dir.path(), lazy()).unwrap();
    let main = room("main");
    store.load(main.clone()).await.unwrap();
    append_draws(&store, &main, 1..=50);
    store.close().await;
    let mut bytes = std::fs::read(db_path(&dir)).unwrap();
    let page = usize::from(u16::from_be_bytes([bytes[16], bytes[17]]));
    assert!(bytes.len() >= 3 * page);
    // Every page after the schema page becomes noise.
    for (i, byte) in bytes[page..].iter_mut().enumerate() {
        *byte = (i * 7 + 13) as u8;
    }
    std::fs::write(db_path(&dir), &bytes).unwrap();
    let err = Store::open(dir.path(), options()).unwrap_err();
    assert!(matches!(err, StoreError::Corrupt { .. }), "{err:?}");
    assert_refused_untouched(&dir, &err, &bytes);
}

#[test]
fn a_directory_where_the_file_should_be_is_refused() {
    let dir = TempDir::new().unwrap();
    std::fs::create_dir(db_path(&dir)).unwrap();
    let err = Store::open(dir.path(), options()).unwrap_err();
    assert!(matches!(err, StoreError::NotAFile { .. }), "{err:?}");
    let message = err.to_string();
    assert!(
        message.contains(&db_path(&dir).display().to_string()),
        "{message}"
    );
    assert!(message.contains("directory"), "{message}");
}

#[test]
fn a_data_dir_that_is_a_file_is_refused() {
    let dir = TempDir::new().unwrap();
    let data_dir = dir.path().join("data");
    std::fs::write(&data_dir, b"").unwrap();
    let err = Store::open(&data_dir, options()).unwrap_err();
    assert!(matches!(err, StoreError::Io { .. }), "{err:?}");
    assert!(
        err.to_string().contains(&data_dir.display().to_string()),
        "{err}"
    );
}

#[test]
fn an_unreadable_file_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        // Root reads anything: nothing to test.
        return;
    }
    let dir = TempDir::new().unwrap();
    let path = db_path(&dir);
    std::fs::write(&path, b"").unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o000)).unwrap();
    let err = Store::open(dir.path(), options()).unwrap_err();
    assert!(
        err.to_string().contains(&path.display().to_string()),
        "{err}"
    );
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o400)).unwrap();
    let err = Store::open(dir.path(), options()).unwrap_err();
    assert!(matches!(err, StoreError::ReadOnly { .. }), "{err:?}");
}

#[tokio::test(flavor = "current_thread")]
async fn a_second_server_on_the_same_directory_is_refused() {
    let dir = TempDir::new().unwrap();
    // Once on a new file, once on an existing one.
    for _ in 0..2 {
        let first = Store::open(dir.path(), lazy()).unwrap();
        let main = room("main");
        first.load(main.clone()).await.unwrap();
        append_draws(&first, &main, 1..=3);
        first.flush().await.unwrap();
        let err = Store::open(dir.path(), lazy()).unwrap_err();
        assert!(matches!(err, StoreError::Locked { .. }), "{err:?}");
        let message = err.to_string();
        assert!(
            message.contains(&db_path(&dir).display().to_string()),
            "{message}"
        );
        assert!(message.contains("another livecanvas"), "{message}");
        // The first one is unharmed.
        append_draws(&first, &main, 4..=4);
        assert_eq!(
            seqs(&first.load(main.clone()).await.unwrap()).last(),
            Some(&4)
        );
        first.forget(&main, 4);
        first.close().await;
    }
}

#[test]
fn an_unknown_schema_version_is_refused() {
    let dir = TempDir::new().unwrap();
    tamper(
        &dir,
        "CREATE TABLE rooms (name TEXT PRIMARY KEY); PRAGMA user_version = 2;",
    );
    let before = std::fs::read(db_path(&dir)).unwrap();
    let err = Store::open(dir.path(), options()).unwrap_err();
    assert!(
        matches!(err, StoreError::UnknownVersion { found: 2, .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("schema version 2"), "{err}");
    assert_refused_untouched(&dir, &err, &before);
}

#[test]
fn a_database_that_is_not_ours_is_refused() {
    let dir = TempDir::new().unwrap();
    tamper(&dir, "CREATE TABLE invoices (id INTEGER PRIMARY KEY);");
    let before = std::fs::read(db_path(&dir)).unwrap();
    let err = Store::open(dir.path(), options()).unwrap_err();
    assert!(matches!(err, StoreError::Foreign { .. }), "{err:?}");
    assert_refused_untouched(&dir, &err, &before);
}

#[tokio::test(flavor = "current_thread")]
async fn a_checkpoint_that_is_not_a_png_is_refused_at_open() {
    let dir = TempDir::new().unwrap();
    let store = Store::open(dir.path(), lazy()).unwrap();
    store.load(room("fine")).await.unwrap();
    store.checkpoint(&room("fine"), 1, 10, 10, fake_png(1));
    store.load(room("broken")).await.unwrap();
    store.close().await;
    tamper(
        &dir,
        "UPDATE rooms SET checkpoint = x'FFD8FFE000104A46494600', checkpoint_seq = 1 \
         WHERE name = 'broken';",
    );
    let before = std::fs::read(db_path(&dir)).unwrap();
    let err = Store::open(dir.path(), options()).unwrap_err();
    assert!(matches!(err, StoreError::Corrupt { .. }), "{err:?}");
    let message = err.to_string();
    assert!(message.contains("\"broken\""), "{message}");
    assert!(message.contains("not a PNG"), "{message}");
    assert_refused_untouched(&dir, &err, &before);
}

const CRASH_DIR_ENV: &str = "LIVECANVAS_STORAGE_CRASH_DIR";
const CRASH_READY: &str = "livecanvas-storage-crash-child: flushed";

/// The victim of `a_kill_after_a_flush_loses_nothing_flushed`, run in a child process.
#[test]
#[ignore = "run by a_kill_after_a_flush_loses_nothing_flushed in a child process"]
fn crash_child() {
    let Some(dir) = std::env::var_os(CRASH_DIR_ENV) else {
        return;
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let store = Store::open(Path::new(&dir), lazy()).unwrap();
        let main = room("main");
        store.load(main.clone()).await.unwrap();
        append_draws(&store, &main, 1..=40);
        store.checkpoint(&main, 20, 1600, 900, fake_png(20));
        append_draws(&store, &main, 41..=50);
        store.flush().await.unwrap();
        println!("{CRASH_READY}");
        std::io::stdout().flush().unwrap();
        // Queued but never committed: the kill may lose these (within the flush interval).
        append_draws(&store, &main, 51..=60);
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    });
}

#[tokio::test(flavor = "current_thread")]
async fn a_kill_after_a_flush_loses_nothing_flushed() {
    let dir = TempDir::new().unwrap();
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "storage::sqlite::tests::crash_child",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CRASH_DIR_ENV, dir.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (ready_tx, ready_rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            match line {
                Ok(line) if line.contains(CRASH_READY) => {
                    let _ = ready_tx.send(());
                }
                Ok(_) => {}
                Err(_) => return,
            }
        }
    });
    let ready = ready_rx.recv_timeout(Duration::from_secs(60));
    // While it runs, another process cannot open the directory.
    let second = Store::open(dir.path(), lazy());
    // SIGKILL: no destructor, no close, no WAL checkpoint.
    child.kill().unwrap();
    child.wait().unwrap();
    ready.expect("the child never reported its flush");
    let err = second.unwrap_err();
    assert!(matches!(err, StoreError::Locked { .. }), "{err:?}");

    let store = Store::open(dir.path(), lazy()).unwrap();
    let stored = store.load(room("main")).await.unwrap();
    assert!(stored.existed);
    assert_eq!(stored.checkpoint, Some(fake_png(20)));
    assert_eq!(stored.checkpoint_seq, 20);
    let seqs = seqs(&stored);
    assert_eq!(seqs[..30], (21..=50).collect::<Vec<_>>()[..]);
    store.close().await;
}

#[tokio::test(flavor = "current_thread")]
async fn a_private_room_from_before_owners_gains_the_new_columns_and_can_be_locked() {
    let dir = TempDir::new().unwrap();
    Store::open(dir.path(), options()).unwrap().close().await;
    tamper(
        &dir,
        "DROP TABLE room_access;
         CREATE TABLE room_access (room TEXT PRIMARY KEY, edit_hash BLOB NOT NULL,
             view_hash BLOB NOT NULL, created_at INTEGER) WITHOUT ROWID;
         INSERT INTO room_access VALUES ('old', zeroblob(32), zeroblob(32), 0);",
    );
    let store = Store::open(dir.path(), options()).unwrap();
    let access = store.room_access("old").expect("still private");
    assert_eq!(access.hashes.owner, None);
    assert!(!access.locked);
    assert!(store.set_locked(room("old"), true).await.unwrap());
    store.close().await;
    let store = Store::open(dir.path(), options()).unwrap();
    assert!(store.room_access("old").expect("still private").locked);
    store.close().await;
}

#[tokio::test(flavor = "current_thread")]
async fn deleting_a_room_removes_its_rows_and_nothing_else() {
    let dir = TempDir::new().unwrap();
    let store = Store::open(dir.path(), options()).unwrap();
    let (gone, kept) = (room("gone"), room("kept"));
    for name in [&gone, &kept] {
        store.load(name.clone()).await.unwrap();
        append_draws(&store, name, 1..=3);
    }
    store.flush().await.unwrap();
    assert!(store.delete_room(gone.clone()).await.unwrap());
    assert!(
        !store.delete_room(gone.clone()).await.unwrap(),
        "nothing left"
    );
    assert_eq!(store.read(gone).await.unwrap(), None);
    let kept_room = store.read(kept).await.unwrap().expect("the other room");
    assert_eq!(seqs(&kept_room), vec![1, 2, 3]);
    store.close().await;
}
