//! The `livecanvas` binary: parse the configuration, set up logging, serve.

use std::process::ExitCode;

use clap::Parser;
use livecanvas::config::Config;

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    log_panics();
    let settings = match Config::parse().resolve() {
        Ok(settings) => settings,
        Err(message) => {
            eprintln!("livecanvas: error: {message}");
            return ExitCode::from(2);
        }
    };
    let bind = settings.bind;
    match actix_web::rt::System::new().block_on(livecanvas::run(settings)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("livecanvas: error: cannot serve on {bind}: {err}");
            ExitCode::FAILURE
        }
    }
}

/// A panic in an actor ends only that actor's thread; make sure it reaches the log, where an
/// operator looks, and not only stderr.
fn log_panics() {
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        log::error!("panic: {info}");
        default_hook(info);
    }));
}
