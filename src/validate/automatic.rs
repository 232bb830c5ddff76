//! Validation of `spec.automaticFailover`: every field bounded, every problem at its path.

use std::collections::{BTreeMap, BTreeSet};

use super::{Problem, check_unique, parse_duration, parse_timeout, require_non_empty};
use crate::api::{AutomaticFailoverMode, AutomaticFailoverSpec, HealthSignal};
use crate::engine::automatic::{MAX_CONSECUTIVE, MAX_SIGNALS, MIN_INTERVAL};

const PATH: &str = "spec.automaticFailover";
/// Route 53 health checkers run in at most this many regions.
const MAX_CHECKER_QUORUM: u32 = 16;
/// GetMetricData accepts at most 30 dimensions per metric.
const MAX_DIMENSIONS: usize = 30;
const STATISTICS: [&str; 5] = ["Average", "Sum", "Minimum", "Maximum", "SampleCount"];

pub(super) fn check(
    auto: &AutomaticFailoverSpec,
    regions: &BTreeSet<String>,
    problems: &mut Vec<Problem>,
) {
    if let Some(v) = &auto.interval {
        match parse_timeout(v) {
            Err(reason) => problems.push(Problem::new(format!("{PATH}.interval"), reason)),
            Ok(d) if d < MIN_INTERVAL => problems.push(Problem::new(
                format!("{PATH}.interval"),
                format!("must be at least {}s, got {v:?}", MIN_INTERVAL.as_secs()),
            )),
            Ok(_) => {}
        }
    }
    if let Some(Err(reason)) = auto.cooldown.as_deref().map(parse_duration) {
        problems.push(Problem::new(format!("{PATH}.cooldown"), reason));
    }
    if let Some(n) = auto
        .consecutive
        .filter(|n| !(1..=MAX_CONSECUTIVE).contains(n))
    {
        problems.push(Problem::new(
            format!("{PATH}.consecutive"),
            format!("must be between 1 and {MAX_CONSECUTIVE}, got {n}"),
        ));
    }
    if let Some(target) = &auto.target_region
        && !regions.contains(target)
    {
        problems.push(Problem::new(
            format!("{PATH}.targetRegion"),
            format!("unknown region {target:?}; the plan's regions are {regions:?}"),
        ));
    }
    if auto.allow_data_loss && auto.mode == AutomaticFailoverMode::Planned {
        problems.push(Problem::new(
            format!("{PATH}.allowDataLoss"),
            "only Unplanned failovers may lose data; mode is Planned",
        ));
    }
    if let Some(max) = &auto.max_data_loss {
        if let Err(reason) = parse_duration(max) {
            problems.push(Problem::new(format!("{PATH}.maxDataLoss"), reason));
        } else if !auto.allow_data_loss {
            problems.push(Problem::new(
                format!("{PATH}.maxDataLoss"),
                "has no effect without allowDataLoss: true",
            ));
        }
    }

    if auto.signals.is_empty() {
        problems.push(Problem::new(
            format!("{PATH}.signals"),
            "needs at least one signal",
        ));
    } else if auto.signals.len() > MAX_SIGNALS {
        problems.push(Problem::new(
            format!("{PATH}.signals"),
            format!(
                "at most {MAX_SIGNALS} signals, found {}",
                auto.signals.len()
            ),
        ));
    }
    for (i, signal) in auto.signals.iter().enumerate() {
        check_signal(&format!("{PATH}.signals[{i}]"), signal, regions, problems);
    }
    check_unique(
        problems,
        auto.signals
            .iter()
            .enumerate()
            .map(|(i, s)| (format!("{PATH}.signals[{i}].name"), s.name.clone())),
        "signal name",
    );

    let mut per_region: BTreeMap<&str, u32> = BTreeMap::new();
    for s in &auto.signals {
        *per_region.entry(s.region.as_str()).or_default() += 1;
    }
    match auto.quorum {
        Some(0) => problems.push(Problem::new(format!("{PATH}.quorum"), "must be at least 1")),
        Some(q) => {
            for (region, n) in per_region.iter().filter(|(_, n)| **n < q) {
                problems.push(Problem::new(
                    format!("{PATH}.quorum"),
                    format!(
                        "{q} signals must be bad at once, but region {region} has only {n}: \
                         it could never fail over automatically"
                    ),
                ));
            }
        }
        None => {}
    }
}

fn check_signal(
    path: &str,
    s: &HealthSignal,
    regions: &BTreeSet<String>,
    problems: &mut Vec<Problem>,
) {
    require_non_empty(problems, &format!("{path}.name"), &s.name);
    if s.name.len() > 63 {
        problems.push(Problem::new(
            format!("{path}.name"),
            format!("at most 63 characters, got {}", s.name.len()),
        ));
    }
    if !regions.contains(&s.region) {
        problems.push(Problem::new(
            format!("{path}.region"),
            format!(
                "unknown region {:?}; the plan's regions are {regions:?}",
                s.region
            ),
        ));
    }
    let kinds = [
        s.route53_health_check.is_some(),
        s.cloud_watch_alarm.is_some(),
        s.metric.is_some(),
    ];
    if kinds.iter().filter(|k| **k).count() != 1 {
        problems.push(Problem::new(
            path,
            "set exactly one of route53HealthCheck, cloudWatchAlarm or metric",
        ));
    }
    if let Some(hc) = &s.route53_health_check {
        let at = format!("{path}.route53HealthCheck");
        require_non_empty(
            problems,
            &format!("{at}.healthCheckId"),
            &hc.health_check_id,
        );
        if let Some(q) = hc
            .checker_quorum
            .filter(|q| !(1..=MAX_CHECKER_QUORUM).contains(q))
        {
            problems.push(Problem::new(
                format!("{at}.checkerQuorum"),
                format!("must be between 1 and {MAX_CHECKER_QUORUM}, got {q}"),
            ));
        }
        if let Some(Err(reason)) = hc.max_age.as_deref().map(parse_timeout) {
            problems.push(Problem::new(format!("{at}.maxAge"), reason));
        }
    }
    if let Some(alarm) = &s.cloud_watch_alarm {
        let at = format!("{path}.cloudWatchAlarm");
        require_non_empty(problems, &format!("{at}.alarmName"), &alarm.alarm_name);
        if let Some(r) = &alarm.aws_region {
            require_non_empty(problems, &format!("{at}.awsRegion"), r);
        }
    }
    if let Some(m) = &s.metric {
        let at = format!("{path}.metric");
        require_non_empty(problems, &format!("{at}.namespace"), &m.namespace);
        require_non_empty(problems, &format!("{at}.metricName"), &m.metric_name);
        if let Some(r) = &m.aws_region {
            require_non_empty(problems, &format!("{at}.awsRegion"), r);
        }
        if m.dimensions.len() > MAX_DIMENSIONS {
            problems.push(Problem::new(
                format!("{at}.dimensions"),
                format!("at most {MAX_DIMENSIONS} dimensions"),
            ));
        }
        for (d, dim) in m.dimensions.iter().enumerate() {
            require_non_empty(problems, &format!("{at}.dimensions[{d}].name"), &dim.name);
            require_non_empty(problems, &format!("{at}.dimensions[{d}].value"), &dim.value);
        }
        if let Some(stat) = &m.statistic
            && !valid_statistic(stat)
        {
            problems.push(Problem::new(
                format!("{at}.statistic"),
                format!("{stat:?} is not one of {STATISTICS:?} or a percentile such as p99"),
            ));
        }
        if let Some(period) = &m.period {
            match parse_timeout(period) {
                Err(reason) => problems.push(Problem::new(format!("{at}.period"), reason)),
                Ok(d) => {
                    let secs = d.as_secs();
                    let allowed = d.subsec_nanos() == 0
                        && (matches!(secs, 1 | 5 | 10 | 30) || secs % 60 == 0);
                    if !allowed {
                        problems.push(Problem::new(
                            format!("{at}.period"),
                            format!(
                                "must be 1s, 5s, 10s, 30s or a multiple of 60s, got {period:?}"
                            ),
                        ));
                    }
                }
            }
        }
        if let Some(Err(reason)) = m.max_age.as_deref().map(parse_timeout) {
            problems.push(Problem::new(format!("{at}.maxAge"), reason));
        }
        if !m.threshold.is_finite() {
            problems.push(Problem::new(
                format!("{at}.threshold"),
                "must be a finite number",
            ));
        }
    }
}

/// CloudWatch's statistics, or a percentile p0..p100 (e.g. p99, p99.9).
fn valid_statistic(stat: &str) -> bool {
    STATISTICS.contains(&stat)
        || stat
            .strip_prefix('p')
            .and_then(|p| p.parse::<f64>().ok())
            .is_some_and(|p| (0.0..=100.0).contains(&p))
}

#[cfg(test)]
mod tests {
    use crate::api::{
        AutomaticFailoverSpec, CloudWatchAlarmSignal, DisasterRecoveryPlan, HealthSignal,
        MetricSignal, Route53HealthCheckSignal,
    };
    use crate::validate::validate_plan;

    const SAMPLE: &str = include_str!("../../config/samples/plan.yaml");

    fn problems(auto: AutomaticFailoverSpec) -> Vec<String> {
        let plan: DisasterRecoveryPlan = serde_yaml::from_str(SAMPLE).expect("sample parses");
        let mut spec = plan.spec;
        spec.automatic_failover = Some(auto);
        validate_plan(&spec, "ns", None)
            .into_iter()
            .map(|p| p.to_string())
            .collect()
    }

    fn health(name: &str, region: &str) -> HealthSignal {
        HealthSignal {
            name: name.into(),
            region: region.into(),
            route53_health_check: Some(Route53HealthCheckSignal {
                health_check_id: "hc".into(),
                checker_quorum: Some(2),
                max_age: None,
            }),
            ..Default::default()
        }
    }

    #[test]
    fn a_sound_spec_is_valid() {
        let auto = AutomaticFailoverSpec {
            interval: Some("5s".into()),
            consecutive: Some(2),
            quorum: Some(1),
            cooldown: Some("0s".into()),
            allow_data_loss: true,
            max_data_loss: Some("30s".into()),
            signals: vec![health("east", "use1"), health("west", "usw2")],
            ..Default::default()
        };
        assert_eq!(problems(auto), Vec::<String>::new());
    }

    #[test]
    fn every_field_is_bounded_and_named() {
        let auto = AutomaticFailoverSpec {
            interval: Some("2s".into()),
            consecutive: Some(0),
            quorum: Some(2),
            cooldown: Some("8d".into()),
            target_region: Some("mars".into()),
            mode: crate::api::AutomaticFailoverMode::Planned,
            allow_data_loss: true,
            max_data_loss: Some("soon".into()),
            signals: vec![
                HealthSignal {
                    name: "east".into(),
                    region: "use9".into(),
                    route53_health_check: Some(Route53HealthCheckSignal {
                        health_check_id: "".into(),
                        checker_quorum: Some(0),
                        max_age: Some("0s".into()),
                    }),
                    cloud_watch_alarm: Some(CloudWatchAlarmSignal {
                        alarm_name: "a".into(),
                        aws_region: None,
                    }),
                    ..Default::default()
                },
                HealthSignal {
                    name: "east".into(),
                    region: "use1".into(),
                    metric: Some(MetricSignal {
                        namespace: "".into(),
                        metric_name: "m".into(),
                        statistic: Some("Median".into()),
                        period: Some("45s".into()),
                        max_age: Some("9d".into()),
                        threshold: f64::INFINITY,
                        ..Default::default()
                    }),
                    ..Default::default()
                },
            ],
            ..Default::default()
        };
        let found = problems(auto);
        for field in [
            "spec.automaticFailover.interval: must be at least 5s",
            "spec.automaticFailover.consecutive: must be between 1 and 100",
            "spec.automaticFailover.cooldown: duration \"8d\" is longer",
            "spec.automaticFailover.targetRegion: unknown region \"mars\"",
            "spec.automaticFailover.allowDataLoss: only Unplanned",
            "spec.automaticFailover.maxDataLoss: invalid duration",
            "spec.automaticFailover.signals[0].region: unknown region \"use9\"",
            "spec.automaticFailover.signals[0]: set exactly one of",
            "spec.automaticFailover.signals[0].route53HealthCheck.healthCheckId: must not be empty",
            "spec.automaticFailover.signals[0].route53HealthCheck.checkerQuorum: must be between",
            "spec.automaticFailover.signals[0].route53HealthCheck.maxAge: timeout \"0s\"",
            "spec.automaticFailover.signals[1].metric.namespace: must not be empty",
            "spec.automaticFailover.signals[1].metric.statistic: \"Median\"",
            "spec.automaticFailover.signals[1].metric.period: must be 1s, 5s",
            "spec.automaticFailover.signals[1].metric.maxAge: duration \"9d\"",
            "spec.automaticFailover.signals[1].metric.threshold: must be a finite number",
            "spec.automaticFailover.signals[1].name: duplicate signal name",
            "spec.automaticFailover.quorum: 2 signals must be bad at once, but region use1",
        ] {
            assert!(
                found.iter().any(|p| p.starts_with(field)),
                "missing {field:?} in {found:#?}"
            );
        }
        assert!(
            problems(AutomaticFailoverSpec::default())
                .iter()
                .any(|p| p == "spec.automaticFailover.signals: needs at least one signal")
        );
    }
}
