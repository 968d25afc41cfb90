//! `doozer`: the command-line client, a drop-in replacement for the original Go `doozer`
//! (doozer-protocol.md §6), plus `ls`, `-json`, TLS flags, `snapshot` and `bench`.
//!
//! Exit status: 0 on success, 1 for a rev mismatch, 2 for any other error, 127 for a
//! missing or unknown command or a wrong number of arguments.

mod bench;
mod commands;
mod duration;
mod flags;
mod output;
mod run;
mod snapshot;

fn main() {
    // Die quietly on a closed pipe (`doozer watch /** | head`), as the Go original did,
    // instead of failing writes.
    // SAFETY: restoring the default disposition of SIGPIPE before any thread starts.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let mut argv = std::env::args();
    let argv0 = argv.next().unwrap_or_else(|| "doozer".to_owned());
    let args: Vec<String> = argv.collect();
    let code = run::main(&argv0, args);
    std::process::exit(code);
}
