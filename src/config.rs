//! Operator configuration: flags, then environment, then an optional YAML file, then defaults.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use serde::Deserialize;

use crate::ratelimit::RateLimit;

/// `drover run` flags. Each flag also reads a `DROVER_*` environment variable.
#[derive(Args, Debug, Default, Clone)]
pub struct RunArgs {
    /// YAML config file; flags and environment override its values.
    #[arg(long, env = "DROVER_CONFIG")]
    pub config: Option<PathBuf>,
    /// Watch only this namespace (default: all namespaces).
    #[arg(long, env = "DROVER_WATCH_NAMESPACE")]
    pub watch_namespace: Option<String>,
    /// Address for /metrics, /healthz and /readyz.
    #[arg(long, env = "DROVER_HTTP_ADDR")]
    pub http_addr: Option<SocketAddr>,
    /// Name of the leader-election Lease.
    #[arg(long, env = "DROVER_LEASE_NAME")]
    pub lease_name: Option<String>,
    /// Namespace of the leader-election Lease.
    #[arg(long, env = "DROVER_LEASE_NAMESPACE")]
    pub lease_namespace: Option<String>,
    /// How long a Lease stays valid without renewal, in seconds.
    #[arg(long, env = "DROVER_LEASE_DURATION_SECONDS")]
    pub lease_duration_seconds: Option<u16>,
    /// Identity written to the Lease (default: POD_NAME, else hostname-pid).
    #[arg(long, env = "DROVER_IDENTITY")]
    pub identity: Option<String>,
    /// How often a valid plan's regions are re-checked, in seconds.
    #[arg(long, env = "DROVER_PLAN_RESYNC_SECONDS")]
    pub plan_resync_seconds: Option<u64>,
    /// Timeout for calls to member clusters, in seconds.
    #[arg(long, env = "DROVER_MEMBER_TIMEOUT_SECONDS")]
    pub member_timeout_seconds: Option<u64>,
    /// Pause before retrying the steps left after promotion when one failed, in seconds.
    #[arg(long, env = "DROVER_RETRY_AFTER_PROMOTION_SECONDS")]
    pub retry_after_promotion_seconds: Option<u64>,
    /// Never start an automatic failover, whatever the plans say (signals are still read
    /// and shown). DROVER_PAUSE_AUTOMATIC_FAILOVER=true does the same.
    #[arg(
        long,
        env = "DROVER_PAUSE_AUTOMATIC_FAILOVER",
        value_parser = clap::builder::BoolishValueParser::new(),
        num_args = 0..=1,
        default_missing_value = "true"
    )]
    pub pause_automatic_failover: Option<bool>,
    /// Client-side AWS rate limits by service, as JSON, e.g.
    /// `{"route53": {"perSecond": 4, "burst": 5}}`; replaces the file's `awsRateLimits`.
    #[arg(long, env = "DROVER_AWS_RATE_LIMITS")]
    pub aws_rate_limits: Option<String>,
}

/// The same settings as they appear in a config file (camelCase keys).
#[derive(Deserialize, Debug, Default, Clone)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FileConfig {
    pub watch_namespace: Option<String>,
    pub http_addr: Option<SocketAddr>,
    pub lease_name: Option<String>,
    pub lease_namespace: Option<String>,
    pub lease_duration_seconds: Option<u16>,
    pub identity: Option<String>,
    pub plan_resync_seconds: Option<u64>,
    pub member_timeout_seconds: Option<u64>,
    pub retry_after_promotion_seconds: Option<u64>,
    pub pause_automatic_failover: Option<bool>,
    /// Client-side limits of AWS calls, by service signing name (file only).
    pub aws_rate_limits: Option<std::collections::BTreeMap<String, RateLimit>>,
}

/// The services whose rate `awsRateLimits` may set, by signing name.
pub const RATE_LIMITED_SERVICES: [&str; 5] =
    ["route53", "rds", "monitoring", "secretsmanager", "ecr"];

/// The resolved configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub watch_namespace: Option<String>,
    pub http_addr: SocketAddr,
    pub lease_name: String,
    pub lease_namespace: String,
    pub lease_duration: Duration,
    pub identity: String,
    pub plan_resync: Duration,
    pub member_timeout: Duration,
    pub retry_after_promotion: Duration,
    /// Automatic failover is paused for every plan.
    pub pause_automatic_failover: bool,
    /// Client-side AWS rate limits set in the file; other services keep their defaults.
    pub aws_rate_limits: std::collections::HashMap<String, RateLimit>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: {source}")]
    Parse {
        path: PathBuf,
        source: serde_yaml::Error,
    },
    #[error("{0}")]
    Invalid(String),
}

impl Config {
    /// Resolves flags/env over the file over defaults. `env_pod` is (POD_NAME, POD_NAMESPACE).
    pub fn resolve(
        args: &RunArgs,
        file: FileConfig,
        pod_name: Option<String>,
        pod_namespace: Option<String>,
    ) -> Result<Self, ConfigError> {
        let lease_seconds = args
            .lease_duration_seconds
            .or(file.lease_duration_seconds)
            .unwrap_or(15);
        if lease_seconds < 3 {
            return Err(ConfigError::Invalid(format!(
                "leaseDurationSeconds must be at least 3, got {lease_seconds}"
            )));
        }
        let identity = args
            .identity
            .clone()
            .or(file.identity)
            .or(pod_name)
            .unwrap_or_else(|| {
                let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "drover".into());
                format!("{host}-{}", std::process::id())
            });
        let aws_rate_limits = match &args.aws_rate_limits {
            Some(text) => serde_yaml::from_str(text)
                .map_err(|e| ConfigError::Invalid(format!("awsRateLimits: {e}")))?,
            None => file.aws_rate_limits.unwrap_or_default(),
        };
        for (service, limit) in &aws_rate_limits {
            if !RATE_LIMITED_SERVICES.contains(&service.as_str()) {
                return Err(ConfigError::Invalid(format!(
                    "awsRateLimits.{service}: not one of {}",
                    RATE_LIMITED_SERVICES.join(", ")
                )));
            }
            if let Some(problem) = limit.problem() {
                return Err(ConfigError::Invalid(format!(
                    "awsRateLimits.{service}: {problem}"
                )));
            }
        }
        Ok(Self {
            watch_namespace: args.watch_namespace.clone().or(file.watch_namespace),
            http_addr: args
                .http_addr
                .or(file.http_addr)
                .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 8080))),
            lease_name: args
                .lease_name
                .clone()
                .or(file.lease_name)
                .unwrap_or_else(|| "drover-leader".into()),
            lease_namespace: args
                .lease_namespace
                .clone()
                .or(file.lease_namespace)
                .or(pod_namespace)
                .unwrap_or_else(|| "drover-system".into()),
            lease_duration: Duration::from_secs(lease_seconds.into()),
            identity,
            plan_resync: Duration::from_secs(
                args.plan_resync_seconds
                    .or(file.plan_resync_seconds)
                    .unwrap_or(60)
                    .max(1),
            ),
            member_timeout: Duration::from_secs(
                args.member_timeout_seconds
                    .or(file.member_timeout_seconds)
                    .unwrap_or(10)
                    .max(1),
            ),
            retry_after_promotion: Duration::from_secs(
                args.retry_after_promotion_seconds
                    .or(file.retry_after_promotion_seconds)
                    .unwrap_or(30)
                    .max(1),
            ),
            pause_automatic_failover: args
                .pause_automatic_failover
                .or(file.pause_automatic_failover)
                .unwrap_or(false),
            aws_rate_limits: aws_rate_limits.into_iter().collect(),
        })
    }

    /// Loads the optional file named by the args and resolves everything.
    pub fn load(args: &RunArgs) -> Result<Self, ConfigError> {
        let file = match &args.config {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.clone(),
                    source,
                })?;
                serde_yaml::from_str(&text).map_err(|source| ConfigError::Parse {
                    path: path.clone(),
                    source,
                })?
            }
            None => FileConfig::default(),
        };
        Self::resolve(
            args,
            file,
            std::env::var("POD_NAME").ok(),
            std::env::var("POD_NAMESPACE").ok(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = include_str!("../config/drover.yaml");

    #[test]
    fn example_file_parses() {
        let file: FileConfig = serde_yaml::from_str(EXAMPLE).expect("example parses");
        let config = Config::resolve(&RunArgs::default(), file, None, None).expect("resolves");
        assert_eq!(config.lease_name, "drover-leader");
        assert_eq!(config.lease_duration, Duration::from_secs(15));
    }

    #[test]
    fn aws_rate_limits_are_checked_by_service_and_bound() {
        let file: FileConfig = serde_yaml::from_str(EXAMPLE).expect("example parses");
        let config = Config::resolve(&RunArgs::default(), file, None, None).expect("resolves");
        assert_eq!(
            config.aws_rate_limits.get("route53"),
            Some(&RateLimit {
                per_second: 4.0,
                burst: 4.0
            })
        );
        for (yaml, said) in [
            (
                "awsRateLimits: {dynamodb: {perSecond: 1, burst: 1}}",
                "awsRateLimits.dynamodb: not one of route53, rds, monitoring, secretsmanager, ecr",
            ),
            (
                "awsRateLimits: {rds: {perSecond: 0, burst: 1}}",
                "awsRateLimits.rds: perSecond must be between 0.01 and 10000, got 0",
            ),
        ] {
            let file: FileConfig = serde_yaml::from_str(yaml).expect("parses");
            let refused = Config::resolve(&RunArgs::default(), file, None, None)
                .expect_err("refused")
                .to_string();
            assert_eq!(refused, said);
        }
        // From the flag or DROVER_AWS_RATE_LIMITS (the chart's way), as JSON.
        let args = RunArgs {
            aws_rate_limits: Some(r#"{"rds": {"perSecond": 5, "burst": 8}}"#.into()),
            ..Default::default()
        };
        let config = Config::resolve(&args, FileConfig::default(), None, None).expect("ok");
        assert_eq!(
            config.aws_rate_limits.get("rds").map(|l| l.burst),
            Some(8.0)
        );
        let args = RunArgs {
            aws_rate_limits: Some("[1]".into()),
            ..Default::default()
        };
        let refused = Config::resolve(&args, FileConfig::default(), None, None);
        assert!(refused.is_err_and(|e| e.to_string().starts_with("awsRateLimits: ")));
        let unknown: Result<FileConfig, _> =
            serde_yaml::from_str("awsRateLimits: {rds: {perSecond: 1, burst: 1, extra: 2}}");
        assert!(unknown.is_err());
    }

    #[test]
    fn flags_override_file_override_defaults() {
        let file = FileConfig {
            lease_name: Some("from-file".into()),
            plan_resync_seconds: Some(30),
            ..Default::default()
        };
        let args = RunArgs {
            lease_name: Some("from-flag".into()),
            ..Default::default()
        };
        let config =
            Config::resolve(&args, file, Some("pod-a".into()), Some("ops".into())).expect("ok");
        assert_eq!(config.lease_name, "from-flag");
        assert_eq!(config.plan_resync, Duration::from_secs(30));
        assert_eq!(config.identity, "pod-a");
        assert_eq!(config.lease_namespace, "ops");
        assert_eq!(config.watch_namespace, None);
    }

    #[test]
    fn automatic_failover_pause_from_flag_env_or_file() {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            run: RunArgs,
        }
        let parse = |args: &[&str]| {
            let cli = Cli::try_parse_from(std::iter::once("drover").chain(args.iter().copied()))
                .expect("parses");
            let file: FileConfig =
                serde_yaml::from_str("pauseAutomaticFailover: true").expect("file parses");
            (
                Config::resolve(&cli.run, FileConfig::default(), None, None)
                    .expect("resolves")
                    .pause_automatic_failover,
                Config::resolve(&cli.run, file, None, None)
                    .expect("resolves")
                    .pause_automatic_failover,
            )
        };
        assert_eq!(parse(&[]), (false, true));
        assert_eq!(parse(&["--pause-automatic-failover"]), (true, true));
        assert_eq!(parse(&["--pause-automatic-failover=false"]), (false, false));
        assert_eq!(parse(&["--pause-automatic-failover", "yes"]), (true, true));
    }

    #[test]
    fn unknown_file_keys_and_short_leases_are_rejected() {
        assert!(serde_yaml::from_str::<FileConfig>("leaseNmae: x").is_err());
        let args = RunArgs {
            lease_duration_seconds: Some(1),
            ..Default::default()
        };
        assert!(Config::resolve(&args, FileConfig::default(), None, None).is_err());
    }
}
