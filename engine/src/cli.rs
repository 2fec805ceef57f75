//! The command line: `shardgate serve`, `shardgate check`. Signals: SIGHUP reloads the config;
//! SIGTERM/SIGINT drain (stop accepting, finish in-flight work up to the grace period, exit 0);
//! a second SIGTERM/SIGINT during the drain exits at once.

use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

use crate::config::ConfigSource;
use crate::gateway::{Gateway, StartOptions};
use crate::rt::{DriverRequest, RuntimeRequest, UringFlags};

#[derive(Parser, Debug)]
#[command(name = "shardgate", version, about = "A thread-per-core AI gateway with an OpenAI-compatible API")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the gateway. Without --config, runs on the embedded defaults: 127.0.0.1:8080,
    /// providers whose API keys are in the environment, and the built-in `mock` model.
    Serve(ServeArgs),
    /// Validate a config file and exit (0 when valid).
    Check {
        /// The YAML file to check.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Make virtual keys to declare in the config file.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// The MCP audit trail.
    #[command(subcommand)]
    Audit(AuditCommand),
}

#[derive(Subcommand, Debug)]
enum AuditCommand {
    /// Check the hash chain of the audit trail: exits 0 when every record holds, 1 at the first
    /// broken one (printed), 2 when the store cannot be read. Safe while the gateway runs.
    Verify {
        /// The store (SQLite file) to check.
        #[arg(long, conflicts_with = "config")]
        store: Option<PathBuf>,
        /// Or the config file whose store to check (`store.path`, default `shardgate.db` beside it).
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
}

#[derive(Subcommand, Debug)]
enum KeysCommand {
    /// Print a new random key, and the `hash` to declare it by under a pepper.
    New {
        /// The pepper (`auth.pepper`); default: the SHARDGATE_PEPPER environment variable.
        #[arg(long, env = "SHARDGATE_PEPPER", hide_env_values = true)]
        pepper: String,
    },
    /// Print the `hash` of an existing key (read from standard input) under a pepper.
    Hash {
        #[arg(long, env = "SHARDGATE_PEPPER", hide_env_values = true)]
        pepper: String,
    },
}

#[derive(clap::Args, Debug)]
struct ServeArgs {
    /// YAML config file (reloaded on SIGHUP and on change).
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Listen address, overriding `server.listen`.
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Number of shards (threads, one per core by default).
    #[arg(long)]
    shards: Option<NonZeroUsize>,
    /// Runtime: monoio (default) or glommio (a build with the `runtime-glommio` feature).
    #[arg(long, value_enum)]
    runtime: Option<RuntimeArg>,
    /// monoio's I/O driver.
    #[arg(long, value_enum)]
    driver: Option<DriverArg>,
    /// io_uring ring setup flags.
    #[arg(long, value_enum)]
    uring_flags: Option<UringFlagsArg>,
    /// Do not pin shard threads to cores.
    #[arg(long)]
    no_pin: bool,
    /// Serve callers without credentials on a non-loopback address while no key is configured.
    #[arg(long)]
    allow_anonymous: bool,
    /// The embedded store's database file, overriding `store.path`; `none` runs without one.
    #[arg(long)]
    store: Option<String>,
    /// Log format.
    #[arg(long, value_enum, default_value = "text")]
    log_format: LogFormat,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum RuntimeArg {
    Monoio,
    Glommio,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum DriverArg {
    Auto,
    Uring,
    Epoll,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum UringFlagsArg {
    DeferTaskrun,
    CoopTaskrun,
    None,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

fn init_logging(format: LogFormat) {
    init_stderr_logging(matches!(format, LogFormat::Json));
}

/// Logs to stderr, filtered by `SHARDGATE_LOG` (default `info`), as text or JSON lines; colour
/// only on a terminal, so log files and collectors get plain text. For every shardgate binary.
pub fn init_stderr_logging(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("SHARDGATE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi);
    let _ = if json { builder.json().try_init() } else { builder.try_init() };
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Check { config } => check(config),
        Command::Serve(args) => serve(args),
        Command::Keys(k) => keys(k),
        Command::Audit(AuditCommand::Verify { store, config }) => audit_verify(store, config),
    }
}

#[allow(clippy::print_stdout)] // The command's output is what the user asked for.
fn audit_verify(store: Option<PathBuf>, config: Option<PathBuf>) -> ExitCode {
    init_logging(LogFormat::Text);
    let path = match (store, config) {
        (Some(p), _) => p,
        (None, Some(c)) => {
            let source = ConfigSource::File(c);
            match crate::config::load(&source, 1) {
                Ok((file, _)) => match crate::config::store_path(&source, &file) {
                    Some(p) => p,
                    None => {
                        tracing::error!("this config runs without a store (store.path: none): there is no audit trail");
                        return ExitCode::from(2);
                    }
                },
                Err(e) => {
                    tracing::error!("{e}");
                    return ExitCode::from(2);
                }
            }
        }
        (None, None) => PathBuf::from("shardgate.db"),
    };
    match crate::store::verify_audit(&path) {
        Ok(v) => match v.broken {
            None => {
                println!("audit trail of {}: {} records, chain intact; head {}", path.display(), v.records, v.head);
                ExitCode::SUCCESS
            }
            Some((seq, why)) => {
                println!(
                    "audit trail of {}: BROKEN at record {seq}: {why} ({} records before it hold; last good hash {})",
                    path.display(),
                    v.records,
                    v.head
                );
                ExitCode::from(1)
            }
        },
        Err(e) => {
            tracing::error!("{e}");
            ExitCode::from(2)
        }
    }
}

#[allow(clippy::print_stdout)] // The command's output is what the user asked for.
fn keys(cmd: KeysCommand) -> ExitCode {
    init_logging(LogFormat::Text);
    let pepper = match &cmd {
        KeysCommand::New { pepper } | KeysCommand::Hash { pepper } => pepper,
    };
    if pepper.len() < 16 {
        tracing::error!("the pepper must be at least 16 characters (as auth.pepper)");
        return ExitCode::from(2);
    }
    let hasher = policy::keys::KeyHasher::new(pepper.as_bytes());
    match cmd {
        KeysCommand::New { .. } => match policy::keys::generate(&hasher) {
            Ok(k) => {
                println!("key:  {}", k.secret);
                println!("hash: {}", k.digest.to_text());
                println!("# Give the key to its owner (it is not shown again); declare it by hash:");
                println!("#   keys: [{{name: <name>, hash: \"{}\", user: <user>}}]", k.digest.to_text());
                ExitCode::SUCCESS
            }
            Err(e) => {
                tracing::error!("{e}");
                ExitCode::FAILURE
            }
        },
        KeysCommand::Hash { .. } => {
            let mut line = String::new();
            if std::io::stdin().read_line(&mut line).is_err() || line.trim().is_empty() {
                tracing::error!("give the key on standard input");
                return ExitCode::from(2);
            }
            println!("{}", hasher.digest(line.trim()).to_text());
            ExitCode::SUCCESS
        }
    }
}

fn check(path: PathBuf) -> ExitCode {
    init_logging(LogFormat::Text);
    match crate::config::load(&ConfigSource::File(path.clone()), 1) {
        Ok(_) => {
            tracing::info!(config = %path.display(), "config is valid");
            ExitCode::SUCCESS
        }
        Err(e) => {
            tracing::error!("{e}");
            ExitCode::from(2)
        }
    }
}

fn serve(args: ServeArgs) -> ExitCode {
    init_logging(args.log_format);
    // Every client and upstream connection is a descriptor: use all the hard limit allows.
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(n) => tracing::debug!(open_files = n, "open-files limit"),
        Err(e) => tracing::warn!(error = %e, "cannot raise the open-files limit"),
    }
    let source = match args.config {
        Some(p) => ConfigSource::File(p),
        None => ConfigSource::Embedded,
    };
    let mut opts = StartOptions::new(source);
    opts.listen = args.listen;
    opts.shards = args.shards;
    opts.runtime = args.runtime.map(|r| match r {
        RuntimeArg::Monoio => RuntimeRequest::Monoio,
        RuntimeArg::Glommio => RuntimeRequest::Glommio,
    });
    opts.driver = args.driver.map(|d| match d {
        DriverArg::Auto => DriverRequest::Auto,
        DriverArg::Uring => DriverRequest::Uring,
        DriverArg::Epoll => DriverRequest::Epoll,
    });
    opts.uring_flags = args.uring_flags.map(|f| match f {
        UringFlagsArg::DeferTaskrun => UringFlags::DeferTaskrun,
        UringFlagsArg::CoopTaskrun => UringFlags::CoopTaskrun,
        UringFlagsArg::None => UringFlags::None,
    });
    if args.no_pin {
        opts.pin_cores = Some(false);
    }
    opts.allow_anonymous = args.allow_anonymous;
    opts.store = args.store;

    // Register before any thread starts, so no signal arrives before we listen for it.
    let mut signals = match signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGHUP,
    ]) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot install signal handlers");
            return ExitCode::FAILURE;
        }
    };

    let gateway = match Gateway::start(opts) {
        Ok(g) => g,
        Err(e) => {
            tracing::error!("cannot start: {e}");
            return ExitCode::FAILURE;
        }
    };
    let addr = gateway.local_addr();
    if gateway.config().source == "embedded defaults" {
        tracing::info!(
            "no --config: embedded defaults. Try: curl http://{addr}/v1/chat/completions -H 'content-type: application/json' -d '{{\"model\":\"mock\",\"messages\":[{{\"role\":\"user\",\"content\":\"hi\"}}]}}'"
        );
    }

    for sig in signals.forever() {
        match sig {
            signal_hook::consts::SIGHUP => {
                let _ = gateway.reload();
            }
            _ => {
                let grace = gateway.configured_grace();
                // A second signal during the drain exits at once. The new iterator is registered
                // before the first one closes, so no signal falls between them.
                if let Ok(mut again) =
                    signal_hook::iterator::Signals::new([signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT])
                {
                    std::thread::spawn(move || {
                        if again.forever().next().is_some() {
                            tracing::warn!("second signal: exiting without waiting for the drain");
                            std::process::exit(1);
                        }
                    });
                }
                signals.handle().close();
                gateway.shutdown(grace);
                return ExitCode::SUCCESS;
            }
        }
    }
    ExitCode::SUCCESS
}
