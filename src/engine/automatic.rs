//! Automatic failover on health signals, as pure functions: (plan spec, previous status,
//! observations, other Failovers, now, paused) → (new status, at most one trigger).
//! `crate::automatic` reads the signals, writes the status and creates the Failover.
//!
//! The rules (docs/operations.md, "Automatic failover"):
//! - only the active region's signals are evaluated; each is Healthy, Bad or Unknown;
//! - a signal counts once it has `consecutive` bad evaluations in a row. Healthy resets
//!   the run; Unknown (unreadable, throttled, stale, inconclusive) neither adds to it nor
//!   resets it: a lost region often makes its own signals unreadable, and resetting would
//!   let that hide the outage, while counting Unknown as bad would fail over on a
//!   monitoring problem;
//! - it triggers when at least `quorum` signals count, nothing is paused, no other
//!   Failover of the plan is running or awaiting approval, the cooldown since the last
//!   automatic trigger is over, and the target is neither the active region nor the one
//!   active before the last failover (never an automatic failback);
//! - while paused, signals are read and shown but their runs stay at 0, so unpausing
//!   starts afresh rather than failing over at once on evidence gathered while paused.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, SystemTime};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::api::{
    AutomaticFailoverMode, AutomaticFailoverSpec, AutomaticFailoverStatus, AutomaticTrigger,
    DisasterRecoveryPlanSpec, Failover, FailoverMode, FailoverPhase, FailoverSpec, HealthSignal,
    MetricComparison, SignalState, SignalStatus,
};
use crate::validate::parse_timeout;

/// The annotation listing the signals that triggered an automatic Failover.
pub const SIGNALS_ANNOTATION: &str = "drover.io/signals";
/// The label naming the plan of an automatic Failover, for `kubectl get fo -l`.
pub const PLAN_LABEL: &str = "drover.io/plan";
/// `drover.io/trigger` value of the Failovers Drover starts itself.
pub const AUTOMATIC: &str = "automatic";

pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(30);
pub const MIN_INTERVAL: Duration = Duration::from_secs(5);
pub const DEFAULT_CONSECUTIVE: u32 = 3;
pub const MAX_CONSECUTIVE: u32 = 100;
pub const DEFAULT_QUORUM: u32 = 1;
pub const DEFAULT_COOLDOWN: Duration = Duration::from_secs(3600);
pub const DEFAULT_CHECKER_QUORUM: u32 = 2;
pub const DEFAULT_CHECKER_MAX_AGE: Duration = Duration::from_secs(120);
pub const DEFAULT_METRIC_PERIOD: Duration = Duration::from_secs(60);
pub const DEFAULT_METRIC_MAX_AGE: Duration = Duration::from_secs(180);
/// At most this many signals per plan: each is a metric series and an AWS read per
/// evaluation.
pub const MAX_SIGNALS: usize = 32;

fn duration_or(value: &Option<String>, default: Duration) -> Duration {
    value
        .as_deref()
        .and_then(|v| parse_timeout(v).ok())
        .unwrap_or(default)
}

/// `spec.automaticFailover` with its defaults. Invalid values fall back to the defaults;
/// validation reports them (and an invalid plan is not evaluated).
#[derive(Clone, Debug, PartialEq)]
pub struct Settings {
    pub interval: Duration,
    pub consecutive: u32,
    pub quorum: u32,
    pub cooldown: Duration,
}

impl Settings {
    pub fn of(spec: &AutomaticFailoverSpec) -> Self {
        Self {
            interval: duration_or(&spec.interval, DEFAULT_INTERVAL).max(MIN_INTERVAL),
            consecutive: spec
                .consecutive
                .unwrap_or(DEFAULT_CONSECUTIVE)
                .clamp(1, MAX_CONSECUTIVE),
            quorum: spec.quorum.unwrap_or(DEFAULT_QUORUM).max(1),
            // Zero is allowed (no cooldown); parse_timeout refuses it, so parse it here.
            cooldown: spec
                .cooldown
                .as_deref()
                .and_then(|v| crate::validate::parse_duration(v).ok())
                .unwrap_or(DEFAULT_COOLDOWN),
        }
    }
}

/// One checker region's report of a Route 53 health check (GetHealthCheckStatus).
#[derive(Clone, Debug, PartialEq)]
pub struct CheckerObservation {
    /// The checker's region, e.g. "us-west-2".
    pub region: String,
    /// Some(true) for a report starting "Success", Some(false) for "Failure", None else.
    pub healthy: Option<bool>,
    /// When the checker last checked.
    pub checked_at: Option<SystemTime>,
}

/// The newest datapoint of a metric.
#[derive(Clone, Debug, PartialEq)]
pub struct MetricDatapoint {
    pub value: f64,
    pub at: SystemTime,
}

/// A CloudWatch metric query, as `Aws::metric_datapoint` takes it.
#[derive(Clone, Debug, PartialEq)]
pub struct MetricQuery {
    pub namespace: String,
    pub metric_name: String,
    pub dimensions: Vec<(String, String)>,
    pub statistic: String,
    pub period_seconds: i32,
    /// How far back to look for datapoints.
    pub lookback: Duration,
}

/// What reading one signal gave.
#[derive(Clone, Debug, PartialEq)]
pub enum Reading {
    HealthCheck(Vec<CheckerObservation>),
    /// The alarm's StateValue, or None when there is no such alarm.
    Alarm(Option<String>),
    Metric(Option<MetricDatapoint>),
}

/// A read: the reading, or why there is none (unreachable, throttled, refused).
pub type Observed = Result<Reading, String>;

/// What to read for a signal.
#[derive(Clone, Debug, PartialEq)]
pub enum Read {
    HealthCheck {
        id: String,
    },
    Alarm {
        aws_region: String,
        name: String,
    },
    Metric {
        aws_region: String,
        query: MetricQuery,
    },
}

/// The AWS region of a plan region, by name (the name itself when the plan lacks it).
fn aws_region_of(plan: &DisasterRecoveryPlanSpec, region: &str) -> String {
    plan.aws_region_of(region).unwrap_or(region).to_string()
}

/// The statistic of a metric signal, with its default.
pub fn statistic(m: &crate::api::MetricSignal) -> String {
    m.statistic.clone().unwrap_or_else(|| "Average".into())
}

/// The reads an evaluation needs: one per signal of the active region, by signal name.
pub fn reads(plan: &DisasterRecoveryPlanSpec, active: &str) -> Vec<(String, Read)> {
    let Some(auto) = &plan.automatic_failover else {
        return Vec::new();
    };
    auto.signals
        .iter()
        .filter(|s| s.region == active)
        .filter_map(|s| {
            let own = || aws_region_of(plan, &s.region);
            let read = if let Some(hc) = &s.route53_health_check {
                Read::HealthCheck {
                    id: hc.health_check_id.clone(),
                }
            } else if let Some(alarm) = &s.cloud_watch_alarm {
                Read::Alarm {
                    aws_region: alarm.aws_region.clone().unwrap_or_else(own),
                    name: alarm.alarm_name.clone(),
                }
            } else {
                let m = s.metric.as_ref()?;
                let period = duration_or(&m.period, DEFAULT_METRIC_PERIOD);
                let max_age = duration_or(&m.max_age, DEFAULT_METRIC_MAX_AGE);
                Read::Metric {
                    aws_region: m.aws_region.clone().unwrap_or_else(own),
                    query: MetricQuery {
                        namespace: m.namespace.clone(),
                        metric_name: m.metric_name.clone(),
                        dimensions: m
                            .dimensions
                            .iter()
                            .map(|d| (d.name.clone(), d.value.clone()))
                            .collect(),
                        statistic: statistic(m),
                        period_seconds: i32::try_from(period.as_secs().max(1)).unwrap_or(60),
                        lookback: max_age + period,
                    },
                }
            };
            Some((s.name.clone(), read))
        })
        .collect()
}

fn age(now: SystemTime, at: SystemTime) -> Duration {
    now.duration_since(at).unwrap_or_default()
}

/// Judges one reading of a signal: its state and what was seen, in words.
pub fn judge(signal: &HealthSignal, observed: &Observed, now: SystemTime) -> (SignalState, String) {
    let reading = match observed {
        Ok(r) => r,
        Err(why) => return (SignalState::Unknown, format!("unreadable: {why}")),
    };
    match (reading, signal) {
        (
            Reading::HealthCheck(observations),
            HealthSignal {
                route53_health_check: Some(hc),
                ..
            },
        ) => {
            let quorum = hc.checker_quorum.unwrap_or(DEFAULT_CHECKER_QUORUM).max(1) as usize;
            let max_age = duration_or(&hc.max_age, DEFAULT_CHECKER_MAX_AGE);
            judge_checkers(observations, quorum, max_age, now)
        }
        (
            Reading::Alarm(state),
            HealthSignal {
                cloud_watch_alarm: Some(alarm),
                ..
            },
        ) => match state.as_deref() {
            Some("ALARM") => (
                SignalState::Bad,
                format!("alarm {} is ALARM", alarm.alarm_name),
            ),
            Some("OK") => (
                SignalState::Healthy,
                format!("alarm {} is OK", alarm.alarm_name),
            ),
            Some(other) => (
                SignalState::Unknown,
                format!("alarm {} is {other}", alarm.alarm_name),
            ),
            None => (
                SignalState::Unknown,
                format!("no alarm named {}", alarm.alarm_name),
            ),
        },
        (
            Reading::Metric(point),
            HealthSignal {
                metric: Some(m), ..
            },
        ) => {
            let max_age = duration_or(&m.max_age, DEFAULT_METRIC_MAX_AGE);
            let name = format!("{} {}", m.namespace, m.metric_name);
            let Some(point) = point else {
                return (
                    SignalState::Unknown,
                    format!("no datapoint of {name} in the last {}", show(max_age)),
                );
            };
            if age(now, point.at) > max_age {
                return (
                    SignalState::Unknown,
                    format!(
                        "the newest datapoint of {name} is {} old, older than {}",
                        show(age(now, point.at)),
                        show(max_age)
                    ),
                );
            }
            if !point.value.is_finite() {
                return (
                    SignalState::Unknown,
                    format!("{name} reads {}", point.value),
                );
            }
            let (bad, op) = match m.comparison {
                MetricComparison::GreaterThanThreshold => (point.value > m.threshold, ">"),
                MetricComparison::GreaterThanOrEqualToThreshold => {
                    (point.value >= m.threshold, ">=")
                }
                MetricComparison::LessThanThreshold => (point.value < m.threshold, "<"),
                MetricComparison::LessThanOrEqualToThreshold => (point.value <= m.threshold, "<="),
            };
            let state = if bad {
                SignalState::Bad
            } else {
                SignalState::Healthy
            };
            let verdict = if bad { "" } else { "not " };
            (
                state,
                format!("{name} is {}, {verdict}{op} {}", point.value, m.threshold),
            )
        }
        _ => (
            SignalState::Unknown,
            "the reading does not match the signal's kind".into(),
        ),
    }
}

/// A health check per checker region: a region fails when most of its fresh reports say
/// Failure, is healthy when most say Success, and is unknown otherwise. The signal is bad
/// when at least `quorum` regions fail, healthy when it could not reach `quorum` even if
/// every unknown region failed, and unknown in between.
fn judge_checkers(
    observations: &[CheckerObservation],
    quorum: usize,
    max_age: Duration,
    now: SystemTime,
) -> (SignalState, String) {
    let mut by_region: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
    for o in observations {
        let tally = by_region.entry(o.region.as_str()).or_default();
        let fresh = o.checked_at.is_some_and(|at| age(now, at) <= max_age);
        match (fresh, o.healthy) {
            (true, Some(true)) => tally.0 += 1,
            (true, Some(false)) => tally.1 += 1,
            _ => {}
        }
    }
    if by_region.is_empty() {
        return (
            SignalState::Unknown,
            "Route 53 returned no checker observations".into(),
        );
    }
    let failing: Vec<&str> = by_region
        .iter()
        .filter(|(_, (ok, bad))| bad > ok)
        .map(|(r, _)| *r)
        .collect();
    let unknown = by_region.values().filter(|(ok, bad)| ok == bad).count();
    let total = by_region.len();
    let of = format!(
        "{} of {total} checker regions; quorum {quorum}",
        failing.len()
    );
    if failing.len() >= quorum {
        (
            SignalState::Bad,
            format!("Failure from {} ({of})", failing.join(", ")),
        )
    } else if failing.len() + unknown < quorum {
        let detail = if failing.is_empty() {
            String::new()
        } else {
            format!("; Failure from {}", failing.join(", "))
        };
        (SignalState::Healthy, format!("healthy ({of}{detail})"))
    } else {
        (
            SignalState::Unknown,
            format!("inconclusive: {unknown} checker regions without a fresh majority ({of})"),
        )
    }
}

/// Another Failover as the evaluation sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct FailoverSeen {
    pub name: String,
    pub plan_ref: String,
    pub phase: Option<FailoverPhase>,
}

impl FailoverSeen {
    pub fn of(fo: &Failover) -> Self {
        Self {
            name: fo.metadata.name.clone().unwrap_or_default(),
            plan_ref: fo.spec.plan_ref.clone(),
            phase: fo.status.as_ref().and_then(|s| s.phase),
        }
    }
}

/// Everything an evaluation decides from.
pub struct Evaluation<'a> {
    pub plan_name: &'a str,
    pub spec: &'a DisasterRecoveryPlanSpec,
    pub previous: Option<&'a AutomaticFailoverStatus>,
    pub active_region: &'a str,
    /// The region active before the last failover: never an automatic target.
    pub previous_active_region: Option<&'a str>,
    /// Readings of the active region's signals, by signal name.
    pub observed: &'a BTreeMap<String, Observed>,
    /// The Failovers in the plan's namespace.
    pub failovers: &'a [FailoverSeen],
    pub now: SystemTime,
    /// `drover run --pause-automatic-failover`.
    pub operator_paused: bool,
}

/// A Failover to create.
#[derive(Clone, Debug, PartialEq)]
pub struct Trigger {
    pub failover: String,
    pub source_region: String,
    pub target_region: String,
    pub mode: FailoverMode,
    pub allow_data_loss: bool,
    pub max_data_loss: Option<String>,
    /// The signals that triggered it, one description each.
    pub signals: Vec<String>,
}

/// The outcome of an evaluation: the status to write, and at most one Failover to create
/// (after the status, which records the intent, is written).
#[derive(Clone, Debug, PartialEq)]
pub struct Outcome {
    pub status: AutomaticFailoverStatus,
    pub trigger: Option<Trigger>,
}

fn time(t: SystemTime) -> Time {
    crate::engine::kube_time(t)
}

fn system_time(t: &Time) -> SystemTime {
    SystemTime::from(t.0)
}

fn show(d: Duration) -> String {
    humantime::format_duration(Duration::from_secs(d.as_secs())).to_string()
}

/// How long until the next evaluation is due, or None when it is due now. Evaluations
/// count toward `consecutive`, so reconciles triggered early (a spec edit, a fence) do
/// not evaluate again; a tenth of the interval is allowed as slack.
pub fn due_in(
    spec: &AutomaticFailoverSpec,
    previous: Option<&AutomaticFailoverStatus>,
    now: SystemTime,
) -> Option<Duration> {
    let interval = Settings::of(spec).interval;
    let last = previous?.last_evaluation_time.as_ref().map(system_time)?;
    let next = last + interval - interval / 10;
    next.duration_since(now).ok().filter(|d| !d.is_zero())
}

/// The name of the n-th automatic Failover of a plan: deterministic, so a retried creation
/// meets the one already made (409) instead of making a second.
pub fn failover_name(plan: &str, n: u32) -> String {
    let suffix = format!("-auto-{n}");
    let mut base: String = plan.chars().take(253 - suffix.len()).collect();
    while base.ends_with(['.', '-']) {
        base.pop();
    }
    format!("{base}{suffix}")
}

/// The number of an automatic Failover of `plan` from its name.
fn auto_number(plan: &str, name: &str) -> Option<u32> {
    let prefix = failover_name(plan, 0);
    let prefix = prefix.strip_suffix('0')?;
    name.strip_prefix(prefix)?.parse().ok()
}

/// The region after `active` in the failover order.
pub fn next_region<'a>(spec: &'a DisasterRecoveryPlanSpec, active: &str) -> Option<&'a str> {
    let all: Vec<&str> = spec.regions.iter().map(|r| r.name.as_str()).collect();
    super::dns::secondary_region(spec, active, &all)
}

/// Decides: each signal's state and run, and whether to trigger.
pub fn evaluate(e: &Evaluation) -> Option<Outcome> {
    let auto = e.spec.automatic_failover.as_ref()?;
    let settings = Settings::of(auto);
    let previous = e.previous.cloned().unwrap_or_default();
    let paused = if auto.paused {
        Some("spec.automaticFailover.paused is true")
    } else if e.operator_paused {
        Some("the operator runs with --pause-automatic-failover")
    } else {
        None
    };
    // Runs carry over only while the same region stays active.
    let same_region = previous.active_region.as_deref() == Some(e.active_region);
    let signals: Vec<SignalStatus> = auto
        .signals
        .iter()
        .map(|s| {
            if s.region != e.active_region {
                return SignalStatus {
                    name: s.name.clone(),
                    region: s.region.clone(),
                    state: SignalState::NotEvaluated,
                    consecutive_bad: 0,
                    message: Some(format!(
                        "watches {}; only the active region ({}) is evaluated",
                        s.region, e.active_region
                    )),
                };
            }
            let before = previous
                .signals
                .iter()
                .find(|p| same_region && p.name == s.name && p.region == s.region)
                .map_or(0, |p| p.consecutive_bad);
            let (state, message) = match e.observed.get(&s.name) {
                Some(observed) => judge(s, observed, e.now),
                None => (SignalState::Unknown, "not read".to_string()),
            };
            let run = match (paused, state) {
                (Some(_), _) => 0,
                (None, SignalState::Bad) => before.saturating_add(1),
                (None, SignalState::Healthy | SignalState::NotEvaluated) => 0,
                (None, SignalState::Unknown) => before,
            };
            SignalStatus {
                name: s.name.clone(),
                region: s.region.clone(),
                state,
                consecutive_bad: run,
                message: Some(message),
            }
        })
        .collect();
    let mut status = AutomaticFailoverStatus {
        active_region: Some(e.active_region.to_string()),
        last_evaluation_time: Some(time(e.now)),
        paused: paused.is_some(),
        message: None,
        signals,
        triggers: previous.triggers,
        last_trigger: previous.last_trigger.clone(),
    };
    let watching: Vec<&SignalStatus> = status
        .signals
        .iter()
        .filter(|s| s.region == e.active_region)
        .collect();
    let counting: Vec<&SignalStatus> = watching
        .iter()
        .copied()
        .filter(|s| s.consecutive_bad >= settings.consecutive)
        .collect();
    let quorum = settings.quorum as usize;
    let described = |list: &[&SignalStatus]| -> Vec<String> {
        list.iter()
            .map(|s| {
                format!(
                    "{} ({} bad in a row: {})",
                    s.name,
                    s.consecutive_bad,
                    s.message.as_deref().unwrap_or_default()
                )
            })
            .collect()
    };
    let busy = e
        .failovers
        .iter()
        .find(|f| f.plan_ref == e.plan_name && !f.phase.is_some_and(FailoverPhase::is_terminal));
    let target = auto
        .target_region
        .as_deref()
        .or_else(|| next_region(e.spec, e.active_region));
    let cooldown_until = previous
        .last_trigger
        .as_ref()
        .map(|t| system_time(&t.at) + settings.cooldown)
        .filter(|until| *until > e.now);

    let not = |why: String| Some(format!("Not triggered: {why}."));
    status.message = if let Some(t) = previous.last_trigger.as_ref().filter(|t| !t.created) {
        not(format!(
            "failover {} was decided and is being created",
            t.failover
        ))
    } else if let Some(why) = paused {
        not(format!("paused ({why}); signals are read but not counted"))
    } else if watching.is_empty() {
        not(format!(
            "no signal watches the active region {}",
            e.active_region
        ))
    } else if counting.len() < quorum {
        let which = if counting.is_empty() {
            String::new()
        } else {
            format!(": {}", described(&counting).join("; "))
        };
        not(format!(
            "{} of {} signals of {} have {} or more bad evaluations in a row, and {quorum} \
             must{which}",
            counting.len(),
            watching.len(),
            e.active_region,
            settings.consecutive
        ))
    } else if let Some(f) = busy {
        not(format!(
            "failover {} of this plan is {}",
            f.name,
            match f.phase {
                Some(FailoverPhase::AwaitingApproval) => "awaiting approval",
                Some(FailoverPhase::Running) => "running",
                _ => "pending",
            }
        ))
    } else if let Some(until) = cooldown_until {
        not(format!(
            "the last automatic failover was less than {} ago (spec.automaticFailover.cooldown); \
             the cooldown ends in {}",
            show(settings.cooldown),
            show(age(until, e.now))
        ))
    } else if let Some(why) = refused_target(target, e) {
        not(why)
    } else {
        None
    };
    if status.message.is_some() {
        return Some(Outcome {
            status,
            trigger: None,
        });
    }
    let target = target.unwrap_or_default().to_string();
    let n = e
        .failovers
        .iter()
        .filter_map(|f| auto_number(e.plan_name, &f.name))
        .chain([previous.triggers])
        .max()
        .unwrap_or(0)
        .saturating_add(1);
    let name = failover_name(e.plan_name, n);
    let signals = described(&counting);
    status.triggers = n;
    status.message = Some(format!(
        "Triggered: {} of {} signals of {} have {} or more bad evaluations in a row ({}); \
         failover {name} to {target}.",
        counting.len(),
        watching.len(),
        e.active_region,
        settings.consecutive,
        signals.join("; ")
    ));
    status.last_trigger = Some(AutomaticTrigger {
        failover: name.clone(),
        source_region: e.active_region.to_string(),
        target_region: target.clone(),
        at: time(e.now),
        signals: signals.clone(),
        created: false,
    });
    Some(Outcome {
        status,
        trigger: Some(Trigger {
            failover: name,
            source_region: e.active_region.to_string(),
            target_region: target,
            mode: match auto.mode {
                AutomaticFailoverMode::Planned => FailoverMode::Planned,
                AutomaticFailoverMode::Unplanned => FailoverMode::Unplanned,
            },
            allow_data_loss: auto.allow_data_loss,
            max_data_loss: auto.max_data_loss.clone(),
            signals,
        }),
    })
}

/// Why the target may not be failed over to automatically, if it may not.
fn refused_target(target: Option<&str>, e: &Evaluation) -> Option<String> {
    let Some(target) = target else {
        return Some(format!(
            "no region follows {} in the failover order",
            e.active_region
        ));
    };
    if target == e.active_region {
        return Some(format!("the target {target} is already active"));
    }
    if e.previous_active_region == Some(target) {
        return Some(format!(
            "the target {target} was active before the last failover, and Drover never fails \
             back automatically; create a Failover to {target} by hand if that is wanted"
        ));
    }
    let regions: BTreeSet<&str> = e.spec.regions.iter().map(|r| r.name.as_str()).collect();
    if !regions.contains(target) {
        return Some(format!("the target {target} is not a region of the plan"));
    }
    None
}

/// The status once the trigger's Failover exists.
pub fn created(mut status: AutomaticFailoverStatus) -> AutomaticFailoverStatus {
    if let Some(t) = status.last_trigger.as_mut() {
        t.created = true;
    }
    status
}

/// The Failover a trigger creates: labelled automatic (so admission applies the plan's
/// approval policy) and annotated with the signals.
pub fn failover_object(plan: &str, namespace: &str, trigger: &Trigger) -> Failover {
    let mut fo = Failover::new(
        &trigger.failover,
        FailoverSpec {
            allow_data_loss: trigger.allow_data_loss,
            max_data_loss: trigger.max_data_loss.clone(),
            ..FailoverSpec::new(plan, &trigger.target_region, trigger.mode)
        },
    );
    fo.metadata.namespace = Some(namespace.to_string());
    fo.metadata.labels = Some(
        [
            (super::approval::TRIGGER_LABEL.to_string(), AUTOMATIC.into()),
            (PLAN_LABEL.to_string(), plan.to_string()),
        ]
        .into(),
    );
    let mut signals = trigger.signals.join("; ");
    if signals.len() > 4000 {
        let mut cut = 4000;
        while !signals.is_char_boundary(cut) {
            cut -= 1;
        }
        signals.truncate(cut);
        signals.push('…');
    }
    fo.metadata.annotations = Some([(SIGNALS_ANNOTATION.to_string(), signals)].into());
    fo
}

#[cfg(test)]
mod tests;
