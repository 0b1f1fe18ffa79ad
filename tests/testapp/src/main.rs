//! `testapp`: see the library documentation of `mesh_testapp`.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;

use clap::Parser;
use mesh_testapp::cli::{Cli, Command, EchoArgs, GetArgs, ServeArgs, UpgradeArgs};
use mesh_testapp::client::{echo, load, upgrade};
use mesh_testapp::server::TestServer;
use mesh_testapp::target::HttpTarget;
use tokio::signal::unix::{SignalKind, signal};

/// Exit status for options or targets that were refused before anything ran.
const EXIT_USAGE: u8 = 2;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let default_level = if matches!(cli.command, Command::Serve(_)) {
        "info"
    } else {
        "warn"
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    match cli.command {
        Command::Serve(args) => serve(args).await,
        Command::Get(args) => get(args).await,
        Command::Echo(args) => run_echo(args).await,
        Command::Upgrade(args) => run_upgrade(args).await,
    }
}

async fn serve(args: ServeArgs) -> ExitCode {
    let server = match TestServer::bind(args.config()).await {
        Ok(server) => server,
        Err(error) => return fail(EXIT_USAGE, &error),
    };
    let stop = match terminated() {
        Ok(stop) => stop,
        Err(error) => return fail(1, &error),
    };
    // Signals are caught from here on, so whoever waits for this line may send SIGTERM.
    let http = server.http_addr().map(|addr| addr.to_string());
    let tcp_echo = server.tcp_echo_addr().map(|addr| addr.to_string());
    print_json(&serde_json::json!({ "ready": true, "http": http, "tcp_echo": tcp_echo }));
    // Shutdown was asked for, so even a forced close at the deadline is a clean exit.
    if !server.run(stop).await {
        tracing::warn!("connections were still open at the drain deadline and were closed");
    }
    ExitCode::SUCCESS
}

/// Resolves on SIGTERM or SIGINT.
fn terminated() -> std::io::Result<impl Future<Output = ()>> {
    let mut term = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = interrupt.recv() => {}
        }
    })
}

async fn get(args: GetArgs) -> ExitCode {
    let target = match HttpTarget::resolve(&args.url).await {
        Ok(target) => target,
        Err(error) => return fail(EXIT_USAGE, &error),
    };
    let config = args.config(target);
    if let Err(error) = config.validate() {
        return fail(EXIT_USAGE, &error);
    }
    let prints_each = args.prints_each();
    let summary = load::run(config, |outcome| {
        if prints_each {
            print_json(outcome);
        }
    })
    .await;
    print_json(&summary);
    if summary.errors == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

async fn run_echo(args: EchoArgs) -> ExitCode {
    let report = echo::run(&args.config()).await;
    print_json(&report);
    if report.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

async fn run_upgrade(args: UpgradeArgs) -> ExitCode {
    let target = match HttpTarget::resolve(&args.url).await {
        Ok(target) => target,
        Err(error) => return fail(EXIT_USAGE, &error),
    };
    let report = upgrade::run(&args.config(target)).await;
    print_json(&report);
    if report.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn print_json(value: &impl serde::Serialize) {
    let mut stdout = std::io::stdout().lock();
    // A closed stdout (a test that stopped reading) is not worth a panic.
    if let Ok(line) = serde_json::to_string(value) {
        let _ = writeln!(stdout, "{line}");
    }
}

fn fail(code: u8, error: &dyn std::error::Error) -> ExitCode {
    eprintln!("testapp: {error}");
    ExitCode::from(code)
}
