//! The command table: names, arguments, one-line descriptions, help texts, and the usage
//! screen built from them.

/// One command.
pub struct Cmd {
    /// Its name.
    pub name: &'static str,
    /// Argument synopsis, e.g. `<path> <rev>`.
    pub args: &'static str,
    /// Exact number of arguments.
    pub nargs: usize,
    /// One line for the usage screen.
    pub desc: &'static str,
    /// The text `help <command>` prints.
    pub help: &'static str,
}

const GLOB_RULES: &str = "Rules for <glob> pattern-matching:
 - '?' matches a single char in a single path component
 - '*' matches zero or more chars in a single path component
 - '**' matches zero or more chars in zero or more components
 - any other sequence matches itself
";

/// Every command, sorted by name.
pub const CMDS: &[Cmd] = &[
    Cmd {
        name: "add",
        args: "<path>",
        nargs: 1,
        desc: "add a key only if it isn't already set",
        help: "Sets the body of the file at <path> only if it does not already exist.

Equivalent to

  set <path> 0

The body is read from stdin. Prints the new revision on stdout, or an error
message on stderr.
",
    },
    Cmd {
        name: "bench",
        args: "<workload>",
        nargs: 1,
        desc: "generate load and report latency",
        help: "Runs a load generator against the cluster and prints throughput and latency
percentiles (p50, p90, p99, p99.9, max).

<workload> is one of:
  set    - every operation writes a random key (clobber)
  get    - every operation reads a random key (keys are written first)
  mixed  - 90% get, 10% set
  watch  - -clients watchers follow /bench/**; one writer sets keys; reports the
           delay from each write to its delivery to every watcher

Flags: -clients N (default 10), -duration D (default 10s) or -ops N,
-value-size BYTES (default 100), -keys N (default 1000). Keys live under
/bench. A progress bar is shown when stderr is a terminal.
",
    },
    Cmd {
        name: "del",
        args: "<path> <rev>",
        nargs: 2,
        desc: "delete a file",
        help: "Deletes the file at <path>.

If <rev> is not greater than or equal to the revision of the file,
no change will be made. Use -1 to delete unconditionally.
",
    },
    Cmd {
        name: "find",
        args: "<path>",
        nargs: 1,
        desc: "list files",
        help: "Prints the tree rooted at <path>

Prints the path for each file or directory, one per line.
If flag -r is given, prints the tree as of revision <rev>.
",
    },
    Cmd {
        name: "get",
        args: "<path>",
        nargs: 1,
        desc: "read a file",
        help: "Prints the body of the file at <path>.
",
    },
    Cmd {
        name: "help",
        args: "<command>",
        nargs: 1,
        desc: "provide detailed help on a command",
        help: "Prints detailed help on <command>.
",
    },
    Cmd {
        name: "ls",
        args: "<path>",
        nargs: 1,
        desc: "list a directory",
        help: "Prints the names of the entries of the directory at <path>, one per line,
in sorted order.

If flag -r is given, lists the directory as of revision <rev>.
",
    },
    Cmd {
        name: "nop",
        args: "",
        nargs: 0,
        desc: "consensus",
        help: "Performs a consensus operation.

No change will be made to the data store.
",
    },
    Cmd {
        name: "rev",
        args: "",
        nargs: 0,
        desc: "show current revision",
        help: "Prints the current revision of the store.
",
    },
    Cmd {
        name: "self",
        args: "",
        nargs: 0,
        desc: "identify a node",
        help: "Prints the node's ID.
",
    },
    Cmd {
        name: "set",
        args: "<path> <rev>",
        nargs: 2,
        desc: "write a file",
        help: "Sets the body of the file at <path>.

The body is read from stdin. If <rev> is not greater than or equal to
the revision of the file, no change will be made.

Prints the new revision on stdout, or an error message on stderr.
",
    },
    Cmd {
        name: "snapshot",
        args: "<op> <file>",
        nargs: 2,
        desc: "back up or restore the tree",
        help: "<op> is save, restore or import.

snapshot save <file>: writes every file of the tree as of one revision (the
current one, or -r) to <file> (- for stdout), one JSON object per line:
a header {\"doozer_snapshot\":1,\"rev\":R,\"files\":N} then
{\"path\":P,\"rev\":REV,\"value\":BASE64} for each file. All reads are made at
revision R, so the backup is exactly the tree as it was at R.

snapshot restore <file>: recreates every file outside /ctl in a new cluster with
its original revision number, and brings the cluster to revision R. Revisions
are global, so this needs a cluster whose revision is still below the lowest
file revision in the snapshot (a new cluster, before anyone writes to it): the
gaps are filled with NOPs, then each file is created exactly at its revision.
Nothing else may write to the cluster meanwhile; if anything does, the restore
stops with an error naming the file. Running it again resumes: files already
restored at their revision are skipped.

snapshot import <file>: creates every file outside /ctl with create-only
writes in any cluster. The cluster assigns new revisions.
",
    },
    Cmd {
        name: "stat",
        args: "<path>",
        nargs: 1,
        desc: "print file status",
        help: "Print the status for <path>.

If path is a directory, prints \"d\" and the number of entries.
Otherwise, prints its revision and length.
",
    },
    Cmd {
        name: "touch",
        args: "<path>",
        nargs: 1,
        desc: "update rev of a file",
        help: "Attempts to update the rev of a file to a value greater than
the current rev. If a file does not exist, it will be created.
",
    },
    Cmd {
        name: "wait",
        args: "<glob>",
        nargs: 1,
        desc: "wait for a change",
        help: "Prints the next change to a file matching <glob>.

If flag -r is given, prints the next change on or after <rev>.
if flag -t is given, the wait will timeout after the specified
\tduration (i.e. -t 1m30s will wait 1 minute and 30 seconds,
\tvalid time units: \"ns\", \"us\" (or \"µs\"), \"ms\", \"s\", \"m\", \"h\").

RULES
Output is a sequence of records, one for each change. Format of each record:

  <path> <rev> <set|del> <len> LF <body> LF

Here, <path> is the file's path, <rev> is the revision, <len> is the number of
bytes in the body, and LF is an ASCII line-feed char.
",
    },
    Cmd {
        name: "watch",
        args: "<glob>",
        nargs: 1,
        desc: "watch for a change",
        help: "Prints changes to any file matching <glob>.

If flag -r is given, prints changes beginning on <rev>.

RULES
Output is a sequence of records, one for each change. Format of each record:

  <path> <rev> <set|del> <len> LF <body> LF

Here, <path> is the file's path, <rev> is the revision of the change,
<len> is the number of bytes in the body, and LF is an ASCII line-feed char.
",
    },
];

/// Commands the original did not have.
pub const EXTENSIONS: &[&str] = &["bench", "ls", "snapshot"];

/// Looks a command up by name.
pub fn find(name: &str) -> Option<&'static Cmd> {
    CMDS.iter().find(|c| c.name == name)
}

/// The usage screen (written to stderr).
pub fn usage(argv0: &str) -> String {
    let mut s = format!("Use: {argv0} [options] <command> [options] [args]\n");
    s.push_str(
        "
Each command takes zero or more options and zero or more arguments.
In addition, there are some global options that can be used with any command.
The exit status is 0 on success, 1 for a rev mismatch, and 2 otherwise.

Global Options:
",
    );
    s.push_str(&crate::flags::defaults_text());
    s.push_str(
        "
Environment:

  DOOZER_URI - The doozer cluster to bind to; overriden by -a.

  DOOZER_BOOT_URI - The DzNS to lookup address in; overriden by -b.

Commands:
",
    );
    let lines: Vec<String> = CMDS
        .iter()
        .map(|c| format!("{} {}", c.name, c.args))
        .collect();
    // Padded to the original commands' widest synopsis, so every line the original
    // printed stays byte-identical; a longer synopsis of ours just gets one space.
    let width = CMDS
        .iter()
        .zip(&lines)
        .filter(|(c, _)| !EXTENSIONS.contains(&c.name))
        .map(|(_, l)| l.len())
        .max()
        .unwrap_or(0);
    for (c, l) in CMDS.iter().zip(&lines) {
        s.push_str(&format!("  {l:<width$} - {}\n", c.desc));
    }
    s
}

/// What `help <command>` prints (to stdout).
pub fn help(argv0: &str, cmd: &Cmd) -> String {
    format!(
        "Use: {argv0} [options] {} [options] {}\n\n{}",
        cmd.name,
        cmd.args,
        cmd.help.replace("RULES\n", &format!("{GLOB_RULES}\n"))
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_sorted_and_arity_matches_synopsis() {
        let names: Vec<_> = CMDS.iter().map(|c| c.name).collect();
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(names, sorted);
        for c in CMDS {
            assert_eq!(c.args.split_whitespace().count(), c.nargs, "{}", c.name);
        }
    }

    #[test]
    fn usage_lines_are_padded_like_the_original() {
        let u = usage("doozer");
        assert!(u.starts_with("Use: doozer [options] <command> [options] [args]\n"));
        // The original's lines, exactly (doozer-protocol.md §6).
        for line in [
            "  del <path> <rev> - delete a file\n",
            "  nop              - consensus\n",
            "  wait <glob>      - wait for a change\n",
            "  get <path>       - read a file\n",
            "  snapshot <op> <file> - back up or restore the tree\n",
        ] {
            assert!(u.contains(line), "{line:?} in\n{u}");
        }
    }
}
