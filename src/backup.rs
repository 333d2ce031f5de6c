//! `livecanvas backup DIR`: a consistent copy of a single node's database that `--data-dir DIR`
//! serves as it was, taken while the server runs.
//!
//! This module owns the command's side: with no server holding the database, it copies it
//! itself; while a server holds it (exclusively), it asks that server over its operations
//! listener (`POST /backup` on `--metrics-bind`, answered only to this machine), whose writer
//! thread makes the copy. The copying itself is the store's (`storage::sqlite::backup`). It must
//! never write into the data directory, and never overwrite a database already in `DIR`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::config::{Config, StorageKind};

/// What `POST /backup` takes.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct BackupRequest {
    /// An absolute directory on the server's machine.
    pub dir: PathBuf,
}

/// Makes the backup; the line to print on success, the reason on failure.
pub fn run(config: &Config, dir: &Path, timeout: Duration) -> Result<String, String> {
    if config
        .redis_url
        .as_deref()
        .is_some_and(|url| !url.is_empty())
    {
        return Err(
            "in a cluster the canvases are in Redis: back up Redis instead (its AOF or \
                    RDB file; see docs/clusters.md)"
                .into(),
        );
    }
    if config.storage == StorageKind::Memory {
        return Err("--storage memory keeps nothing to back up".into());
    }
    let dir = std::path::absolute(dir).map_err(|err| format!("{}: {err}", dir.display()))?;
    match crate::storage::copy_unheld(&config.data_dir, &dir) {
        Ok(done) => Ok(format!(
            "backed up {} into {} ({} bytes)",
            config.data_dir.display(),
            done.path.display(),
            done.bytes
        )),
        Err(Some(why)) => Err(why),
        Err(None) => ask_the_server(config, dir, timeout),
    }
}

/// The database is held by a running server: it makes the copy.
fn ask_the_server(config: &Config, dir: PathBuf, timeout: Duration) -> Result<String, String> {
    let url = config.operations_url("/backup").ok_or_else(|| {
        format!(
            "{} is held by a running server; `livecanvas backup` asks it through its operations \
             listener: run both with --metrics-bind (LIVECANVAS_METRICS_BIND)",
            config.data_dir.display()
        )
    })?;
    let body = serde_json::to_string(&BackupRequest { dir })
        .map_err(|err| format!("cannot encode the request: {err}"))?;
    let answer = match ureq::post(&url)
        .timeout(timeout)
        .set("Content-Type", "application/json")
        .send_string(&body)
    {
        Ok(response) => response,
        Err(ureq::Error::Status(_, response)) => response,
        Err(err) => return Err(format!("{url}: {err}")),
    };
    let status = answer.status();
    let reply: serde_json::Value = serde_json::from_reader(answer.into_reader())
        .map_err(|err| format!("{url} answered {status} without JSON: {err}"))?;
    if status == 200 {
        Ok(format!(
            "backed up by the running server into {} ({} bytes)",
            reply["path"].as_str().unwrap_or("?"),
            reply["bytes"]
        ))
    } else {
        Err(format!(
            "{url} answered {status}: {}",
            reply["message"].as_str().unwrap_or("no reason given")
        ))
    }
}
