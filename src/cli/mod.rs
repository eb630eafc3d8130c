//! The command line: `serve`, `config check`, `send`, and the inspection and control
//! commands, which all talk to a server's management API (local socket or `--url`).

mod output;
mod remote;

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};

use crate::config::Config;
pub use output::printable;
use remote::RemoteCommand;

#[derive(Parser)]
#[command(
    name = "hookrelay",
    version = crate::VERSION,
    about = "Durable webhook relay: accept, persist, deliver with retries"
)]
struct Cli {
    /// Log lines as text or as JSON objects (one per line: ingest, attempts, errors).
    #[arg(
        long,
        global = true,
        env = "HOOKRELAY_LOG_FORMAT",
        default_value = "text"
    )]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run the service.
    Serve {
        /// The config file.
        #[arg(
            long,
            short,
            env = "HOOKRELAY_CONFIG",
            default_value = "hookrelay.toml"
        )]
        config: PathBuf,
        /// Overrides server.listen (port 0 picks a free port; the address is printed).
        #[arg(long)]
        listen: Option<std::net::SocketAddr>,
    },
    /// Configuration tools.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Post a realistic sample event, signed as the real sender signs, to try a source.
    Send {
        /// gitlab, github, gitea, bitbucket, standard or generic.
        #[arg(long)]
        provider: String,
        /// Event: push, tag_push, merge_request, note, pipeline, job, release, member (GitLab);
        /// ping, push, pull_request (GitHub); push (Gitea); repo:push (Bitbucket); any type
        /// (standard, generic).
        #[arg(long, default_value = "push")]
        event: String,
        /// Token or signing secret (`whsec_...` for Standard Webhooks and GitLab signing tokens).
        #[arg(long, env = "HOOKRELAY_SEND_SECRET", hide_env_values = true)]
        secret: Option<String>,
        /// Send this file's bytes instead of the built-in sample.
        #[arg(long)]
        body: Option<PathBuf>,
        /// The hook URL, such as http://127.0.0.1:8080/hooks/gitlab.
        url: String,
    },
    #[command(flatten)]
    Remote(Box<RemoteCommand>),
    /// Convert another tool's configuration to a hookrelay config (printed on stdout;
    /// whatever could not be carried over is listed on stderr).
    Import {
        #[command(subcommand)]
        from: ImportCommand,
    },
    /// Print the management API's OpenAPI document (also served at /api/v1/openapi.json).
    #[command(name = "api-doc")]
    ApiDoc,
}

#[derive(Subcommand)]
enum ImportCommand {
    /// adnanh/webhook: a hooks.json or hooks.yaml file.
    Adnanh {
        /// The hooks file to convert.
        file: PathBuf,
    },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Validate a config file and explain every error.
    Check {
        /// The config file to check.
        file: PathBuf,
    },
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(dispatch(cli.command)) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// `HOOKRELAY_LOG`, else the ecosystem's `RUST_LOG`, else `info`.
fn init_logging(format: LogFormat) {
    let mut filter = tracing_subscriber::EnvFilter::try_from_env("HOOKRELAY_LOG")
        .or_else(|_| tracing_subscriber::EnvFilter::try_from_default_env())
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // The AMQP client logs a returned message whole (body and headers) and every channel
    // error; each attempt's record says what happened, so it speaks only when asked by name.
    if !filter.to_string().contains("lapin") {
        filter = filter.add_directive("lapin=off".parse().expect("a valid directive"));
    }
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => logs.init(),
        LogFormat::Json => logs.json().flatten_event(true).init(),
    }
}

async fn dispatch(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Serve { config, listen } => serve(config, listen).await,
        Command::Config {
            command: ConfigCommand::Check { file },
        } => Ok(match Config::load(&file) {
            Ok(config) => {
                for warning in &config.warnings {
                    println!("warning: {}: {}", warning.location, warning.message);
                }
                // The store, if there is one already: deliveries nothing would attempt.
                if let Ok(store) = crate::store::open_existing(&config.server.store).await {
                    for warning in crate::orphaned_deliveries(&config, store.as_ref()).await {
                        println!("warning: server.store: {warning}");
                    }
                }
                println!(
                    "{}: ok ({} sources, {} destinations, {} routes)",
                    file.display(),
                    config.sources.len(),
                    config.destinations.len(),
                    config.routes.len()
                );
                ExitCode::SUCCESS
            }
            Err(errors) => {
                eprint!("{errors}");
                ExitCode::FAILURE
            }
        }),
        Command::Send {
            provider,
            event,
            secret,
            body,
            url,
        } => {
            let provider: crate::ingest::ProviderKind = provider
                .parse()
                .map_err(|err: String| anyhow::anyhow!(err))?;
            let body = match body {
                Some(path) => Some(
                    std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?,
                ),
                None => None,
            };
            let sample = crate::send::build(provider, &event, secret.as_deref(), body)?;
            crate::send::send(&url, sample).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Remote(command) => remote::run(*command).await,
        Command::Import {
            from: ImportCommand::Adnanh { file },
        } => import_adnanh(&file),
        Command::ApiDoc => {
            let doc = crate::http::api::openapi();
            println!("{}", serde_json::to_string_pretty(&doc)?);
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn import_adnanh(file: &std::path::Path) -> anyhow::Result<ExitCode> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let yaml = matches!(
        file.extension().and_then(|e| e.to_str()),
        Some("yaml" | "yml")
    );
    let hooks: serde_json::Value = if yaml {
        serde_norway::from_str(&text).with_context(|| format!("{} is not YAML", file.display()))?
    } else {
        serde_json::from_str(&text).with_context(|| format!("{} is not JSON", file.display()))?
    };
    let imported = crate::import::from_adnanh(&hooks).map_err(|err| anyhow::anyhow!(err))?;
    print!("{}", imported.toml);
    for what in &imported.unmapped {
        eprintln!("not mapped: {what}");
    }
    Ok(ExitCode::SUCCESS)
}

async fn serve(path: PathBuf, listen: Option<std::net::SocketAddr>) -> anyhow::Result<ExitCode> {
    let mut config = match Config::load(&path) {
        Ok(config) => config,
        Err(errors) => {
            eprint!("{errors}");
            return Ok(ExitCode::FAILURE);
        }
    };
    if let Some(listen) = listen {
        config.server.listen = listen;
    }
    let listener = tokio::net::TcpListener::bind(config.server.listen)
        .await
        .with_context(|| format!("binding {}", config.server.listen))?;
    let mut app = crate::App::build(config, listener).await?;
    let address = app.local_addr()?;
    let scheme = if app.tls().is_some() { "https" } else { "http" };
    let reloader = app.reload_from(path, listen);
    tokio::spawn(reload_on_sighup(reloader, app.tls().cloned()));
    tracing::info!(%address, "hookrelay listening");
    // Printed only once the store is open. Scripts and tests read this line to learn the
    // port when listening on port 0.
    println!("listening on {scheme}://{address}");
    std::io::stdout().flush()?;
    app.run_until(shutdown_signal()).await;
    Ok(ExitCode::SUCCESS)
}

/// SIGHUP re-reads the config (sources, routes, destinations) and reloads the certificate
/// and key; anything invalid is logged and the running config stays.
async fn reload_on_sighup(
    reloader: std::sync::Arc<crate::app::ConfigReloader>,
    tls: Option<crate::http::tls::TlsAcceptor>,
) {
    use crate::http::api::Reload as _;
    let Ok(mut hangups) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
    else {
        tracing::warn!("cannot listen for SIGHUP; use `hookrelay reload` to apply config changes");
        return;
    };
    while hangups.recv().await.is_some() {
        tracing::info!("SIGHUP: reloading the config");
        // Errors are logged by the reloader, with every location.
        let _ = reloader.reload().await;
        if let Some(tls) = &tls {
            match tls.reload() {
                Ok(()) => tracing::info!("TLS certificate reloaded"),
                Err(err) => {
                    tracing::error!(error = %err, "TLS certificate not reloaded; keeping the old one")
                }
            }
        }
    }
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("installing the SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    /// Every flag, argument and command says what it is for in `--help`.
    #[test]
    fn every_flag_and_command_has_help_text() {
        fn walk(command: &clap::Command, path: &str, missing: &mut Vec<String>) {
            let path = format!("{path} {}", command.get_name());
            for arg in command.get_arguments() {
                let id = arg.get_id().as_str();
                if id != "help" && id != "version" && arg.get_help().is_none() {
                    missing.push(format!("{path} --{id}"));
                }
            }
            for sub in command.get_subcommands() {
                if sub.get_name() != "help" && sub.get_about().is_none() {
                    missing.push(format!("{path} {} (no about)", sub.get_name()));
                }
                walk(sub, &path, missing);
            }
        }
        let mut missing = Vec::new();
        walk(&super::Cli::command(), "", &mut missing);
        assert!(
            missing.is_empty(),
            "without help text:\n{}",
            missing.join("\n")
        );
    }
}
