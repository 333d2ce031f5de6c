//! The final report (text or one JSON object) and the load generator's own CPU time.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde_json::json;

/// This process's user + system CPU time so far, from `/proc/self/stat` (Linux, where the kernel
/// reports it in USER_HZ = 100 ticks per second).
pub fn cpu_time() -> Option<Duration> {
    Some(Duration::from_millis(cpu_ticks("/proc/self/stat")? * 10))
}

/// user + system CPU time, in USER_HZ ticks, from a `stat` file of /proc.
fn cpu_ticks(path: &str) -> Option<u64> {
    let stat = std::fs::read_to_string(path).ok()?;
    // Fields after the command name, which is in parentheses and may contain spaces.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// The whole machine's busy and total CPU time so far (all processes, all cores), in ticks, from the
/// first line of `/proc/stat`.
pub fn machine_ticks() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().next()?.strip_prefix("cpu ")?;
    let ticks: Vec<u64> = line
        .split_whitespace()
        .map(|field| field.parse().unwrap_or(0))
        .collect();
    // user nice system idle iowait irq softirq steal (guest time is already in user).
    let total: u64 = ticks.iter().take(8).sum();
    let idle = ticks.get(3).copied().unwrap_or(0) + ticks.get(4).copied().unwrap_or(0);
    Some((total - idle, total))
}

/// How busy the machine was between two `machine_ticks` readings, in % of all its cores.
pub fn machine_busy_percent(before: Option<(u64, u64)>, after: Option<(u64, u64)>) -> Option<f64> {
    let ((busy0, total0), (busy1, total1)) = (before?, after?);
    let total = total1.checked_sub(total0).filter(|&t| t > 0)?;
    Some(busy1.saturating_sub(busy0) as f64 / total as f64 * 100.0)
}

/// One reading of other processes (the server, or the nodes of a cluster: `--server-pid`): their
/// CPU time, which includes the threads that already ended, and each thread's context switches
/// (`/proc/PID/task/*/status`; those of a thread are gone with it).
#[derive(Debug, Clone)]
pub struct ServerSample {
    /// Per process, in the order given: pid and user + system time in USER_HZ ticks (100 per
    /// second).
    cpu_ticks: Vec<(u32, u64)>,
    /// Thread id -> (voluntary, nonvoluntary) context switches, the threads of every process
    /// (thread ids are unique on the machine).
    switches: BTreeMap<u32, (u64, u64)>,
}

impl ServerSample {
    /// Reads every process of `pids`; `Err(pid)` names the first one that could not be read.
    pub fn read(pids: &[u32]) -> Result<ServerSample, u32> {
        let mut sample = ServerSample {
            cpu_ticks: Vec::with_capacity(pids.len()),
            switches: BTreeMap::new(),
        };
        for &pid in pids {
            let ticks = cpu_ticks(&format!("/proc/{pid}/stat")).ok_or(pid)?;
            sample.cpu_ticks.push((pid, ticks));
            sample.add_switches(pid).ok_or(pid)?;
        }
        Ok(sample)
    }

    /// Adds the context switches of every thread of `pid`.
    fn add_switches(&mut self, pid: u32) -> Option<()> {
        for entry in std::fs::read_dir(format!("/proc/{pid}/task"))
            .ok()?
            .flatten()
        {
            let Some(tid) = entry.file_name().to_str().and_then(|n| n.parse().ok()) else {
                continue;
            };
            // A thread may end between the listing and the read: it is then simply missing.
            let Ok(status) = std::fs::read_to_string(entry.path().join("status")) else {
                continue;
            };
            let field = |name: &str| {
                status
                    .lines()
                    .find_map(|line| line.strip_prefix(name))
                    .and_then(|value| value.trim().parse::<u64>().ok())
                    .unwrap_or(0)
            };
            self.switches.insert(
                tid,
                (
                    field("voluntary_ctxt_switches:"),
                    field("nonvoluntary_ctxt_switches:"),
                ),
            );
        }
        Some(())
    }
}

/// What the server (all its processes) did between two readings.
#[derive(Debug, Clone)]
pub struct ServerWindow {
    /// All processes together.
    pub cpu_s: f64,
    /// Each process's part of `cpu_s`: pid and seconds.
    pub cpu_s_per_pid: Vec<(u32, f64)>,
    pub voluntary_switches: u64,
    pub nonvoluntary_switches: u64,
    /// Threads of the first reading missing from the second: their switches after the first
    /// reading are not counted (their CPU time is).
    pub threads_gone: usize,
    /// Threads in the second reading only (counted from zero).
    pub threads_new: usize,
}

impl ServerWindow {
    pub fn between(before: &ServerSample, after: &ServerSample) -> ServerWindow {
        let (mut voluntary, mut nonvoluntary, mut new) = (0, 0, 0);
        for (tid, &(v1, n1)) in &after.switches {
            let (v0, n0) = before.switches.get(tid).copied().unwrap_or_else(|| {
                new += 1;
                (0, 0)
            });
            voluntary += v1.saturating_sub(v0);
            nonvoluntary += n1.saturating_sub(n0);
        }
        let cpu_s_per_pid: Vec<(u32, f64)> = after
            .cpu_ticks
            .iter()
            .map(|&(pid, ticks1)| {
                let ticks0 = before
                    .cpu_ticks
                    .iter()
                    .find(|&&(p, _)| p == pid)
                    .map_or(ticks1, |&(_, t)| t);
                (pid, ticks1.saturating_sub(ticks0) as f64 / 100.0)
            })
            .collect();
        ServerWindow {
            cpu_s: cpu_s_per_pid.iter().map(|&(_, s)| s).sum(),
            cpu_s_per_pid,
            voluntary_switches: voluntary,
            nonvoluntary_switches: nonvoluntary,
            threads_gone: before
                .switches
                .keys()
                .filter(|tid| !after.switches.contains_key(tid))
                .count(),
            threads_new: new,
        }
    }

    pub fn switches(&self) -> u64 {
        self.voluntary_switches + self.nonvoluntary_switches
    }
}

/// The counters at the end of the drain, and the server over the same window (from the moment
/// the clients were told to start drawing to the end of the drain).
#[derive(Debug, Clone)]
pub struct Window {
    pub seconds: f64,
    /// Deliveries (in order) received in the window.
    pub received: u64,
    /// Text frames received in the window.
    pub frames: u64,
    /// `None` without `--server-pid`, or when a reading failed.
    pub server: Option<ServerWindow>,
}

/// Latency percentiles in milliseconds; `None` without samples.
#[derive(Debug, Clone, Copy, Default)]
pub struct Latency {
    pub p50: Option<f64>,
    pub p90: Option<f64>,
    pub p99: Option<f64>,
    pub max: Option<f64>,
}

impl Latency {
    pub fn of(histogram: &Histogram<u64>) -> Latency {
        if histogram.is_empty() {
            return Latency::default();
        }
        let ms = |micros: u64| micros as f64 / 1000.0;
        Latency {
            p50: Some(ms(histogram.value_at_quantile(0.50))),
            p90: Some(ms(histogram.value_at_quantile(0.90))),
            p99: Some(ms(histogram.value_at_quantile(0.99))),
            max: Some(ms(histogram.max())),
        }
    }
}

pub fn fmt_ms(value: Option<f64>) -> String {
    value.map_or_else(|| "-".into(), |ms| format!("{ms:.2} ms"))
}

/// 1234567 -> "1.23M".
pub fn si(value: f64) -> String {
    match value.abs() {
        v if v >= 1e9 => format!("{:.2}G", value / 1e9),
        v if v >= 1e6 => format!("{:.2}M", value / 1e6),
        v if v >= 1e4 => format!("{:.1}k", value / 1e3),
        _ => format!("{value:.0}"),
    }
}

#[derive(Debug)]
pub struct Report {
    pub preset: Option<&'static str>,
    /// One per `--url`.
    pub urls: Vec<String>,
    /// Clients joined at each URL.
    pub url_joined: Vec<usize>,
    pub batch: bool,
    pub clients: usize,
    pub rooms: usize,
    pub senders_per_room: usize,
    /// Clients that drew (joined senders).
    pub senders: usize,
    pub rate: f64,
    pub duration_s: f64,
    pub connected: usize,
    pub connect_errors: usize,
    pub connect_failures: BTreeMap<String, usize>,
    pub connect_s: f64,
    pub join: Latency,
    pub sent: u64,
    pub expected: u64,
    pub received: u64,
    pub duplicated: u64,
    /// Text frames received from the start of the drawing to the stop.
    pub frames: u64,
    /// `--cursors` per room and `--cursor-rate`; cursor messages sent and received.
    pub cursors_per_room: usize,
    pub cursor_rate: f64,
    pub cursors_sent: u64,
    pub cursors_received: u64,
    pub window: Window,
    /// `--server-pid` (several: a cluster's nodes, their figures added up).
    pub server_pids: Vec<u32>,
    pub latency: Latency,
    pub first_second: Latency,
    pub show_first_second: bool,
    pub stayed_up: usize,
    pub pings: u64,
    pub disconnects: usize,
    pub drop_reasons: BTreeMap<String, usize>,
    pub drained_s: f64,
    pub cpu_percent: Option<f64>,
    /// The whole machine over the same time, server and everything else included.
    pub machine_busy_percent: Option<f64>,
    pub cores: usize,
}

impl Report {
    pub fn lost(&self) -> u64 {
        self.expected
            .saturating_sub(self.received)
            .saturating_sub(self.duplicated)
    }

    pub fn offered_per_s(&self) -> f64 {
        self.sent as f64 / self.duration_s
    }

    pub fn delivered_per_s(&self) -> f64 {
        self.received as f64 / self.duration_s
    }

    /// True when this process used more than 80% of the machine: its numbers may show its own
    /// limit rather than the server's.
    pub fn cpu_bound(&self) -> bool {
        self.cpu_percent
            .is_some_and(|cpu| cpu > 80.0 * self.cores as f64)
    }

    /// Segments per second the senders were asked for.
    pub fn target_per_s(&self) -> f64 {
        self.senders as f64 * self.rate
    }

    /// Reasons to doubt the figures.
    pub fn warnings(&self) -> Vec<String> {
        let mut warnings = Vec::new();
        if self.cpu_bound() {
            warnings.push(format!(
                "warning: the load generator used {:.0}% of one core, more than 80% of this machine's \
                 {} cores: it, not the server, may have been the bottleneck",
                self.cpu_percent.unwrap_or(0.0),
                self.cores
            ));
        }
        if self.machine_busy_percent.is_some_and(|busy| busy > 90.0) {
            warnings.push(format!(
                "warning: the machine was {:.0}% busy (server, load generator and anything else \
                 running): the figures show what this machine could do, not the server alone",
                self.machine_busy_percent.unwrap_or(0.0)
            ));
        }
        if self.offered_per_s() < 0.95 * self.target_per_s() {
            warnings.push(format!(
                "warning: the senders offered {:.0} segments/s of the {:.0}/s asked for: they fell \
                 behind (late ticks are skipped, not made up)",
                self.offered_per_s(),
                self.target_per_s()
            ));
        }
        warnings
    }

    pub fn to_json(&self) -> serde_json::Value {
        let mut value = self.counts_json();
        let server = self.window.server.as_ref();
        let window = json!({
            "frames_received": self.frames,
            "cursors_per_room": self.cursors_per_room,
            "cursor_rate": self.cursor_rate,
            "cursors_sent": self.cursors_sent,
            "cursors_received": self.cursors_received,
            "window_s": self.window.seconds,
            "window_deliveries": self.window.received,
            "window_frames": self.window.frames,
            // The pid when there is one (as before several were possible); all of them below.
            "server_pid": match self.server_pids[..] {
                [pid] => Some(pid),
                _ => None,
            },
            "server_pids": self.server_pids,
            "server_window_cpu_s": server.map(|s| s.cpu_s),
            "server_window_cpu_s_per_pid": server.map(|s| {
                s.cpu_s_per_pid
                    .iter()
                    .map(|(pid, cpu_s)| (pid.to_string(), *cpu_s))
                    .collect::<BTreeMap<_, _>>()
            }),
            "server_window_ctx_switches": server.map(|s| s.switches()),
            "server_window_voluntary_ctx_switches": server.map(|s| s.voluntary_switches),
            "server_window_nonvoluntary_ctx_switches": server.map(|s| s.nonvoluntary_switches),
            "server_window_threads_gone": server.map(|s| s.threads_gone),
            "server_window_threads_new": server.map(|s| s.threads_new),
        });
        if let (Some(all), serde_json::Value::Object(more)) = (value.as_object_mut(), window) {
            all.extend(more);
        }
        value
    }

    /// Everything but the frames and the window (one `json!` of all would pass the macro's
    /// recursion limit).
    fn counts_json(&self) -> serde_json::Value {
        json!({
            "preset": self.preset,
            // One URL: that URL, as before; several: comma-separated (and one by one below).
            "url": self.urls.join(","),
            "urls": self.urls,
            "url_clients_joined": self.url_joined,
            "batch": self.batch,
            "clients": self.clients,
            "rooms": self.rooms,
            "senders_per_room": self.senders_per_room,
            "senders": self.senders,
            "rate": self.rate,
            "duration_s": self.duration_s,
            "offered_per_s": self.offered_per_s(),
            "delivered_per_s": self.delivered_per_s(),
            "sent": self.sent,
            "expected": self.expected,
            "received": self.received,
            "lost": self.lost(),
            "duplicated": self.duplicated,
            "connected": self.connected,
            "connect_errors": self.connect_errors,
            "connect_error_reasons": self.connect_failures,
            "connect_s": self.connect_s,
            "join_p50_ms": self.join.p50,
            "join_p99_ms": self.join.p99,
            "join_max_ms": self.join.max,
            "stayed_up": self.stayed_up,
            "pings_answered": self.pings,
            "disconnects": self.disconnects,
            "disconnect_reasons": self.drop_reasons,
            "p50_ms": self.latency.p50,
            "p90_ms": self.latency.p90,
            "p99_ms": self.latency.p99,
            "max_ms": self.latency.max,
            "first_second_p99_ms": self.first_second.p99,
            "drained_s": self.drained_s,
            "loadgen_cpu_percent": self.cpu_percent,
            "machine_busy_percent": self.machine_busy_percent,
            "cores": self.cores,
            "loadgen_cpu_bound": self.cpu_bound(),
        })
    }

    pub fn to_text(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "livecanvas-load report ({}{}) against {}",
            self.preset.unwrap_or("custom"),
            if self.batch { ", batched" } else { "" },
            self.urls.join(", ")
        );
        let _ = writeln!(
            out,
            "  setup       {} clients in {} rooms; {} senders ({} per room) at {}/s for {:.1} s",
            self.clients,
            self.rooms,
            self.senders,
            self.senders_per_room,
            self.rate,
            self.duration_s
        );
        let _ = writeln!(
            out,
            "  connect     {} joined in {:.2} s, {} errors; join time p50 {} p99 {} max {}",
            self.connected,
            self.connect_s,
            self.connect_errors,
            fmt_ms(self.join.p50),
            fmt_ms(self.join.p99),
            fmt_ms(self.join.max)
        );
        if self.urls.len() > 1 {
            for (url, joined) in self.urls.iter().zip(&self.url_joined) {
                let _ = writeln!(out, "              {joined} joined at {url}");
            }
        }
        for (reason, count) in &self.connect_failures {
            let _ = writeln!(out, "              {count} x {reason}");
        }
        if self
            .connect_failures
            .keys()
            .any(|reason| reason.starts_with("HTTP 429") || reason.starts_with("HTTP 503"))
        {
            let _ = writeln!(
                out,
                "              (the server's per-address limits refused them: see \"THE SERVER'S LIMITS\" in --help)"
            );
        }
        let _ = writeln!(
            out,
            "  offered     {:.1} segments/s ({} sent), {} deliveries/s expected",
            self.offered_per_s(),
            self.sent,
            si(self.expected as f64 / self.duration_s)
        );
        let _ = writeln!(
            out,
            "  delivered   {} deliveries/s ({} received of {} expected)",
            si(self.delivered_per_s()),
            self.received,
            self.expected
        );
        let _ = writeln!(
            out,
            "  lost        {}   duplicated/reordered {}   (drained {:.2} s after the end)",
            self.lost(),
            self.duplicated,
            self.drained_s
        );
        let _ = writeln!(
            out,
            "  frames      {} text frames received ({:.2} deliveries per frame)",
            self.frames,
            if self.frames > 0 {
                self.received as f64 / self.frames as f64
            } else {
                0.0
            }
        );
        if self.cursors_per_room > 0 {
            let _ = writeln!(
                out,
                "  cursors     {} per room at {}/s: {} sent, {} received",
                self.cursors_per_room, self.cursor_rate, self.cursors_sent, self.cursors_received
            );
        }
        if let Some(server) = &self.window.server {
            let per = |value: f64| {
                if self.window.received > 0 {
                    format!("{:.2}", value / self.window.received as f64)
                } else {
                    "-".into()
                }
            };
            let pids = server
                .cpu_s_per_pid
                .iter()
                .map(|(pid, cpu_s)| format!("{pid} ({cpu_s:.2} s)"))
                .collect::<Vec<_>>();
            let _ = writeln!(
                out,
                "  server      pid {}: {:.2} s CPU and {} context switches over {:.2} s of drawing and \
                 drain: {} us CPU and {} context switches per delivery",
                if pids.len() > 1 {
                    pids.join(" + ")
                } else {
                    self.server_pids.first().map_or("?".into(), u32::to_string)
                },
                server.cpu_s,
                server.switches(),
                self.window.seconds,
                per(server.cpu_s * 1e6),
                per(server.switches() as f64)
            );
        }
        let _ = writeln!(
            out,
            "  latency     p50 {}  p90 {}  p99 {}  max {}",
            fmt_ms(self.latency.p50),
            fmt_ms(self.latency.p90),
            fmt_ms(self.latency.p99),
            fmt_ms(self.latency.max)
        );
        if self.show_first_second {
            let _ = writeln!(
                out,
                "  first second of drawing: p50 {}  p99 {}  max {}",
                fmt_ms(self.first_second.p50),
                fmt_ms(self.first_second.p99),
                fmt_ms(self.first_second.max)
            );
        }
        let _ = writeln!(
            out,
            "  stayed up   {} of {} joined ({} disconnected during the run); {} server pings answered",
            self.stayed_up, self.connected, self.disconnects, self.pings
        );
        for (reason, count) in &self.drop_reasons {
            let _ = writeln!(out, "              {count} x {reason}");
        }
        let _ = writeln!(
            out,
            "  loadgen CPU {} of one core over the run; the whole machine ({} cores) was {} busy",
            self.cpu_percent
                .map_or_else(|| "unknown".into(), |cpu| format!("{cpu:.0}%")),
            self.cores,
            self.machine_busy_percent
                .map_or_else(|| "?".into(), |busy| format!("{busy:.0}%")),
        );
        for warning in self.warnings() {
            let _ = writeln!(out, "{warning}");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn several_server_processes_are_added_up() {
        let before = ServerSample {
            cpu_ticks: vec![(10, 100), (11, 50)],
            switches: BTreeMap::from([(10, (5, 1)), (11, (7, 0)), (12, (1, 1))]),
        };
        let after = ServerSample {
            cpu_ticks: vec![(10, 130), (11, 60)],
            switches: BTreeMap::from([(10, (9, 2)), (11, (17, 0)), (13, (2, 0))]),
        };
        let window = ServerWindow::between(&before, &after);
        assert_eq!(window.cpu_s_per_pid, [(10, 0.3), (11, 0.1)]);
        assert!((window.cpu_s - 0.4).abs() < 1e-9);
        // Threads 10 and 11 (one per process) counted from the first reading, 13 from zero.
        assert_eq!(
            (window.voluntary_switches, window.nonvoluntary_switches),
            (4 + 10 + 2, 1)
        );
        assert_eq!((window.threads_gone, window.threads_new), (1, 1));
    }

    #[test]
    fn every_pid_must_be_readable() {
        let me = std::process::id();
        let sample = ServerSample::read(&[me]).expect("this process's /proc");
        assert_eq!(sample.cpu_ticks.len(), 1);
        assert!(sample.switches.contains_key(&me));
        // pid_max is at most 2^22: this one cannot exist.
        assert_eq!(ServerSample::read(&[me, 1 << 23]).err(), Some(1 << 23));
    }
}
