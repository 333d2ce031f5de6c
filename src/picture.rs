//! Pictures: a room's canvas in the form the server hands out and stores.
//!
//! This module owns turning a checkpoint (a PNG) plus the operations recorded after it into a new
//! checkpoint, and reading back what the store kept. Rendering is CPU work of some milliseconds, so
//! everything here is plain blocking code meant for `spawn_blocking`: it must never be called on a
//! room's own thread, and never trust stored bytes (a damaged room is an error, not a panic).

use std::sync::{Arc, LazyLock};
use std::time::Duration;

use base64::Engine as _;
use tokio::sync::Semaphore;

use crate::canvas::{Canvas, CanvasError, Op};
use crate::protocol::{
    decode_client_message, CanvasSize, ClientMessage, MAX_CANVAS_SIDE_PX, PNG_DATA_URL_PREFIX,
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
/// both permits for ever (issue 12).
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

/// The canvas `base` shows with `ops` drawn over it. Only the operations after the last clear
/// are drawn, over a blank canvas.
pub fn render(base: &Picture, ops: &[Op], size: CanvasSize) -> Result<Canvas, CanvasError> {
    let last_clear = ops.iter().rposition(|op| matches!(op, Op::Clear));
    let (mut canvas, ops) = match last_clear {
        Some(index) => (Canvas::blank(size), &ops[index + 1..]),
        None if base.blank => (Canvas::blank(size), ops),
        None => (Canvas::decode_png(&base.png, size)?, ops),
    };
    for op in ops {
        canvas.apply(op);
    }
    Ok(canvas)
}

/// The next checkpoint: `base` with `ops` drawn over it, as of operation `seq`.
pub fn compose(
    base: &Picture,
    ops: &[Op],
    seq: u64,
    size: CanvasSize,
) -> Result<Picture, CanvasError> {
    Picture::from_canvas(&render(base, ops, size)?, seq)
}

/// Whether restoring `stored` draws anything: a room with nothing stored opens blank without
/// taking a render permit.
pub fn needs_render(stored: &StoredRoom) -> bool {
    stored.checkpoint.is_some() || !stored.ops.is_empty()
}

/// A room as read back from the store, ready to serve.
pub struct Restored {
    pub picture: Picture,
    /// Operations the stored checkpoint did not cover (now drawn into `picture`).
    pub replayed: usize,
}

/// Rebuilds a room's picture from what the store kept: its checkpoint with every later operation
/// drawn over it. Fails, naming what is damaged, rather than starting blank over a stored picture.
pub fn restore(stored: &StoredRoom, size: CanvasSize) -> Result<Restored, String> {
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
    let ops = stored
        .ops
        .iter()
        .map(|(seq, json)| {
            parse_stored_op(json)
                .map_err(|err| format!("its operation #{seq} is unreadable: {err}"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let seq = stored
        .ops
        .last()
        .map_or(stored.checkpoint_seq, |(seq, _)| *seq);
    let picture = if ops.is_empty() {
        base
    } else {
        compose(&base, &ops, seq, size).map_err(|err| format!("it cannot be drawn: {err}"))?
    };
    Ok(Restored {
        picture,
        replayed: ops.len(),
    })
}

/// A stored operation is the message that was broadcast for it, checked again as if a client had
/// sent it. Coordinates are checked against the largest canvas, so that a room stored before a
/// change of `--canvas-width`/`--canvas-height` still loads.
pub fn parse_stored_op(json: &str) -> Result<Op, String> {
    let any_size = CanvasSize {
        width: MAX_CANVAS_SIDE_PX,
        height: MAX_CANVAS_SIDE_PX,
    };
    match decode_client_message(json, any_size) {
        Ok(ClientMessage::Draw(segment)) => Ok(Op::Draw(segment)),
        Ok(ClientMessage::Clear) => Ok(Op::Clear),
        Ok(_) => Err("not a draw or clear".into()),
        Err(rejection) => Err(rejection.message),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{Segment, ServerMessage, Tool};

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
        })
    }

    fn encoded(op: &Op) -> String {
        let message = match op {
            Op::Draw(segment) => ServerMessage::Draw(segment),
            Op::Clear => ServerMessage::Clear,
        };
        message.encode().to_string()
    }

    #[test]
    fn composing_in_two_steps_gives_the_same_picture_as_in_one() {
        let ops = [
            line("#ff0000", 10.0),
            line("#00ff00", 20.0),
            line("#0000ff", 30.0),
        ];
        let once = compose(&Picture::blank(0), &ops, 3, SIZE).unwrap();
        let first = compose(&Picture::blank(0), &ops[..1], 1, SIZE).unwrap();
        let twice = compose(&first, &ops[1..], 3, SIZE).unwrap();
        let a = Canvas::decode_png(&once.png, SIZE).unwrap();
        let b = Canvas::decode_png(&twice.png, SIZE).unwrap();
        for (x, y) in [(30, 10), (30, 20), (30, 30), (2, 2)] {
            assert_eq!(a.pixel(x, y), b.pixel(x, y), "({x}, {y})");
        }
    }

    #[test]
    fn a_clear_makes_everything_before_it_irrelevant() {
        let base = compose(&Picture::blank(0), &[line("#ff0000", 10.0)], 1, SIZE).unwrap();
        assert!(!base.blank);
        let cleared = compose(&base, &[line("#00ff00", 20.0), Op::Clear], 3, SIZE).unwrap();
        assert!(cleared.blank);
        assert_eq!(cleared.seq, 3);
    }

    #[test]
    fn a_data_url_carries_the_png() {
        let picture = compose(&Picture::blank(0), &[line("#123456", 10.0)], 1, SIZE).unwrap();
        let encoded = picture.data_url.strip_prefix(PNG_DATA_URL_PREFIX).unwrap();
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .unwrap();
        assert_eq!(bytes, &picture.png[..]);
    }

    #[test]
    fn stored_operations_are_the_broadcast_messages_read_back() {
        for op in [line("#abcdef", 12.5), Op::Clear] {
            assert_eq!(parse_stored_op(&encoded(&op)).unwrap(), op);
        }
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
        let err = restore(&stored, SIZE).err().unwrap();
        assert!(err.contains("checkpoint"), "{err}");
        let stored = StoredRoom {
            checkpoint: None,
            checkpoint_seq: 0,
            ops: vec![(1, encoded(&line("#000", 5.0))), (2, "{\"type\":".into())],
            stored_bytes: 0,
            existed: true,
        };
        let err = restore(&stored, SIZE).err().unwrap();
        assert!(err.contains("#2"), "{err}");
    }

    #[test]
    fn a_restored_room_includes_every_stored_operation() {
        let base = compose(&Picture::blank(0), &[line("#ff0000", 10.0)], 1, SIZE).unwrap();
        let stored = StoredRoom {
            checkpoint: Some(base.png.to_vec()),
            checkpoint_seq: 1,
            ops: vec![(2, encoded(&line("#0000ff", 30.0)))],
            stored_bytes: 0,
            existed: true,
        };
        let restored = restore(&stored, SIZE).unwrap();
        assert_eq!((restored.picture.seq, restored.replayed), (2, 1));
        let canvas = Canvas::decode_png(&restored.picture.png, SIZE).unwrap();
        assert_eq!(canvas.pixel(30, 10), [255, 0, 0, 255]);
        assert_eq!(canvas.pixel(30, 30), [0, 0, 255, 255]);
    }

    /// Issue 12: a room's checkpoint future sat unpolled behind the room's `ctx.wait` after its
    /// render had finished; its permit was never given back and, with every permit so held, no
    /// room could render (or open) again.
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
