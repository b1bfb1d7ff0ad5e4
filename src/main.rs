//! The `dialgate` command line. Only argument parsing and wiring live here;
//! every command calls into the library.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "dialgate",
    version,
    about = "Outbound call campaigns for AI voice agents"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Check everything loaded at run time: ONNX Runtime, models, Opus.
    Doctor,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,ort=warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match cli.command {
        Command::Doctor => {
            let (checks, ok) = dialgate::doctor::run();
            print!("{}", dialgate::doctor::report(&checks));
            if ok {
                ExitCode::SUCCESS
            } else {
                eprintln!("dialgate doctor: some checks failed (see FAIL above)");
                ExitCode::FAILURE
            }
        }
    }
}
