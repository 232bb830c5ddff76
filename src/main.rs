use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use futures::FutureExt;
use tracing::{error, info};

use drover::api::ApprovalChoice;
use drover::config::{Config, RunArgs};
use drover::http::{self, Readiness};
use drover::leader::{self, ShutdownSignal};
use drover::metrics::Metrics;
use drover::telemetry::{self, LogFormat};
use drover::{api, approve, check, cli, controller};

/// Drover: multi-region disaster recovery for Kubernetes on AWS.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// Log format.
    #[arg(long, env = "DROVER_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text, global = true)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the operator.
    Run(RunArgs),
    /// Print the CRD YAML.
    Crds,
    /// Validate plan files offline and print every problem with its field path.
    Check {
        /// Plan YAML file ("-" for standard input).
        #[arg(short = 'f', long = "file", required = true)]
        files: Vec<PathBuf>,
    },
    /// Create a Failover for a plan; with --watch, follow it to the end.
    Failover {
        #[command(flatten)]
        kube: cli::KubeArgs,
        #[command(flatten)]
        args: cli::FailoverArgs,
    },
    /// Approve a Failover that awaits approval.
    Approve {
        #[command(flatten)]
        kube: cli::KubeArgs,
        #[command(flatten)]
        args: approve::ApproveArgs,
    },
    /// Reject a Failover that awaits approval; it ends Rejected, having changed nothing.
    Reject {
        #[command(flatten)]
        kube: cli::KubeArgs,
        #[command(flatten)]
        args: approve::RejectArgs,
    },
    /// Run a drill of a plan now (DryRun, or a RoundTrip there and back).
    Drill {
        #[command(flatten)]
        kube: cli::KubeArgs,
        #[command(flatten)]
        args: drover::drill::DrillArgs,
    },
    /// Show plans: active region, readiness, last failover and replication lag.
    Status {
        #[command(flatten)]
        kube: cli::KubeArgs,
        #[command(flatten)]
        args: cli::StatusArgs,
    },
}

/// Parses arguments; installed as `kubectl-drover`, help and errors say `kubectl drover`.
fn parse() -> Cli {
    use clap::{CommandFactory, FromArgMatches};
    let invoked_as = std::env::args_os()
        .next()
        .map(PathBuf::from)
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_default();
    let mut command = Cli::command();
    if invoked_as.starts_with("kubectl-") {
        command = command.bin_name(invoked_as.replacen('-', " ", 1));
    }
    let matches = command.get_matches();
    Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())
}

fn main() -> ExitCode {
    let cli = parse();
    // kube uses ring and the AWS SDK aws-lc-rs; with both linked, rustls needs a choice.
    // Err only means a provider is already installed, which is fine.
    let _ = rustls::crypto::ring::default_provider().install_default();
    match cli.command {
        Command::Failover { kube, args } => run_cli(async move {
            cli::failover(&kube, &args).await.map(|succeeded| {
                if succeeded {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::FAILURE
                }
            })
        }),
        Command::Approve { kube, args } => run_cli(async move {
            let done = approve::decide(&kube, &args.failover, ApprovalChoice::Approve, args.reason)
                .await?;
            println!("{done}");
            Ok(ExitCode::SUCCESS)
        }),
        Command::Reject { kube, args } => run_cli(async move {
            let done = approve::decide(
                &kube,
                &args.failover,
                ApprovalChoice::Reject,
                Some(args.reason),
            )
            .await?;
            println!("{done}");
            Ok(ExitCode::SUCCESS)
        }),
        Command::Drill { kube, args } => run_cli(async move {
            drover::drill::run_now(&kube, &args).await.map(|succeeded| {
                if succeeded {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::FAILURE
                }
            })
        }),
        Command::Status { kube, args } => run_cli(async move {
            let text = cli::status(&kube, &args).await?;
            print!("{text}");
            Ok(ExitCode::SUCCESS)
        }),
        Command::Crds => match api::crds_yaml() {
            Ok(yaml) => {
                print!("{yaml}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: cannot render CRDs: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Check { files } => run_check(&files),
        Command::Run(args) => {
            telemetry::init(cli.log_format);
            let runtime = match tokio::runtime::Runtime::new() {
                Ok(rt) => rt,
                Err(e) => {
                    error!(error = %e, "cannot start the async runtime");
                    return ExitCode::FAILURE;
                }
            };
            match runtime.block_on(run(args)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    error!(error = %drover::error::plain(e.as_ref()), "drover stopped");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

/// Runs a terminal command; errors print as one sentence, not a debug dump.
fn run_cli(
    command: impl std::future::Future<Output = Result<ExitCode, cli::CliError>>,
) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(command) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run_check(files: &[PathBuf]) -> ExitCode {
    let mut failed = false;
    for path in files {
        let text = if path.as_os_str() == "-" {
            std::io::read_to_string(std::io::stdin())
        } else {
            std::fs::read_to_string(path)
        };
        let text = match text {
            Ok(t) => t,
            Err(e) => {
                println!("{}: cannot read: {e}", path.display());
                failed = true;
                continue;
            }
        };
        for report in check::check_plan_yaml(&text) {
            if report.problems.is_empty() {
                println!("{}: {}: valid", path.display(), report.object);
            } else {
                failed = true;
                for p in &report.problems {
                    println!("{}: {}: {p}", path.display(), report.object);
                }
            }
        }
    }
    println!("note: referenced Secrets and clusters are checked only by the operator");
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// Resolves on SIGTERM or Ctrl-C.
fn shutdown_signal() -> ShutdownSignal {
    async {
        let ctrl_c = tokio::signal::ctrl_c();
        #[cfg(unix)]
        {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut term) => {
                    tokio::select! {
                        _ = ctrl_c => {},
                        _ = term.recv() => {},
                    }
                }
                Err(_) => {
                    let _ = ctrl_c.await;
                }
            }
        }
        #[cfg(not(unix))]
        {
            let _ = ctrl_c.await;
        }
        info!("shutdown requested");
    }
    .boxed()
    .shared()
}

async fn run(args: RunArgs) -> Result<(), Box<dyn std::error::Error>> {
    let config = Config::load(&args)?;
    info!(
        identity = %config.identity,
        watch_namespace = config.watch_namespace.as_deref().unwrap_or("<all>"),
        lease = %format!("{}/{}", config.lease_namespace, config.lease_name),
        "starting drover"
    );
    let client = kube::Client::try_default().await?;
    let metrics = Arc::new(Metrics::default());
    let readiness = Arc::new(Readiness::default());
    let shutdown = shutdown_signal();

    let router = http::router(metrics.clone(), readiness.clone());
    let listener = tokio::net::TcpListener::bind(config.http_addr).await?;
    info!(addr = %config.http_addr, "serving /metrics, /healthz, /readyz");
    let server = tokio::spawn(http::serve(listener, router, shutdown.clone()));

    // Standby replicas report CRD presence too, so they can be ready.
    let crd_probe = {
        let client = client.clone();
        let readiness = readiness.clone();
        let namespace = config.watch_namespace.clone();
        tokio::spawn(
            async move { controller::wait_for_crds(&client, &namespace, &readiness).await },
        )
    };

    let result =
        leader::run_when_leader(client, config, metrics, readiness, shutdown.clone()).await;
    crd_probe.abort();
    if result.is_err() {
        server.abort();
    } else if let Ok(Err(e)) = server.await {
        error!(error = %e, "HTTP server failed");
    }
    result.map_err(Into::into)
}
