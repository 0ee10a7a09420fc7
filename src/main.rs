//! The flowguard binary: parses the command line and hands over to the library.

use clap::Parser;
use flowguard::cli::{Cli, LogFormat, main as cli_main};
use std::io::IsTerminal;

#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let cli = Cli::parse();
    if !cli.command.serves() {
        quiet_on_closed_pipe();
    }
    logging(cli.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            std::process::exit(1);
        }
    };
    let code = match runtime.block_on(cli_main(cli)) {
        Ok(code) => code,
        Err(f) => {
            eprintln!("error: {:#}", f.error);
            f.code
        }
    };
    runtime.shutdown_timeout(std::time::Duration::from_millis(200));
    std::process::exit(code);
}

/// Log lines go to stderr: coloured only when it is a terminal (and `NO_COLOR` is unset), or one
/// JSON object a line.
fn logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("FLOWGUARD_LOG").unwrap_or_else(|_| "warn".into());
    let fmt = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        LogFormat::Json => fmt.json().init(),
        LogFormat::Text => {
            let colour = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
            fmt.with_ansi(colour).init()
        }
    }
}

/// `flowguard alerts list | head -1`: when the reader goes away, end quietly as `cat` does, not
/// with a panic from `println!`. Rust ignores SIGPIPE by default; the default action ends the
/// process without a word. Only for commands that print and exit: a server's sockets must see
/// EPIPE as an error, not die of it.
fn quiet_on_closed_pipe() {
    #[cfg(unix)]
    // SAFETY: setting a signal's disposition to its default before any thread starts.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}
