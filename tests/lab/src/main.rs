//! `mesh-lab`: the lab's command line (`meshctl lab` will offer the same commands).

use clap::Parser;

/// The whole mesh on one Linux machine, in network namespaces.
#[derive(Debug, Parser)]
#[command(name = "mesh-lab", version)]
struct Cli {
    #[command(flatten)]
    lab: mesh_lab::cli::LabArgs,
}

#[tokio::main]
async fn main() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let program = std::env::current_exe()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| "mesh-lab".to_string());
    match mesh_lab::cli::run(cli.lab, vec![program]).await {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("mesh-lab: {e:#}");
            std::process::exit(1);
        }
    }
}
