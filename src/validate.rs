//! Pure validation of plans and failovers. Every problem names its field path.

mod automatic;
mod drills;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::time::Duration;

use crate::api::{
    ConfigKind, DisasterRecoveryPlanSpec, FailoverMode, FailoverSpec, RdsFenceMethod, RegionRole,
    RegionalIdentifier, SecretKeyRef, WorkloadSpec,
};

/// One thing wrong with an object, at a field path such as `spec.regions[1].name`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    pub field: String,
    pub reason: String,
}

impl Problem {
    fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.reason)
    }
}

/// Joins problems into one line for a condition message.
pub fn summarize(problems: &[Problem]) -> String {
    problems
        .iter()
        .map(Problem::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// What was found when looking up the Secrets a plan references: per (namespace, name),
/// the keys present, or why the Secret could not be read.
pub type SecretsSeen = HashMap<(String, String), Result<BTreeSet<String>, String>>;

/// The Secrets a plan references, as (field path, namespace, reference).
pub fn secret_refs<'a>(
    spec: &'a DisasterRecoveryPlanSpec,
    plan_namespace: &'a str,
) -> impl Iterator<Item = (String, String, &'a SecretKeyRef)> + 'a {
    spec.regions.iter().enumerate().filter_map(move |(i, r)| {
        r.cluster.kubeconfig_secret_ref.as_ref().map(|s| {
            (
                format!("spec.regions[{i}].cluster.kubeconfigSecretRef"),
                s.namespace
                    .clone()
                    .unwrap_or_else(|| plan_namespace.to_string()),
                s,
            )
        })
    })
}

/// The longest duration any field accepts. Deadlines are added to clocks, and a DR plan
/// has no use for a wait longer than a week.
pub const MAX_DURATION: Duration = Duration::from_secs(7 * 24 * 3600);

/// Parses a duration such as "30s", "5m" or "1h 30m", at most `MAX_DURATION`.
pub fn parse_duration(value: &str) -> Result<Duration, String> {
    let parsed = humantime::parse_duration(value.trim())
        .map_err(|e| format!("invalid duration {value:?} ({e}); use e.g. \"30s\" or \"5m\""))?;
    if parsed > MAX_DURATION {
        return Err(format!(
            "duration {value:?} is longer than the maximum of 7 days"
        ));
    }
    Ok(parsed)
}

/// Parses a step deadline: a duration above zero, at most `MAX_DURATION`.
pub fn parse_timeout(value: &str) -> Result<Duration, String> {
    match parse_duration(value)? {
        d if d.is_zero() => Err(format!("timeout {value:?} must be longer than 0s")),
        d => Ok(d),
    }
}

/// Validates a plan spec. With `secrets`, also checks that referenced Secrets and keys exist;
/// without (offline), that check is skipped.
pub fn validate_plan(
    spec: &DisasterRecoveryPlanSpec,
    plan_namespace: &str,
    secrets: Option<&SecretsSeen>,
) -> Vec<Problem> {
    let mut problems = Vec::new();
    let regions = check_regions(spec, &mut problems);
    if let Some(priority) = spec.priority
        && !(0..=crate::api::MAX_PLAN_PRIORITY).contains(&priority)
    {
        problems.push(Problem::new(
            "spec.priority",
            format!(
                "must be from 0 to {}, got {priority}",
                crate::api::MAX_PLAN_PRIORITY
            ),
        ));
    }

    for (i, db) in spec.databases.iter().enumerate() {
        let path = format!("spec.databases[{i}]");
        require_non_empty(&mut problems, &format!("{path}.name"), &db.name);
        match (&db.rds, &db.aurora_global) {
            (Some(rds), None) => check_coverage(
                &mut problems,
                &format!("{path}.rds.instances"),
                &rds.instances,
                &regions,
            ),
            (None, Some(aurora)) => {
                require_non_empty(
                    &mut problems,
                    &format!("{path}.auroraGlobal.globalClusterIdentifier"),
                    &aurora.global_cluster_identifier,
                );
                check_coverage(
                    &mut problems,
                    &format!("{path}.auroraGlobal.members"),
                    &aurora.members,
                    &regions,
                );
            }
            (Some(_), Some(_)) => problems.push(Problem::new(
                &path,
                "set exactly one of rds or auroraGlobal, not both",
            )),
            (None, None) => problems.push(Problem::new(
                &path,
                "set exactly one of rds or auroraGlobal",
            )),
        }
    }
    check_unique(
        &mut problems,
        spec.databases
            .iter()
            .enumerate()
            .map(|(i, d)| (format!("spec.databases[{i}].name"), d.name.clone())),
        "database name",
    );

    for (z, zone) in spec.dns.iter().enumerate() {
        let zpath = format!("spec.dns[{z}]");
        require_non_empty(
            &mut problems,
            &format!("{zpath}.hostedZoneId"),
            &zone.hosted_zone_id,
        );
        if zone.records.is_empty() {
            problems.push(Problem::new(
                format!("{zpath}.records"),
                "a hosted zone needs at least one record",
            ));
        }
        for (r, record) in zone.records.iter().enumerate() {
            let rpath = format!("{zpath}.records[{r}]");
            require_non_empty(&mut problems, &format!("{rpath}.name"), &record.name);
            require_non_empty(&mut problems, &format!("{rpath}.type"), &record.record_type);
            if let Some(ttl) = record.ttl.filter(|t| *t < 0) {
                problems.push(Problem::new(
                    format!("{rpath}.ttl"),
                    format!("must be >= 0, got {ttl}"),
                ));
            }
            let keys: Vec<(String, String)> = record
                .targets
                .iter()
                .enumerate()
                .map(|(t, target)| (format!("{rpath}.targets[{t}]"), target.region.clone()))
                .collect();
            check_region_keys(&mut problems, &format!("{rpath}.targets"), &keys, &regions);
            for (t, target) in record.targets.iter().enumerate() {
                let tpath = format!("{rpath}.targets[{t}]");
                match (&target.values, &target.alias) {
                    (Some(values), None) => {
                        if values.is_empty() || values.iter().any(|v| v.trim().is_empty()) {
                            problems.push(Problem::new(
                                format!("{tpath}.values"),
                                "needs at least one non-empty value",
                            ));
                        }
                    }
                    (None, Some(alias)) => {
                        require_non_empty(
                            &mut problems,
                            &format!("{tpath}.alias.hostedZoneId"),
                            &alias.hosted_zone_id,
                        );
                        require_non_empty(
                            &mut problems,
                            &format!("{tpath}.alias.dnsName"),
                            &alias.dns_name,
                        );
                    }
                    (Some(_), Some(_)) => problems.push(Problem::new(
                        &tpath,
                        "set exactly one of values or alias, not both",
                    )),
                    (None, None) => {
                        problems.push(Problem::new(&tpath, "set exactly one of values or alias"))
                    }
                }
            }
        }
        check_unique(
            &mut problems,
            zone.records.iter().enumerate().map(|(r, rec)| {
                (
                    format!("{zpath}.records[{r}]"),
                    format!("{} {}", rec.name, rec.record_type),
                )
            }),
            "record name and type",
        );
    }

    for (i, w) in spec.workloads.iter().enumerate() {
        let path = format!("spec.workloads[{i}]");
        require_non_empty(&mut problems, &format!("{path}.kind"), &w.kind);
        require_non_empty(&mut problems, &format!("{path}.namespace"), &w.namespace);
        require_non_empty(&mut problems, &format!("{path}.name"), &w.name);
        if !w.kind.is_empty() && w.effective_api_version().is_none() {
            problems.push(Problem::new(
                format!("{path}.apiVersion"),
                format!("required for kind {:?}", w.kind),
            ));
        }
        for (field, value) in [
            ("activeReplicas", w.active_replicas),
            ("standbyReplicas", w.standby_replicas),
        ] {
            if value < 0 {
                problems.push(Problem::new(
                    format!("{path}.{field}"),
                    format!("must be >= 0, got {value}"),
                ));
            }
        }
        check_cron_job(w, &path, &mut problems);
    }
    check_unique(
        &mut problems,
        spec.workloads.iter().enumerate().map(|(i, w)| {
            (
                format!("spec.workloads[{i}]"),
                format!("{} {}/{}", w.kind, w.namespace, w.name),
            )
        }),
        "workload",
    );

    check_aws_secrets(spec, &mut problems);
    check_config(spec, &mut problems);

    for (field, value) in [
        ("spec.objectives.rto", &spec.objectives.rto),
        ("spec.objectives.rpo", &spec.objectives.rpo),
    ] {
        if let Err(reason) = parse_duration(value) {
            problems.push(Problem::new(field, reason));
        }
    }
    if let Some(order) = &spec.failover_order {
        let names: BTreeSet<&str> = spec.regions.iter().map(|r| r.name.as_str()).collect();
        let listed: BTreeSet<&str> = order.iter().map(String::as_str).collect();
        if listed != names || order.len() != names.len() {
            problems.push(Problem::new(
                "spec.failoverOrder",
                format!(
                    "must list every region of spec.regions exactly once ({})",
                    names.into_iter().collect::<Vec<_>>().join(", ")
                ),
            ));
        }
    }
    if let Some(auto) = &spec.automatic_failover {
        automatic::check(auto, &regions, &mut problems);
    }
    if let Some(drills) = &spec.drills {
        drills::check(drills, &regions, &mut problems);
    }
    if let Some(approval) = &spec.approval {
        drills::check_approval(approval, &mut problems);
    }
    if let Some(Err(reason)) = spec.objectives.max_lag_age.as_deref().map(parse_timeout) {
        problems.push(Problem::new("spec.objectives.maxLagAge", reason));
    }
    if let Some(t) = &spec.timeouts {
        for (field, value) in [
            ("spec.timeouts.preflight", &t.preflight),
            ("spec.timeouts.fence", &t.fence),
            ("spec.timeouts.promotion", &t.promotion),
            ("spec.timeouts.warmUp", &t.warm_up),
            ("spec.timeouts.dns", &t.dns),
        ] {
            if let Some(Err(reason)) = value.as_deref().map(parse_timeout) {
                problems.push(Problem::new(field, reason));
            }
        }
    }

    if spec.rds_fence_method() == RdsFenceMethod::DenySecurityGroup {
        problems.push(Problem::new(
            "spec.fencing.rdsMethod",
            "DenySecurityGroup is not implemented yet; use Stop",
        ));
    }

    if let Some(secrets) = secrets {
        for (path, namespace, secret) in secret_refs(spec, plan_namespace) {
            match secrets.get(&(namespace.clone(), secret.name.clone())) {
                Some(Ok(keys)) if keys.contains(secret.key_or_default()) => {}
                Some(Ok(_)) => problems.push(Problem::new(
                    format!("{path}.key"),
                    format!(
                        "Secret {namespace}/{} has no key {:?}",
                        secret.name,
                        secret.key_or_default()
                    ),
                )),
                Some(Err(reason)) => problems.push(Problem::new(
                    format!("{path}.name"),
                    format!("Secret {namespace}/{}: {reason}", secret.name),
                )),
                None => problems.push(Problem::new(
                    format!("{path}.name"),
                    format!("Secret {namespace}/{} was not looked up", secret.name),
                )),
            }
        }
    }
    problems
}

/// The most probes a region may declare: each is polled every second during a failover.
pub const MAX_PROBES_PER_REGION: usize = 8;
const MAX_PROBE_URL_LEN: usize = 2048;
const PROBE_TIMEOUT_RANGE: std::ops::RangeInclusive<Duration> =
    Duration::from_secs(1)..=Duration::from_secs(10);

/// A probe's timeout, 2 s when unset. Out of range (refused by validation): clamped.
pub fn probe_timeout(probe: &crate::api::ProbeSpec) -> Duration {
    probe
        .timeout
        .as_deref()
        .and_then(|t| parse_timeout(t).ok())
        .unwrap_or(Duration::from_secs(2))
        .clamp(*PROBE_TIMEOUT_RANGE.start(), *PROBE_TIMEOUT_RANGE.end())
}

/// The problems of the regions' probes. Kept out of `validate_plan`: probes only measure,
/// so a mistake in them must not refuse a failover. The plan reports them in its
/// `ProbesValid` condition, and a failover polls only regions whose probes are all valid.
pub fn probe_problems(spec: &DisasterRecoveryPlanSpec) -> Vec<Problem> {
    let mut problems = Vec::new();
    check_probes(spec, &mut problems);
    problems
}

fn check_probes(spec: &DisasterRecoveryPlanSpec, problems: &mut Vec<Problem>) {
    let any = spec.regions.iter().any(|r| !r.probes.is_empty());
    for (i, r) in spec.regions.iter().enumerate() {
        let path = format!("spec.regions[{i}].probes");
        if any && r.probes.is_empty() {
            problems.push(Problem::new(
                &path,
                "another region has probes, so this one needs them too: the recovery time \
                 users see is measured from the old region to the new one",
            ));
        }
        if r.probes.len() > MAX_PROBES_PER_REGION {
            problems.push(Problem::new(
                &path,
                format!(
                    "at most {MAX_PROBES_PER_REGION} probes per region, found {}",
                    r.probes.len()
                ),
            ));
        }
        for (j, probe) in r.probes.iter().enumerate() {
            let path = format!("{path}[{j}]");
            match (&probe.url, &probe.route53_health_check_id) {
                (Some(url), None) => {
                    if let Err(e) = check_probe_url(url) {
                        problems.push(Problem::new(format!("{path}.url"), e));
                    }
                }
                (None, Some(id)) => {
                    let ok = !id.is_empty()
                        && id.len() <= 64
                        && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
                    if !ok {
                        problems.push(Problem::new(
                            format!("{path}.route53HealthCheckId"),
                            "must be a Route 53 health check ID: 1 to 64 letters, digits \
                             and hyphens",
                        ));
                    }
                }
                _ => problems.push(Problem::new(
                    &path,
                    "set exactly one of url or route53HealthCheckId",
                )),
            }
            if let Some(t) = &probe.timeout {
                match parse_timeout(t) {
                    Err(e) => problems.push(Problem::new(format!("{path}.timeout"), e)),
                    Ok(d) if !PROBE_TIMEOUT_RANGE.contains(&d) => problems.push(Problem::new(
                        format!("{path}.timeout"),
                        format!("must be from 1s to 10s, got {t:?}"),
                    )),
                    Ok(_) => {}
                }
            }
        }
    }
}

/// A probe URL as it may be shown: scheme, host, port and path, without its query (which
/// may carry a token).
pub fn shown_url(url: &str) -> String {
    match url.parse::<http::Uri>() {
        Ok(uri) => {
            let query = if uri.query().is_some() { "?…" } else { "" };
            // Host and port only: a user name or password stays out.
            let port = uri.port().map(|p| format!(":{p}")).unwrap_or_default();
            format!(
                "{}://{}{port}{}{query}",
                uri.scheme_str().unwrap_or("?"),
                uri.host().unwrap_or(""),
                uri.path()
            )
        }
        Err(_) => "(not a URL)".to_string(),
    }
}

fn check_probe_url(url: &str) -> Result<(), String> {
    if url.len() > MAX_PROBE_URL_LEN {
        return Err(format!(
            "at most {MAX_PROBE_URL_LEN} characters, found {}",
            url.len()
        ));
    }
    let uri: http::Uri = url.parse().map_err(|e| format!("not a URL ({e})"))?;
    if !matches!(uri.scheme_str(), Some("http" | "https")) {
        return Err(format!(
            "{} must start with http:// or https://",
            shown_url(url)
        ));
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(format!("{} has no host", shown_url(url)));
    }
    // The instance metadata service and its kind answer only the node: never a probe.
    let host = uri.host().unwrap_or_default().trim_matches(['[', ']']);
    // As written: a name that resolves to one is not caught here.
    let metadata_v6 = std::net::Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254);
    let link_local = match host.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V4(ip)) => ip.is_link_local(),
        Ok(std::net::IpAddr::V6(ip)) => {
            (ip.segments()[0] & 0xffc0) == 0xfe80
                || ip == metadata_v6
                || ip.to_ipv4_mapped().is_some_and(|v4| v4.is_link_local())
        }
        Err(_) => false,
    };
    if link_local {
        return Err(format!(
            "{} is a link-local address (instance metadata): not a service users reach",
            shown_url(url)
        ));
    }
    // Status, conditions and Events would show it.
    if uri.authority().is_some_and(|a| a.as_str().contains('@')) {
        return Err(
            "must not carry a user name or password: status and Events show probe \
                    URLs"
                .into(),
        );
    }
    Ok(())
}

/// Checks the regions list and returns the set of region names.
fn check_regions(spec: &DisasterRecoveryPlanSpec, problems: &mut Vec<Problem>) -> BTreeSet<String> {
    if spec.regions.len() < 2 {
        problems.push(Problem::new(
            "spec.regions",
            format!(
                "at least 2 regions are required, found {}",
                spec.regions.len()
            ),
        ));
    }
    for (i, r) in spec.regions.iter().enumerate() {
        let path = format!("spec.regions[{i}]");
        require_non_empty(problems, &format!("{path}.name"), &r.name);
        require_non_empty(problems, &format!("{path}.awsRegion"), &r.aws_region);
        let secret = r.cluster.kubeconfig_secret_ref.as_ref();
        let in_cluster = r.cluster.in_cluster.unwrap_or(false);
        match (secret, in_cluster) {
            (Some(s), false) => {
                require_non_empty(
                    problems,
                    &format!("{path}.cluster.kubeconfigSecretRef.name"),
                    &s.name,
                );
            }
            (None, true) => {}
            (Some(_), true) => problems.push(Problem::new(
                format!("{path}.cluster"),
                "set exactly one of kubeconfigSecretRef or inCluster, not both",
            )),
            (None, false) => problems.push(Problem::new(
                format!("{path}.cluster"),
                "set exactly one of kubeconfigSecretRef or inCluster: true",
            )),
        }
    }
    check_unique(
        problems,
        spec.regions
            .iter()
            .enumerate()
            .map(|(i, r)| (format!("spec.regions[{i}].name"), r.name.clone())),
        "region",
    );
    let active: Vec<&str> = spec
        .regions
        .iter()
        .filter(|r| r.initial_role == RegionRole::Active)
        .map(|r| r.name.as_str())
        .collect();
    if active.len() != 1 && !spec.regions.is_empty() {
        problems.push(Problem::new(
            "spec.regions",
            format!(
                "exactly one region must have initialRole Active, found {} ({})",
                active.len(),
                active.join(", ")
            ),
        ));
    }
    spec.regions.iter().map(|r| r.name.clone()).collect()
}

fn check_coverage(
    problems: &mut Vec<Problem>,
    path: &str,
    entries: &[RegionalIdentifier],
    regions: &BTreeSet<String>,
) {
    let keys: Vec<(String, String)> = entries
        .iter()
        .enumerate()
        .map(|(i, e)| (format!("{path}[{i}]"), e.region.clone()))
        .collect();
    check_region_keys(problems, path, &keys, regions);
    for (i, e) in entries.iter().enumerate() {
        require_non_empty(problems, &format!("{path}[{i}].identifier"), &e.identifier);
    }
}

/// Each entry names a plan region; together they must cover every region exactly once.
fn check_region_keys(
    problems: &mut Vec<Problem>,
    path: &str,
    keys: &[(String, String)],
    regions: &BTreeSet<String>,
) {
    let mut seen: BTreeMap<&str, &str> = BTreeMap::new();
    for (entry_path, region) in keys {
        if !regions.contains(region) {
            problems.push(Problem::new(
                format!("{entry_path}.region"),
                format!(
                    "unknown region {region:?}; the plan's regions are {}",
                    regions.iter().cloned().collect::<Vec<_>>().join(", ")
                ),
            ));
        } else if let Some(first) = seen.insert(region, entry_path) {
            problems.push(Problem::new(
                format!("{entry_path}.region"),
                format!("region {region:?} appears twice (also {first})"),
            ));
        }
    }
    for region in regions {
        if !region.is_empty() && !seen.contains_key(region.as_str()) {
            problems.push(Problem::new(
                path,
                format!("missing an entry for region {region:?}"),
            ));
        }
    }
}

/// A CronJob runs (1) or is suspended (0): in the active region only.
fn check_cron_job(w: &WorkloadSpec, path: &str, problems: &mut Vec<Problem>) {
    if !w.is_cron_job() {
        if w.running_jobs.is_some() {
            problems.push(Problem::new(
                format!("{path}.runningJobs"),
                format!("applies to kind CronJob only, not {:?}", w.kind),
            ));
        }
        return;
    }
    if w.active_replicas != 1 {
        problems.push(Problem::new(
            format!("{path}.activeReplicas"),
            format!(
                "a CronJob is resumed (1) in the active region, got {}",
                w.active_replicas
            ),
        ));
    }
    if w.standby_replicas != 0 {
        problems.push(Problem::new(
            format!("{path}.standbyReplicas"),
            format!(
                "a CronJob is suspended (0) in standby regions, got {}",
                w.standby_replicas
            ),
        ));
    }
}

/// At most this many Secrets Manager secrets per plan: each is one or two DescribeSecret
/// calls in every preflight.
const MAX_AWS_SECRETS: usize = 100;

/// Secrets Manager names: 1-512 characters of letters, digits and /_+=.@-, and not an
/// ARN (an ARN names one region; the check reads the secret in several).
fn check_aws_secrets(spec: &DisasterRecoveryPlanSpec, problems: &mut Vec<Problem>) {
    if spec.aws_secrets.len() > MAX_AWS_SECRETS {
        problems.push(Problem::new(
            "spec.awsSecrets",
            format!(
                "at most {MAX_AWS_SECRETS} secrets, got {}",
                spec.aws_secrets.len()
            ),
        ));
    }
    for (i, secret) in spec.aws_secrets.iter().enumerate() {
        let path = format!("spec.awsSecrets[{i}].name");
        let name = &secret.name;
        let allowed = |c: char| c.is_ascii_alphanumeric() || "/_+=.@-".contains(c);
        let reason = if name.starts_with("arn:") {
            Some("a secret name, not an ARN (an ARN names one region)".to_string())
        } else if name.is_empty() || name.len() > 512 {
            Some(format!("1 to 512 characters, got {}", name.len()))
        } else if !name.chars().all(allowed) {
            Some("letters, digits and /_+=.@- only".to_string())
        } else {
            None
        };
        if let Some(reason) = reason {
            problems.push(Problem::new(path, reason));
        }
    }
    check_unique(
        problems,
        spec.aws_secrets
            .iter()
            .enumerate()
            .map(|(i, s)| (format!("spec.awsSecrets[{i}]"), s.name.clone())),
        "secret",
    );
}

/// At most this many config entries per plan, keys per entry, and bytes per value: each
/// entry is read in two regions at every Activate pass.
const MAX_CONFIG: usize = 50;
const MAX_CONFIG_KEYS: usize = 100;
const MAX_CONFIG_VALUE: usize = 4096;
/// All of `spec.config`'s values together: the plan, and its snapshot in every Failover's
/// status, stay far below etcd's object limit (1.5 MiB).
const MAX_CONFIG_TOTAL: usize = 256 * 1024;

fn check_config(spec: &DisasterRecoveryPlanSpec, problems: &mut Vec<Problem>) {
    if spec.config.len() > MAX_CONFIG {
        problems.push(Problem::new(
            "spec.config",
            format!("at most {MAX_CONFIG} entries, got {}", spec.config.len()),
        ));
    }
    let total: usize = spec
        .config
        .iter()
        .flat_map(|c| c.keys.iter())
        .flat_map(|k| k.values.values())
        .map(String::len)
        .sum();
    if total > MAX_CONFIG_TOTAL {
        problems.push(Problem::new(
            "spec.config",
            format!("values of at most {MAX_CONFIG_TOTAL} bytes in all, got {total}"),
        ));
    }
    let regions: BTreeSet<&str> = spec.regions.iter().map(|r| r.name.as_str()).collect();
    for (i, cfg) in spec.config.iter().enumerate() {
        let path = format!("spec.config[{i}]");
        require_non_empty(problems, &format!("{path}.namespace"), &cfg.namespace);
        require_non_empty(problems, &format!("{path}.name"), &cfg.name);
        if cfg.keys.is_empty() || cfg.keys.len() > MAX_CONFIG_KEYS {
            problems.push(Problem::new(
                format!("{path}.keys"),
                format!("1 to {MAX_CONFIG_KEYS} keys, got {}", cfg.keys.len()),
            ));
        }
        for (k, key) in cfg.keys.iter().enumerate() {
            let kpath = format!("{path}.keys[{k}]");
            let allowed = |c: char| c.is_ascii_alphanumeric() || "-._".contains(c);
            if key.key.is_empty() || key.key.len() > 253 || !key.key.chars().all(allowed) {
                problems.push(Problem::new(
                    format!("{kpath}.key"),
                    "1 to 253 letters, digits and -._ (a ConfigMap or Secret key)",
                ));
            }
            match (&key.database_endpoint, key.values.is_empty()) {
                (Some(_), false) | (None, true) => problems.push(Problem::new(
                    kpath.clone(),
                    "exactly one of values and databaseEndpoint",
                )),
                (Some(db), true) => {
                    if !spec.databases.iter().any(|d| &d.name == db) {
                        problems.push(Problem::new(
                            format!("{kpath}.databaseEndpoint"),
                            format!("no database {db:?} in spec.databases"),
                        ));
                    }
                }
                // Plans and their snapshots in Failover status are not secret.
                (None, false) if cfg.kind == ConfigKind::Secret => problems.push(Problem::new(
                    format!("{kpath}.values"),
                    "a Secret's values cannot be written in the plan (its snapshot is kept \
                     in every Failover's status); use databaseEndpoint",
                )),
                (None, false) => {
                    for (region, value) in &key.values {
                        if !regions.contains(region.as_str()) {
                            problems.push(Problem::new(
                                format!("{kpath}.values.{region}"),
                                "not a region of the plan",
                            ));
                        }
                        if value.len() > MAX_CONFIG_VALUE {
                            problems.push(Problem::new(
                                format!("{kpath}.values.{region}"),
                                format!("at most {MAX_CONFIG_VALUE} bytes, got {}", value.len()),
                            ));
                        }
                    }
                    for region in &regions {
                        if !key.values.contains_key(*region) {
                            problems.push(Problem::new(
                                format!("{kpath}.values"),
                                format!("missing a value for region {region:?}"),
                            ));
                        }
                    }
                }
            }
        }
        check_unique(
            problems,
            cfg.keys
                .iter()
                .enumerate()
                .map(|(k, key)| (format!("{path}.keys[{k}]"), key.key.clone())),
            "key",
        );
        for (r, name) in cfg.restart.iter().enumerate() {
            let restartable = spec.workloads.iter().any(|w| {
                w.namespace == cfg.namespace
                    && &w.name == name
                    && matches!(w.kind.as_str(), "Deployment" | "StatefulSet")
            });
            if !restartable {
                problems.push(Problem::new(
                    format!("{path}.restart[{r}]"),
                    format!(
                        "no Deployment or StatefulSet {name:?} in namespace {:?} among \
                         spec.workloads",
                        cfg.namespace
                    ),
                ));
            }
        }
    }
    check_unique(
        problems,
        spec.config.iter().enumerate().map(|(i, c)| {
            (
                format!("spec.config[{i}]"),
                format!("{} {}/{}", c.kind.name(), c.namespace, c.name),
            )
        }),
        "config entry",
    );
}

fn check_unique(
    problems: &mut Vec<Problem>,
    items: impl Iterator<Item = (String, String)>,
    what: &str,
) {
    let mut seen: HashMap<String, String> = HashMap::new();
    for (path, key) in items {
        if key.is_empty() {
            continue;
        }
        if let Some(first) = seen.get(&key) {
            problems.push(Problem::new(
                &path,
                format!("duplicate {what} {key:?} (also {first})"),
            ));
        } else {
            seen.insert(key, path);
        }
    }
}

fn require_non_empty(problems: &mut Vec<Problem>, path: &str, value: &str) {
    if value.trim().is_empty() {
        problems.push(Problem::new(path, "must not be empty"));
    }
}

/// Validates a failover spec against its plan.
pub fn validate_failover(spec: &FailoverSpec, plan: &DisasterRecoveryPlanSpec) -> Vec<Problem> {
    let mut problems = Vec::new();
    if !plan.regions.iter().any(|r| r.name == spec.target_region) {
        let names: Vec<&str> = plan.regions.iter().map(|r| r.name.as_str()).collect();
        problems.push(Problem::new(
            "spec.targetRegion",
            format!(
                "unknown region {:?}; plan {:?} has regions {}",
                spec.target_region,
                spec.plan_ref,
                names.join(", ")
            ),
        ));
    }
    if spec.allow_data_loss && spec.mode != FailoverMode::Unplanned {
        problems.push(Problem::new(
            "spec.allowDataLoss",
            format!(
                "only Unplanned failovers may lose data; mode is {:?}",
                spec.mode
            ),
        ));
    }
    if let Some(max) = &spec.max_data_loss {
        if let Err(reason) = parse_duration(max) {
            problems.push(Problem::new("spec.maxDataLoss", reason));
        } else if !spec.allow_data_loss {
            problems.push(Problem::new(
                "spec.maxDataLoss",
                "has no effect without allowDataLoss: true",
            ));
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{DisasterRecoveryPlan, RoutingPolicy};

    const SAMPLE: &str = include_str!("../config/samples/plan.yaml");

    fn sample() -> DisasterRecoveryPlanSpec {
        let plan: DisasterRecoveryPlan = serde_yaml::from_str(SAMPLE).expect("sample parses");
        plan.spec
    }

    fn field_names(problems: &[Problem]) -> Vec<&str> {
        problems.iter().map(|p| p.field.as_str()).collect()
    }

    fn fields(spec: &DisasterRecoveryPlanSpec) -> Vec<String> {
        validate_plan(spec, "drover-system", None)
            .into_iter()
            .map(|p| p.field)
            .collect()
    }

    fn all_secrets_present(spec: &DisasterRecoveryPlanSpec) -> SecretsSeen {
        secret_refs(spec, "drover-system")
            .map(|(_, ns, s)| {
                let keys = BTreeSet::from([s.key_or_default().to_string()]);
                ((ns, s.name.clone()), Ok(keys))
            })
            .collect()
    }

    #[test]
    fn sample_plan_is_valid() {
        let spec = sample();
        let seen = all_secrets_present(&spec);
        assert_eq!(validate_plan(&spec, "drover-system", Some(&seen)), vec![]);
    }

    #[test]
    fn fewer_than_two_regions() {
        let mut spec = sample();
        spec.regions.truncate(1);
        let f = fields(&spec);
        assert!(f.contains(&"spec.regions".to_string()), "{f:?}");
    }

    #[test]
    fn probes_are_checked_by_field_apart_from_the_plan() {
        use crate::api::ProbeSpec;
        let plan_fields = fields;
        let fields = |spec: &DisasterRecoveryPlanSpec| -> Vec<String> {
            assert!(
                plan_fields(spec).is_empty(),
                "probes never invalidate the plan"
            );
            probe_problems(spec).into_iter().map(|p| p.field).collect()
        };
        let url = |u: &str| ProbeSpec {
            url: Some(u.into()),
            ..Default::default()
        };
        let mut spec = sample();
        assert!(fields(&spec).is_empty(), "the sample's probes are valid");
        spec.regions[0].probes = vec![url("https://use1.example.com/healthz")];
        spec.regions[1].probes.clear();
        assert_eq!(fields(&spec), vec!["spec.regions[1].probes".to_string()]);
        spec.regions[1].probes = vec![
            url("ftp://x/"),
            url("not a url"),
            ProbeSpec::default(),
            ProbeSpec {
                route53_health_check_id: Some("abc_1".into()),
                ..Default::default()
            },
            ProbeSpec {
                route53_health_check_id: Some("0a1b-2c".into()),
                timeout: Some("30s".into()),
                ..Default::default()
            },
            ProbeSpec {
                url: Some(format!("http://h/{}", "a".repeat(2100))),
                timeout: Some("soon".into()),
                ..Default::default()
            },
        ];
        assert_eq!(
            fields(&spec),
            vec![
                "spec.regions[1].probes[0].url",
                "spec.regions[1].probes[1].url",
                "spec.regions[1].probes[2]",
                "spec.regions[1].probes[3].route53HealthCheckId",
                "spec.regions[1].probes[4].timeout",
                "spec.regions[1].probes[5].url",
                "spec.regions[1].probes[5].timeout",
            ]
        );
        spec.regions[1].probes = vec![url("https://user:pw@h/x?token=s3cr3t")];
        let problems = probe_problems(&spec);
        assert_eq!(problems[0].field, "spec.regions[1].probes[0].url");
        assert!(
            !format!("{problems:?}").contains("s3cr3t") && !format!("{problems:?}").contains("pw")
        );
        spec.regions[1].probes = vec![url("ftp://u:pw@h/")];
        assert!(!format!("{:?}", probe_problems(&spec)).contains("pw"));
        assert_eq!(
            shown_url("https://h:8443/x?token=s3cr3t"),
            "https://h:8443/x?…"
        );
        for metadata in [
            "http://169.254.169.254/latest/meta-data/",
            "http://[fe80::1]/",
            "http://[fd00:ec2::254]/",
            "http://[::ffff:169.254.169.254]/",
        ] {
            spec.regions[1].probes = vec![url(metadata)];
            assert_eq!(
                fields(&spec),
                vec!["spec.regions[1].probes[0].url".to_string()],
                "{metadata}"
            );
        }
        spec.regions[1].probes = vec![url("http://127.0.0.1:8080/h"); 9];
        assert_eq!(fields(&spec), vec!["spec.regions[1].probes".to_string()]);
        spec.regions[1].probes.truncate(1);
        assert!(fields(&spec).is_empty());
    }

    #[test]
    fn a_probe_timeout_defaults_to_2s_and_stays_in_range() {
        let mut p = crate::api::ProbeSpec::default();
        assert_eq!(probe_timeout(&p), Duration::from_secs(2));
        p.timeout = Some("5s".into());
        assert_eq!(probe_timeout(&p), Duration::from_secs(5));
        p.timeout = Some("1h".into());
        assert_eq!(probe_timeout(&p), Duration::from_secs(10));
    }

    #[test]
    fn duplicate_region() {
        let mut spec = sample();
        spec.regions[1].name = "use1".into();
        let problems = validate_plan(&spec, "drover-system", None);
        let dup = problems
            .iter()
            .find(|p| p.field == "spec.regions[1].name")
            .expect("duplicate reported");
        assert!(dup.reason.contains("duplicate region \"use1\""), "{dup}");
    }

    #[test]
    fn exactly_one_active_region() {
        let mut spec = sample();
        spec.regions[1].initial_role = RegionRole::Active;
        let problems = validate_plan(&spec, "drover-system", None);
        assert!(problems.iter().any(|p| p.reason.contains("found 2")));
    }

    #[test]
    fn cluster_access_needs_exactly_one_way() {
        let mut spec = sample();
        spec.regions[0].cluster.kubeconfig_secret_ref = None;
        assert!(fields(&spec).contains(&"spec.regions[0].cluster".to_string()));
        spec.regions[0].cluster.in_cluster = Some(true);
        assert!(fields(&spec).is_empty());
        spec.regions[1].cluster.in_cluster = Some(true);
        assert!(fields(&spec).contains(&"spec.regions[1].cluster".to_string()));
    }

    #[test]
    fn database_missing_region() {
        let mut spec = sample();
        spec.databases[0].rds.as_mut().expect("rds").instances.pop();
        let problems = validate_plan(&spec, "drover-system", None);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert_eq!(problems[0].field, "spec.databases[0].rds.instances");
        assert!(problems[0].reason.contains("usw2"));
    }

    #[test]
    fn database_unknown_and_repeated_region() {
        let mut spec = sample();
        let members = &mut spec.databases[1]
            .aurora_global
            .as_mut()
            .expect("aurora")
            .members;
        members[1].region = "use1".into();
        members.push(RegionalIdentifier {
            region: "euw1".into(),
            identifier: "x".into(),
        });
        let f = fields(&spec);
        assert!(f.contains(&"spec.databases[1].auroraGlobal.members[1].region".to_string()));
        assert!(f.contains(&"spec.databases[1].auroraGlobal.members[2].region".to_string()));
        assert!(f.contains(&"spec.databases[1].auroraGlobal.members".to_string()));
    }

    #[test]
    fn database_needs_exactly_one_engine() {
        let mut spec = sample();
        spec.databases[0].aurora_global = spec.databases[1].aurora_global.clone();
        assert_eq!(fields(&spec), vec!["spec.databases[0]"]);
        spec.databases[0].rds = None;
        spec.databases[0].aurora_global = None;
        assert_eq!(fields(&spec), vec!["spec.databases[0]"]);
    }

    #[test]
    fn record_missing_region_target() {
        let mut spec = sample();
        spec.dns[0].records[1].targets.remove(0);
        let problems = validate_plan(&spec, "drover-system", None);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert_eq!(problems[0].field, "spec.dns[0].records[1].targets");
        assert!(problems[0].reason.contains("\"use1\""));
    }

    #[test]
    fn record_target_needs_values_or_alias() {
        let mut spec = sample();
        spec.dns[0].records[0].targets[0].values = None;
        assert_eq!(fields(&spec), vec!["spec.dns[0].records[0].targets[0]"]);
        spec.dns[0].records[0].targets[0].values = Some(vec![]);
        assert_eq!(
            fields(&spec),
            vec!["spec.dns[0].records[0].targets[0].values"]
        );
    }

    #[test]
    fn duplicate_record() {
        let mut spec = sample();
        let mut copy = spec.dns[0].records[0].clone();
        copy.routing = RoutingPolicy::Weighted;
        spec.dns[0].records.push(copy);
        assert_eq!(fields(&spec), vec!["spec.dns[0].records[2]"]);
    }

    #[test]
    fn negative_replicas() {
        let mut spec = sample();
        spec.workloads[1].active_replicas = -1;
        spec.workloads[2].standby_replicas = -3;
        let problems = validate_plan(&spec, "drover-system", None);
        assert_eq!(
            field_names(&problems),
            vec![
                "spec.workloads[1].activeReplicas",
                "spec.workloads[2].standbyReplicas"
            ]
        );
        assert!(problems[1].reason.contains("-3"));
    }

    #[test]
    fn aws_secrets_are_names_bounded_and_unique() {
        let mut spec = sample();
        let named = |n: &str| crate::api::AwsSecretRef { name: n.into() };
        spec.aws_secrets = vec![
            named("shop/db-password"),
            named("arn:aws:secretsmanager:us-east-1:1:secret:x"),
            named(""),
            named("bad name"),
            named(&"x".repeat(513)),
            named("shop/db-password"),
        ];
        assert_eq!(
            fields(&spec),
            vec![
                "spec.awsSecrets[1].name",
                "spec.awsSecrets[2].name",
                "spec.awsSecrets[3].name",
                "spec.awsSecrets[4].name",
                "spec.awsSecrets[5]",
            ]
        );
        spec.aws_secrets = (0..101).map(|i| named(&format!("s{i}"))).collect();
        assert_eq!(fields(&spec), vec!["spec.awsSecrets"]);
    }

    #[test]
    fn duplicate_workload() {
        let mut spec = sample();
        spec.workloads[2].name = "web".into();
        assert_eq!(fields(&spec), vec!["spec.workloads[2]"]);
    }

    #[test]
    fn a_cron_job_runs_in_one_region_and_only_it_has_running_jobs() {
        let mut spec = sample();
        // web is restarted by spec.config, which a CronJob cannot be.
        spec.config.clear();
        spec.workloads[0].kind = "CronJob".into();
        spec.workloads[0].active_replicas = 2;
        spec.workloads[0].standby_replicas = 1;
        spec.workloads[1].running_jobs = Some(crate::api::RunningJobs::Stop);
        assert_eq!(
            fields(&spec),
            vec![
                "spec.workloads[0].activeReplicas",
                "spec.workloads[0].standbyReplicas",
                "spec.workloads[1].runningJobs"
            ]
        );
        spec.workloads[0].active_replicas = 1;
        spec.workloads[0].standby_replicas = 0;
        spec.workloads[0].running_jobs = spec.workloads[1].running_jobs.take();
        assert!(fields(&spec).is_empty());
        assert_eq!(spec.workloads[0].effective_api_version(), Some("batch/v1"));
    }

    #[test]
    fn config_entries_are_checked_by_field() {
        let mut spec = sample();
        let cfg =
            |yaml: &str| -> crate::api::ConfigSpec { serde_yaml::from_str(yaml).expect("entry") };
        spec.config = vec![
            cfg(
                "{kind: ConfigMap, namespace: shop, name: a, restart: [cron, nope], keys: [\
                 {key: R, values: {use1: x}}, {key: R, databaseEndpoint: orders}, \
                 {key: 'bad key', databaseEndpoint: nope}, {key: E}]}",
            ),
            cfg(
                "{kind: Secret, namespace: shop, name: s, keys: [{key: P, values: {use1: a, usw2: b}}]}",
            ),
            cfg("{kind: ConfigMap, namespace: shop, name: a, keys: []}"),
        ];
        assert_eq!(
            fields(&spec),
            vec![
                "spec.config[0].keys[0].values",
                "spec.config[0].keys[2].key",
                "spec.config[0].keys[2].databaseEndpoint",
                "spec.config[0].keys[3]",
                "spec.config[0].keys[1]",
                "spec.config[0].restart[1]",
                "spec.config[1].keys[0].values",
                "spec.config[2].keys",
                "spec.config[2]",
            ]
        );
    }

    #[test]
    fn config_values_are_bounded_in_all() {
        let mut spec = sample();
        let value = "x".repeat(MAX_CONFIG_VALUE);
        let entry = |i: usize| -> crate::api::ConfigSpec {
            serde_yaml::from_str(&format!(
                "{{kind: ConfigMap, namespace: shop, name: c{i}, keys: [{{key: K, values: \
                 {{use1: {value}, usw2: {value}}}}}]}}"
            ))
            .expect("entry")
        };
        // 32 entries × 2 regions × 4 KiB = 256 KiB: at the bound; one more is over it.
        spec.config = (0..32).map(entry).collect();
        assert!(fields(&spec).is_empty(), "{:?}", fields(&spec));
        spec.config.push(entry(32));
        assert_eq!(fields(&spec), vec!["spec.config"]);
    }

    #[test]
    fn custom_kind_needs_api_version() {
        let mut spec = sample();
        spec.config.clear();
        spec.workloads[0].kind = "Rollout".into();
        assert_eq!(fields(&spec), vec!["spec.workloads[0].apiVersion"]);
        spec.workloads[0].api_version = Some("argoproj.io/v1alpha1".into());
        assert!(fields(&spec).is_empty());
    }

    #[test]
    fn bad_durations() {
        let mut spec = sample();
        spec.objectives.rto = "five minutes".into();
        spec.objectives.rpo = "".into();
        let problems = validate_plan(&spec, "drover-system", None);
        assert_eq!(
            field_names(&problems),
            vec!["spec.objectives.rto", "spec.objectives.rpo"]
        );
        assert!(problems[0].reason.contains("five minutes"));
    }

    #[test]
    fn deny_security_group_fencing_is_refused_as_not_implemented() {
        let mut spec = sample();
        spec.fencing = Some(crate::api::FencingSpec {
            rds_method: Some(RdsFenceMethod::Stop),
        });
        assert_eq!(fields(&spec), Vec::<String>::new());
        spec.fencing = Some(crate::api::FencingSpec {
            rds_method: Some(RdsFenceMethod::DenySecurityGroup),
        });
        assert_eq!(fields(&spec), vec!["spec.fencing.rdsMethod"]);
    }

    #[test]
    fn step_timeouts_parse_and_are_bounded() {
        let mut spec = sample();
        spec.timeouts = Some(crate::api::StepTimeouts {
            preflight: Some("400000000000y".into()),
            fence: Some("0s".into()),
            promotion: Some("soon".into()),
            warm_up: Some("10m".into()),
            dns: None,
        });
        let problems = validate_plan(&spec, "drover-system", None);
        assert_eq!(
            field_names(&problems),
            vec![
                "spec.timeouts.preflight",
                "spec.timeouts.fence",
                "spec.timeouts.promotion"
            ]
        );
        assert!(problems[0].reason.contains("400000000000y"), "{problems:?}");
        assert!(
            problems[1].reason.contains("longer than 0s"),
            "{problems:?}"
        );
    }

    #[test]
    fn plan_priority_is_bounded() {
        let mut spec = sample();
        for (priority, problems) in [
            (Some(0), 0),
            (Some(1000), 0),
            (None, 0),
            (Some(-1), 1),
            (Some(1001), 1),
        ] {
            spec.priority = priority;
            let found = validate_plan(&spec, "drover-system", None);
            assert_eq!(found.len(), problems, "{priority:?}: {found:?}");
            if problems == 1 {
                assert_eq!(field_names(&found), vec!["spec.priority"]);
                assert!(
                    found[0].reason.starts_with("must be from 0 to 1000"),
                    "{found:?}"
                );
            }
        }
        // Out of bounds, the calls it makes are clamped all the same.
        spec.priority = Some(5000);
        assert_eq!(spec.call_priority(), 1000);
    }

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("1h 30m"), Ok(Duration::from_secs(5400)));
        assert!(parse_duration("-5m").is_err());
        assert!(parse_duration("8d").is_err());
        assert_eq!(parse_duration("7d"), Ok(MAX_DURATION));
    }

    #[test]
    fn missing_secret_and_missing_key() {
        let spec = sample();
        let mut seen = all_secrets_present(&spec);
        seen.insert(
            ("drover-system".into(), "use1-kubeconfig".into()),
            Err("not found".into()),
        );
        seen.insert(
            ("drover-system".into(), "usw2-kubeconfig".into()),
            Ok(BTreeSet::from(["config".to_string()])),
        );
        let problems = validate_plan(&spec, "drover-system", Some(&seen));
        assert_eq!(
            field_names(&problems),
            vec![
                "spec.regions[0].cluster.kubeconfigSecretRef.name",
                "spec.regions[1].cluster.kubeconfigSecretRef.key"
            ]
        );
        assert!(problems[0].reason.contains("not found"));
    }

    #[test]
    fn secret_namespace_defaults_to_plan_namespace() {
        let mut spec = sample();
        spec.regions[0]
            .cluster
            .kubeconfig_secret_ref
            .as_mut()
            .expect("ref")
            .namespace = Some("vault".into());
        let refs: Vec<(String, String)> = secret_refs(&spec, "drover-system")
            .map(|(_, ns, s)| (ns, s.name.clone()))
            .collect();
        assert_eq!(
            refs,
            vec![
                ("vault".to_string(), "use1-kubeconfig".to_string()),
                ("drover-system".to_string(), "usw2-kubeconfig".to_string())
            ]
        );
    }

    #[test]
    fn failover_target_must_be_a_plan_region() {
        let plan = sample();
        assert!(
            validate_failover(
                &FailoverSpec::new("shop", "usw2", FailoverMode::Planned),
                &plan
            )
            .is_empty()
        );
        let problems = validate_failover(
            &FailoverSpec::new("shop", "euw1", FailoverMode::Planned),
            &plan,
        );
        assert_eq!(problems[0].field, "spec.targetRegion");
    }

    #[test]
    fn failover_data_loss_rules() {
        let plan = sample();
        let mut spec = FailoverSpec::new("shop", "usw2", FailoverMode::Planned);
        spec.allow_data_loss = true;
        assert_eq!(
            validate_failover(&spec, &plan)[0].field,
            "spec.allowDataLoss"
        );
        spec.mode = FailoverMode::Unplanned;
        spec.max_data_loss = Some("10s".into());
        assert!(validate_failover(&spec, &plan).is_empty());
        spec.max_data_loss = Some("ten".into());
        assert_eq!(validate_failover(&spec, &plan)[0].field, "spec.maxDataLoss");
    }

    /// Random edits of a valid plan never panic validation, and any edit that
    /// deserializes either validates or names a field.
    #[test]
    fn validation_never_panics_on_mutated_input() {
        let base: serde_json::Value = serde_json::to_value(sample()).expect("sample serializes");
        let replacements = [
            serde_json::json!(null),
            serde_json::json!(-1),
            serde_json::json!(""),
            serde_json::json!([]),
            serde_json::json!({}),
            serde_json::json!("use1"),
            serde_json::json!(i64::MIN),
            serde_json::json!("\u{0}\u{ffff}"),
        ];
        let mut paths = Vec::new();
        collect_paths(&base, &mut Vec::new(), &mut paths);
        let mut checked = 0;
        for path in &paths {
            for replacement in &replacements {
                let mut value = base.clone();
                if let Some(slot) = pointer_mut(&mut value, path) {
                    *slot = replacement.clone();
                }
                if let Ok(spec) = serde_json::from_value::<DisasterRecoveryPlanSpec>(value) {
                    for p in validate_plan(&spec, "ns", None) {
                        assert!(p.field.starts_with("spec."), "{p}");
                    }
                    checked += 1;
                }
            }
        }
        assert!(checked > 50, "only {checked} mutations deserialized");
    }

    fn collect_paths(v: &serde_json::Value, at: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
        out.push(at.clone());
        match v {
            serde_json::Value::Object(m) => {
                for (k, child) in m {
                    at.push(k.clone());
                    collect_paths(child, at, out);
                    at.pop();
                }
            }
            serde_json::Value::Array(a) => {
                for (i, child) in a.iter().enumerate() {
                    at.push(i.to_string());
                    collect_paths(child, at, out);
                    at.pop();
                }
            }
            _ => {}
        }
    }

    fn pointer_mut<'a>(
        v: &'a mut serde_json::Value,
        path: &[String],
    ) -> Option<&'a mut serde_json::Value> {
        let pointer: String = path.iter().map(|p| format!("/{p}")).collect();
        v.pointer_mut(&pointer)
    }
}
