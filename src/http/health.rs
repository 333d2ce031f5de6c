//! The health probe: a client that joins a room the way every client does, for `/healthz` and
//! `/readyz`.
//!
//! It owns proving that the server can still admit someone: a real `WsSession` actor on this HTTP
//! worker, over an in-memory socket instead of TCP, asks the registry for the probe room; the room
//! actor starts on a room thread, opens its canvas from the store and answers the join; the session writes the `welcome` frame into the socket, where the probe reads
//! it. The probe room is blank, which opens without a render, so the probe also runs an empty render
//! through the queue a room with a picture opens through. A server whose rooms or render queue are
//! wedged fails this within [`PROBE_TIMEOUT`], while a check that only answered from the HTTP
//! worker would keep saying "ok" while no room could open.
//!
//! It must never touch the stored canvases (the probe room lives in memory and is not counted as a
//! room) and never run more than one probe at a time: callers within [`PROBE_REUSE`] of the last
//! probe get its result.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::AsyncReadExt;
use tokio::sync::Mutex;

use crate::config::Settings;
use crate::picture::{self, Priority};
use crate::registry::{RoomRegistry, PROBE_ROOM};
use crate::session::connect_in_memory;
use crate::session::utf8_guard::announced_length;
use crate::stats::Stats;

/// How long the probe waits for its `welcome`.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// A probe's result answers every health request for this long, so that a flood of health
/// requests costs one probe a second.
const PROBE_REUSE: Duration = Duration::from_secs(1);
/// The in-memory socket's buffer: room for the probe's `welcome`, `clientCount` and `canvasEmpty`.
const PROBE_SOCKET_BYTES: usize = 16 * 1024;

/// What the last probe found.
#[derive(Debug, Clone)]
pub enum Probe {
    /// A `welcome` came back after this long.
    Served(Duration),
    /// Why the server could not admit the probe.
    Failed(String),
}

/// The probe and its last result, shared by the HTTP workers.
#[derive(Clone)]
pub struct HealthProbe {
    last: Arc<Mutex<Option<(Instant, Probe)>>>,
}

impl HealthProbe {
    pub fn new() -> HealthProbe {
        HealthProbe {
            last: Arc::new(Mutex::new(None)),
        }
    }

    /// Joins the probe room (or reuses a result younger than [`PROBE_REUSE`]). Must be called on
    /// an actix worker: the probe's session actor starts on the calling thread.
    pub async fn check(
        &self,
        settings: &Arc<Settings>,
        stats: &Arc<Stats>,
        registry: &actix::Addr<RoomRegistry>,
    ) -> Probe {
        // Another probe holds the lock for at most PROBE_TIMEOUT; waiting a little longer than
        // that is still bounded.
        let Ok(mut last) = tokio::time::timeout(PROBE_TIMEOUT * 2, self.last.lock()).await else {
            return Probe::Failed("another health probe is stuck".into());
        };
        if let Some((at, probe)) = last.as_ref() {
            if at.elapsed() < PROBE_REUSE {
                return probe.clone();
            }
        }
        let probe = join_probe_room(settings, stats, registry).await;
        if let Probe::Failed(why) = &probe {
            log::error!("health probe failed: {why}");
        }
        *last = Some((Instant::now(), probe.clone()));
        probe
    }
}

impl Default for HealthProbe {
    fn default() -> Self {
        HealthProbe::new()
    }
}

async fn join_probe_room(
    settings: &Arc<Settings>,
    stats: &Arc<Stats>,
    registry: &actix::Addr<RoomRegistry>,
) -> Probe {
    let started = Instant::now();
    let mut client_end = connect_in_memory(
        PROBE_ROOM,
        "health probe",
        settings,
        stats,
        registry,
        PROBE_SOCKET_BYTES,
    )
    .await;
    let deadline = tokio::time::Instant::now() + PROBE_TIMEOUT;
    let answer = tokio::time::timeout_at(deadline, read_first_frame(&mut client_end)).await;
    // Dropping the client end is the probe's disconnect: the session sees the socket close, leaves
    // the room, and the empty room stops.
    drop(client_end);
    match answer {
        Err(_) => {
            return Probe::Failed(format!(
                "no welcome from the probe room within {}s",
                PROBE_TIMEOUT.as_secs()
            ))
        }
        Ok(Err(why)) => return Probe::Failed(why),
        Ok(Ok(frame)) if !frame.contains(r#""type":"welcome""#) => {
            return Probe::Failed(format!(
                "the probe's first message was not welcome: {frame}"
            ))
        }
        Ok(Ok(_)) => {}
    }
    let render = picture::render_off_thread(Priority::Foreground, || ());
    match tokio::time::timeout_at(deadline, render).await {
        Ok(Ok(())) => Probe::Served(started.elapsed()),
        Ok(Err(why)) => Probe::Failed(format!("a room's picture could not be opened: {why}")),
        Err(_) => Probe::Failed(format!(
            "no render slot came free within {}s",
            PROBE_TIMEOUT.as_secs()
        )),
    }
}

/// Reads the server's first frame: its text, or why there was none (a close frame, or the end).
async fn read_first_frame(socket: &mut tokio::io::DuplexStream) -> Result<String, String> {
    let mut buffer = Vec::with_capacity(1024);
    loop {
        if let Some(frame) = parse_frame(&buffer) {
            return frame;
        }
        let read = socket
            .read_buf(&mut buffer)
            .await
            .map_err(|err| format!("the probe's socket failed: {err}"))?;
        if read == 0 {
            return Err("the session closed the probe's socket without a word".into());
        }
    }
}

/// One unmasked server frame at the start of `bytes`, once it is all there.
fn parse_frame(bytes: &[u8]) -> Option<Result<String, String>> {
    let first = *bytes.first()?;
    let (length, rest) = announced_length(bytes)?;
    let length = usize::try_from(length).ok()?;
    let payload = rest.get(..length)?;
    let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
    Some(match first & 0x0f {
        0x1 => Ok(text(payload)),
        // A close frame's payload is a two-byte code, then the reason.
        0x8 => Err(format!(
            "the probe was closed: {}",
            text(payload.get(2..).unwrap_or_default())
        )),
        opcode => Err(format!("the probe got a frame of opcode {opcode}")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix::Actor;

    /// Runs `test` with a registry, as the server has one, on an actix system.
    fn with_registry<F, Fut>(test: F)
    where
        F: FnOnce(Arc<Settings>, Arc<Stats>, actix::Addr<RoomRegistry>) -> Fut,
        Fut: std::future::Future<Output = ()>,
    {
        let settings = Arc::new(crate::config::parse_for_tests(&[]).expect("valid settings"));
        let stats = Arc::new(Stats::new());
        actix::System::new().block_on(async move {
            let store = crate::storage::Store::without_persistence();
            let registry = RoomRegistry::new(settings.clone(), stats.clone(), store).start();
            test(settings, stats, registry).await;
        });
    }

    #[test]
    fn the_probe_is_welcomed_by_a_working_server() {
        with_registry(|settings, stats, registry| async move {
            let probe = HealthProbe::new().check(&settings, &stats, &registry).await;
            assert!(matches!(probe, Probe::Served(_)), "{probe:?}");
            assert_eq!(stats.rooms.load(std::sync::atomic::Ordering::Relaxed), 0);
        });
    }

    #[test]
    fn the_probe_fails_when_no_room_can_be_opened() {
        with_registry(|settings, stats, registry| async move {
            // A wedged render queue: every permit held, as rooms waiting on themselves once left it.
            let held = picture::hold_every_render_permit(Priority::Foreground).await;
            let probe = HealthProbe::new().check(&settings, &stats, &registry).await;
            drop(held);
            let Probe::Failed(why) = probe else {
                panic!("a wedged render queue must fail the probe: {probe:?}");
            };
            assert!(why.contains("render"), "{why}");
        });
    }

    #[test]
    fn the_probe_fails_when_the_registry_is_gone() {
        with_registry(|settings, stats, _| async move {
            let thread = actix::Arbiter::new();
            let (s, t) = (settings.clone(), stats.clone());
            let gone = RoomRegistry::start_in_arbiter(&thread.handle(), move |_| {
                RoomRegistry::new(s, t, crate::storage::Store::without_persistence())
            });
            thread.stop();
            thread.join().expect("the registry's thread ends");
            let probe = HealthProbe::new().check(&settings, &stats, &gone).await;
            let Probe::Failed(why) = probe else {
                panic!("a server without its registry must fail the probe: {probe:?}");
            };
            assert!(why.contains("room unavailable"), "{why}");
        });
    }

    #[test]
    fn a_text_frame_is_read_once_it_is_complete() {
        let frame = b"\x81\x05hello";
        assert!(parse_frame(&frame[..4]).is_none());
        assert_eq!(parse_frame(frame), Some(Ok("hello".to_owned())));
    }

    #[test]
    fn a_close_frame_gives_its_reason() {
        let frame = b"\x88\x06\x03\xf3busy";
        let Some(Err(why)) = parse_frame(frame) else {
            panic!("a close is a failure");
        };
        assert!(why.ends_with("busy"), "{why}");
    }

    #[test]
    fn a_long_frame_has_a_16_bit_length() {
        let mut frame = vec![0x81, 126, 0x01, 0x00];
        frame.extend(std::iter::repeat_n(b'a', 256));
        assert_eq!(
            parse_frame(&frame).map(|f| f.map(|t| t.len())),
            Some(Ok(256))
        );
    }
}
