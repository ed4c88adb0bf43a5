//! The `cryo` command line: CRIU-style verbs (`dump`, `restore`, `check`).

use clap::{Parser, Subcommand};
use cryo::{dump, restore};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "cryo",
    version,
    about = "Checkpoint/restore for Linux processes"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

/// How the log is written. Binary costs almost nothing at full verbosity, so dump and
/// restore always log everything; `cryo log decode` renders it as text later.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    Text,
    Binary,
    Json,
}

#[derive(clap::Args)]
struct LogArgs {
    /// Log sink: binary (default; read with `cryo log decode`), text, json.
    #[arg(long, value_enum, default_value_t = LogFormat::Binary)]
    log_format: LogFormat,
    /// Log verbosity 0 (errors) … 4 (everything), e.g. -v4.
    #[arg(short = 'v', default_value_t = 4, value_parser = clap::value_parser!(u8).range(0..=4))]
    verbosity: u8,
    /// Log file (default: dump.log / restore.log in the image directory).
    #[arg(short = 'o', long = "log-file")]
    log: Option<PathBuf>,
}

/// Fds that reach outside the dumped tree (CRIU's flags).
#[derive(clap::Args)]
struct FdFlags {
    /// Keep unix sockets whose peer is outside the tree.
    #[arg(long)]
    ext_unix_sk: bool,
    /// Checkpoint/restore established TCP connections (TCP_REPAIR).
    #[arg(long)]
    tcp_established: bool,
}

#[derive(Subcommand)]
enum Cmd {
    /// Checkpoint a running process into an image directory.
    Dump {
        /// PID of the process to dump.
        #[arg(short = 't', long = "tree")]
        pid: i32,
        /// Image directory.
        #[arg(short = 'D', long = "images-dir")]
        dir: PathBuf,
        /// Let the process run on after the dump (default: kill it).
        #[arg(short = 'R', long)]
        leave_running: bool,
        /// The process is a job of the caller's shell (not a session leader).
        #[arg(short = 'j', long)]
        shell_job: bool,
        #[command(flatten)]
        fds: FdFlags,
        #[command(flatten)]
        log: LogArgs,
    },
    /// Restore a process from an image directory.
    Restore {
        #[arg(short = 'D', long = "images-dir")]
        dir: PathBuf,
        /// Return once the process runs instead of waiting for it.
        #[arg(short = 'd', long = "restore-detached")]
        detach: bool,
        /// Write the restored PID here.
        #[arg(long)]
        pidfile: Option<PathBuf>,
        /// Attach the restored process to the caller's session and terminal.
        #[arg(short = 'j', long)]
        shell_job: bool,
        #[command(flatten)]
        fds: FdFlags,
        /// Restore established TCP connections closed.
        #[arg(long)]
        tcp_close: bool,
        #[command(flatten)]
        log: LogArgs,
    },
    /// Check that the kernel has every feature cryo uses.
    Check,
    /// Work with cryo's logs.
    Log {
        #[command(subcommand)]
        cmd: LogCmd,
    },
}

#[derive(Subcommand)]
enum LogCmd {
    /// Render a binary log as the text (or JSON) the other sinks write.
    Decode {
        file: PathBuf,
        /// Show records up to this level: error, warn, info, debug, trace.
        #[arg(long, default_value = "trace")]
        level: log::LevelFilter,
        /// One JSON object per record.
        #[arg(long)]
        json: bool,
    },
}

/// Sets up the log file; returns its path for the error line.
fn init_log(args: &LogArgs, dir: &Path, default_name: &str) -> Option<PathBuf> {
    let path = args.log.clone().unwrap_or_else(|| dir.join(default_name));
    if args.log.is_none() {
        let _ = cryo::image::ImageDir::create(dir);
    }
    let level = cryo::logging::level_from_verbosity(args.verbosity);
    let res = match args.log_format {
        LogFormat::Binary => {
            cryo::binlog::install_crash_flush();
            cryo::binlog::init_file(&path, level)
        }
        LogFormat::Text => cryo::logging::init_file(&path, level, false),
        LogFormat::Json => cryo::logging::init_file(&path, level, true),
    };
    match res {
        Ok(()) => Some(path),
        Err(e) => {
            eprintln!("cryo: warning: cannot open log {}: {e}", path.display());
            None
        }
    }
}

fn is_binary_log(p: &Path) -> bool {
    let mut head = [0u8; 8];
    std::fs::File::open(p)
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut head))
        .is_ok()
        && cryo::binlog::is_binlog(&head)
}

fn fail(e: cryo::Error, log: Option<&Path>) -> ExitCode {
    log::error!(err:% = e; "failed");
    log::logger().flush();
    match log {
        Some(l) if is_binary_log(l) => {
            eprintln!(
                "cryo: error: {e} (log: {}; read it with `cryo log decode {}`)",
                l.display(),
                l.display()
            )
        }
        Some(l) => eprintln!("cryo: error: {e} (log: {})", l.display()),
        None => eprintln!("cryo: error: {e}"),
    }
    ExitCode::FAILURE
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Check => {
            if cryo::check::run() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Cmd::Log {
            cmd: LogCmd::Decode { file, level, json },
        } => {
            let bytes = match std::fs::read(&file) {
                Ok(b) => b,
                Err(e) => {
                    eprintln!("cryo: error: read {}: {e}", file.display());
                    return ExitCode::FAILURE;
                }
            };
            if !cryo::binlog::is_binlog(&bytes) {
                eprintln!("cryo: error: {} is not a cryo binary log", file.display());
                return ExitCode::FAILURE;
            }
            let mut out = std::io::BufWriter::new(std::io::stdout().lock());
            let report = cryo::binlog::decode(&bytes, level, &mut out, json);
            drop(out);
            if report.is_complete() {
                ExitCode::SUCCESS
            } else {
                eprintln!("cryo: {report}");
                ExitCode::FAILURE
            }
        }
        Cmd::Dump {
            pid,
            dir,
            leave_running,
            shell_job,
            fds,
            log,
        } => {
            let logp = init_log(&log, &dir, "dump.log");
            let opts = dump::DumpOpts {
                pid,
                dir,
                leave_running,
                shell_job,
                fds: cryo::files::FdOpts {
                    ext_unix_sk: fds.ext_unix_sk,
                    tcp_established: fds.tcp_established,
                    tcp_close: false,
                },
            };
            match dump::dump(&opts) {
                Ok(st) => {
                    log::logger().flush();
                    eprintln!(
                        "cryo: dumped pid {pid}: frozen {:.1} ms, {} pages written ({} zero pages skipped), peak RSS {} KiB",
                        st.frozen_ms,
                        st.pages.pages_written,
                        st.pages.pages_zero,
                        cryo::proc::own_peak_rss_kib()
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => fail(e, logp.as_deref()),
            }
        }
        Cmd::Restore {
            dir,
            detach,
            pidfile,
            shell_job,
            fds,
            tcp_close,
            log,
        } => {
            let logp = init_log(&log, &dir, "restore.log");
            let opts = restore::RestoreOpts {
                dir,
                detach,
                pidfile,
                shell_job,
                fds: cryo::files::FdOpts {
                    ext_unix_sk: fds.ext_unix_sk,
                    tcp_established: fds.tcp_established,
                    tcp_close,
                },
            };
            match restore::restore(&opts) {
                Ok(restore::Outcome::Detached(pid)) => {
                    log::logger().flush();
                    eprintln!(
                        "cryo: restored pid {pid}, peak RSS {} KiB",
                        cryo::proc::own_peak_rss_kib()
                    );
                    ExitCode::SUCCESS
                }
                Ok(restore::Outcome::Exited(code)) => ExitCode::from(code.clamp(0, 255) as u8),
                Err(e) => fail(e, logp.as_deref()),
            }
        }
    }
}
