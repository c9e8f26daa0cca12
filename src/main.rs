//! etcd-operator: one binary, several roles (see `etcd-operator --help`).

use std::process::ExitCode;

use clap::Parser;
use etcd_operator::{cli, kubectl_plugin, telemetry};

fn main() -> ExitCode {
    etcd_operator::tune_allocator();
    // object_store's and other crates' features may pull a second rustls provider; pick ring once,
    // before anything builds a TLS config (rustls panics when it cannot decide).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    // Called as `kubectl-etcd` (kubectl runs plugins by that name): the kubectl plugin.
    let program = std::env::args_os().next().map(std::path::PathBuf::from);
    if program.as_deref().and_then(|p| p.file_name()).is_some_and(|n| n == kubectl_plugin::PROGRAM)
    {
        let cli = kubectl_plugin::Cli::parse();
        return match runtime.block_on(kubectl_plugin::run(cli)) {
            Ok(()) => ExitCode::SUCCESS,
            Err(err) => {
                eprintln!("error: {err}");
                ExitCode::FAILURE
            }
        };
    }
    let cli = cli::Cli::parse();
    telemetry::init(cli.log_format);
    match runtime.block_on(cli::dispatch(cli.command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {}", telemetry::chain(&err));
            ExitCode::from(err.exit_code())
        }
    }
}
