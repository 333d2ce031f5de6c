//! Log output: env_logger's human lines, or one JSON object per line for log collectors.
//!
//! This module owns the log line format only; what is logged is decided where it happens. It must
//! never write anything but complete lines (a collector splits on newlines).

use std::io::Write;

use crate::config::LogFormat;

pub fn init(format: LogFormat) {
    let mut builder =
        env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"));
    if format == LogFormat::Json {
        builder.format(|out, record| {
            let line = serde_json::json!({
                "ts": out.timestamp_micros().to_string(),
                "level": record.level().as_str(),
                "target": record.target(),
                "message": record.args().to_string(),
            });
            writeln!(out, "{line}")
        });
    }
    builder.init();
}
