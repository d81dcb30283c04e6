//! The bundled relay proxy: one endpoint in front of a pool of upstream
//! LLM accounts. Its command line, config file and HTTP surface are the
//! contract in `shared/PROXY.md`.
//!
//! ```text
//! cargo run --release --example proxy -- --config relay.toml [--listen ADDR]
//! cargo run --release --example proxy -- --demo
//! cargo run --release --example proxy -- --check --config relay.toml
//! ```

mod admin;
mod demo;
mod front;
mod idle;
mod log_line;
mod logs;
mod metrics;
mod refuse;
mod reload;
mod server;
mod status_page;
mod stop;

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use tower_llm_relay::config::Config;

/// Command line of the proxy.
#[derive(Debug, Parser)]
#[command(name = "proxy", about = "A relay in front of a pool of LLM accounts")]
struct Args {
    /// The TOML config file.
    #[arg(
        long,
        value_name = "PATH",
        required_unless_present = "demo",
        conflicts_with = "demo"
    )]
    config: Option<PathBuf>,
    /// Listen here instead of the config's `listen`.
    #[arg(long, value_name = "ADDR")]
    listen: Option<SocketAddr>,
    /// Run on a bundled mock upstream, with no config and no keys.
    #[arg(long)]
    demo: bool,
    /// Log as JSON lines instead of text.
    #[arg(long)]
    log_json: bool,
    /// Check the config, print it as it takes effect (defaults filled in,
    /// credentials redacted) and exit: 0 when valid, 2 when not.
    #[arg(long, requires = "config")]
    check: bool,
}

// jemalloc rather than the system allocator or mimalloc: a request
// allocates and frees some eighty small blocks across threads. glibc's
// malloc spent about an eighth of the proxy's CPU on them under load, and
// mimalloc 8%, most of it one cache miss per allocation: it hands out a
// page's freed blocks only after the rest of the page's free list, long
// after they left the cache. jemalloc's per-thread cache gives back the
// block freed last: 2.5% (perf, concurrency 256).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    let args = Args::parse();
    // Held to the end: dropping it flushes the lines still queued.
    let _logs = init_logs(args.log_json);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(run(args))
}

async fn run(args: Args) -> ExitCode {
    let (mut config, demo) = if args.demo {
        match demo::start().await {
            Ok((config, demo)) => (config, Some(demo)),
            Err(e) => {
                eprintln!("error: cannot start the demo: {e}");
                return ExitCode::FAILURE;
            }
        }
    } else {
        // `clap` makes `--config` required without `--demo`.
        let path = args.config.clone().unwrap_or_default();
        match Config::load(&path) {
            Ok(config) => (config, None),
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(2);
            }
        }
    };
    if let Some(listen) = args.listen {
        config.listen = listen;
    }
    if args.check {
        print!("{}", config.effective_toml());
        println!("# the config is valid");
        return ExitCode::SUCCESS;
    }
    let listener = match server::bind(&config) {
        Ok(listener) => listener,
        Err(e) => {
            eprintln!("error: cannot listen on {}: {e}", config.listen);
            return ExitCode::FAILURE;
        }
    };
    let local = listener.local_addr().unwrap_or(config.listen);
    println!("listening on {local}");
    if let Some(demo) = &demo {
        demo.print_instructions(local);
    }
    // `--demo` has no file to re-read.
    let reload_from = args.config.filter(|_| demo.is_none());
    match server::serve(listener, &config, reload_from).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Logs to stderr through a thread that writes the buffered lines every
/// few milliseconds (see `logs.rs`).
fn init_logs(json: bool) -> logs::FlushOnDrop {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;

    let ansi = std::io::stderr().is_terminal();
    let (writer, guard) = logs::batched_stderr();
    let layer = tracing_subscriber::fmt::layer()
        .with_ansi(ansi)
        .with_writer(writer);
    let registry = tracing_subscriber::registry().with(LogFilter::from_env().into_layer());
    if json {
        registry.with(layer.json()).init();
    } else if ansi {
        // A person at a terminal: tracing-subscriber's coloured lines.
        registry.with(layer).init();
    } else {
        registry
            .with(
                layer
                    .fmt_fields(log_line::LineFields)
                    .event_format(log_line::LineFormat),
            )
            .init();
    }
    guard
}

/// The filter `RUST_LOG` asks for (default `info`).
///
/// Directives that only name targets and levels (`info`,
/// `tower_llm_relay=debug,hyper=warn`) become a `Targets` filter, which
/// decides per call site and then stays out of the way. `EnvFilter` is kept
/// for what only it can do (span and field directives like
/// `[request{model=x}]=debug`): it looks each span up in a map behind a
/// lock shared by all threads when the span is created, entered, exited,
/// recorded and closed, a dozen times per request even with no such
/// directive.
#[derive(Debug)]
enum LogFilter {
    Targets(Box<tracing_subscriber::filter::Targets>),
    Env(Box<tracing_subscriber::EnvFilter>),
}

impl LogFilter {
    fn from_env() -> Self {
        Self::parse(&std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()))
    }

    /// Directives `EnvFilter` refuses fall back to `info`, as they always
    /// did.
    fn parse(directives: &str) -> Self {
        use tracing_subscriber::EnvFilter;

        let plain = !directives.is_empty()
            && !directives.contains(['[', ']', '{', '}'])
            && !directives.contains(char::is_whitespace);
        match directives.parse() {
            Ok(targets) if plain => Self::Targets(Box::new(targets)),
            _ => Self::Env(Box::new(
                EnvFilter::try_new(directives).unwrap_or_else(|_| EnvFilter::new("info")),
            )),
        }
    }

    fn into_layer(
        self,
    ) -> Box<dyn tracing_subscriber::Layer<tracing_subscriber::Registry> + Send + Sync> {
        match self {
            Self::Targets(targets) => targets,
            Self::Env(env) => env,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::LogFilter;

    #[test]
    fn plain_directives_filter_by_target_and_the_rest_by_env_filter() {
        for plain in ["info", "off", "tower_llm_relay=debug,hyper=warn", "proxy"] {
            assert!(
                matches!(LogFilter::parse(plain), LogFilter::Targets(_)),
                "{plain}"
            );
        }
        for rich in [
            "[request{model=x}]=debug",
            "info,[request]=trace",
            "info, hyper=warn",
            "",
            "a=b=c",
        ] {
            assert!(
                matches!(LogFilter::parse(rich), LogFilter::Env(_)),
                "{rich}"
            );
        }
    }

    #[test]
    fn refused_directives_fall_back_to_info() {
        let LogFilter::Env(filter) = LogFilter::parse("a=b=c") else {
            panic!("an unparsable directive is not a target list");
        };
        assert_eq!(filter.to_string(), "info");
    }
}
