//! Pictures: a room's canvas in the form the server hands out and stores.
//!
//! This module owns turning a checkpoint (a PNG) plus the operations recorded after it into a new
//! checkpoint, and reading back what the store kept. Rendering is CPU work of some milliseconds, so
//! everything here is plain blocking code meant for `spawn_blocking`: it must never be called on a
//! room's own thread, and never trust stored bytes (a damaged room is an error, not a panic).

use std::collections::HashSet;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use base64::Engine as _;
use tokio::sync::Semaphore;

use crate::canvas::{Canvas, CanvasError, Op};
use crate::history::{History, Meta, UndoLimits};
use crate::protocol::{
    decode_client_message, CanvasSize, ClientMessage, StrokeId, MAX_CANVAS_SIDE_PX,
    PNG_DATA_URL_PREFIX,
};
use crate::storage::StoredRoom;

/// Renders at once, per [`Priority`], at most one per core: rooms that all checkpoint together
/// queue here rather than each taking a blocking thread and a picture's worth of memory.
static RENDER_PERMITS: LazyLock<[Arc<Semaphore>; 2]> = LazyLock::new(|| {
    let per_core = || Arc::new(Semaphore::new(render_permits_per_queue()));
    [per_core(), per_core()]
});

fn render_permits_per_queue() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get())
}

/// Which queue a render waits in. Someone waits for a foreground render (a newcomer's room
/// opening, a download); background renders (checkpoints) can wait. Separate queues, so that a
/// newcomer never waits behind the checkpoints of a crowd that just left (hundreds of rooms
/// checkpointing at once once kept a join waiting for seconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Priority {
    Foreground = 0,
    Background = 1,
}

/// How long a render may wait for a permit. Renders take milliseconds; a queue this long means
/// the renders are stuck, and the caller is better told so than left waiting for ever.
pub const RENDER_QUEUE_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a render gave no result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RenderFailed {
    /// No render permit came free within [`RENDER_QUEUE_TIMEOUT`].
    Busy,
    /// The render panicked (logged).
    Panicked,
}

impl std::fmt::Display for RenderFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RenderFailed::Busy => write!(
                f,
                "no render slot came free within {}s",
                RENDER_QUEUE_TIMEOUT.as_secs()
            ),
            RenderFailed::Panicked => write!(f, "the render panicked"),
        }
    }
}

/// Runs `render` on a blocking thread once a render permit is free.
///
/// The permit is taken and given back by a task of its own, and it travels into the blocking
/// closure, so it is held exactly while the render runs, whatever the caller does with the future
/// meanwhile. An actor that awaits this inside `ctx.spawn` may not poll it for a long time (a
/// `ctx.wait` future of the same actor blocks its spawned items): had the permit lived in the
/// caller's future, a finished render would have kept it until then, and two such rooms once held
/// both permits for ever: a finished render must give its permit back at once.
pub async fn render_off_thread<T: Send + 'static>(
    priority: Priority,
    render: impl FnOnce() -> T + Send + 'static,
) -> Result<T, RenderFailed> {
    let task = tokio::spawn(async move {
        let permits = RENDER_PERMITS[priority as usize].clone();
        let permit = tokio::time::timeout(RENDER_QUEUE_TIMEOUT, permits.acquire_owned())
            .await
            .map_err(|_| RenderFailed::Busy)?
            .map_err(|_| RenderFailed::Busy)?;
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            render()
        })
        .await
        .map_err(|err| {
            log::error!("a render failed: {err}");
            RenderFailed::Panicked
        })
    });
    match task.await {
        Ok(result) => result,
        Err(err) => {
            log::error!("a render task failed: {err}");
            Err(RenderFailed::Panicked)
        }
    }
}

/// Takes every render permit of a queue at once, for tests that must hold renders back.
#[cfg(test)]
pub(crate) async fn hold_every_render_permit(
    priority: Priority,
) -> tokio::sync::OwnedSemaphorePermit {
    let permits = RENDER_PERMITS[priority as usize].clone();
    let all = u32::try_from(render_permits_per_queue()).unwrap_or(u32::MAX);
    permits
        .acquire_many_owned(all)
        .await
        .expect("the render semaphore is never closed")
}

/// The room's picture as of operation `seq`: what a newcomer is sent before the operations after it.
#[derive(Clone)]
pub struct Picture {
    /// The last operation the picture includes.
    pub seq: u64,
    /// Nothing visible: newcomers get `canvasEmpty`, and the room need not be kept on disk.
    pub blank: bool,
    /// The PNG (transparent where nothing is drawn); empty when `blank`.
    pub png: Arc<[u8]>,
    /// The PNG as the `data:` URL a `canvasState` carries, made once per picture.
    pub data_url: Arc<str>,
}

impl Picture {
    pub fn blank(seq: u64) -> Picture {
        Picture {
            seq,
            blank: true,
            png: Arc::from(Vec::new()),
            data_url: Arc::from(""),
        }
    }

    fn from_canvas(canvas: &Canvas, seq: u64) -> Result<Picture, CanvasError> {
        if canvas.is_blank() {
            return Ok(Picture::blank(seq));
        }
        let png = canvas.encode_png();
        if png.is_empty() {
            return Err(CanvasError::Unsupported(
                "the picture could not be encoded".into(),
            ));
        }
        Ok(Picture::from_png(png, seq))
    }

    /// A picture from PNG bytes already known to be good.
    fn from_png(png: Vec<u8>, seq: u64) -> Picture {
        let mut data_url = String::with_capacity(PNG_DATA_URL_PREFIX.len() + png.len() * 4 / 3 + 4);
        data_url.push_str(PNG_DATA_URL_PREFIX);
        base64::engine::general_purpose::STANDARD.encode_string(&png, &mut data_url);
        Picture {
            seq,
            blank: false,
            png: Arc::from(png),
            data_url: Arc::from(data_url),
        }
    }

    /// Stored bytes this picture takes.
    pub fn stored_len(&self) -> u64 {
        self.png.len() as u64
    }
}

/// The strokes `ops` leave undone: each undo hides its stroke, each redo shows it again.
pub fn undone(ops: &[Op]) -> HashSet<StrokeId> {
    let mut hidden = HashSet::new();
    for op in ops {
        match op {
            Op::Undo(id) => {
                hidden.insert(id.clone());
            }
            Op::Redo(id) => {
                hidden.remove(id);
            }
            Op::Draw(_) | Op::Shape(_) | Op::Text(_) | Op::Clear(_) => {}
        }
    }
    hidden
}

/// The canvas `base` shows with `ops` drawn over it, leaving out the strokes in `hidden`. Only
/// the operations after the last clear shown are drawn, over a blank canvas.
pub fn render(
    base: &Picture,
    ops: &[Op],
    hidden: &HashSet<StrokeId>,
    size: CanvasSize,
) -> Result<Canvas, CanvasError> {
    let shown = |op: &Op| op.stroke_id().is_none_or(|id| !hidden.contains(id));
    let last_clear = ops
        .iter()
        .rposition(|op| matches!(op, Op::Clear(_)) && shown(op));
    let (mut canvas, ops) = match last_clear {
        Some(index) => (Canvas::blank(size), &ops[index + 1..]),
        None if base.blank => (Canvas::blank(size), ops),
        None => (Canvas::decode_png(&base.png, size)?, ops),
    };
    for op in ops.iter().filter(|op| shown(op)) {
        canvas.apply(op);
    }
    Ok(canvas)
}

/// The next checkpoint: `base` with `ops` drawn over it (leaving out `hidden`), as of `seq`.
pub fn compose(
    base: &Picture,
    ops: &[Op],
    hidden: &HashSet<StrokeId>,
    seq: u64,
    size: CanvasSize,
) -> Result<Picture, CanvasError> {
    Picture::from_canvas(&render(base, ops, hidden, size)?, seq)
}

/// Whether restoring `stored` draws anything: a room with nothing stored opens blank without
/// taking a render permit.
pub fn needs_render(stored: &StoredRoom) -> bool {
    stored.checkpoint.is_some() || !stored.ops.is_empty()
}

/// A room as read back from the store, ready to serve.
pub struct Restored {
    /// What the room starts from: the stored checkpoint with every settled operation after it
    /// drawn in.
    pub picture: Picture,
    /// Operations after `picture` that may still be undone (or follow one that may), in order.
    pub tail: Vec<StoredOp>,
    /// The strokes of `tail`.
    pub history: History,
    /// Operations the stored checkpoint did not cover that are now drawn into `picture`.
    pub replayed: usize,
    /// The last operation read (some may have been left out).
    pub last_seq: u64,
}

/// An operation read back from the store.
pub struct StoredOp {
    pub seq: u64,
    pub op: Op,
    /// Its message, as it is relayed (without the stored meta).
    pub json: String,
}

/// Rebuilds a room from what the store kept: its checkpoint with every settled operation drawn
/// over it, and the operations that may still be undone kept apart, with their history. An
/// operation the history refuses (an undo that lost a race on another node) is left out, as it was
/// when it was live. Fails, naming what is damaged, rather than starting blank over a stored
/// picture.
pub fn restore(
    stored: &StoredRoom,
    size: CanvasSize,
    limits: UndoLimits,
    now_ms: u64,
) -> Result<Restored, String> {
    let base = match &stored.checkpoint {
        Some(png) => {
            // Decoded to prove it readable; kept as stored (encoding it again would cost as much
            // as the decode, for the same picture).
            let canvas = Canvas::decode_png(png, size)
                .map_err(|err| format!("its checkpoint picture is unreadable: {err}"))?;
            if canvas.is_blank() {
                Picture::blank(stored.checkpoint_seq)
            } else if canvas.size() == size {
                Picture::from_png(png.clone(), stored.checkpoint_seq)
            } else {
                Picture::from_canvas(&canvas, stored.checkpoint_seq)
                    .map_err(|err| format!("its checkpoint picture cannot be resized: {err}"))?
            }
        }
        None => Picture::blank(stored.checkpoint_seq),
    };
    let mut history = History::new(limits);
    let mut ops = Vec::with_capacity(stored.ops.len());
    for (seq, text) in &stored.ops {
        let (op, meta, json) = parse_stored_op(text)
            .map_err(|err| format!("its operation #{seq} is unreadable: {err}"))?;
        if history.admit(*seq, &op, meta.as_ref()).is_ok() {
            ops.push(StoredOp {
                seq: *seq,
                op,
                json: json.to_owned(),
            });
        }
    }
    let last_seq = stored
        .ops
        .last()
        .map_or(stored.checkpoint_seq, |(seq, _)| *seq);
    let listed: Vec<(u64, &Op)> = ops.iter().map(|s| (s.seq, &s.op)).collect();
    let settled = history.settled_count(&listed, now_ms);
    let all: Vec<Op> = ops.iter().map(|s| s.op.clone()).collect();
    let tail = ops.split_off(settled);
    // The picture is as of the operation before the first one kept apart (or the last one read).
    let seq = tail.first().map_or(last_seq, |first| first.seq - 1);
    let picture = if settled == 0 {
        base
    } else {
        compose(&base, &all[..settled], &undone(&all), seq, size)
            .map_err(|err| format!("it cannot be drawn: {err}"))?
    };
    history.forget_through(picture.seq);
    Ok(Restored {
        picture,
        tail,
        history,
        replayed: settled,
        last_seq,
    })
}

/// A stored operation is its meta (if any) and the message that was broadcast for it, checked
/// again as if a client had sent it. Coordinates are checked against the largest canvas, so that
/// a room stored before a change of `--canvas-width`/`--canvas-height` still loads.
pub fn parse_stored_op(text: &str) -> Result<(Op, Option<Meta>, &str), String> {
    let (meta, json) = Meta::split(text)?;
    let any_size = CanvasSize {
        width: MAX_CANVAS_SIDE_PX,
        height: MAX_CANVAS_SIDE_PX,
    };
    let op = match decode_client_message(json, any_size) {
        Ok(ClientMessage::Draw(segment)) => Op::Draw(segment),
        Ok(ClientMessage::Shape(shape)) => Op::Shape(shape),
        Ok(ClientMessage::Text(text)) => Op::Text(text),
        Ok(ClientMessage::Clear(id)) => Op::Clear(id),
        Ok(ClientMessage::Undo(id)) => Op::Undo(id),
        Ok(ClientMessage::Redo(id)) => Op::Redo(id),
        Ok(_) => return Err("not a draw, shape, text, clear, undo or redo".into()),
        Err(rejection) => return Err(rejection.message),
    };
    Ok((op, meta, json))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{Segment, ServerMessage, Shape, ShapeKind, Text, Tool};

    const SIZE: CanvasSize = CanvasSize {
        width: 64,
        height: 48,
    };

    fn line(color: &str, y: f64) -> Op {
        Op::Draw(Segment {
            color: color.into(),
            start_x: 4.0,
            start_y: y,
            end_x: 60.0,
            end_y: y,
            size: 6.0,
            tool: Tool::Pen,
            stroke_id: None,
        })
    }

    fn stroke(id: &str, color: &str, y: f64, tool: Tool) -> Op {
        let Op::Draw(mut segment) = line(color, y) else {
            unreachable!()
        };
        segment.stroke_id = Some(id.into());
        segment.tool = tool;
        Op::Draw(segment)
    }

    fn encoded(op: &Op) -> String {
        let message = match op {
            Op::Draw(segment) => ServerMessage::Draw(segment),
            Op::Shape(shape) => ServerMessage::Shape(shape),
            Op::Text(text) => ServerMessage::Text(text),
            Op::Clear(id) => ServerMessage::Clear {
                stroke_id: id.as_deref(),
            },
            Op::Undo(id) => ServerMessage::Undo { stroke_id: id },
            Op::Redo(id) => ServerMessage::Redo { stroke_id: id },
        };
        message.encode().to_string()
    }

    fn none() -> HashSet<StrokeId> {
        HashSet::new()
    }

    /// The checkpoint of a room whose only operation, #1, is `op`.
    fn first_picture(op: Op) -> Picture {
        compose(&Picture::blank(0), &[op], &none(), 1, SIZE).unwrap()
    }

    const LIMITS: UndoLimits = UndoLimits {
        strokes: 100,
        window: Duration::from_secs(1800),
        ops: 20_000,
    };

    fn meta(at_ms: u64) -> Meta {
        Meta {
            author: crate::history::AuthorId::from_secret("r", "0123456789abcdef"),
            at_ms,
        }
    }

    #[test]
    fn composing_in_two_steps_gives_the_same_picture_as_in_one() {
        let ops = [
            line("#ff0000", 10.0),
            line("#00ff00", 20.0),
            line("#0000ff", 30.0),
        ];
        let once = compose(&Picture::blank(0), &ops, &none(), 3, SIZE).unwrap();
        let first = compose(&Picture::blank(0), &ops[..1], &none(), 1, SIZE).unwrap();
        let twice = compose(&first, &ops[1..], &none(), 3, SIZE).unwrap();
        let a = Canvas::decode_png(&once.png, SIZE).unwrap();
        let b = Canvas::decode_png(&twice.png, SIZE).unwrap();
        for (x, y) in [(30, 10), (30, 20), (30, 30), (2, 2)] {
            assert_eq!(a.pixel(x, y), b.pixel(x, y), "({x}, {y})");
        }
    }

    #[test]
    fn a_clear_makes_everything_before_it_irrelevant() {
        let base = first_picture(line("#ff0000", 10.0));
        assert!(!base.blank);
        let cleared = compose(
            &base,
            &[line("#00ff00", 20.0), Op::Clear(None)],
            &none(),
            3,
            SIZE,
        )
        .unwrap();
        assert!(cleared.blank);
        assert_eq!(cleared.seq, 3);
    }

    #[test]
    fn a_data_url_carries_the_png() {
        let picture = first_picture(line("#123456", 10.0));
        let encoded = picture.data_url.strip_prefix(PNG_DATA_URL_PREFIX).unwrap();
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .unwrap();
        assert_eq!(bytes, &picture.png[..]);
    }

    #[test]
    fn stored_operations_are_the_broadcast_messages_read_back() {
        for op in [line("#abcdef", 12.5), Op::Clear(None)] {
            assert_eq!(parse_stored_op(&encoded(&op)).unwrap().0, op);
        }
    }

    #[test]
    fn stored_operations_of_strokes_keep_their_author_and_time() {
        for op in [
            stroke("s1", "#abcdef", 12.5, Tool::Pen),
            Op::Shape(Shape {
                shape: ShapeKind::Rect,
                x1: 1.5,
                y1: 2.0,
                x2: 30.0,
                y2: 40.25,
                color: "#abcdef".into(),
                size: 3.0,
                fill: Some("#123".into()),
                stroke_id: "r1".into(),
            }),
            Op::Shape(Shape {
                shape: ShapeKind::Arrow,
                x1: 1.0,
                y1: 2.0,
                x2: 3.0,
                y2: 4.0,
                color: "#000".into(),
                size: 64.0,
                fill: None,
                stroke_id: "a1".into(),
            }),
            Op::Text(Text {
                x: -10.0,
                y: 20.5,
                text: "Grüße \"quoted\" 😀".into(),
                color: "#fff".into(),
                size: 8.0,
                stroke_id: "t1".into(),
            }),
            Op::Clear(Some("c1".into())),
            Op::Undo("s1".into()),
            Op::Redo("s1".into()),
        ] {
            let json = encoded(&op);
            let stored = Meta::stored(Some(&meta(42)), &json);
            assert_eq!(
                parse_stored_op(&stored).unwrap(),
                (op, Some(meta(42)), json.as_str())
            );
        }
    }

    fn rendered(ops: &[Op]) -> Canvas {
        render(&Picture::blank(0), ops, &undone(ops), SIZE).unwrap()
    }

    #[test]
    fn an_undone_stroke_is_left_out_and_a_redone_one_drawn_again() {
        let a = stroke("a", "#ff0000", 10.0, Tool::Pen);
        let b = stroke("b", "#0000ff", 30.0, Tool::Pen);
        let undone_a = rendered(&[a.clone(), b.clone(), Op::Undo("a".into())]);
        assert_eq!(undone_a.pixel(30, 10), [0, 0, 0, 0]);
        assert_eq!(undone_a.pixel(30, 30), [0, 0, 255, 255]);
        let redone = rendered(&[a, b, Op::Undo("a".into()), Op::Redo("a".into())]);
        assert_eq!(redone.pixel(30, 10), [255, 0, 0, 255]);
    }

    #[test]
    fn undoing_an_eraser_stroke_brings_back_what_it_erased() {
        let paint = stroke("p", "#ff0000", 10.0, Tool::Pen);
        let eraser = stroke("e", "#000000", 10.0, Tool::Eraser);
        let erased = rendered(&[paint.clone(), eraser.clone()]);
        assert_eq!(erased.pixel(30, 10), [0, 0, 0, 0]);
        let back = rendered(&[paint, eraser, Op::Undo("e".into())]);
        assert_eq!(back.pixel(30, 10), [255, 0, 0, 255]);
    }

    #[test]
    fn undoing_a_clear_brings_back_everything_before_it() {
        let base = first_picture(line("#00ff00", 20.0));
        let ops = [
            stroke("a", "#ff0000", 10.0, Tool::Pen),
            Op::Clear(Some("c".into())),
            Op::Undo("c".into()),
        ];
        let canvas = render(&base, &ops, &undone(&ops), SIZE).unwrap();
        assert_eq!(canvas.pixel(30, 20), [0, 255, 0, 255]);
        assert_eq!(canvas.pixel(30, 10), [255, 0, 0, 255]);
        let cleared = render(&base, &ops[..2], &undone(&ops[..2]), SIZE).unwrap();
        assert!(cleared.is_blank());
    }

    #[test]
    fn a_restored_room_keeps_what_may_still_be_undone_apart_from_its_picture() {
        let now = 10_000_000;
        let stored = StoredRoom {
            checkpoint: None,
            checkpoint_seq: 0,
            ops: vec![
                (1, encoded(&line("#ff0000", 10.0))),
                (
                    2,
                    Meta::stored(
                        Some(&meta(now)),
                        &encoded(&stroke("b", "#0000ff", 30.0, Tool::Pen)),
                    ),
                ),
            ],
            stored_bytes: 0,
            existed: true,
        };
        let restored = restore(&stored, SIZE, LIMITS, now).unwrap();
        assert_eq!((restored.picture.seq, restored.replayed), (1, 1));
        assert_eq!(restored.tail.len(), 1);
        assert_eq!(restored.last_seq, 2);
        // Long after, it is settled: all of it is in the picture.
        let later = now + 3_600_000;
        let restored = restore(&stored, SIZE, LIMITS, later).unwrap();
        assert_eq!((restored.picture.seq, restored.tail.len()), (2, 0));
        let canvas = Canvas::decode_png(&restored.picture.png, SIZE).unwrap();
        assert_eq!(canvas.pixel(30, 30), [0, 0, 255, 255]);
    }

    #[test]
    fn a_damaged_stored_room_is_an_error_naming_the_damage() {
        let stored = StoredRoom {
            checkpoint: Some(b"\x89PNG\r\n\x1a\nnot really".to_vec()),
            checkpoint_seq: 4,
            ops: vec![],
            stored_bytes: 0,
            existed: true,
        };
        let err = restore(&stored, SIZE, LIMITS, 0).err().unwrap();
        assert!(err.contains("checkpoint"), "{err}");
        let stored = StoredRoom {
            checkpoint: None,
            checkpoint_seq: 0,
            ops: vec![(1, encoded(&line("#000", 5.0))), (2, "{\"type\":".into())],
            stored_bytes: 0,
            existed: true,
        };
        let err = restore(&stored, SIZE, LIMITS, 0).err().unwrap();
        assert!(err.contains("#2"), "{err}");
    }

    #[test]
    fn a_restored_room_includes_every_stored_operation() {
        let base = first_picture(line("#ff0000", 10.0));
        let stored = StoredRoom {
            checkpoint: Some(base.png.to_vec()),
            checkpoint_seq: 1,
            ops: vec![(2, encoded(&line("#0000ff", 30.0)))],
            stored_bytes: 0,
            existed: true,
        };
        let restored = restore(&stored, SIZE, LIMITS, 0).unwrap();
        assert_eq!((restored.picture.seq, restored.replayed), (2, 1));
        let canvas = Canvas::decode_png(&restored.picture.png, SIZE).unwrap();
        assert_eq!(canvas.pixel(30, 10), [255, 0, 0, 255]);
        assert_eq!(canvas.pixel(30, 30), [0, 0, 255, 255]);
    }

    /// A finished render gives its permit back even while its future is not polled: a room's
    /// checkpoint future once sat unpolled behind the room's `ctx.wait` after its render had
    /// finished; its permit was never given back and, with every permit so held, no room could
    /// render (or open) again.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_finished_render_gives_its_permit_back_though_nobody_polls_its_result() {
        let permits = render_permits_per_queue();
        let (done, finished) = tokio::sync::mpsc::unbounded_channel();
        let mut unpolled = Vec::new();
        for _ in 0..permits {
            let done = done.clone();
            let mut render = Box::pin(render_off_thread(Priority::Background, move || {
                let _ = done.send(());
            }));
            // Polled once, as an actor polls a future it then leaves waiting.
            let _ = futures_util::poll!(render.as_mut());
            unpolled.push(render);
        }
        let mut finished = finished;
        for _ in 0..permits {
            finished.recv().await.expect("every render runs");
        }
        let next = render_off_thread(Priority::Background, || 7);
        let next = tokio::time::timeout(Duration::from_secs(10), next).await;
        assert_eq!(next, Ok(Ok(7)), "the next render must get a permit");
        drop(unpolled);
    }
}
