//! The `livecanvas` binary: parse the configuration, set up logging, serve (or run a subcommand).

use std::process::ExitCode;

use clap::Parser;
use livecanvas::config::{Cli, Command, Config};

fn main() -> ExitCode {
    livecanvas::memory::tune_the_heap();
    let cli = Cli::parse();
    match &cli.command {
        Some(Command::Healthcheck { timeout }) => return healthcheck(&cli.config, *timeout),
        Some(Command::Backup { dir, timeout }) => {
            return match livecanvas::backup::run(&cli.config, dir, *timeout) {
                Ok(done) => {
                    println!("livecanvas backup: {done}");
                    ExitCode::SUCCESS
                }
                Err(why) => {
                    eprintln!("livecanvas backup: {why}");
                    ExitCode::FAILURE
                }
            };
        }
        None => {}
    }
    livecanvas::logging::init(cli.config.log_format);
    log_panics();
    let settings = match cli.config.resolve() {
        Ok(settings) => settings,
        Err(message) => {
            eprintln!("livecanvas: error: {message}");
            return ExitCode::from(2);
        }
    };
    let bind = settings.bind;
    // The store is opened on the serving runtime: a cluster's links to Redis run on it.
    actix_web::rt::System::new().block_on(async move {
        let store = match livecanvas::open_store(&settings) {
            Ok(store) => store,
            Err(err) => {
                eprintln!("livecanvas: error: {err}");
                return ExitCode::FAILURE;
            }
        };
        match livecanvas::run(settings, store).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(err) => {
                eprintln!("livecanvas: error: cannot serve on {bind}: {err}");
                ExitCode::FAILURE
            }
        }
    })
}

/// Exit 0 when the configured server's /healthz answers 200 within `timeout`.
fn healthcheck(config: &Config, timeout: std::time::Duration) -> ExitCode {
    let url = match config.health_url() {
        Ok(url) => url,
        Err(message) => {
            eprintln!("livecanvas healthcheck: {message}");
            return ExitCode::from(2);
        }
    };
    match ureq::get(&url).timeout(timeout).call() {
        Ok(response) if response.status() == 200 => ExitCode::SUCCESS,
        Ok(response) => {
            eprintln!(
                "livecanvas healthcheck: {url} answered {}",
                response.status()
            );
            ExitCode::FAILURE
        }
        Err(err) => {
            eprintln!("livecanvas healthcheck: {url}: {err}");
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
