//! The store's one thread and its connection: it takes commands in order, gathers appended ops and
//! commits them together every flush interval, writes checkpoints, retries failed commits with
//! backoff while holding their ops, and folds the WAL back. It must never drop an accepted op,
//! never run a command out of order, and never answer before what it answers for is committed.

use super::*;

/// Ops appended since the writer last took them. Appends and commands keep their relative order:
/// the writer takes every buffered op before it executes any command, and an op is buffered
/// before its caller can queue a later command.
#[derive(Default)]
pub(super) struct Appends {
    pub(super) ops: Vec<PendingOp>,
    /// Set by `close` (or the writer's end): later appends are dropped.
    pub(super) closed: bool,
}

/// An op waiting for the next commit.
pub(super) struct PendingOp {
    pub(super) room: Arc<str>,
    pub(super) seq: i64,
    pub(super) op: ByteString,
}

/// The writer thread's state: the only owner of the connection.
pub(super) struct Writer {
    pub(super) conn: Connection,
    pub(super) path: PathBuf,
    pub(super) options: StoreOptions,
    pub(super) appends: Arc<Mutex<Appends>>,
    /// The ops being committed (taken from `appends`; kept to reuse its allocation).
    pub(super) pending: Vec<PendingOp>,
    /// When the writer learned of the oldest uncommitted op.
    pub(super) first_pending: Option<Instant>,
    /// Ops whose commit failed, oldest first, followed by every op appended since: written, in
    /// this order, by the first commit that succeeds.
    pub(super) held: Vec<PendingOp>,
    pub(super) held_bytes: u64,
    /// When the first of the held ops failed to commit.
    pub(super) held_since: Option<Instant>,
    /// While ops are held: the backoff, and when the next attempt is due.
    pub(super) retry: Option<(Duration, Instant)>,
    pub(super) last_failure_log: Option<Instant>,
    pub(super) health: Arc<StoreHealth>,
    /// When the WAL's size was last compared with the space left.
    pub(super) space_checked: Option<Instant>,
    /// The private rooms, in memory: a committed row is added here.
    pub(super) access: AccessMap,
}

impl Writer {
    /// Executes commands in arrival order until `Close`, or until every `Store` is dropped.
    pub(super) fn run(mut self, commands: mpsc::Receiver<Command>) {
        loop {
            let flush_due = self
                .first_pending
                .map(|first| first + self.options.flush_interval);
            let retry_due = self.retry.map(|(_, at)| at);
            // While ops are held, a flush only counts new ops among them (so that rooms see
            // the bound in time); the retry itself waits for its own time.
            let due = match (flush_due, retry_due) {
                (Some(flush), Some(retry)) => Some(flush.min(retry)),
                (flush, retry) => flush.or(retry),
            };
            let received = match due {
                Some(due) => commands.recv_timeout(due.saturating_duration_since(Instant::now())),
                None => commands.recv().map_err(|_| RecvTimeoutError::Disconnected),
            };
            match received {
                Ok(Command::Wake) => {
                    let buffered = lock(&self.appends).ops.len();
                    if buffered >= MAX_PENDING_OPS {
                        self.commit_pending();
                    } else if buffered > 0 {
                        self.first_pending.get_or_insert_with(Instant::now);
                    }
                }
                Ok(Command::Close { reply }) => {
                    lock(&self.appends).closed = true;
                    self.last_attempt();
                    self.finish();
                    let _ = reply.send(());
                    return;
                }
                Ok(command) => {
                    // Every op appended before this command was queued is on disk first.
                    self.commit_pending();
                    self.execute(command);
                }
                Err(RecvTimeoutError::Timeout) => self.commit_pending(),
                Err(RecvTimeoutError::Disconnected) => {
                    // Every handle was dropped without close: still commit what was queued.
                    lock(&self.appends).closed = true;
                    self.last_attempt();
                    self.finish();
                    return;
                }
            }
        }
    }

    pub(super) fn execute(&mut self, command: Command) {
        match command {
            Command::Wake => {
                // `run` handles wake-ups; the next commit takes the buffered ops either way.
            }
            // While ops are held, a checkpoint would delete stored ops below held ones; it is
            // left out, and the ops it would have covered stay in place.
            Command::Checkpoint { room, seq, .. } if !self.held.is_empty() => {
                log::debug!("room={room}: checkpoint at op {seq} not written, ops are held");
            }
            Command::Forget { room, .. } if !self.held.is_empty() => {
                log::debug!("room={room}: not forgotten, ops are held");
            }
            Command::Checkpoint {
                room,
                seq,
                width,
                height,
                png,
            } => match self.write_checkpoint(&room, seq, width, height, &png) {
                Ok(true) => log::debug!("room={room}: checkpoint at op {seq} stored"),
                Ok(false) => log::debug!(
                    "room={room}: checkpoint at op {seq} ignored, a later one is stored"
                ),
                Err(err) => self.log_failure(
                    &err,
                    format_args!(
                        "the checkpoint of room={room} at op {seq} was not written; \
                         the ops it covers stay in place"
                    ),
                ),
            },
            Command::Forget { room, up_to_seq } => match self.forget(&room, up_to_seq) {
                Ok(true) => log::debug!("room={room}: forgotten"),
                Ok(false) => log::debug!(
                    "room={room}: not forgotten, something after op {up_to_seq} is stored"
                ),
                Err(err) => self.log_failure(&err, format_args!("room={room} was not forgotten")),
            },
            Command::Load { room, reply } => {
                // With `create`, the answer is always `Some`.
                let loaded = self.load(&room, true).map(Option::unwrap_or_default);
                if let Err(err) = self.mark_opened(&room) {
                    log::warn!("room={room}: cannot record that it was opened: {err}");
                }
                let _ = reply.send(loaded.map(|stored| self.with_held(&room, stored)));
            }
            Command::Read { room, reply } => {
                let read = self.load(&room, false);
                let read = read.map(|stored| stored.map(|stored| self.with_held(&room, stored)));
                let _ = reply.send(read);
            }
            Command::Flush { reply } => {
                let result = match self.health.failure() {
                    Some(last) if !self.held.is_empty() => Err(StoreError::WriteFailed {
                        path: self.path.clone(),
                        held: self.held.len(),
                        last,
                    }),
                    _ => Ok(()),
                };
                let _ = reply.send(result);
            }
            Command::RoomCount { reply } => {
                let count = self
                    .conn
                    .query_row("SELECT count(*) FROM rooms", [], |row| row.get::<_, i64>(0))
                    .map(|count| usize::try_from(count).unwrap_or(0))
                    .map_err(|source| self.sqlite_error("cannot read", source));
                let _ = reply.send(count);
            }
            Command::CreatePrivate {
                room,
                hashes,
                reply,
            } => {
                let created = self
                    .create_private(&room, &hashes)
                    .map_err(|source| self.sqlite_error("cannot write to", source))
                    .and_then(|created| created);
                if let Ok(Creation::Created) = created {
                    self.access_map().insert(
                        room,
                        RoomAccess {
                            hashes,
                            locked: false,
                        },
                    );
                }
                let _ = reply.send(created);
            }
            Command::ReplaceLinks {
                room,
                edit,
                view,
                reply,
            } => {
                let changed = self
                    .conn
                    .execute(
                        "UPDATE room_access SET edit_hash = ?2, view_hash = ?3 WHERE room = ?1",
                        params![&*room, &edit[..], &view[..]],
                    )
                    .map_err(|source| self.sqlite_error("cannot write to", source))
                    .map(|rows| rows > 0);
                if let Ok(true) = changed {
                    if let Some(access) = self.access_map().get_mut(&room) {
                        access.hashes.edit = edit;
                        access.hashes.view = view;
                    }
                }
                let _ = reply.send(changed);
            }
            Command::SetLocked {
                room,
                locked,
                reply,
            } => {
                let changed = self
                    .conn
                    .execute(
                        "UPDATE room_access SET locked = ?2 WHERE room = ?1",
                        params![&*room, locked],
                    )
                    .map_err(|source| self.sqlite_error("cannot write to", source))
                    .map(|rows| rows > 0);
                if let Ok(true) = changed {
                    if let Some(access) = self.access_map().get_mut(&room) {
                        access.locked = locked;
                    }
                }
                let _ = reply.send(changed);
            }
            Command::Delete { room, reply } => {
                let deleted = self
                    .delete_room(&room)
                    .map_err(|source| self.sqlite_error("cannot delete from", source));
                if deleted.is_ok() {
                    self.access_map().remove(&room);
                }
                let _ = reply.send(deleted);
            }
            Command::List { reply } => {
                let listed = self
                    .list_rooms()
                    .map_err(|source| self.sqlite_error("cannot read", source));
                let _ = reply.send(listed);
            }
            Command::Close { reply } => {
                // Handled by `run`, which owns the connection's end.
                let _ = reply.send(());
            }
            // Held ops of an expired room would bring it back half; expire once they are written.
            Command::Expire { reply, .. } if !self.held.is_empty() => {
                let _ = reply.send(Ok(0));
            }
            Command::Expire {
                cutoff,
                open,
                reply,
            } => {
                let expired = self
                    .expire(cutoff, &open)
                    .map_err(|source| self.sqlite_error("cannot expire rooms in", source));
                if let Ok(rooms) = &expired {
                    let mut access = self
                        .access
                        .write()
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                    for room in rooms {
                        log::info!("room={room} deleted: nobody opened it within --room-ttl");
                        access.remove(room.as_str());
                    }
                }
                let _ = reply.send(expired.map(|rooms| rooms.len()));
            }
            Command::Backup { dir, reply } => {
                let copied = super::backup::copy_database(&self.conn, &dir);
                match &copied {
                    Ok(done) => log::info!(
                        "backed up {} into {} ({} bytes)",
                        self.path.display(),
                        done.path.display(),
                        done.bytes
                    ),
                    Err(why) => log::error!("backup of {} failed: {why}", self.path.display()),
                }
                let _ = reply.send(copied.map_err(|why| StoreError::BackupFailed { why }));
            }
            #[cfg(test)]
            Command::SetMaxPageCount(pages) => {
                let set = format!("PRAGMA max_page_count = {pages}");
                if let Err(err) = self.conn.query_row(&set, [], |_| Ok(())) {
                    log::error!("{set}: {err}");
                }
            }
        }
    }

    fn access_map(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<Arc<str>, RoomAccess>> {
        self.access
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Deletes every row of `room`, and drops its held ops (never to be written): `true` if
    /// anything was there.
    pub(super) fn delete_room(&mut self, room: &str) -> rusqlite::Result<bool> {
        let before = self.held.len();
        self.held.retain(|op| &*op.room != room);
        if self.held.len() != before {
            self.held_bytes = op_bytes(&self.held);
            self.health.holding(self.held_bytes);
            if self.held.is_empty() {
                self.held_since = None;
                self.retry = None;
                self.health.recovered();
            }
        }
        let tx = self.conn.transaction()?;
        let deleted = delete_rows(&tx, room)?;
        tx.commit()?;
        Ok(deleted > 0 || self.held.len() != before)
    }

    /// Every room on disk and every private room: its bytes stored and when its picture was last
    /// written (or the room made).
    pub(super) fn list_rooms(&mut self) -> rusqlite::Result<Vec<RoomListing>> {
        let mut statement = self.conn.prepare(
            "SELECT r.name, a.room IS NOT NULL,                     coalesce(length(r.checkpoint), 0)                       + coalesce((SELECT sum(length(op)) FROM ops WHERE ops.room = r.name), 0),                     r.updated_at              FROM rooms r LEFT JOIN room_access a ON a.room = r.name              UNION ALL              SELECT a.room, 1, 0, a.created_at FROM room_access a              WHERE NOT EXISTS (SELECT 1 FROM rooms WHERE name = a.room)              ORDER BY 1",
        )?;
        let rows = statement.query_map([], |row| {
            Ok(RoomListing {
                room: row.get(0)?,
                private: row.get(1)?,
                members: None,
                stored_bytes: row.get::<_, Option<i64>>(2)?.map_or(0, |n| n.max(0) as u64),
                changed_ms: row
                    .get::<_, Option<i64>>(3)?
                    .map(|secs| secs.max(0) as u64 * 1000),
            })
        })?;
        rows.collect()
    }

    pub(super) fn sqlite_error(&self, action: &'static str, source: rusqlite::Error) -> StoreError {
        StoreError::Sqlite {
            path: self.path.clone(),
            action,
            source,
        }
    }

    /// Folds the WAL into the database and truncates it when it takes more than the space left on
    /// its volume (checked every `SPACE_CHECK_EVERY`). The WAL grows to `WAL_AUTOCHECKPOINT_PAGES`
    /// between folds, mostly pages that later commits rewrote: on a small volume it filled the
    /// disk by itself (a chaos run on 16 MiB, with 2 MiB of strokes in a 16 MiB WAL), and folding
    /// then needed the very space the WAL held. Folding early, while there is room, frees it.
    pub(super) fn fold_wal_if_short_of_space(&mut self) {
        if self
            .space_checked
            .is_some_and(|at| at.elapsed() < SPACE_CHECK_EVERY)
        {
            return;
        }
        self.space_checked = Some(Instant::now());
        let mut wal = self.path.clone().into_os_string();
        wal.push("-wal");
        let wal_bytes = std::fs::metadata(&wal).map_or(0, |meta| meta.len());
        if wal_bytes < WAL_FOLD_MIN_BYTES {
            return;
        }
        let Some(free_bytes) = self.path.parent().and_then(free_space) else {
            return;
        };
        if free_bytes > wal_bytes {
            return;
        }
        match self
            .conn
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
        {
            Ok(()) => log::warn!(
                "{}: {} bytes free, less than its WAL's {wal_bytes}: folded the WAL early",
                self.path.display(),
                free_bytes
            ),
            Err(err) => log::debug!(
                "{}: folding the WAL early failed: {err}",
                self.path.display()
            ),
        }
    }

    /// `stored` with the room's held ops after it: what was accepted is part of the room, whether
    /// or not it could be written yet.
    pub(super) fn with_held(&self, room: &str, mut stored: StoredRoom) -> StoredRoom {
        let after = stored
            .ops
            .last()
            .map_or(stored.checkpoint_seq, |(seq, _)| *seq);
        for op in self.held.iter().filter(|op| &*op.room == room) {
            let seq = u64::try_from(op.seq).unwrap_or(0);
            if seq > after {
                stored.stored_bytes += op.op.len() as u64;
                stored.ops.push((seq, op.op.to_string()));
            }
        }
        stored
    }

    /// Logs a failed write (a checkpoint, a forget) that loses nothing: what it would have
    /// replaced is still stored.
    pub(super) fn log_failure(&mut self, err: &rusqlite::Error, consequence: fmt::Arguments<'_>) {
        log::error!(
            "cannot write to {}: {err}; {consequence}",
            self.path.display()
        );
    }

    /// Commits every buffered op in one transaction, after the held ones; while ops are held,
    /// only once the retry is due.
    pub(super) fn commit_pending(&mut self) {
        self.first_pending = None;
        // Swapped, not drained: both vectors keep their capacity.
        std::mem::swap(&mut lock(&self.appends).ops, &mut self.pending);
        if self.held.is_empty() {
            if self.pending.is_empty() {
                return;
            }
            self.fold_wal_if_short_of_space();
            if let Err(err) = write_ops(&mut self.conn, &self.pending) {
                std::mem::swap(&mut self.held, &mut self.pending);
                self.held_bytes = op_bytes(&self.held);
                self.held_since = Some(Instant::now());
                self.commit_failed(&err);
            }
            self.pending.clear();
            return;
        }
        self.held_bytes += op_bytes(&self.pending);
        self.held.append(&mut self.pending);
        self.health.holding(self.held_bytes);
        if self.retry.is_some_and(|(_, at)| Instant::now() < at) {
            return;
        }
        self.retry_held();
    }

    /// Tries to write every held op, in order.
    pub(super) fn retry_held(&mut self) {
        // Folding the WAL may be what makes room (a WAL holds every page a commit rewrote).
        self.space_checked = None;
        self.fold_wal_if_short_of_space();
        match write_ops(&mut self.conn, &self.held) {
            Ok(()) => {
                let waited = self
                    .held_since
                    .map_or(Duration::ZERO, |since| since.elapsed());
                log::warn!(
                    "{} is writable again: {} ops ({} bytes) held for {:.1}s are written",
                    self.path.display(),
                    self.held.len(),
                    self.held_bytes,
                    waited.as_secs_f64()
                );
                self.held.clear();
                self.held_bytes = 0;
                self.held_since = None;
                self.retry = None;
                self.last_failure_log = None;
                self.health.recovered();
            }
            Err(err) => self.commit_failed(&err),
        }
    }

    /// A commit failed: its ops are held; the next attempt waits longer.
    pub(super) fn commit_failed(&mut self, err: &rusqlite::Error) {
        let backoff = match self.retry {
            Some((backoff, _)) => (backoff * 2).min(RETRY_MAX),
            None => RETRY_FIRST,
        };
        self.retry = Some((backoff, Instant::now() + backoff));
        let reason = format!("cannot write to {}: {err}", self.path.display());
        let log_due = self
            .last_failure_log
            .is_none_or(|last| last.elapsed() >= FAILURE_LOG_EVERY);
        if log_due {
            self.last_failure_log = Some(Instant::now());
            log::error!(
                "{reason}; {} ops ({} bytes) are held in memory and retried",
                self.held.len(),
                self.held_bytes
            );
        }
        self.health.failed(reason, self.held_bytes);
    }

    /// The thread is ending: one more try for what is held, whatever the backoff says.
    pub(super) fn last_attempt(&mut self) {
        self.retry = None;
        self.commit_pending();
        if !self.held.is_empty() {
            log::error!(
                "{} could not be written: {} accepted ops ({} bytes) are lost",
                self.path.display(),
                self.held.len(),
                self.held_bytes
            );
        }
    }

    pub(super) fn write_checkpoint(
        &mut self,
        room: &str,
        seq: i64,
        width: u32,
        height: u32,
        png: &[u8],
    ) -> rusqlite::Result<bool> {
        let tx = self.conn.transaction()?;
        let stored: Option<i64> = tx
            .prepare_cached("SELECT checkpoint_seq FROM rooms WHERE name = ?1")?
            .query_row([room], |row| row.get(0))
            .optional()?;
        if stored.is_some_and(|stored| stored >= seq) {
            return Ok(false);
        }
        tx.prepare_cached(
            "INSERT INTO rooms (name, width, height, checkpoint, checkpoint_seq, updated_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6) \
             ON CONFLICT (name) DO UPDATE SET width = excluded.width, height = excluded.height, \
             checkpoint = excluded.checkpoint, checkpoint_seq = excluded.checkpoint_seq, \
             updated_at = excluded.updated_at",
        )?
        .execute(params![
            room,
            width,
            height,
            (!png.is_empty()).then_some(png),
            seq,
            unix_now()
        ])?;
        tx.prepare_cached("DELETE FROM ops WHERE room = ?1 AND last_seq <= ?2")?
            .execute(params![room, seq])?;
        tx.commit()?;
        Ok(true)
    }

    pub(super) fn forget(&mut self, room: &str, up_to_seq: i64) -> rusqlite::Result<bool> {
        let tx = self.conn.transaction()?;
        let stored: Option<i64> = tx
            .prepare_cached("SELECT checkpoint_seq FROM rooms WHERE name = ?1")?
            .query_row([room], |row| row.get(0))
            .optional()?;
        let later_op: bool = tx
            .prepare_cached("SELECT EXISTS (SELECT 1 FROM ops WHERE room = ?1 AND last_seq > ?2)")?
            .query_row(params![room, up_to_seq], |row| row.get(0))?;
        if later_op || stored.is_some_and(|stored| stored > up_to_seq) {
            return Ok(false);
        }
        tx.prepare_cached("DELETE FROM ops WHERE room = ?1 AND last_seq <= ?2")?
            .execute(params![room, up_to_seq])?;
        tx.prepare_cached("DELETE FROM rooms WHERE name = ?1")?
            .execute([room])?;
        tx.commit()?;
        Ok(true)
    }

    /// Records that a room actor opened `room` now (retention counts from it).
    fn mark_opened(&mut self, room: &str) -> rusqlite::Result<()> {
        self.conn
            .prepare_cached("UPDATE rooms SET updated_at = ?2 WHERE name = ?1")?
            .execute(params![room, unix_now()])?;
        Ok(())
    }

    /// Deletes the rooms last opened before `cutoff` (Unix seconds), with their ops and tokens,
    /// after setting the time of every room in `open` to now; the names deleted.
    pub(super) fn expire(
        &mut self,
        cutoff: i64,
        open: &[std::sync::Arc<str>],
    ) -> rusqlite::Result<Vec<String>> {
        let now = unix_now();
        let tx = self.conn.transaction()?;
        {
            let mut touch =
                tx.prepare_cached("UPDATE rooms SET updated_at = ?2 WHERE name = ?1")?;
            for room in open {
                touch.execute(params![room.as_ref(), now])?;
            }
        }
        // Rows of another age of this code, without a time: their age starts now.
        tx.execute(
            "UPDATE rooms SET updated_at = ?1 WHERE updated_at IS NULL",
            [now],
        )?;
        tx.execute(
            "UPDATE room_access SET created_at = ?1 WHERE created_at IS NULL",
            [now],
        )?;
        let expired: Vec<String> = tx
            .prepare(
                "SELECT name FROM rooms WHERE updated_at < ?1 \
                 UNION SELECT room FROM room_access WHERE created_at < ?1 \
                 AND room NOT IN (SELECT name FROM rooms)",
            )?
            .query_map([cutoff], |row| row.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        for room in &expired {
            delete_rows(&tx, room)?;
        }
        tx.commit()?;
        Ok(expired)
    }

    /// Inserts a private room's row unless a room of that name exists; `TooManyRooms` once
    /// `max_rooms` private rooms are stored.
    pub(super) fn create_private(
        &mut self,
        room: &str,
        hashes: &AccessHashes,
    ) -> rusqlite::Result<Result<Creation, StoreError>> {
        let max_rooms = self.options.max_rooms;
        let tx = self.conn.transaction()?;
        let (private, taken): (i64, bool) = tx.query_row(
            "SELECT (SELECT count(*) FROM room_access), \
                    EXISTS (SELECT 1 FROM rooms WHERE name = ?1) \
                    OR EXISTS (SELECT 1 FROM room_access WHERE room = ?1)",
            [room],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )?;
        if taken {
            return Ok(Ok(Creation::NameTaken));
        }
        if usize::try_from(private).unwrap_or(usize::MAX) >= max_rooms {
            return Ok(Err(StoreError::TooManyRooms { limit: max_rooms }));
        }
        tx.execute(
            "INSERT INTO room_access (room, edit_hash, view_hash, created_at, owner_hash) \
             VALUES (?1, ?2, ?3, ?4, ?5)",
            params![
                room,
                &hashes.edit[..],
                &hashes.view[..],
                unix_now(),
                hashes.owner.as_ref().map(|owner| &owner[..])
            ],
        )?;
        tx.commit()?;
        Ok(Ok(Creation::Created))
    }

    /// Reads a room; one that is not on disk is created if `create` (within `max_rooms`), else
    /// `Ok(None)`.
    pub(super) fn load(
        &mut self,
        room: &str,
        create: bool,
    ) -> Result<Option<StoredRoom>, StoreError> {
        let path = self.path.clone();
        let max_rooms = self.options.max_rooms;
        let read = |source| StoreError::Sqlite {
            path: path.clone(),
            action: "cannot read",
            source,
        };
        let corrupt = |detail: String| StoreError::Corrupt {
            path: path.clone(),
            detail,
        };
        let tx = self.conn.transaction().map_err(read)?;
        let row: Option<(Option<Vec<u8>>, i64)> = tx
            .prepare_cached("SELECT checkpoint, checkpoint_seq FROM rooms WHERE name = ?1")
            .and_then(|mut statement| {
                statement
                    .query_row([room], |row| Ok((row.get(0)?, row.get(1)?)))
                    .optional()
            })
            .map_err(read)?;
        let existed = row.is_some();
        if !existed && !create {
            return Ok(None);
        }
        if !existed {
            let stored: i64 = tx
                .prepare_cached("SELECT count(*) FROM rooms")
                .and_then(|mut statement| statement.query_row([], |row| row.get(0)))
                .map_err(read)?;
            if usize::try_from(stored).unwrap_or(usize::MAX) >= max_rooms {
                return Err(StoreError::TooManyRooms { limit: max_rooms });
            }
            let created = tx
                .prepare_cached("INSERT INTO rooms (name, updated_at) VALUES (?1, ?2)")
                .and_then(|mut statement| statement.execute(params![room, unix_now()]));
            if let Err(err) = created {
                // A new room opens all the same (disk full, say): its ops are held like any
                // others, and their commit creates its row.
                log::warn!(
                    "room={room}: cannot record it in {} ({err}); it opens all the same",
                    path.display()
                );
                return Ok(Some(StoredRoom::default()));
            }
        }
        let (checkpoint, checkpoint_seq) = row.unwrap_or((None, 0));
        let rows: Vec<(i64, i64, String)> = tx
            .prepare_cached(
                "SELECT seq, last_seq, op FROM ops WHERE room = ?1 AND last_seq > ?2 ORDER BY seq",
            )
            .and_then(|mut statement| {
                statement
                    .query_map(params![room, checkpoint_seq], |row| {
                        Ok((row.get(0)?, row.get(1)?, row.get(2)?))
                    })?
                    .collect()
            })
            .map_err(read)?;
        let ops = ungroup(rows, checkpoint_seq)
            .map_err(|why| corrupt(format!("room {room:?} has damaged ops: {why}")))?;
        tx.commit().map_err(|source| StoreError::Sqlite {
            path: path.clone(),
            action: "cannot write to",
            source,
        })?;
        let checkpoint_seq = u64::try_from(checkpoint_seq)
            .map_err(|_| corrupt(format!("room {room:?} has checkpoint_seq {checkpoint_seq}")))?;
        let mut stored_bytes = checkpoint.as_ref().map_or(0, |png| png.len() as u64);
        let ops = ops
            .into_iter()
            .map(|(seq, op)| {
                stored_bytes += op.len() as u64;
                // seq > checkpoint_seq >= 0, so the conversion cannot fail.
                (u64::try_from(seq).unwrap_or(0), op)
            })
            .collect();
        Ok(Some(StoredRoom {
            checkpoint,
            checkpoint_seq,
            ops,
            stored_bytes,
            existed,
        }))
    }

    /// The graceful end: fold the WAL into the database and close it.
    pub(super) fn finish(self) {
        if let Err(err) = self
            .conn
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
        {
            log::error!(
                "{}",
                StoreError::Sqlite {
                    path: self.path.clone(),
                    action: "cannot checkpoint the WAL of",
                    source: err,
                }
            );
        }
        if let Err((_, err)) = self.conn.close() {
            log::error!(
                "{}",
                StoreError::Sqlite {
                    path: self.path.clone(),
                    action: "cannot close",
                    source: err,
                }
            );
        }
        log::info!("closed {}", self.path.display());
    }
}

/// Bytes an unprivileged process may still write on the volume holding `dir`.
pub(super) fn free_space(dir: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    let mut stats = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `path` is a valid NUL-terminated string and `stats` is writable memory of the
    // right type; statvfs fills it when it returns 0.
    if unsafe { libc::statvfs(path.as_ptr(), stats.as_mut_ptr()) } != 0 {
        return None;
    }
    // SAFETY: statvfs returned 0, so it initialised `stats`.
    let stats = unsafe { stats.assume_init() };
    // fsblkcnt_t and c_ulong are 32 bits wide on 32-bit targets.
    #[allow(clippy::useless_conversion)]
    let (blocks, block_size) = (u64::from(stats.f_bavail), u64::from(stats.f_frsize));
    Some(blocks.saturating_mul(block_size))
}

/// The bytes of `ops`' text: what holding them costs.
pub(super) fn op_bytes(ops: &[PendingOp]) -> u64 {
    ops.iter().map(|op| op.op.len() as u64).sum()
}

/// Commits `ops` in one transaction, creating (or touching) the row of each room they belong to,
/// so that every room with ops on disk counts toward `max_rooms`.
pub(super) fn write_ops(conn: &mut Connection, ops: &[PendingOp]) -> rusqlite::Result<()> {
    let now = unix_now();
    let tx = conn.transaction()?;
    {
        let mut touch = tx.prepare_cached(
            // Only a missing row is written: rewriting every touched room's row on each commit
            // dirtied the whole rooms table every time.
            "INSERT INTO rooms (name, updated_at) VALUES (?1, ?2) ON CONFLICT (name) DO NOTHING",
        )?;
        let mut insert = tx.prepare_cached(
            "INSERT OR REPLACE INTO ops (room, seq, last_seq, op) VALUES (?1, ?2, ?3, ?4)",
        )?;
        let mut touched: HashSet<&str> = HashSet::new();
        for group in group_ops(ops) {
            if touched.insert(group.room) {
                touch.execute(params![group.room, now])?;
            }
            insert.execute(params![group.room, group.first, group.last, group.ops])?;
        }
    }
    tx.commit()
}

/// Consecutive ops of one room, stored as one row: with many busy rooms, a row per op cost an
/// insert per op; a row per room per commit costs one.
pub(super) struct OpGroup<'a> {
    pub(super) room: &'a str,
    pub(super) first: i64,
    pub(super) last: i64,
    /// The ops' JSON, one per line (JSON text from serde never holds a raw newline).
    pub(super) ops: String,
}

/// Groups `ops` (in arrival order) into runs of consecutive sequence numbers per room.
pub(super) fn group_ops(ops: &[PendingOp]) -> Vec<OpGroup<'_>> {
    let mut groups: Vec<OpGroup<'_>> = Vec::new();
    let mut open: HashMap<&str, usize> = HashMap::new();
    for op in ops {
        let room: &str = &op.room;
        match open.get(room).map(|&index| &mut groups[index]) {
            Some(group) if group.last + 1 == op.seq => {
                group.ops.push('\n');
                group.ops.push_str(&op.op);
                group.last = op.seq;
            }
            _ => {
                open.insert(room, groups.len());
                groups.push(OpGroup {
                    room,
                    first: op.seq,
                    last: op.seq,
                    ops: op.op.to_string(),
                });
            }
        }
    }
    groups
}

/// The ops stored in grouped rows, one by one, without those a checkpoint at `after` covers.
pub(super) fn ungroup(
    rows: Vec<(i64, i64, String)>,
    after: i64,
) -> Result<Vec<(i64, String)>, String> {
    let mut ops = Vec::new();
    for (first, last, joined) in rows {
        let count = joined.split('\n').count() as i64;
        if last - first + 1 != count {
            return Err(format!("row {first}..={last} holds {count} ops"));
        }
        for (seq, op) in (first..).zip(joined.split('\n')) {
            if seq > after {
                ops.push((seq, op.to_owned()));
            }
        }
    }
    Ok(ops)
}

/// Deletes every row of `room` (its ops, its picture, its tokens) in `tx`: the one deletion of a
/// room, whether the operator asked for it or retention found the room unused. The number of rows.
fn delete_rows(tx: &rusqlite::Transaction<'_>, room: &str) -> rusqlite::Result<usize> {
    let mut deleted = 0;
    for statement in [
        "DELETE FROM ops WHERE room = ?1",
        "DELETE FROM rooms WHERE name = ?1",
        "DELETE FROM room_access WHERE room = ?1",
    ] {
        deleted += tx.prepare_cached(statement)?.execute([room])?;
    }
    Ok(deleted)
}
