use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use super::*;
use crate::api::{
    AutomaticFailoverSpec, CloudWatchAlarmSignal, DisasterRecoveryPlan, MetricSignal, RegionRole,
    RegionSpec, Route53HealthCheckSignal,
};

const SAMPLE: &str = include_str!("../../../config/samples/plan.yaml");
const CHECKERS: [&str; 3] = ["us-east-1", "us-west-2", "eu-west-1"];

fn t(secs: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000 + secs)
}

fn health_signal(name: &str, region: &str, checker_quorum: u32) -> HealthSignal {
    HealthSignal {
        name: name.into(),
        region: region.into(),
        route53_health_check: Some(Route53HealthCheckSignal {
            health_check_id: format!("hc-{name}"),
            checker_quorum: Some(checker_quorum),
            max_age: None,
        }),
        ..Default::default()
    }
}

fn alarm_signal(name: &str, region: &str) -> HealthSignal {
    HealthSignal {
        name: name.into(),
        region: region.into(),
        cloud_watch_alarm: Some(CloudWatchAlarmSignal {
            alarm_name: format!("alarm-{name}"),
            aws_region: None,
        }),
        ..Default::default()
    }
}

/// The sample plan (use1 active, usw2), with `extra` regions and automatic failover.
fn spec_with(auto: AutomaticFailoverSpec, extra: &[&str]) -> DisasterRecoveryPlanSpec {
    let plan: DisasterRecoveryPlan = serde_yaml::from_str(SAMPLE).expect("sample parses");
    let mut spec = plan.spec;
    for name in extra {
        let mut r: RegionSpec = spec.regions[1].clone();
        r.name = name.to_string();
        r.aws_region = format!("aws-{name}");
        r.initial_role = RegionRole::Standby;
        spec.regions.push(r);
    }
    spec.automatic_failover = Some(auto);
    spec
}

fn auto(signals: Vec<HealthSignal>, consecutive: u32, quorum: u32) -> AutomaticFailoverSpec {
    AutomaticFailoverSpec {
        consecutive: Some(consecutive),
        quorum: Some(quorum),
        signals,
        ..Default::default()
    }
}

/// Checker reports at `at`: Failure from the regions in `failing`, Success elsewhere.
fn checkers(failing: &[&str], at: SystemTime) -> Observed {
    Ok(Reading::HealthCheck(
        CHECKERS
            .iter()
            .map(|r| CheckerObservation {
                region: r.to_string(),
                healthy: Some(!failing.contains(r)),
                checked_at: Some(at),
            })
            .collect(),
    ))
}

/// One evaluation's inputs that change between evaluations.
struct World {
    spec: DisasterRecoveryPlanSpec,
    status: Option<AutomaticFailoverStatus>,
    active: String,
    previous_active: Option<String>,
    failovers: Vec<FailoverSeen>,
    operator_paused: bool,
}

impl World {
    fn new(spec: DisasterRecoveryPlanSpec) -> Self {
        Self {
            spec,
            status: None,
            active: "use1".into(),
            previous_active: None,
            failovers: Vec::new(),
            operator_paused: false,
        }
    }

    /// Evaluates, keeps the status (its trigger taken as created), and returns the trigger.
    fn step(&mut self, now: SystemTime, observed: BTreeMap<String, Observed>) -> Option<Trigger> {
        let outcome = evaluate(&Evaluation {
            plan_name: "shop",
            spec: &self.spec,
            previous: self.status.as_ref(),
            active_region: &self.active,
            previous_active_region: self.previous_active.as_deref(),
            observed: &observed,
            failovers: &self.failovers,
            now,
            operator_paused: self.operator_paused,
        })
        .expect("automatic failover is on");
        self.status = Some(created(outcome.status));
        if let Some(trigger) = &outcome.trigger {
            self.failovers.push(FailoverSeen {
                name: trigger.failover.clone(),
                plan_ref: "shop".into(),
                phase: None,
            });
        }
        outcome.trigger
    }

    /// The last Failover ends; Succeeded moves the active region.
    fn finish(&mut self, phase: FailoverPhase, target: &str) {
        let last = self.failovers.last_mut().expect("a failover");
        last.phase = Some(phase);
        if phase == FailoverPhase::Succeeded {
            self.previous_active = Some(std::mem::replace(&mut self.active, target.into()));
        }
    }

    fn message(&self) -> String {
        self.status
            .as_ref()
            .and_then(|s| s.message.clone())
            .unwrap_or_default()
    }
}

fn one(name: &str, observed: Observed) -> BTreeMap<String, Observed> {
    BTreeMap::from([(name.to_string(), observed)])
}

#[test]
fn health_check_failing_from_two_of_three_checkers_with_quorum_two_triggers_once() {
    let spec = spec_with(auto(vec![health_signal("api", "use1", 2)], 2, 1), &[]);
    let mut w = World::new(spec);
    // One checker region failing is not enough for a checker quorum of 2.
    assert_eq!(
        w.step(t(0), one("api", checkers(&["us-east-1"], t(0)))),
        None
    );
    let s = w.status.clone().expect("status");
    assert_eq!(s.signals[0].state, SignalState::Healthy, "{s:?}");
    assert_eq!(s.signals[0].consecutive_bad, 0);

    let failing = ["us-east-1", "us-west-2"];
    assert_eq!(w.step(t(30), one("api", checkers(&failing, t(30)))), None);
    assert_eq!(
        w.status.as_ref().expect("status").signals[0].consecutive_bad,
        1
    );
    let trigger = w
        .step(t(60), one("api", checkers(&failing, t(60))))
        .expect("second bad evaluation triggers");
    assert_eq!(trigger.failover, "shop-auto-1");
    assert_eq!(trigger.target_region, "usw2");
    assert_eq!(trigger.source_region, "use1");
    assert_eq!(trigger.mode, FailoverMode::Unplanned);
    assert!(trigger.signals[0].contains("Failure from us-east-1, us-west-2"));
    let s = w.status.clone().expect("status");
    assert!(
        s.message
            .as_deref()
            .unwrap_or_default()
            .starts_with("Triggered")
    );
    assert_eq!(s.triggers, 1);

    // Still failing: the running failover, then the new active region, stop a second one.
    let mut triggers = 1;
    for i in 3..10 {
        if i == 5 {
            w.finish(FailoverPhase::Succeeded, "usw2");
        }
        if w.step(t(30 * i), one("api", checkers(&failing, t(30 * i))))
            .is_some()
        {
            triggers += 1;
        }
        if i == 3 {
            assert!(w.message().contains("shop-auto-1 of this plan is pending"));
        }
    }
    assert_eq!(triggers, 1);
    let s = w.status.expect("status");
    assert_eq!(s.signals[0].state, SignalState::NotEvaluated);
    assert!(s.message.unwrap_or_default().contains("no signal watches"));
}

#[test]
fn flapping_signal_never_triggers() {
    let spec = spec_with(auto(vec![alarm_signal("errors", "use1")], 3, 1), &[]);
    let mut w = World::new(spec);
    for i in 0..60 {
        let state = if i % 3 == 2 { "OK" } else { "ALARM" };
        let observed = one("errors", Ok(Reading::Alarm(Some(state.into()))));
        assert_eq!(w.step(t(30 * i), observed), None, "evaluation {i}");
        assert!(w.status.as_ref().expect("status").signals[0].consecutive_bad < 3);
    }
    assert!(w.message().contains("0 of 1 signals"), "{}", w.message());
}

#[test]
fn unknown_neither_counts_nor_resets() {
    let spec = spec_with(auto(vec![alarm_signal("errors", "use1")], 2, 1), &[]);
    let mut w = World::new(spec);
    let alarm = |s: &str| one("errors", Ok(Reading::Alarm(Some(s.into()))));
    assert_eq!(w.step(t(0), alarm("ALARM")), None);
    for i in 1..20 {
        // Unreadable, insufficient data, no such alarm: never a trigger on their own.
        let observed = match i % 3 {
            0 => one("errors", Err("Throttling: Rate exceeded".into())),
            1 => alarm("INSUFFICIENT_DATA"),
            _ => one("errors", Ok(Reading::Alarm(None))),
        };
        assert_eq!(w.step(t(30 * i), observed), None);
        let s = &w.status.as_ref().expect("status").signals[0];
        assert_eq!(s.state, SignalState::Unknown);
        assert_eq!(s.consecutive_bad, 1, "held, not reset");
    }
    assert!(w.step(t(600), alarm("ALARM")).is_some());
}

#[test]
fn a_second_outage_inside_the_cooldown_does_not_trigger() {
    let mut a = auto(
        vec![alarm_signal("east", "use1"), alarm_signal("west", "usw2")],
        1,
        1,
    );
    a.cooldown = Some("1h".into());
    let spec = spec_with(a, &["euw1"]);
    let mut w = World::new(spec);
    let bad = |name: &str| one(name, Ok(Reading::Alarm(Some("ALARM".into()))));
    let first = w.step(t(0), bad("east")).expect("first outage triggers");
    assert_eq!(first.target_region, "usw2");
    w.finish(FailoverPhase::Succeeded, "usw2");
    // usw2 fails 10 minutes later: euw1 would be next, but the cooldown holds it.
    for i in 0..100 {
        let now = t(600 + 30 * i);
        assert_eq!(w.step(now, bad("west")), None, "at {i}");
        assert!(w.message().contains("cooldown"), "{}", w.message());
    }
    let second = w
        .step(t(3600), bad("west"))
        .expect("after the cooldown it triggers");
    assert_eq!(second.target_region, "euw1");
    assert_eq!(second.failover, "shop-auto-2");
}

#[test]
fn a_paused_plan_never_triggers() {
    for operator in [false, true] {
        let mut a = auto(vec![alarm_signal("errors", "use1")], 1, 1);
        a.paused = !operator;
        let mut w = World::new(spec_with(a, &[]));
        w.operator_paused = operator;
        for i in 0..20 {
            let observed = one("errors", Ok(Reading::Alarm(Some("ALARM".into()))));
            assert_eq!(w.step(t(30 * i), observed), None);
            let s = w.status.clone().expect("status");
            assert!(s.paused);
            assert_eq!(s.signals[0].state, SignalState::Bad, "still read and shown");
            assert_eq!(s.signals[0].consecutive_bad, 0, "not counted while paused");
        }
        let why = if operator {
            "--pause-automatic-failover"
        } else {
            "spec.automaticFailover.paused"
        };
        assert!(w.message().contains(why), "{}", w.message());
        // Unpaused, it starts afresh: with N = 1 the next bad evaluation triggers.
        w.operator_paused = false;
        if let Some(a) = w.spec.automatic_failover.as_mut() {
            a.paused = false;
        }
        let observed = one("errors", Ok(Reading::Alarm(Some("ALARM".into()))));
        assert!(w.step(t(1000), observed).is_some());
    }
}

#[test]
fn never_fails_back_automatically() {
    let spec = spec_with(
        auto(
            vec![alarm_signal("east", "use1"), alarm_signal("west", "usw2")],
            1,
            1,
        ),
        &[],
    );
    let mut w = World::new(spec);
    if let Some(a) = w.spec.automatic_failover.as_mut() {
        a.cooldown = Some("0s".into());
    }
    let bad = |name: &str| one(name, Ok(Reading::Alarm(Some("ALARM".into()))));
    assert!(w.step(t(0), bad("east")).is_some());
    w.finish(FailoverPhase::Succeeded, "usw2");
    for i in 1..10 {
        assert_eq!(w.step(t(30 * i), bad("west")), None);
    }
    assert!(
        w.message().contains("never fails back automatically"),
        "{}",
        w.message()
    );
    // A named target that is the previous region is refused the same way.
    if let Some(a) = w.spec.automatic_failover.as_mut() {
        a.target_region = Some("use1".into());
    }
    assert_eq!(w.step(t(600), bad("west")), None);
    assert!(w.message().contains("never fails back"));
}

#[test]
fn quorum_of_signals_and_running_failovers() {
    let spec = spec_with(
        auto(
            vec![
                alarm_signal("a", "use1"),
                alarm_signal("b", "use1"),
                alarm_signal("c", "use1"),
            ],
            1,
            2,
        ),
        &[],
    );
    let mut w = World::new(spec);
    let states = |a: &str, b: &str| {
        BTreeMap::from([
            ("a".to_string(), Ok(Reading::Alarm(Some(a.into())))),
            ("b".to_string(), Ok(Reading::Alarm(Some(b.into())))),
            ("c".to_string(), Ok(Reading::Alarm(Some("OK".into())))),
        ])
    };
    assert_eq!(w.step(t(0), states("ALARM", "OK")), None);
    assert!(w.message().contains("1 of 3 signals"), "{}", w.message());
    // Another Failover of the plan awaiting approval blocks it.
    w.failovers.push(FailoverSeen {
        name: "manual".into(),
        plan_ref: "shop".into(),
        phase: Some(FailoverPhase::AwaitingApproval),
    });
    // And one of another plan does not.
    w.failovers.push(FailoverSeen {
        name: "other".into(),
        plan_ref: "billing".into(),
        phase: Some(FailoverPhase::Running),
    });
    assert_eq!(w.step(t(30), states("ALARM", "ALARM")), None);
    assert!(
        w.message()
            .contains("manual of this plan is awaiting approval")
    );
    w.failovers[0].phase = Some(FailoverPhase::Rejected);
    assert!(w.step(t(60), states("ALARM", "ALARM")).is_some());
}

#[test]
fn names_skip_automatic_failovers_that_exist() {
    let spec = spec_with(auto(vec![alarm_signal("a", "use1")], 1, 1), &[]);
    let mut w = World::new(spec);
    for name in ["shop-auto-4", "shop-auto-x", "shopping-auto-9", "shop-2"] {
        w.failovers.push(FailoverSeen {
            name: name.into(),
            plan_ref: "shop".into(),
            phase: Some(FailoverPhase::Succeeded),
        });
    }
    let trigger = w
        .step(t(0), one("a", Ok(Reading::Alarm(Some("ALARM".into())))))
        .expect("triggers");
    assert_eq!(trigger.failover, "shop-auto-5");
    assert_eq!(failover_name(&"p".repeat(300), 12).len(), 253);
    assert_eq!(failover_name("a.b.", 1), "a.b-auto-1");
}

#[test]
fn the_failover_is_labelled_and_annotated() {
    let trigger = Trigger {
        failover: "shop-auto-1".into(),
        source_region: "use1".into(),
        target_region: "usw2".into(),
        mode: FailoverMode::Unplanned,
        allow_data_loss: true,
        max_data_loss: Some("30s".into()),
        signals: vec!["api (2 bad in a row: Failure from us-east-1, us-west-2)".into()],
    };
    let fo = failover_object("shop", "ns", &trigger);
    let labels = fo.metadata.labels.clone().unwrap_or_default();
    assert_eq!(
        labels.get("drover.io/trigger").map(String::as_str),
        Some("automatic")
    );
    assert_eq!(labels.get(PLAN_LABEL).map(String::as_str), Some("shop"));
    let annotations = fo.metadata.annotations.clone().unwrap_or_default();
    assert!(annotations[SIGNALS_ANNOTATION].contains("Failure from us-east-1"));
    assert_eq!(fo.spec.plan_ref, "shop");
    assert_eq!(fo.spec.target_region, "usw2");
    assert!(fo.spec.allow_data_loss);
    assert_eq!(fo.spec.max_data_loss.as_deref(), Some("30s"));
    assert!(
        crate::validate::validate_failover(&fo.spec, &spec_with(Default::default(), &[]))
            .is_empty()
    );
}

#[test]
fn stale_or_inconclusive_readings_are_unknown() {
    let hc = health_signal("api", "use1", 2);
    let now = t(1000);
    // Reports older than the default 2m do not count.
    let (state, message) = judge(&hc, &checkers(&CHECKERS, t(700)), now);
    assert_eq!(state, SignalState::Unknown, "{message}");
    // One failing, one stale, one healthy: the quorum of 2 is neither reached nor ruled out.
    let mixed = Ok(Reading::HealthCheck(vec![
        CheckerObservation {
            region: "us-east-1".into(),
            healthy: Some(false),
            checked_at: Some(now),
        },
        CheckerObservation {
            region: "us-west-2".into(),
            healthy: Some(false),
            checked_at: Some(t(0)),
        },
        CheckerObservation {
            region: "eu-west-1".into(),
            healthy: Some(true),
            checked_at: Some(now),
        },
    ]));
    assert_eq!(judge(&hc, &mixed, now).0, SignalState::Unknown);
    assert_eq!(
        judge(&hc, &Ok(Reading::HealthCheck(vec![])), now).0,
        SignalState::Unknown
    );

    let metric = HealthSignal {
        name: "5xx".into(),
        region: "use1".into(),
        metric: Some(MetricSignal {
            namespace: "AWS/ApplicationELB".into(),
            metric_name: "HTTPCode_ELB_5XX_Count".into(),
            comparison: crate::api::MetricComparison::GreaterThanThreshold,
            threshold: 100.0,
            ..Default::default()
        }),
        ..Default::default()
    };
    let point =
        |value: f64, at: SystemTime| Ok(Reading::Metric(Some(MetricDatapoint { value, at })));
    assert_eq!(
        judge(&metric, &Ok(Reading::Metric(None)), now).0,
        SignalState::Unknown
    );
    assert_eq!(
        judge(&metric, &point(500.0, t(0)), now).0,
        SignalState::Unknown
    );
    assert_eq!(
        judge(&metric, &point(f64::NAN, now), now).0,
        SignalState::Unknown
    );
    assert_eq!(judge(&metric, &point(500.0, now), now).0, SignalState::Bad);
    assert_eq!(
        judge(&metric, &point(100.0, now), now).0,
        SignalState::Healthy
    );
}

#[test]
fn evaluations_are_due_once_per_interval() {
    let mut a = auto(vec![alarm_signal("a", "use1")], 1, 1);
    a.interval = Some("10s".into());
    assert_eq!(due_in(&a, None, t(0)), None);
    let status = AutomaticFailoverStatus {
        last_evaluation_time: Some(time(t(100))),
        ..Default::default()
    };
    assert_eq!(
        due_in(&a, Some(&status), t(101)),
        Some(Duration::from_secs(8))
    );
    assert_eq!(due_in(&a, Some(&status), t(109)), None);
    // Below the minimum, the interval is 5s.
    a.interval = Some("1s".into());
    assert_eq!(
        due_in(&a, Some(&status), t(101)),
        Some(Duration::from_millis(3500))
    );
}

/// What the harness injected for one signal at one evaluation.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Truth {
    Bad,
    Good,
    Unknown,
}

/// Seeded random signal sequences, region changes, pauses and Failover lifecycles. At
/// every trigger: not paused; at least `quorum` signals of the active region had their
/// last `consecutive` known evaluations bad (since the region became active, and since the
/// last pause); no trigger within the cooldown of the previous one; the target is neither
/// active nor the region active before the last failover; no other Failover of the plan
/// was unfinished.
#[test]
fn random_signal_sequences_keep_the_anti_flap_rules() {
    let schedules: u64 = std::env::var("DROVER_AUTO_SCHEDULES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3000);
    let mut total_triggers = 0;
    for seed in 0..schedules {
        total_triggers += random_schedule(seed);
    }
    // The rules must not make it inert: a fair share of schedules fail over.
    assert!(
        total_triggers > schedules as usize / 4,
        "{total_triggers} triggers"
    );
}

fn random_schedule(seed: u64) -> usize {
    let mut rng = fastrand::Rng::with_seed(seed);
    let regions = ["use1", "usw2", "euw1"];
    let region_count = rng.usize(2..=3);
    let mut signals = Vec::new();
    for region in &regions[..region_count] {
        for i in 0..rng.usize(1..=3) {
            let name = format!("{region}-{i}");
            signals.push(if rng.bool() {
                alarm_signal(&name, region)
            } else {
                health_signal(&name, region, rng.u32(1..=3))
            });
        }
    }
    let consecutive = rng.u32(1..=4);
    let max_quorum = regions[..region_count]
        .iter()
        .map(|r| signals.iter().filter(|s| s.region == *r).count())
        .min()
        .unwrap_or(1) as u32;
    let quorum = rng.u32(1..=max_quorum);
    let interval = 30;
    let cooldown = rng.u64(0..=20) * interval;
    let mut a = auto(signals.clone(), consecutive, quorum);
    a.cooldown = Some(format!("{cooldown}s"));
    if rng.u8(..4) == 0 {
        a.target_region = Some(regions[rng.usize(..region_count)].into());
    }
    let spec = spec_with(a, &regions[2..region_count]);
    let mut w = World::new(spec);
    let bad_rate = rng.f64();
    let unknown_rate = rng.f64() * 0.5;
    // Per signal: the truths since its last reset (region change, pause).
    let mut history: BTreeMap<String, Vec<Truth>> = BTreeMap::new();
    let mut last_trigger: Option<u64> = None;
    let mut triggers = 0;
    let mut running: Option<(usize, String)> = None; // evaluations left, target
    let mut now = 0u64;
    let context = |seed: u64| format!("seed {seed}");
    for _ in 0..rng.usize(20..120) {
        now += interval + rng.u64(0..5);
        // Pause switches flip now and then.
        if rng.u8(..20) == 0
            && let Some(a) = w.spec.automatic_failover.as_mut()
        {
            a.paused = !a.paused;
        }
        if rng.u8(..25) == 0 {
            w.operator_paused = !w.operator_paused;
        }
        // A manual failover now and then, when none runs.
        if running.is_none() && rng.u8(..40) == 0 {
            let to = regions[rng.usize(..region_count)];
            if to != w.active {
                w.previous_active = Some(std::mem::replace(&mut w.active, to.into()));
            }
        }
        let paused =
            w.operator_paused || w.spec.automatic_failover.as_ref().is_some_and(|a| a.paused);
        let mut observed = BTreeMap::new();
        for s in &signals {
            if s.region != w.active {
                history.remove(&s.name);
                continue;
            }
            let roll = rng.f64();
            let truth = if roll < unknown_rate {
                Truth::Unknown
            } else if rng.f64() < bad_rate {
                Truth::Bad
            } else {
                Truth::Good
            };
            let at = t(now);
            let reading: Observed = match (truth, s.route53_health_check.is_some()) {
                (Truth::Unknown, _) if rng.bool() => Err("Throttling".into()),
                (Truth::Unknown, true) => checkers(&CHECKERS, at - Duration::from_secs(3600)),
                (Truth::Unknown, false) => Ok(Reading::Alarm(Some("INSUFFICIENT_DATA".into()))),
                (Truth::Bad, true) => checkers(&CHECKERS, at),
                (Truth::Good, true) => checkers(&[], at),
                (Truth::Bad, false) => Ok(Reading::Alarm(Some("ALARM".into()))),
                (Truth::Good, false) => Ok(Reading::Alarm(Some("OK".into()))),
            };
            // A signal not read this time is Unknown as well.
            if rng.u8(..30) != 0 {
                observed.insert(s.name.clone(), reading);
            }
            let entry = history.entry(s.name.clone()).or_default();
            if paused {
                entry.clear();
            } else if observed.contains_key(&s.name) {
                entry.push(truth);
            }
        }
        let active_before = w.active.clone();
        let previous_before = w.previous_active.clone();
        let busy_before = w
            .failovers
            .iter()
            .any(|f| !f.phase.is_some_and(FailoverPhase::is_terminal));
        if let Some(trigger) = w.step(t(now), observed) {
            triggers += 1;
            assert!(!paused, "{}: triggered while paused", context(seed));
            assert!(
                !busy_before,
                "{}: triggered while a failover ran",
                context(seed)
            );
            if let Some(last) = last_trigger {
                assert!(
                    now - last >= cooldown,
                    "{}: triggers {}s apart, cooldown {cooldown}s",
                    context(seed),
                    now - last
                );
            }
            assert_ne!(trigger.target_region, active_before, "{}", context(seed));
            assert_ne!(
                Some(trigger.target_region.clone()),
                previous_before,
                "{}: automatic failback",
                context(seed)
            );
            let counting = signals
                .iter()
                .filter(|s| s.region == active_before)
                .filter(|s| {
                    let known: Vec<Truth> = history
                        .get(&s.name)
                        .map(|h| h.iter().copied().filter(|t| *t != Truth::Unknown).collect())
                        .unwrap_or_default();
                    known.len() >= consecutive as usize
                        && known[known.len() - consecutive as usize..]
                            .iter()
                            .all(|t| *t == Truth::Bad)
                })
                .count();
            assert!(
                counting >= quorum as usize,
                "{}: {counting} signals with {consecutive} bad in a row, quorum {quorum}",
                context(seed)
            );
            last_trigger = Some(now);
            running = Some((rng.usize(0..4), trigger.target_region.clone()));
        } else if let Some((left, target)) = running.take() {
            if left == 0 {
                let phase = match rng.u8(..4) {
                    0 => FailoverPhase::Failed,
                    1 => FailoverPhase::Rejected,
                    _ => FailoverPhase::Succeeded,
                };
                w.finish(phase, &target);
            } else {
                running = Some((left - 1, target));
            }
        }
    }
    triggers
}
