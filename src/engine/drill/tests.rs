use super::*;
use k8s_openapi::jiff::tz::TimeZone;

fn at(s: &str) -> Timestamp {
    s.parse().expect("timestamp")
}

fn schedule(name: &str, cron: &str, kind: DrillKind) -> DrillSchedule {
    DrillSchedule {
        name: name.into(),
        cron: cron.into(),
        kind,
        window: Some("10m".into()),
        hold: Some("2m".into()),
        ..Default::default()
    }
}

fn spec(schedules: Vec<DrillSchedule>) -> DrillsSpec {
    DrillsSpec {
        schedules,
        history_limit: Some(2),
        ..Default::default()
    }
}

struct World {
    spec: DrillsSpec,
    status: DrillsStatus,
    now: Timestamp,
    ready: Result<(), String>,
    other: Option<String>,
    failovers: Vec<FailoverSeen>,
    active: &'static str,
}

impl World {
    fn new(spec: DrillsSpec, now: &str) -> Self {
        Self {
            spec,
            status: DrillsStatus {
                considered_until: Some(Time(at(now))),
                ..Default::default()
            },
            now: at(now),
            ready: Ok(()),
            other: None,
            failovers: Vec::new(),
            active: "use1",
        }
    }

    fn decide(&mut self) -> Output {
        let out = decide(&Input {
            plan: "shop",
            spec: &self.spec,
            status: &self.status,
            now: self.now,
            ready: self.ready.clone(),
            active: self.active,
            default_target: Some("usw2".into()),
            other_failover: self.other.clone(),
            failovers: &self.failovers,
        });
        self.status = out.status.clone();
        out
    }

    fn at(&mut self, now: &str) -> Output {
        self.now = at(now);
        self.decide()
    }

    fn seen(&mut self, name: &str, phase: FailoverPhase, rto: f64) {
        self.failovers.retain(|f| f.name != name);
        self.failovers.push(FailoverSeen {
            name: name.into(),
            phase: Some(phase),
            rto_seconds: Some(rto),
            data_loss_seconds: Some(0.0),
            ..Default::default()
        });
    }
}

#[test]
fn cron_fields_ranges_steps_lists_and_time_zones() {
    let utc = TimeZone::UTC;
    let every_monday_3am = Cron::parse("0 3 * * 1").expect("parses");
    // 2026-11-30 is a Monday.
    assert_eq!(
        every_monday_3am.latest(&utc, at("2026-11-30T02:00:00Z"), at("2026-11-30T03:00:30Z")),
        Some(at("2026-11-30T03:00:00Z"))
    );
    assert_eq!(
        every_monday_3am.latest(&utc, at("2026-11-30T03:00:00Z"), at("2026-11-30T04:00:00Z")),
        None,
        "the lower bound is exclusive"
    );
    let berlin = TimeZone::get("Europe/Berlin").expect("tz");
    // 03:00 in Berlin is 02:00 UTC in winter.
    assert_eq!(
        every_monday_3am.latest(
            &berlin,
            at("2026-11-30T01:00:00Z"),
            at("2026-11-30T02:30:00Z")
        ),
        Some(at("2026-11-30T02:00:00Z"))
    );
    let quarter =
        Cron::parse("*/15 9-17 * 1,6 mon-fri".replace("mon-fri", "1-5").as_str()).expect("parses");
    assert_eq!(
        quarter.latest(&utc, at("2026-06-01T09:00:00Z"), at("2026-06-01T09:44:00Z")),
        Some(at("2026-06-01T09:30:00Z"))
    );
    for bad in [
        "* * * *",
        "60 * * * *",
        "*/0 * * * *",
        "5-1 * * * *",
        "a * * * *",
    ] {
        assert!(Cron::parse(bad).is_err(), "{bad}");
    }
}

#[test]
fn a_dry_run_drill_fires_on_its_schedule_once_and_its_result_is_kept() {
    let mut w = World::new(
        spec(vec![schedule("hourly", "0 * * * *", DrillKind::DryRun)]),
        "2026-11-30T09:58:00Z",
    );
    let out = w.at("2026-11-30T09:59:00Z");
    assert!(out.create.is_none());
    let out = w.at("2026-11-30T10:00:20Z");
    let created = out.create.expect("drill Failover");
    assert_eq!(created.name, "shop-drill-hourly-202611301000");
    assert_eq!(
        (created.mode, created.target.as_str(), created.stage),
        (FailoverMode::DryRun, "usw2", "go")
    );
    assert!(w.status.running.as_ref().is_some_and(|r| !r.created));
    // A crash before creating it: the next decision creates the same one.
    let again = w.at("2026-11-30T10:00:30Z").create.expect("again");
    assert_eq!(again.name, created.name);
    w.seen(&created.name, FailoverPhase::Running, 0.0);
    assert!(w.at("2026-11-30T10:00:40Z").create.is_none());
    w.seen(&created.name, FailoverPhase::Succeeded, 0.4);
    let out = w.at("2026-11-30T10:00:50Z");
    assert!(out.create.is_none());
    assert!(w.status.running.is_none());
    assert_eq!(w.status.history[0].outcome, DrillOutcome::Succeeded);
    assert_eq!(w.status.history[0].rto_seconds, Some(0.4));
    assert_eq!(
        w.status.last_success,
        Some(Time(at("2026-11-30T10:00:50Z")))
    );
    // The same scheduled time never fires twice.
    assert!(w.at("2026-11-30T10:05:00Z").create.is_none());
}

#[test]
fn a_drill_is_skipped_while_another_failover_runs_or_the_plan_is_not_ready() {
    let mut w = World::new(
        spec(vec![schedule("hourly", "0 * * * *", DrillKind::DryRun)]),
        "2026-11-30T09:59:00Z",
    );
    w.other = Some("shop-to-usw2-x".into());
    let out = w.at("2026-11-30T10:00:10Z");
    assert!(out.create.is_none());
    assert_eq!(w.status.history[0].outcome, DrillOutcome::Skipped);
    assert!(
        w.status.history[0]
            .message
            .as_deref()
            .is_some_and(|m| m.contains("shop-to-usw2-x"))
    );
    assert!(
        out.notes
            .iter()
            .any(|(warning, reason, _)| *warning && *reason == "DrillSkipped")
    );
    w.other = None;
    w.ready = Err("orders in use1 Unprotected".into());
    w.at("2026-11-30T11:00:10Z");
    assert!(
        w.status.history[0]
            .message
            .as_deref()
            .is_some_and(|m| m.contains("not Ready"))
    );
    // History keeps the newest two.
    w.at("2026-11-30T12:00:10Z");
    assert_eq!(w.status.history.len(), 2);
    assert_eq!(
        w.status.history[0].scheduled_for,
        Time(at("2026-11-30T12:00:00Z"))
    );
}

#[test]
fn a_suspended_schedule_or_one_past_its_window_does_not_fire() {
    let mut suspended = schedule("hourly", "0 * * * *", DrillKind::DryRun);
    suspended.suspend = true;
    let mut w = World::new(spec(vec![suspended]), "2026-11-30T09:59:00Z");
    assert!(w.at("2026-11-30T10:00:10Z").create.is_none());
    // The operator was down from 09:59 to 10:20; the 10-minute window has passed.
    let mut w = World::new(
        spec(vec![schedule("hourly", "0 * * * *", DrillKind::DryRun)]),
        "2026-11-30T09:59:00Z",
    );
    assert!(w.at("2026-11-30T10:20:00Z").create.is_none());
}

#[test]
fn a_round_trip_whose_plan_another_failover_moved_during_the_hold_does_not_fail_back() {
    let mut w = World::new(
        spec(vec![schedule("weekly", "0 3 * * 1", DrillKind::RoundTrip)]),
        "2026-11-30T02:59:00Z",
    );
    let go = w.at("2026-11-30T03:00:05Z").create.expect("go");
    w.seen(&go.name, FailoverPhase::Succeeded, 5.2);
    w.active = "usw2";
    w.at("2026-11-30T03:00:15Z");
    assert_eq!(
        w.status.running.as_ref().map(|r| r.stage),
        Some(DrillStage::Holding)
    );
    // A real failover moved the plan to a third region during the hold.
    w.active = "euw1";
    assert!(w.at("2026-11-30T03:03:00Z").create.is_none());
    assert!(w.status.running.is_none());
    let result = &w.status.history[0];
    assert_eq!(result.outcome, DrillOutcome::Failed);
    assert!(
        result
            .message
            .as_deref()
            .is_some_and(|m| m.contains("changed to euw1 during the hold")),
        "{result:?}"
    );
}

#[test]
fn a_round_trip_fails_over_holds_and_fails_back_recording_both_rtos() {
    let mut w = World::new(
        spec(vec![schedule("weekly", "0 3 * * 1", DrillKind::RoundTrip)]),
        "2026-11-30T02:59:00Z",
    );
    let go = w.at("2026-11-30T03:00:05Z").create.expect("go");
    assert_eq!(go.mode, FailoverMode::Planned);
    w.seen(&go.name, FailoverPhase::Succeeded, 5.2);
    w.active = "usw2";
    let out = w.at("2026-11-30T03:00:15Z");
    assert!(out.create.is_none());
    assert_eq!(
        w.status.running.as_ref().map(|r| r.stage),
        Some(DrillStage::Holding)
    );
    // Held 2 minutes; then not Ready (standbys being re-protected): it waits.
    assert!(w.at("2026-11-30T03:01:00Z").create.is_none());
    w.ready = Err("orders in use1 Reprotecting".into());
    assert!(w.at("2026-11-30T03:02:30Z").create.is_none());
    w.ready = Ok(());
    let back = w.at("2026-11-30T03:03:00Z").create.expect("back");
    assert_eq!((back.target.as_str(), back.stage), ("use1", "back"));
    assert_eq!(back.name, "shop-drill-weekly-202611300300-back");
    w.seen(&back.name, FailoverPhase::Succeeded, 6.1);
    w.active = "use1";
    w.at("2026-11-30T03:03:10Z");
    let result = &w.status.history[0];
    assert_eq!(result.outcome, DrillOutcome::Succeeded);
    assert_eq!(
        (result.rto_seconds, result.rto_back_seconds),
        (Some(5.2), Some(6.1))
    );
    assert_eq!(result.failovers, vec![go.name, back.name]);
}

#[test]
fn a_failed_drill_names_its_failing_step() {
    let mut w = World::new(
        spec(vec![schedule("hourly", "0 * * * *", DrillKind::DryRun)]),
        "2026-11-30T09:59:00Z",
    );
    let go = w.at("2026-11-30T10:00:05Z").create.expect("go");
    w.failovers.push(FailoverSeen {
        name: go.name,
        phase: Some(FailoverPhase::Failed),
        failed_step: Some(("Preflight".into(), "image missing in usw2".into())),
        ..Default::default()
    });
    let out = w.at("2026-11-30T10:00:15Z");
    let result = &w.status.history[0];
    assert_eq!(result.outcome, DrillOutcome::Failed);
    assert_eq!(result.failing_step.as_deref(), Some("Preflight"));
    assert!(
        out.notes
            .iter()
            .any(|(warning, reason, _)| *warning && *reason == "DrillFailed")
    );
}

#[test]
fn overdue_counts_from_the_last_success_or_the_plan_creation() {
    let spec = DrillsSpec {
        required_interval: Some("7d".into()),
        ..Default::default()
    };
    let mut status = DrillsStatus::default();
    let created = Some(at("2026-11-01T00:00:00Z"));
    assert!(overdue(&spec, &status, created, at("2026-11-05T00:00:00Z")).is_none());
    assert!(overdue(&spec, &status, created, at("2026-11-09T00:00:00Z")).is_some());
    status.last_success = Some(Time(at("2026-11-08T00:00:00Z")));
    assert!(overdue(&spec, &status, created, at("2026-11-09T00:00:00Z")).is_none());
    assert!(
        overdue(
            &DrillsSpec::default(),
            &status,
            created,
            at("2027-01-01T00:00:00Z")
        )
        .is_none()
    );
}

#[test]
fn a_drill_started_by_hand_is_taken_up_and_recorded() {
    let mut w = World::new(spec(Vec::new()), "2026-11-30T09:59:00Z");
    w.failovers.push(FailoverSeen {
        name: "shop-drill-manual-202611301000".into(),
        phase: Some(FailoverPhase::Running),
        schedule: Some(MANUAL.into()),
        kind: Some(DrillKind::DryRun),
        target: "usw2".into(),
        ..Default::default()
    });
    let out = w.at("2026-11-30T10:00:10Z");
    assert!(out.create.is_none(), "it exists already");
    assert_eq!(
        w.status.running.as_ref().map(|r| r.schedule.as_str()),
        Some(MANUAL)
    );
    w.seen(
        "shop-drill-manual-202611301000",
        FailoverPhase::Succeeded,
        0.3,
    );
    w.at("2026-11-30T10:00:20Z");
    assert_eq!(w.status.history[0].outcome, DrillOutcome::Succeeded);
    // Recorded: not taken up again, even if it showed as running.
    w.failovers[0].phase = Some(FailoverPhase::Running);
    w.failovers[0].schedule = Some(MANUAL.into());
    w.at("2026-11-30T10:00:30Z");
    assert!(w.status.running.is_none());
}

#[test]
fn a_manual_drill_that_ended_before_the_plan_check_is_still_recorded() {
    let mut w = World::new(spec(Vec::new()), "2026-11-30T09:59:00Z");
    w.failovers.push(FailoverSeen {
        name: "shop-drill-manual-202611301000".into(),
        phase: Some(FailoverPhase::Succeeded),
        rto_seconds: Some(0.3),
        schedule: Some(MANUAL.into()),
        kind: Some(DrillKind::DryRun),
        target: "usw2".into(),
        created: Some(at("2026-11-30T10:00:00Z")),
        ..Default::default()
    });
    w.at("2026-11-30T10:00:05Z");
    w.at("2026-11-30T10:00:10Z");
    assert_eq!(w.status.history[0].schedule, MANUAL);
    assert_eq!(w.status.history[0].outcome, DrillOutcome::Succeeded);
    // An old one, long over and not in the history, is left alone.
    let mut w = World::new(spec(Vec::new()), "2026-11-30T11:00:00Z");
    w.failovers.push(FailoverSeen {
        name: "shop-drill-manual-202611300900".into(),
        phase: Some(FailoverPhase::Succeeded),
        schedule: Some(MANUAL.into()),
        created: Some(at("2026-11-30T09:00:00Z")),
        ..Default::default()
    });
    w.at("2026-11-30T11:00:05Z");
    assert!(w.status.running.is_none() && w.status.history.is_empty());
}

#[test]
fn a_manual_round_trip_holds_as_the_plan_says_and_returns_where_it_started() {
    // A suspended RoundTrip schedule gives manual round trips their hold.
    let mut weekly = schedule("weekly", "0 3 * * 1", DrillKind::RoundTrip);
    weekly.hold = Some("20s".into());
    weekly.suspend = true;
    let mut w = World::new(
        spec(vec![
            schedule("hourly", "0 * * * *", DrillKind::DryRun),
            weekly,
        ]),
        "2026-11-30T09:59:00Z",
    );
    // `drover drill` named it by its clock (09:59); the API server created it at 10:00:00,
    // and the way there had already moved the active region when the plan check saw it.
    let go = "shop-drill-manual-202611300959";
    w.failovers.push(FailoverSeen {
        name: go.into(),
        phase: Some(FailoverPhase::Succeeded),
        rto_seconds: Some(4.0),
        schedule: Some(MANUAL.into()),
        kind: Some(DrillKind::RoundTrip),
        stage: Some("go".into()),
        target: "usw2".into(),
        source: Some("use1".into()),
        created: Some(at("2026-11-30T10:00:00Z")),
        ..Default::default()
    });
    let out = decide(&Input {
        plan: "shop",
        spec: &w.spec,
        status: &w.status,
        now: at("2026-11-30T10:00:10Z"),
        ready: Ok(()),
        active: "usw2",
        default_target: Some("use1".into()),
        other_failover: None,
        failovers: &w.failovers,
    });
    w.status = out.status;
    let running = w.status.running.clone().expect("taken up");
    assert_eq!(
        (
            running.source_region.as_str(),
            running.target_region.as_str()
        ),
        ("use1", "usw2")
    );
    w.active = "usw2";
    let out = w.at("2026-11-30T10:00:15Z");
    let running = w.status.running.clone().expect("holding");
    assert_eq!(running.stage, DrillStage::Holding);
    assert_eq!(
        running.hold_until,
        Some(Time(at("2026-11-30T10:00:35Z"))),
        "the weekly schedule's 20s, not the default 5m"
    );
    assert_eq!(out.requeue, Some(Duration::from_secs(20)));
    assert!(w.at("2026-11-30T10:00:34Z").create.is_none());
    let back = w.at("2026-11-30T10:00:35Z").create.expect("back");
    assert_eq!(back.name, format!("{go}-back"), "named after the way there");
    assert_eq!((back.target.as_str(), back.stage), ("use1", "back"));
    // The way back is labelled "manual" too; it is never taken up as a drill of its own.
    w.failovers.push(FailoverSeen {
        name: back.name.clone(),
        phase: Some(FailoverPhase::Succeeded),
        rto_seconds: Some(5.0),
        schedule: Some(MANUAL.into()),
        kind: Some(DrillKind::RoundTrip),
        stage: Some("back".into()),
        target: "use1".into(),
        created: Some(at("2026-11-30T10:00:36Z")),
        ..Default::default()
    });
    w.active = "use1";
    w.at("2026-11-30T10:00:50Z");
    let result = w.status.history[0].clone();
    assert_eq!(
        (result.outcome, result.rto_seconds, result.rto_back_seconds),
        (DrillOutcome::Succeeded, Some(4.0), Some(5.0))
    );
    w.status.history.clear();
    w.at("2026-11-30T10:00:55Z");
    assert!(
        w.status
            .running
            .as_ref()
            .is_none_or(|r| r.failovers[0] != back.name),
        "{:?}",
        w.status.running
    );
}

#[test]
fn a_manual_round_trip_without_a_round_trip_schedule_holds_the_default() {
    let dry = spec(vec![schedule("hourly", "0 * * * *", DrillKind::DryRun)]);
    assert_eq!(hold_of(&dry, MANUAL), DEFAULT_HOLD);
    assert_eq!(hold_of(&dry, "hourly"), Duration::from_secs(120));
    assert_eq!(hold_of(&dry, "gone"), DEFAULT_HOLD);
}

#[test]
fn the_next_scheduled_minute_skips_days_and_hours_and_follows_the_time_zone() {
    let utc = TimeZone::UTC;
    let every_monday_3am = Cron::parse("0 3 * * 1").expect("parses");
    // 2026-11-30 is a Monday: at 03:00 exactly, the next is a week later.
    assert_eq!(
        every_monday_3am.next(&utc, at("2026-11-30T02:59:59Z")),
        Some(at("2026-11-30T03:00:00Z"))
    );
    assert_eq!(
        every_monday_3am.next(&utc, at("2026-11-30T03:00:00Z")),
        Some(at("2026-12-07T03:00:00Z"))
    );
    let berlin = TimeZone::get("Europe/Berlin").expect("tz");
    assert_eq!(
        every_monday_3am.next(&berlin, at("2026-11-30T03:00:00Z")),
        Some(at("2026-12-07T02:00:00Z")),
        "03:00 in Berlin is 02:00 UTC in winter"
    );
    // Summer time: 03:00 in Berlin is 01:00 UTC.
    assert_eq!(
        every_monday_3am.next(&berlin, at("2026-06-01T00:00:00Z")),
        Some(at("2026-06-01T01:00:00Z"))
    );
    let quarter = Cron::parse("*/15 9-17 * * 1-5").expect("parses");
    // Friday 17:50 → Monday 09:00.
    assert_eq!(
        quarter.next(&utc, at("2026-12-04T17:50:00Z")),
        Some(at("2026-12-07T09:00:00Z"))
    );
    let leap = Cron::parse("0 0 29 2 *").expect("parses");
    assert_eq!(
        leap.next(&utc, at("2026-11-30T00:00:00Z")),
        Some(at("2028-02-29T00:00:00Z"))
    );
    assert_eq!(
        Cron::parse("0 0 31 2 *")
            .expect("parses")
            .next(&utc, at("2026-11-30T00:00:00Z")),
        None
    );
    // The earliest schedule not suspended.
    let mut hourly = schedule("hourly", "0 * * * *", DrillKind::DryRun);
    let weekly = schedule("weekly", "0 3 * * 1", DrillKind::RoundTrip);
    let both = spec(vec![hourly.clone(), weekly.clone()]);
    let (s, t) = next_scheduled(&both, at("2026-11-30T02:10:00Z")).expect("next");
    assert_eq!((s.name.as_str(), t), ("hourly", at("2026-11-30T03:00:00Z")));
    hourly.suspend = true;
    let weekly_only = spec(vec![hourly.clone(), weekly]);
    let (s, _) = next_scheduled(&weekly_only, at("2026-11-30T02:10:00Z")).expect("next");
    assert_eq!(s.name, "weekly");
    assert!(next_scheduled(&spec(vec![hourly]), at("2026-11-30T02:10:00Z")).is_none());
}

#[test]
fn manual_drills_are_named_by_the_second_scheduled_ones_by_the_minute() {
    let t = at("2026-11-30T14:41:07Z");
    assert_eq!(
        failover_name("shop", MANUAL, t, "go"),
        "shop-drill-manual-20261130144107"
    );
    assert_ne!(
        failover_name("shop", MANUAL, t, "go"),
        failover_name("shop", MANUAL, at("2026-11-30T14:41:50Z"), "go"),
        "two manual drills in one minute"
    );
    assert_eq!(
        failover_name("shop", "weekly", t, "back"),
        "shop-drill-weekly-202611301441-back"
    );
}
