//! Undo history: who drew each stroke a room has not folded into a checkpoint yet, whether it is
//! shown or undone, and which of the room's operations are settled (may go into a checkpoint).
//!
//! A stroke is what one pointer press draws: every segment with the same `strokeId` (and a clear
//! with one). Its author is a browser, not a connection: an [`AuthorId`] is a hash of the secret
//! the page keeps and sends when it connects, so a page that reloads can still undo what it drew.
//! A stroke may be undone or redone by its author while it is among the author's last
//! `--undo-strokes` strokes and younger than `--undo-window`; after that it is *final*. A clear
//! is everyone's to undo (any member may restore what someone else wiped), within the same
//! limits; only its author may redo it.
//!
//! This module is pure (no actors, no I/O, no clock: times are passed in), so that every node
//! replaying the same operations in the same order reaches the same decisions. It must never let
//! anyone but a stroke's author change it, and never call an operation settled while a stroke it
//! touches may still be undone: a checkpoint bakes what it covers for good.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::canvas::Op;
use crate::protocol::{Rejection, StrokeId};

/// How far past its undo window a stroke is still kept out of checkpoints: an undo accepted by a
/// node whose clock is behind (cluster mode) must find its stroke still there on every node.
pub const SETTLE_MARGIN: Duration = Duration::from_secs(60);

/// The per-browser secret a page sends (`?author=` on the WebSocket URL): 16-128 characters of
/// `A-Z a-z 0-9 _ -`. The page makes 32 random bytes of it.
pub const MIN_AUTHOR_SECRET_CHARS: usize = 16;
pub const MAX_AUTHOR_SECRET_CHARS: usize = 128;

/// Who drew a stroke: 128 bits of SHA-256 over the room and the browser's secret. Per room, so
/// the stored id links nothing across rooms; never sent to clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AuthorId([u8; 16]);

impl AuthorId {
    pub fn from_secret(room: &str, secret: &str) -> AuthorId {
        let mut hasher = Sha256::new();
        hasher.update(b"livecanvas author v1\0");
        hasher.update(room.as_bytes());
        hasher.update(b"\0");
        hasher.update(secret.as_bytes());
        let digest = hasher.finalize();
        let mut id = [0; 16];
        id.copy_from_slice(&digest[..16]);
        AuthorId(id)
    }

    /// For a connection that sent no secret: it can undo only what it draws while connected.
    pub fn random() -> AuthorId {
        AuthorId(*uuid::Uuid::new_v4().as_bytes())
    }

    fn to_hex(self) -> String {
        let mut hex = String::with_capacity(32);
        for byte in self.0 {
            let _ = write!(hex, "{byte:02x}");
        }
        hex
    }

    fn from_hex(hex: &str) -> Option<AuthorId> {
        if hex.len() != 32 || !hex.is_ascii() {
            return None;
        }
        let mut id = [0; 16];
        for (i, byte) in id.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&hex[i * 2..i * 2 + 2], 16).ok()?;
        }
        Some(AuthorId(id))
    }
}

/// Whether `secret` is a usable `?author=` value.
pub fn is_valid_author_secret(secret: &str) -> bool {
    (MIN_AUTHOR_SECRET_CHARS..=MAX_AUTHOR_SECRET_CHARS).contains(&secret.len())
        && secret
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// What the room knows of an operation beyond its message: who sent it and when (Unix ms, the
/// accepting node's clock). Stored with the operation, never relayed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Meta {
    pub author: AuthorId,
    pub at_ms: u64,
}

impl Meta {
    /// An operation of `author`'s, accepted now.
    pub fn now(author: AuthorId) -> Meta {
        Meta {
            author,
            at_ms: now_ms(),
        }
    }

    /// The stored form of an operation: `@<author hex> <at ms> <message JSON>`, on one line (the
    /// store joins operations with newlines). An operation without meta is stored as its message
    /// alone, as before undo existed.
    pub fn stored(meta: Option<&Meta>, json: &str) -> String {
        match meta {
            None => json.to_owned(),
            Some(meta) => format!("@{} {} {json}", meta.author.to_hex(), meta.at_ms),
        }
    }

    /// Splits a stored operation into its meta (if any) and its message JSON.
    pub fn split(stored: &str) -> Result<(Option<Meta>, &str), String> {
        let Some(rest) = stored.strip_prefix('@') else {
            return Ok((None, stored));
        };
        let (author, rest) = rest.split_once(' ').ok_or("its author has no time")?;
        let (at, json) = rest.split_once(' ').ok_or("its time has no message")?;
        let author = AuthorId::from_hex(author).ok_or("its author is not 32 hex digits")?;
        let at_ms = at.parse().map_err(|_| "its time is not a number")?;
        Ok((Some(Meta { author, at_ms }), json))
    }
}

/// How far back each person can undo.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UndoLimits {
    /// A stroke is final once its author has drawn this many newer strokes.
    pub strokes: u64,
    /// A stroke is final once this long has passed since its last segment.
    pub window: Duration,
    /// A stroke is final once the room has taken this many operations after its last segment:
    /// what a newcomer is sent after the checkpoint stays bounded however busy the room.
    pub ops: u64,
}

struct Stroke {
    author: AuthorId,
    /// Its place among its author's strokes: newer strokes have larger numbers.
    index: u64,
    last_seq: u64,
    last_at_ms: u64,
    hidden: bool,
    /// A clear: anyone may undo it (restore what it wiped).
    clear: bool,
}

/// The strokes of a room's operations since its checkpoint.
pub struct History {
    limits: UndoLimits,
    strokes: HashMap<StrokeId, Stroke>,
    /// The index the author's next stroke gets.
    next_index: HashMap<AuthorId, u64>,
}

impl History {
    pub fn new(limits: UndoLimits) -> History {
        History {
            limits,
            strokes: HashMap::new(),
            next_index: HashMap::new(),
        }
    }

    /// Whether `op`, sent with `meta`, may be the room's next operation. An operation without a
    /// stroke (an old client's) always may.
    pub fn check(&self, seq: u64, op: &Op, meta: Option<&Meta>) -> Result<(), Rejection> {
        let stroke = match op {
            Op::Undo(id) | Op::Redo(id) => Some(&**id),
            other => other.stroke_id(),
        };
        self.check_unnamed(seq, op, meta)
            .map_err(|rejection| match stroke {
                Some(id) => rejection.about_stroke(id),
                None => rejection,
            })
    }

    fn check_unnamed(&self, seq: u64, op: &Op, meta: Option<&Meta>) -> Result<(), Rejection> {
        let Some(meta) = meta else {
            return match op {
                Op::Undo(_) | Op::Redo(_) => Err(Rejection::cannot_undo(
                    "this operation has no author, so it cannot undo anything",
                )),
                _ => Ok(()),
            };
        };
        match op {
            Op::Draw(segment) => {
                match segment.stroke_id.as_deref().map(|id| self.strokes.get(id)) {
                    Some(Some(stroke)) if stroke.author != meta.author => {
                        Err(Rejection::stroke_id(
                            "that strokeId belongs to someone else's stroke; pick a new one",
                        ))
                    }
                    Some(Some(stroke)) if stroke.hidden => Err(Rejection::stroke_id(
                        "that stroke was undone; start a new stroke to draw again",
                    )),
                    _ => Ok(()),
                }
            }
            Op::Clear(Some(id)) if self.strokes.contains_key(id) => {
                Err(Rejection::stroke_id("a clear needs a strokeId of its own"))
            }
            // A shape or a text is a whole stroke in one operation.
            Op::Shape(_) | Op::Text(_)
                if op
                    .stroke_id()
                    .is_some_and(|id| self.strokes.contains_key(id)) =>
            {
                Err(Rejection::stroke_id(
                    "a shape or text needs a strokeId of its own; pick a new one",
                ))
            }
            Op::Shape(_) | Op::Text(_) => Ok(()),
            Op::Clear(_) => Ok(()),
            Op::Undo(id) => self.check_toggle(seq, id, meta, true),
            Op::Redo(id) => self.check_toggle(seq, id, meta, false),
        }
    }

    fn check_toggle(&self, seq: u64, id: &str, meta: &Meta, undo: bool) -> Result<(), Rejection> {
        let Some(stroke) = self.strokes.get(id) else {
            return Err(Rejection::cannot_undo(
                "that stroke is not in the undo history (unknown, or too old)",
            ));
        };
        let restoring_a_clear = undo && stroke.clear;
        if stroke.author != meta.author && !restoring_a_clear {
            return Err(Rejection::not_yours(
                "only the person who drew a stroke can undo or redo it",
            ));
        }
        if self.final_by_count(stroke)
            || self.final_by_depth(stroke, seq)
            || self.final_by_time(stroke, meta.at_ms, Duration::ZERO)
        {
            return Err(Rejection::cannot_undo(
                "that stroke is past the undo history (too many newer strokes, or too old)",
            ));
        }
        match (undo, stroke.hidden) {
            (true, true) => Err(Rejection::cannot_undo("that stroke is already undone")),
            (false, false) => Err(Rejection::cannot_undo("that stroke is not undone")),
            _ => Ok(()),
        }
    }

    /// Takes operation `seq` into the history. Call only with what [`History::check`] allowed.
    pub fn record(&mut self, seq: u64, op: &Op, meta: Option<&Meta>) {
        let Some(meta) = meta else {
            return;
        };
        match op {
            Op::Draw(_) | Op::Shape(_) | Op::Text(_) | Op::Clear(_) => {
                let Some(id) = op.stroke_id() else {
                    return;
                };
                if let Some(stroke) = self.strokes.get_mut(id) {
                    stroke.last_seq = seq;
                    stroke.last_at_ms = stroke.last_at_ms.max(meta.at_ms);
                    return;
                }
                let next = self.next_index.entry(meta.author).or_insert(0);
                let index = *next;
                *next += 1;
                self.strokes.insert(
                    id.into(),
                    Stroke {
                        author: meta.author,
                        index,
                        last_seq: seq,
                        last_at_ms: meta.at_ms,
                        hidden: false,
                        clear: matches!(op, Op::Clear(_)),
                    },
                );
            }
            Op::Undo(id) | Op::Redo(id) => {
                if let Some(stroke) = self.strokes.get_mut(id) {
                    stroke.hidden = matches!(op, Op::Undo(_));
                }
            }
        }
    }

    /// [`History::check`], then [`History::record`].
    pub fn admit(&mut self, seq: u64, op: &Op, meta: Option<&Meta>) -> Result<(), Rejection> {
        self.check(seq, op, meta)?;
        self.record(seq, op, meta);
        Ok(())
    }

    /// Whether stroke `id` is undone now. (Renders derive the same from the operations, with
    /// `picture::undone`, so that a picture needs no history.)
    #[cfg(test)]
    fn is_hidden(&self, id: &str) -> bool {
        self.strokes.get(id).is_some_and(|stroke| stroke.hidden)
    }

    fn final_by_count(&self, stroke: &Stroke) -> bool {
        let next = self.next_index.get(&stroke.author).copied().unwrap_or(0);
        next.saturating_sub(stroke.index + 1) >= self.limits.strokes
    }

    fn final_by_depth(&self, stroke: &Stroke, seq: u64) -> bool {
        seq.saturating_sub(stroke.last_seq) > self.limits.ops
    }

    fn final_by_time(&self, stroke: &Stroke, at_ms: u64, margin: Duration) -> bool {
        let limit = self.limits.window.saturating_add(margin).as_millis();
        u128::from(at_ms.saturating_sub(stroke.last_at_ms)) > limit
    }

    /// Final for any operation after `head_seq`, accepted at `now_ms` or later (give or take
    /// [`SETTLE_MARGIN`] of clock difference between nodes).
    fn settled(&self, stroke: &Stroke, head_seq: u64, now_ms: u64) -> bool {
        self.final_by_count(stroke)
            || self.final_by_depth(stroke, head_seq + 1)
            || self.final_by_time(stroke, now_ms, SETTLE_MARGIN)
    }

    /// How many of `ops` (the room's operations since its checkpoint, oldest first) a checkpoint
    /// may bake now: the longest run from the start in which nothing may still be undone.
    ///
    /// A settled stroke may be split by the cut (with several people drawing at once someone is
    /// always mid-stroke, so a cut between strokes may never come). That is safe: a settled
    /// stroke's visibility never changes again, and if it is undone its undo came after its last
    /// segment, so after the cut too, where a restored history finds it with the stroke's later
    /// segments. (A restored history counts an author's newer strokes from what follows the cut;
    /// for an author who draws one stroke at a time those are all there.)
    pub fn settled_count(&self, ops: &[(u64, &Op)], now_ms: u64) -> usize {
        let head_seq = ops.last().map_or(0, |(seq, _)| *seq);
        let is_settled = |op: &Op| {
            let id = match op {
                Op::Undo(id) | Op::Redo(id) => Some(&**id),
                other => other.stroke_id(),
            };
            id.and_then(|id| self.strokes.get(id))
                .is_none_or(|stroke| self.settled(stroke, head_seq, now_ms))
        };
        ops.iter().take_while(|(_, op)| is_settled(op)).count()
    }

    /// Drops the strokes a checkpoint through `seq` baked whole. (One it split stays: its later
    /// segments are still drawn from the operations, and it is settled for good.)
    pub fn forget_through(&mut self, seq: u64) {
        self.strokes.retain(|_, stroke| stroke.last_seq > seq);
    }

    /// Some stroke may still be undone or redone (so a blank room is not blank for good).
    pub fn has_undoable(&self, head_seq: u64, now_ms: u64) -> bool {
        self.strokes
            .values()
            .any(|s| !self.settled(s, head_seq, now_ms))
    }

    /// When the oldest stroke that only time will settle settles (Unix ms), if there is one.
    pub fn next_settling_at_ms(&self) -> Option<u64> {
        let after = u64::try_from(self.limits.window.saturating_add(SETTLE_MARGIN).as_millis())
            .unwrap_or(u64::MAX);
        self.strokes
            .values()
            .filter(|s| !self.final_by_count(s))
            .map(|s| s.last_at_ms.saturating_add(after).saturating_add(1))
            .min()
    }
}

/// Now, in Unix milliseconds.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{ErrorCode, Segment, Tool};

    const LIMITS: UndoLimits = UndoLimits {
        strokes: 3,
        window: Duration::from_secs(60),
        ops: 1000,
    };
    const MINUTE_MS: u64 = 60_000;

    fn ada() -> AuthorId {
        AuthorId::from_secret("room", "ada-secret-0123456789")
    }

    fn bob() -> AuthorId {
        AuthorId::from_secret("room", "bob-secret-0123456789")
    }

    fn by(author: AuthorId, at_ms: u64) -> Meta {
        Meta { author, at_ms }
    }

    fn draw(id: &str) -> Op {
        Op::Draw(Segment {
            color: "#000000".into(),
            start_x: 1.0,
            start_y: 1.0,
            end_x: 2.0,
            end_y: 2.0,
            size: 2.0,
            tool: Tool::Pen,
            stroke_id: Some(id.into()),
        })
    }

    fn undo(id: &str) -> Op {
        Op::Undo(id.into())
    }

    fn code(result: Result<(), Rejection>) -> Option<ErrorCode> {
        result.err().map(|r| r.code)
    }

    #[test]
    fn anyone_may_undo_a_clear_and_only_its_author_may_redo_it() {
        let mut history = History::new(LIMITS);
        let clear = Op::Clear(Some("wipe".into()));
        history.admit(1, &clear, Some(&by(ada(), 0))).unwrap();
        history
            .admit(2, &undo("wipe"), Some(&by(bob(), 1)))
            .unwrap();
        assert!(history.is_hidden("wipe"));
        let bobs_redo = history.check(3, &Op::Redo("wipe".into()), Some(&by(bob(), 2)));
        assert_eq!(code(bobs_redo), Some(ErrorCode::NotYours));
        history
            .admit(3, &Op::Redo("wipe".into()), Some(&by(ada(), 2)))
            .unwrap();
        assert!(!history.is_hidden("wipe"));
    }

    #[test]
    fn a_clear_past_the_undo_window_cannot_be_restored_by_anyone() {
        let mut history = History::new(LIMITS);
        history
            .admit(1, &Op::Clear(Some("wipe".into())), Some(&by(ada(), 0)))
            .unwrap();
        let late = LIMITS.window.as_millis() as u64 + 1;
        let bobs = history.check(2, &undo("wipe"), Some(&by(bob(), late)));
        assert_eq!(code(bobs), Some(ErrorCode::CannotUndo));
    }

    #[test]
    fn the_author_may_undo_and_redo_a_stroke_and_nobody_else_may() {
        let mut history = History::new(LIMITS);
        history.admit(1, &draw("a"), Some(&by(ada(), 0))).unwrap();
        let bobs = history.check(9, &undo("a"), Some(&by(bob(), 1)));
        assert_eq!(code(bobs), Some(ErrorCode::NotYours));
        history.admit(2, &undo("a"), Some(&by(ada(), 1))).unwrap();
        assert!(history.is_hidden("a"));
        let again = history.check(9, &undo("a"), Some(&by(ada(), 2)));
        assert_eq!(code(again), Some(ErrorCode::CannotUndo));
        history
            .admit(3, &Op::Redo("a".into()), Some(&by(ada(), 3)))
            .unwrap();
        assert!(!history.is_hidden("a"));
    }

    #[test]
    fn a_secret_names_the_same_author_each_time_and_another_room_another_author() {
        let secret = "0123456789abcdef-secret";
        assert_eq!(
            AuthorId::from_secret("r", secret),
            AuthorId::from_secret("r", secret)
        );
        assert_ne!(
            AuthorId::from_secret("r", secret),
            AuthorId::from_secret("s", secret)
        );
    }

    #[test]
    fn a_stroke_is_final_after_the_limit_of_newer_strokes_by_its_author() {
        let mut history = History::new(LIMITS);
        for (seq, id) in ["a", "b", "c"].into_iter().enumerate() {
            history
                .admit(seq as u64 + 1, &draw(id), Some(&by(ada(), 0)))
                .unwrap();
        }
        // Bob's strokes do not push Ada's out.
        history.admit(4, &draw("x"), Some(&by(bob(), 0))).unwrap();
        assert!(history.check(9, &undo("a"), Some(&by(ada(), 0))).is_ok());
        history.admit(5, &draw("d"), Some(&by(ada(), 0))).unwrap();
        let a = history.check(9, &undo("a"), Some(&by(ada(), 0)));
        assert_eq!(code(a), Some(ErrorCode::CannotUndo));
        assert!(history.check(9, &undo("b"), Some(&by(ada(), 0))).is_ok());
    }

    #[test]
    fn a_stroke_is_final_once_the_window_has_passed() {
        let mut history = History::new(LIMITS);
        history.admit(1, &draw("a"), Some(&by(ada(), 0))).unwrap();
        assert!(history
            .check(9, &undo("a"), Some(&by(ada(), MINUTE_MS)))
            .is_ok());
        let late = history.check(9, &undo("a"), Some(&by(ada(), MINUTE_MS + 1)));
        assert_eq!(code(late), Some(ErrorCode::CannotUndo));
    }

    #[test]
    fn a_stroke_is_final_once_the_room_took_its_depth_of_operations_since() {
        let limits = UndoLimits { ops: 2, ..LIMITS };
        let mut history = History::new(limits);
        history.admit(1, &draw("a"), Some(&by(ada(), 0))).unwrap();
        assert!(history.check(3, &undo("a"), Some(&by(ada(), 0))).is_ok());
        let deep = history.check(4, &undo("a"), Some(&by(ada(), 0)));
        assert_eq!(code(deep), Some(ErrorCode::CannotUndo));
    }

    #[test]
    fn someone_elses_stroke_id_cannot_be_drawn_into() {
        let mut history = History::new(LIMITS);
        history.admit(1, &draw("a"), Some(&by(ada(), 0))).unwrap();
        let forged = history.check(9, &draw("a"), Some(&by(bob(), 0)));
        assert_eq!(code(forged), Some(ErrorCode::InvalidField));
        assert!(history.check(9, &draw("a"), Some(&by(ada(), 0))).is_ok());
    }

    #[test]
    fn nothing_that_may_be_undone_is_settled() {
        let mut history = History::new(LIMITS);
        let ops = [
            (1, Op::Clear(None)),
            (2, draw("a")),
            (3, draw("b")),
            (4, draw("a")),
            (5, draw("c")),
        ];
        let authors = [None, Some(bob()), Some(ada()), Some(bob()), Some(ada())];
        for ((seq, op), author) in ops.iter().zip(authors) {
            let meta = author.map(|a| by(a, 0));
            history.admit(*seq, op, meta.as_ref()).unwrap();
        }
        let refs: Vec<(u64, &Op)> = ops.iter().map(|(s, o)| (*s, o)).collect();
        // Everything is recent: only the old client's clear is settled.
        assert_eq!(history.settled_count(&refs, 0), 1);
        // Long after: everything.
        let later = LIMITS.window + SETTLE_MARGIN;
        let later_ms = later.as_millis() as u64 + 1;
        assert_eq!(history.settled_count(&refs, later_ms), 5);
        // Bob's stroke "a" is final by count, Ada's "b" not: the cut stays before "b".
        for (i, id) in ["x", "y", "z"].iter().enumerate() {
            history
                .admit(6 + i as u64, &draw(id), Some(&by(bob(), 0)))
                .unwrap();
        }
        assert_eq!(history.settled_count(&refs, 0), 2);
    }

    #[test]
    fn meta_survives_its_stored_form_and_plain_json_has_none() {
        let meta = by(ada(), 1234);
        let stored = Meta::stored(Some(&meta), r#"{"type":"clear"}"#);
        assert_eq!(
            Meta::split(&stored).unwrap(),
            (Some(meta), r#"{"type":"clear"}"#)
        );
        assert_eq!(Meta::split("{}").unwrap(), (None, "{}"));
        assert!(Meta::split("@zz 1 {}").is_err());
        assert!(!stored.contains('\n'));
    }

    /// The load generator's seeders found this: four people drawing at once, strokes of different
    /// lengths, so that someone is always mid-stroke; nothing was ever checkpointed.
    #[test]
    fn strokes_of_several_people_drawing_at_once_still_settle() {
        let limits = UndoLimits {
            strokes: 100,
            window: Duration::from_secs(1800),
            ops: 20_000,
        };
        let mut history = History::new(limits);
        let authors: Vec<AuthorId> = (0..4)
            .map(|i| AuthorId::from_secret("r", &format!("author-{i}-0123456789abcdef")))
            .collect();
        let (mut strokes, mut left) = ([0u64; 4], [0u64; 4]);
        let mut ops = Vec::new();
        for step in 0..15_000u64 {
            for (a, author) in authors.iter().enumerate() {
                if left[a] == 0 {
                    strokes[a] += 1;
                    left[a] = 20 + (step * 7 + a as u64 * 13) % 61;
                }
                left[a] -= 1;
                let seq = ops.len() as u64 + 1;
                let op = draw(&format!("s{a}-{}", strokes[a]));
                let meta = Meta {
                    author: *author,
                    at_ms: 0,
                };
                history.admit(seq, &op, Some(&meta)).unwrap();
                ops.push((seq, op));
            }
        }
        let listed: Vec<(u64, &Op)> = ops.iter().map(|(seq, op)| (*seq, op)).collect();
        let settled = history.settled_count(&listed, 0);
        // What stays undoable is bounded by --undo-max-ops, give or take the strokes it cuts into.
        assert!(
            ops.len() - settled <= 20_000 + 4 * 80,
            "{settled} of {} operations settled",
            ops.len()
        );
    }
}
