//! A consistent copy of the database into another directory, with SQLite's online backup API: the
//! copy `livecanvas backup DIR` makes, by the serving process's writer thread (which holds the
//! database's exclusive lock) or, with no server running, by the command itself.
//!
//! It owns writing `DIR/livecanvas.db` so that `--data-dir DIR` serves the rooms as they were when
//! the copy was taken: the pages are copied into `livecanvas.db.partial`, synced, then renamed, so
//! a copy that fails half-way never looks like a backup. It must never overwrite an existing
//! database and never write to the source.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::backup::Backup;
use rusqlite::Connection;

use super::FILE_NAME;

/// Pages copied per step: 4 MiB at SQLite's default 4 KiB pages. Steps follow each other without
/// a pause: the source is this connection's, so writes wait for the copy either way.
const PAGES_PER_STEP: std::os::raw::c_int = 1024;

/// What a finished copy wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupDone {
    pub path: PathBuf,
    pub bytes: u64,
}

/// Copies the database open on `source` into `dir/livecanvas.db` (creating `dir`); refuses if a
/// database is there already.
pub(crate) fn copy_database(source: &Connection, dir: &Path) -> Result<BackupDone, String> {
    std::fs::create_dir_all(dir)
        .map_err(|err| format!("cannot create {}: {err}", dir.display()))?;
    let path = dir.join(FILE_NAME);
    if path.exists() {
        return Err(format!(
            "{} exists already: back up into an empty directory",
            path.display()
        ));
    }
    let partial = dir.join(format!("{FILE_NAME}.partial"));
    let _ = std::fs::remove_file(&partial);
    let copied = copy_pages(source, &partial);
    if let Err(err) = copied {
        let _ = std::fs::remove_file(&partial);
        return Err(err);
    }
    std::fs::rename(&partial, &path)
        .map_err(|err| format!("cannot move the copy to {}: {err}", path.display()))?;
    // The rename itself is durable once the directory is synced.
    if let Ok(directory) = std::fs::File::open(dir) {
        let _ = directory.sync_all();
    }
    let bytes = std::fs::metadata(&path).map_or(0, |meta| meta.len());
    Ok(BackupDone { path, bytes })
}

fn copy_pages(source: &Connection, partial: &Path) -> Result<(), String> {
    let failed = |what: &str, err: rusqlite::Error| format!("{what} {}: {err}", partial.display());
    let mut destination = Connection::open(partial).map_err(|err| failed("cannot create", err))?;
    Backup::new(source, &mut destination)
        .and_then(|backup| backup.run_to_completion(PAGES_PER_STEP, Duration::ZERO, None))
        .map_err(|err| failed("cannot copy the database into", err))?;
    // A self-contained file: no WAL beside it, whatever the source's journal mode.
    destination
        .query_row("PRAGMA journal_mode = DELETE", [], |_| Ok(()))
        .map_err(|err| failed("cannot finish", err))?;
    drop(destination);
    std::fs::File::open(partial)
        .and_then(|file| file.sync_all())
        .map_err(|err| format!("cannot sync {}: {err}", partial.display()))
}

/// With no server holding it, copies `data_dir`'s database into `dir` (opened for writing, as
/// replaying a WAL left by a crash needs, but never written).
/// `Err(None)` when another process holds the database (a running server: ask it instead).
pub fn copy_unheld(data_dir: &Path, dir: &Path) -> Result<BackupDone, Option<String>> {
    let source_path = data_dir.join(FILE_NAME);
    if !source_path.is_file() {
        return Err(Some(format!("no database at {}", source_path.display())));
    }
    let flags =
        rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let source = Connection::open_with_flags(&source_path, flags)
        .map_err(|err| Some(format!("cannot open {}: {err}", source_path.display())))?;
    // A server holds the database in exclusive locking mode: even reading it is refused, at once
    // rather than after rusqlite's default wait of 5 s.
    source
        .busy_timeout(Duration::ZERO)
        .map_err(|err| Some(format!("cannot open {}: {err}", source_path.display())))?;
    match source.query_row("SELECT count(*) FROM sqlite_master", [], |_| Ok(())) {
        Ok(()) => {}
        Err(rusqlite::Error::SqliteFailure(err, _))
            if matches!(
                err.code,
                rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked
            ) =>
        {
            return Err(None)
        }
        Err(err) => {
            return Err(Some(format!(
                "cannot read {}: {err}",
                source_path.display()
            )))
        }
    }
    copy_database(&source, dir).map_err(Some)
}
