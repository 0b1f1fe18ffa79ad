//! `meshctl`: the command line of the mesh.

use clap::Parser;

fn main() {
    let cli = controller::cli::Cli::parse();
    if let Err(e) = controller::cli::run(cli) {
        eprintln!("meshctl: {e:#}");
        std::process::exit(1);
    }
}
