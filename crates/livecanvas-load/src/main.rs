//! `livecanvas-load`: a WebSocket load generator for livecanvas (or any server speaking the original
//! demo's protocol). It opens many clients over many rooms on loopback, makes some draw at a fixed
//! rate for a fixed time, then reports throughput, losses, duplicates, latency percentiles and its
//! own CPU use. See `livecanvas-load --help`.
//!
//! The run has three phases, driven by a `watch` channel every client follows:
//! connect (bounded concurrency; each client counts as joined at the server's first message),
//! run (senders draw until the deadline; everybody reads, then drains), stop (close and report).
//!
//! `livecanvas-load join-latency` (module `join`) measures something else: how long a newcomer
//! takes to hold a room's whole picture, for rooms with more and more history.
//! `livecanvas-load chaos` and `chaos-check` (module `chaos`) are the load and the check of
//! `bench/chaos.sh`: strokes that must survive the server being killed and its disk filling.

mod chaos;
mod cli;
mod client;
mod join;
mod report;
mod wire;

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::{sleep, timeout, Instant};

use crate::cli::{Preset, Settings, Target};
use crate::client::{Phase, Plan, Shared};
use crate::report::{
    cpu_time, fmt_ms, machine_busy_percent, machine_ticks, si, Latency, Report, ServerSample,
    ServerWindow, Window,
};

/// How long the coordinator waits for every client task to finish after the stop.
const STOP_GRACE: Duration = Duration::from_secs(10);

fn main() -> ExitCode {
    let args = cli::Args::parse();
    match args.mode {
        Some(cli::Mode::JoinLatency(join_args)) => return join::main(join_args),
        Some(cli::Mode::Chaos(chaos_args)) => return chaos::main(chaos_args),
        Some(cli::Mode::ChaosCheck(check_args)) => return chaos::check_main(check_args),
        None => {}
    }
    let settings = match cli::resolve(args) {
        Ok(settings) => settings,
        Err(message) => {
            eprintln!("livecanvas-load: error: {message}");
            return ExitCode::from(2);
        }
    };
    raise_open_files(settings.clients);
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.enable_all();
    if let Some(threads) = settings.threads {
        builder.worker_threads(threads);
    }
    match builder.build() {
        Ok(runtime) => runtime.block_on(run(settings)),
        Err(err) => {
            eprintln!("livecanvas-load: error: cannot start the runtime: {err}");
            ExitCode::FAILURE
        }
    }
}

/// A subcommand's start: a configuration error is exit 2; then `run` on a multi-threaded runtime.
pub(crate) fn run_subcommand<S, F>(
    resolved: Result<S, String>,
    run: impl FnOnce(S) -> F,
) -> ExitCode
where
    F: std::future::Future<Output = ExitCode>,
{
    let settings = match resolved {
        Ok(settings) => settings,
        Err(message) => {
            eprintln!("livecanvas-load: error: {message}");
            return ExitCode::from(2);
        }
    };
    match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime.block_on(run(settings)),
        Err(err) => {
            eprintln!("livecanvas-load: error: cannot start the runtime: {err}");
            ExitCode::FAILURE
        }
    }
}

/// Every client is a socket: raise the soft open-file limit to the hard one when it is too low.
fn raise_open_files(clients: usize) {
    let needed = clients as u64 + 64;
    let soft = match rlimit::Resource::NOFILE.get() {
        Ok((soft, _)) if soft >= needed => return,
        Ok((soft, _)) => soft,
        Err(err) => {
            eprintln!("livecanvas-load: warning: cannot read the open-file limit: {err}");
            return;
        }
    };
    let raised = rlimit::increase_nofile_limit(u64::MAX)
        .or_else(|_| rlimit::increase_nofile_limit(needed))
        .unwrap_or(soft);
    if raised < needed {
        eprintln!(
            "livecanvas-load: warning: the open-file limit is {raised} (hard limit reached), below the \
             {needed} this run needs: connections beyond it will fail with \"Too many open files\" \
             (raise the hard limit, e.g. `ulimit -Hn {needed}` as root)"
        );
    }
}

/// The first of the target's resolved addresses that takes a TCP connection; `None`, once the
/// reason is printed, when none does.
async fn find_server(target: &Target) -> Option<SocketAddr> {
    let mut last = String::from("no address");
    for &addr in &target.addrs {
        match timeout(Duration::from_secs(3), TcpStream::connect(addr)).await {
            Ok(Ok(_)) => return Some(addr),
            Ok(Err(err)) => last = format!("{addr}: {err}"),
            Err(_) => last = format!("{addr}: timed out"),
        }
    }
    eprintln!(
        "livecanvas-load: error: no server at {}: {last}",
        target.base
    );
    None
}

async fn run(settings: Settings) -> ExitCode {
    // Every URL must answer (each client connects to the one `Settings::url_index` gives it).
    let mut addrs = Vec::with_capacity(settings.targets.len());
    for target in &settings.targets {
        let Some(addr) = find_server(target).await else {
            return ExitCode::FAILURE;
        };
        addrs.push(addr);
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    if settings.progress {
        eprintln!(
            "livecanvas-load: {} clients in {} rooms, {} of them drawing at {}/s for {}, against {}{}",
            settings.clients,
            settings.rooms,
            settings.total_senders(),
            settings.rate,
            humantime::format_duration(settings.duration),
            settings.urls(),
            if settings.batch() { " (batched)" } else { "" }
        );
    }
    let shared = Arc::new(Shared::new(settings.clone(), addrs));
    let (phase_tx, phase_rx) = watch::channel(Phase::Connecting);
    let tasks: Vec<_> = (0..settings.clients)
        .map(|index| tokio::spawn(client::run(shared.clone(), index, phase_rx.clone())))
        .collect();
    drop(phase_rx);

    // Connect phase: every client ends it joined or failed (each step has a timeout).
    let connect_started = Instant::now();
    let mut next_progress = connect_started + Duration::from_secs(1);
    loop {
        let joined = shared.counters.joined.load(Ordering::Relaxed);
        let failed = shared.counters.connect_errors.load(Ordering::Relaxed);
        if joined + failed >= settings.clients {
            break;
        }
        if Instant::now() >= next_progress {
            next_progress += Duration::from_secs(1);
            // Every client step has a timeout; this only guards against a task that died.
            if tasks.iter().all(|task| task.is_finished()) {
                break;
            }
            if settings.progress {
                eprintln!(
                    "[connect {:>5.1}s] joined {joined}/{} errors {failed}",
                    connect_started.elapsed().as_secs_f64(),
                    settings.clients
                );
            }
        }
        sleep(Duration::from_millis(20)).await;
    }
    let connect_s = connect_started.elapsed().as_secs_f64();
    let connected = shared.counters.joined.load(Ordering::Relaxed);
    if settings.progress {
        eprintln!(
            "[connect {connect_s:>5.1}s] joined {connected}/{} errors {}",
            settings.clients,
            shared.counters.connect_errors.load(Ordering::Relaxed)
        );
    }

    // Run phase.
    let members: Vec<usize> = shared
        .room_members
        .iter()
        .map(|count| count.load(Ordering::Relaxed))
        .collect();
    let senders: usize = if settings.rate > 0.0 {
        members
            .iter()
            .map(|&m| m.min(settings.senders_per_room))
            .sum()
    } else {
        0
    };
    let per_sender = settings.segments_per_sender();
    let sent_at = (0..settings.rooms * settings.senders_per_room)
        .map(|_| {
            if settings.rate > 0.0 {
                (0..per_sender).map(|_| AtomicU64::new(0)).collect()
            } else {
                Box::default()
            }
        })
        .collect();
    let start = Instant::now() + Duration::from_millis(100);
    let deadline = start + settings.duration;
    let plan = Arc::new(Plan {
        start,
        deadline,
        members,
        sent_at,
    });
    let read_server = || {
        if settings.server_pids.is_empty() {
            return None;
        }
        ServerSample::read(&settings.server_pids)
            .inspect_err(|pid| {
                eprintln!("livecanvas-load: warning: cannot read /proc/{pid}: no server figures")
            })
            .ok()
    };
    let server_start = read_server();
    let _ = phase_tx.send(Phase::Run(plan));
    let cpu_start = cpu_time();
    let machine_start = machine_ticks();
    let wall_start = Instant::now();

    let mut previous = (0u64, 0u64);
    let mut tick = start + Duration::from_secs(1);
    while tick <= deadline {
        tokio::time::sleep_until(tick).await;
        if settings.progress {
            previous = progress(&shared, tick - start, previous);
        }
        tick += Duration::from_secs(1);
    }
    tokio::time::sleep_until(deadline).await;

    // Drain: until every expected delivery is in (or lost for good).
    let drain_until = deadline + settings.drain;
    loop {
        let c = &shared.counters;
        let accounted = c.received.load(Ordering::Relaxed) + c.duplicated.load(Ordering::Relaxed);
        if accounted >= c.expected.load(Ordering::Relaxed) || Instant::now() >= drain_until {
            break;
        }
        sleep(Duration::from_millis(10)).await;
    }
    let drained_s = deadline.elapsed().as_secs_f64();
    let server_end = server_start.as_ref().and_then(|_| read_server());
    let window = Window {
        seconds: wall_start.elapsed().as_secs_f64(),
        received: shared.counters.received.load(Ordering::Relaxed),
        frames: shared.counters.frames.load(Ordering::Relaxed),
        server: match (&server_start, &server_end) {
            (Some(before), Some(after)) => Some(ServerWindow::between(before, after)),
            _ => None,
        },
    };
    let cpu_percent = match (cpu_start, cpu_time()) {
        (Some(before), Some(after)) => Some(
            after.saturating_sub(before).as_secs_f64() / wall_start.elapsed().as_secs_f64() * 100.0,
        ),
        _ => None,
    };
    let machine_busy = machine_busy_percent(machine_start, machine_ticks());
    let stayed_up = shared.counters.open.load(Ordering::Relaxed);

    // Stop: clients flush and close; wait for them a bounded time.
    let _ = phase_tx.send(Phase::Stop);
    let aborts: Vec<_> = tasks.iter().map(|task| task.abort_handle()).collect();
    if timeout(STOP_GRACE, futures_util::future::join_all(tasks))
        .await
        .is_err()
    {
        aborts.iter().for_each(|task| task.abort());
    }

    let c = &shared.counters;
    let lock = |m: &std::sync::Mutex<hdrhistogram::Histogram<u64>>| {
        m.lock().unwrap_or_else(|e| e.into_inner()).clone()
    };
    let report = Report {
        preset: settings.preset.map(Preset::name),
        urls: settings.targets.iter().map(|t| t.base.clone()).collect(),
        url_joined: shared
            .url_joined
            .iter()
            .map(|joined| joined.load(Ordering::Relaxed))
            .collect(),
        batch: settings.batch(),
        clients: settings.clients,
        rooms: settings.rooms,
        senders_per_room: settings.senders_per_room,
        senders,
        rate: settings.rate,
        duration_s: settings.duration.as_secs_f64(),
        connected,
        connect_errors: c.connect_errors.load(Ordering::Relaxed),
        connect_failures: shared
            .connect_failures
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone(),
        connect_s,
        join: Latency::of(&lock(&shared.join_time)),
        sent: c.sent.load(Ordering::Relaxed),
        expected: c.expected.load(Ordering::Relaxed),
        received: c.received.load(Ordering::Relaxed),
        duplicated: c.duplicated.load(Ordering::Relaxed),
        frames: c.frames.load(Ordering::Relaxed),
        cursors_per_room: settings.cursors_per_room,
        cursor_rate: settings.cursor_rate,
        cursors_sent: c.cursors_sent.load(Ordering::Relaxed),
        cursors_received: c.cursors_received.load(Ordering::Relaxed),
        window,
        server_pids: settings.server_pids.clone(),
        latency: Latency::of(&lock(&shared.latency)),
        first_second: Latency::of(&lock(&shared.first_second)),
        show_first_second: settings.preset == Some(Preset::JoinStorm),
        stayed_up,
        pings: c.pings.load(Ordering::Relaxed),
        disconnects: c.disconnects.load(Ordering::Relaxed),
        drop_reasons: shared
            .drop_reasons
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone(),
        drained_s,
        cpu_percent,
        machine_busy_percent: machine_busy,
        cores,
    };
    if settings.json {
        println!("{}", report.to_json());
        for warning in report.warnings() {
            eprintln!("livecanvas-load: {warning}");
        }
    } else {
        print!("{}", report.to_text());
    }
    if connected == 0 {
        eprintln!("livecanvas-load: error: no client could join");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

/// One progress line on stderr; returns the totals for the next line's rates.
fn progress(shared: &Shared, elapsed: Duration, (sent0, received0): (u64, u64)) -> (u64, u64) {
    let c = &shared.counters;
    let sent = c.sent.load(Ordering::Relaxed);
    let received = c.received.load(Ordering::Relaxed);
    let p99 = {
        let histogram = shared.latency.lock().unwrap_or_else(|e| e.into_inner());
        Latency::of(&histogram).p99
    };
    eprintln!(
        "[run {:>5.1}s] open {} | pings {} | sent {} ({}/s) | received {} ({}/s) | dup {} | p99 {}",
        elapsed.as_secs_f64(),
        c.open.load(Ordering::Relaxed),
        c.pings.load(Ordering::Relaxed),
        sent,
        si((sent - sent0) as f64),
        si(received as f64),
        si((received - received0) as f64),
        c.duplicated.load(Ordering::Relaxed),
        fmt_ms(p99)
    );
    (sent, received)
}
