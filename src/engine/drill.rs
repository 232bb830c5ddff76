//! Drills on a schedule, as pure decisions: (spec, status, what the plan and its drill
//! Failovers show, now) → (new status, the Failover to create, when to look again).
//!
//! A drill is ordinary Failovers, labelled as drills and owned by the plan. The drill's
//! next Failover is recorded in status before it is created, so a crash between the two
//! creates it once (an existing one counts as created).

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::{Timestamp, ToSpan};

use crate::api::{
    DrillKind, DrillOutcome, DrillResult, DrillSchedule, DrillStage, DrillsSpec, DrillsStatus,
    FailoverMode, FailoverPhase, RunningDrill,
};

/// The label that names a drill Failover's schedule ("manual" for `drover drill`).
pub const SCHEDULE_LABEL: &str = "drover.io/drill-schedule";
/// The label that says which way a drill Failover goes: "go" or "back".
pub const STAGE_LABEL: &str = "drover.io/drill-stage";

pub const DEFAULT_HISTORY: u32 = 10;
pub const DEFAULT_HOLD: Duration = Duration::from_secs(300);
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(3600);
pub const MAX_WINDOW: Duration = Duration::from_secs(24 * 3600);
/// How long a round trip waits, after its hold, for the plan to be Ready (its standbys
/// protected) before it gives up on the way back.
pub const READY_FOR_FAILBACK: Duration = Duration::from_secs(1800);

// ---- Cron ---------------------------------------------------------------------------------

/// A parsed five-field cron expression.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cron {
    minutes: Vec<bool>,
    hours: Vec<bool>,
    days: Vec<bool>,
    months: Vec<bool>,
    weekdays: Vec<bool>,
    /// Day-of-month and day-of-week both restricted: either matching is enough (as cron).
    either_day: bool,
}

fn field(text: &str, min: u32, max: u32, what: &str) -> Result<(Vec<bool>, bool), String> {
    let mut set = vec![false; (max + 1) as usize];
    let restricted = text != "*";
    for part in text.split(',') {
        let (range, step) = match part.split_once('/') {
            Some((r, s)) => (
                r,
                s.parse::<u32>()
                    .ok()
                    .filter(|s| *s > 0)
                    .ok_or_else(|| format!("{what}: bad step {s:?}"))?,
            ),
            None => (part, 1),
        };
        let number = |v: &str| {
            v.parse::<u32>()
                .ok()
                .filter(|n| (min..=max).contains(n))
                .ok_or_else(|| format!("{what}: {v:?} is not a number from {min} to {max}"))
        };
        let (from, to) = match range {
            "*" => (min, max),
            r => match r.split_once('-') {
                Some((a, b)) => (number(a)?, number(b)?),
                None if part.contains('/') => (number(r)?, max),
                None => {
                    let n = number(r)?;
                    (n, n)
                }
            },
        };
        if from > to {
            return Err(format!("{what}: range {range:?} runs backwards"));
        }
        for v in (from..=to).step_by(step as usize) {
            set[v as usize] = true;
        }
    }
    Ok((set, restricted))
}

impl Cron {
    pub fn parse(expr: &str) -> Result<Self, String> {
        let parts: Vec<&str> = expr.split_whitespace().collect();
        if parts.len() != 5 {
            return Err(format!(
                "{expr:?} has {} fields; want 5 (minute hour day-of-month month day-of-week)",
                parts.len()
            ));
        }
        let (minutes, _) = field(parts[0], 0, 59, "minute")?;
        let (hours, _) = field(parts[1], 0, 23, "hour")?;
        let (days, days_restricted) = field(parts[2], 1, 31, "day of month")?;
        let (months, _) = field(parts[3], 1, 12, "month")?;
        let (mut weekdays, weekdays_restricted) = field(parts[4], 0, 7, "day of week")?;
        // 7 is Sunday too.
        if weekdays[7] {
            weekdays[0] = true;
        }
        Ok(Self {
            minutes,
            hours,
            days,
            months,
            weekdays,
            either_day: days_restricted && weekdays_restricted,
        })
    }

    fn matches(&self, minute: i8, hour: i8, day: i8, month: i8, weekday_from_sunday: i8) -> bool {
        let at = |set: &[bool], v: i8| set.get(v.max(0) as usize).copied().unwrap_or(false);
        let day_ok = if self.either_day {
            at(&self.days, day) || at(&self.weekdays, weekday_from_sunday)
        } else {
            at(&self.days, day) && at(&self.weekdays, weekday_from_sunday)
        };
        at(&self.minutes, minute) && at(&self.hours, hour) && at(&self.months, month) && day_ok
    }

    /// The earliest scheduled minute after `after`, in time zone `tz`, within 5 years
    /// (time enough for a 29 February). Skips whole days and hours that cannot match.
    pub fn next(
        &self,
        tz: &k8s_openapi::jiff::tz::TimeZone,
        after: Timestamp,
    ) -> Option<Timestamp> {
        let limit = after.checked_add((5 * 366 * 24).hours()).ok()?;
        let mut t = Timestamp::from_second(after.as_second() - after.as_second().rem_euclid(60))
            .ok()?
            .checked_add(60.seconds())
            .ok()?;
        while t <= limit {
            let z = t.to_zoned(tz.clone());
            let at = |set: &[bool], v: i8| set.get(v.max(0) as usize).copied().unwrap_or(false);
            let day = at(&self.days, z.day());
            let weekday = at(&self.weekdays, z.weekday().to_sunday_zero_offset());
            let day_ok = if self.either_day {
                day || weekday
            } else {
                day && weekday
            };
            t = if !day_ok || !at(&self.months, z.month()) {
                // The next day's first minute (midnight, or later on a DST gap).
                z.date()
                    .tomorrow()
                    .ok()?
                    .to_zoned(tz.clone())
                    .ok()?
                    .timestamp()
            } else if !at(&self.hours, z.hour()) {
                t.checked_add((60 - i64::from(z.minute())).minutes()).ok()?
            } else if !at(&self.minutes, z.minute()) {
                t.checked_add(60.seconds()).ok()?
            } else {
                return Some(t);
            };
        }
        None
    }

    /// The latest scheduled minute in (after, until], in time zone `tz`. Looks back at most
    /// `MAX_WINDOW`.
    pub fn latest(
        &self,
        tz: &k8s_openapi::jiff::tz::TimeZone,
        after: Timestamp,
        until: Timestamp,
    ) -> Option<Timestamp> {
        let floor = after.max(
            until
                .checked_sub((MAX_WINDOW.as_secs() as i64).seconds())
                .ok()?,
        );
        let mut t =
            Timestamp::from_second(until.as_second() - until.as_second().rem_euclid(60)).ok()?;
        while t > floor {
            let z = t.to_zoned(tz.clone());
            if self.matches(
                z.minute(),
                z.hour(),
                z.day(),
                z.month(),
                z.weekday().to_sunday_zero_offset(),
            ) {
                return Some(t);
            }
            t = t.checked_sub(60.seconds()).ok()?;
        }
        None
    }
}

// ---- Decisions ----------------------------------------------------------------------------

/// A drill Failover of the plan, as observed.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FailoverSeen {
    pub name: String,
    pub phase: Option<FailoverPhase>,
    pub rto_seconds: Option<f64>,
    /// Its user-visible recovery time, by the plan's probes.
    pub user_visible_seconds: Option<f64>,
    /// A successful one still polls its probes for the target's answer.
    pub probes_pending: bool,
    pub data_loss_seconds: Option<f64>,
    /// The failed step and its message, when one failed.
    pub failed_step: Option<(String, String)>,
    /// The `drover.io/drill-schedule` label.
    pub schedule: Option<String>,
    /// The `drover.io/drill-kind` annotation (`drover drill` sets it).
    pub kind: Option<DrillKind>,
    /// The `drover.io/drill-stage` label: "go" or "back".
    pub stage: Option<String>,
    pub target: String,
    /// The region that was active when it started (its `status.sourceRegion`).
    pub source: Option<String>,
    pub created: Option<Timestamp>,
}

/// Everything one drill decision depends on.
pub struct Input<'a> {
    pub plan: &'a str,
    pub spec: &'a DrillsSpec,
    pub status: &'a DrillsStatus,
    pub now: Timestamp,
    /// Err(why) when the plan is not Ready.
    pub ready: Result<(), String>,
    pub active: &'a str,
    /// The region a drill goes to when its schedule names none.
    pub default_target: Option<String>,
    /// A Failover of the plan that is not over and not this drill's.
    pub other_failover: Option<String>,
    /// The plan's drill Failovers.
    pub failovers: &'a [FailoverSeen],
}

/// A Failover to create.
#[derive(Clone, Debug, PartialEq)]
pub struct NewFailover {
    pub name: String,
    pub target: String,
    pub mode: FailoverMode,
    pub schedule: String,
    /// "go" or "back".
    pub stage: &'static str,
}

/// The outcome of one drill decision.
#[derive(Clone, Debug, PartialEq)]
pub struct Output {
    pub status: DrillsStatus,
    pub create: Option<NewFailover>,
    /// When to look again, at the latest.
    pub requeue: Option<Duration>,
    /// Events: (warning, reason, message).
    pub notes: Vec<(bool, &'static str, String)>,
}

fn parse(value: Option<&str>, default: Duration) -> Duration {
    value
        .and_then(|v| crate::validate::parse_duration(v).ok())
        .unwrap_or(default)
}

fn time(t: Timestamp) -> Time {
    Time(t)
}

fn secs(d: Duration) -> k8s_openapi::jiff::Span {
    (d.as_secs() as i64).seconds()
}

/// A drill Failover's name: the plan, the schedule and the minute, so one scheduled time
/// has one name (`-back` for the way back). A manual drill's has the second: two may be
/// started by hand within a minute, one after the other.
pub fn failover_name(plan: &str, schedule: &str, at: Timestamp, stage: &str) -> String {
    let format = if schedule == MANUAL {
        "%Y%m%d%H%M%S"
    } else {
        "%Y%m%d%H%M"
    };
    let stamp = at.strftime(format).to_string();
    let name = format!("{plan}-drill-{schedule}-{stamp}");
    if stage == "back" {
        back_name(&name)
    } else {
        // Object names are at most 253 characters; plan and schedule names are bounded
        // far below that by validation.
        name.chars().take(253).collect()
    }
}

/// The way back's name: the way there's, "-back". Derived from the name and not from a
/// time, so `drover drill` (which names the way there by its own clock) knows it.
pub fn back_name(go: &str) -> String {
    format!("{go}-back").chars().take(253).collect()
}

/// How long a round trip of `schedule` holds in the target region. A manual drill holds as
/// the plan's first RoundTrip schedule says (`drover drill` documents this), else 5m.
pub fn hold_of(spec: &DrillsSpec, schedule: &str) -> Duration {
    spec.schedules
        .iter()
        .find(|s| {
            if schedule == MANUAL {
                s.kind == DrillKind::RoundTrip
            } else {
                s.name == schedule
            }
        })
        .map(|s| parse(s.hold.as_deref(), DEFAULT_HOLD))
        .unwrap_or(DEFAULT_HOLD)
}

pub fn decide(input: &Input) -> Output {
    let mut out = Output {
        status: input.status.clone(),
        create: None,
        requeue: None,
        notes: Vec::new(),
    };
    match input.status.running.clone() {
        Some(running) => step(input, running, &mut out),
        None => start(input, &mut out),
    }
    let limit = input
        .spec
        .history_limit
        .unwrap_or(DEFAULT_HISTORY)
        .clamp(1, 100) as usize;
    out.status.history.truncate(limit);
    out
}

fn wait(out: &mut Output, d: Duration) {
    out.requeue = Some(out.requeue.map_or(d, |r| r.min(d)));
}

/// The schedule name of drills `drover drill` starts.
pub const MANUAL: &str = "manual";
/// A manual drill that ended within this is still taken up (and recorded).
const RECENT_MANUAL: Duration = Duration::from_secs(600);

/// A drill Failover `drover drill` created that no drill has taken up yet.
fn manual_drill<'a>(input: &'a Input) -> Option<&'a FailoverSeen> {
    let known = |name: &str| {
        input
            .status
            .history
            .iter()
            .any(|h| h.failovers.iter().any(|f| f == name))
    };
    // A DryRun may end before the next plan check: a recent one is taken up even if over
    // (older ones that left the history were deleted with it).
    let recent = |f: &FailoverSeen| {
        f.created
            .is_some_and(|c| input.now.as_second() - c.as_second() < RECENT_MANUAL.as_secs() as i64)
    };
    input.failovers.iter().find(|f| {
        f.schedule.as_deref() == Some(MANUAL)
            // A way back is part of the drill that went; never a drill of its own.
            && f.stage.as_deref() != Some("back")
            && (!f.phase.is_some_and(FailoverPhase::is_terminal) || recent(f))
            && !known(&f.name)
    })
}

fn start(input: &Input, out: &mut Output) {
    if let Some(f) = manual_drill(input) {
        let now = time(input.now);
        out.status.running = Some(RunningDrill {
            schedule: MANUAL.into(),
            kind: f.kind.unwrap_or_default(),
            scheduled_for: f.created.map(time).unwrap_or_else(|| now.clone()),
            started_at: now,
            stage: DrillStage::Going,
            // Taken up after its way there moved the active region, the drill still
            // returns to where it started.
            source_region: f.source.clone().unwrap_or_else(|| input.active.to_string()),
            target_region: f.target.clone(),
            failover: f.name.clone(),
            created: true,
            failovers: vec![f.name.clone()],
            hold_until: None,
            rto_seconds: None,
            user_visible_seconds: None,
            data_loss_seconds: None,
        });
        wait(out, Duration::from_secs(5));
        return;
    }
    let after = input
        .status
        .considered_until
        .as_ref()
        .map(|t| t.0)
        .unwrap_or(input.now);
    let mut due: Option<(&DrillSchedule, Timestamp)> = None;
    for s in input.spec.schedules.iter().filter(|s| !s.suspend) {
        let (Ok(cron), Ok(tz)) = (
            Cron::parse(&s.cron),
            k8s_openapi::jiff::tz::TimeZone::get(s.time_zone.as_deref().unwrap_or("UTC")),
        ) else {
            continue; // validation reports it
        };
        let window = parse(s.window.as_deref(), DEFAULT_WINDOW).min(MAX_WINDOW);
        let from = after.max(input.now.checked_sub(secs(window)).unwrap_or(after));
        if let Some(at) = cron
            .latest(&tz, from, input.now)
            .filter(|at| due.is_none_or(|(_, t)| *at > t))
        {
            due = Some((s, at));
        }
    }
    out.status.considered_until = Some(time(input.now));
    // Look again at the next minute: cron has minutes.
    wait(
        out,
        Duration::from_secs(60 - (input.now.as_second().rem_euclid(60)) as u64),
    );
    let Some((schedule, at)) = due else {
        return;
    };
    let skipped = |why: String| DrillResult {
        schedule: schedule.name.clone(),
        kind: schedule.kind,
        scheduled_for: time(at),
        started_at: None,
        finished_at: time(input.now),
        outcome: DrillOutcome::Skipped,
        rto_seconds: None,
        rto_back_seconds: None,
        user_visible_seconds: None,
        user_visible_back_seconds: None,
        data_loss_seconds: None,
        failing_step: None,
        message: Some(why),
        failovers: Vec::new(),
    };
    let target = schedule
        .target_region
        .clone()
        .or_else(|| input.default_target.clone());
    let why_not = match (&input.other_failover, &input.ready, &target) {
        (Some(other), _, _) => Some(format!("failover {other} of the plan is under way")),
        (_, Err(why), _) => Some(format!("the plan is not Ready: {why}")),
        (_, _, None) => Some("no region to fail over to".to_string()),
        (_, _, Some(t)) if t == input.active => Some(format!("{t} is already active")),
        _ => None,
    };
    if let Some(why) = why_not {
        let message = format!("drill {} at {at} skipped: {why}", schedule.name);
        out.notes.push((true, "DrillSkipped", message));
        out.status.history.insert(0, skipped(why));
        return;
    }
    let target = target.unwrap_or_default();
    let name = failover_name(input.plan, &schedule.name, at, "go");
    out.status.running = Some(RunningDrill {
        schedule: schedule.name.clone(),
        kind: schedule.kind,
        scheduled_for: time(at),
        started_at: time(input.now),
        stage: DrillStage::Going,
        source_region: input.active.to_string(),
        target_region: target.clone(),
        failover: name.clone(),
        created: false,
        failovers: vec![name.clone()],
        hold_until: None,
        rto_seconds: None,
        user_visible_seconds: None,
        data_loss_seconds: None,
    });
    out.notes.push((
        false,
        "DrillStarted",
        format!(
            "{:?} drill {} for {at}: {name}",
            schedule.kind, schedule.name
        ),
    ));
    out.create = Some(NewFailover {
        name,
        target,
        mode: mode_of(schedule.kind),
        schedule: schedule.name.clone(),
        stage: "go",
    });
}

/// The Failover mode of a drill's way there.
pub fn mode_of(kind: DrillKind) -> FailoverMode {
    match kind {
        DrillKind::DryRun => FailoverMode::DryRun,
        DrillKind::RoundTrip => FailoverMode::Planned,
    }
}

fn finish(
    out: &mut Output,
    r: &RunningDrill,
    outcome: DrillOutcome,
    last: Option<&FailoverSeen>,
    now: Timestamp,
    message: Option<String>,
) {
    let back = r.stage == DrillStage::Returning;
    let (rto, rto_back) = if back {
        (r.rto_seconds, last.and_then(|f| f.rto_seconds))
    } else {
        (last.and_then(|f| f.rto_seconds), None)
    };
    let (users, users_back) = if back {
        (
            r.user_visible_seconds,
            last.and_then(|f| f.user_visible_seconds),
        )
    } else {
        (last.and_then(|f| f.user_visible_seconds), None)
    };
    let data_loss = [r.data_loss_seconds, last.and_then(|f| f.data_loss_seconds)]
        .into_iter()
        .flatten()
        .reduce(f64::max);
    out.status.history.insert(
        0,
        DrillResult {
            schedule: r.schedule.clone(),
            kind: r.kind,
            scheduled_for: r.scheduled_for.clone(),
            started_at: Some(r.started_at.clone()),
            finished_at: time(now),
            outcome,
            rto_seconds: rto,
            rto_back_seconds: rto_back,
            user_visible_seconds: users,
            user_visible_back_seconds: users_back,
            data_loss_seconds: data_loss,
            failing_step: last.and_then(|f| f.failed_step.as_ref().map(|(s, _)| s.clone())),
            message: message.clone(),
            failovers: r.failovers.clone(),
        },
    );
    if outcome == DrillOutcome::Succeeded {
        out.status.last_success = Some(time(now));
    }
    out.status.running = None;
    out.notes.push((
        outcome != DrillOutcome::Succeeded,
        if outcome == DrillOutcome::Succeeded {
            "DrillSucceeded"
        } else {
            "DrillFailed"
        },
        format!(
            "{:?} drill {} {outcome:?}{}",
            r.kind,
            r.schedule,
            message.map(|m| format!(": {m}")).unwrap_or_default()
        ),
    ));
}

fn step(input: &Input, mut r: RunningDrill, out: &mut Output) {
    let seen = input.failovers.iter().find(|f| f.name == r.failover);
    let now = input.now;
    match (r.stage, seen) {
        (DrillStage::Holding, _) if input.active != r.target_region => {
            // Another failover moved the plan during the hold: failing "back" would move
            // production away from where that failover put it.
            let message = format!(
                "the active region changed to {} during the hold; not failing back to {}",
                input.active, r.source_region
            );
            finish(out, &r, DrillOutcome::Failed, None, now, Some(message));
        }
        (DrillStage::Holding, _) => {
            let until = r.hold_until.as_ref().map(|t| t.0).unwrap_or(now);
            if now < until {
                wait(
                    out,
                    Duration::from_secs(
                        until.as_second().saturating_sub(now.as_second()).max(1) as u64
                    ),
                );
                return;
            }
            if let Err(why) = &input.ready {
                let waited = now.as_second() - until.as_second();
                if waited as u64 > READY_FOR_FAILBACK.as_secs() {
                    let message = format!(
                        "the plan was not Ready to fail back within {}s after the hold: {why}",
                        READY_FOR_FAILBACK.as_secs()
                    );
                    finish(out, &r, DrillOutcome::Failed, None, now, Some(message));
                } else {
                    wait(out, Duration::from_secs(5));
                }
                return;
            }
            let go = r.failovers.first().unwrap_or(&r.failover);
            let name = back_name(go);
            r.stage = DrillStage::Returning;
            r.failover = name.clone();
            r.created = false;
            r.failovers.push(name.clone());
            out.create = Some(NewFailover {
                name,
                target: r.source_region.clone(),
                mode: FailoverMode::Planned,
                schedule: r.schedule.clone(),
                stage: "back",
            });
            out.status.running = Some(r);
        }
        // Recorded, not confirmed created: create it (an existing one counts).
        (_, None) if !r.created => {
            out.create = Some(NewFailover {
                name: r.failover.clone(),
                target: if r.stage == DrillStage::Returning {
                    r.source_region.clone()
                } else {
                    r.target_region.clone()
                },
                mode: if r.stage == DrillStage::Returning {
                    FailoverMode::Planned
                } else {
                    mode_of(r.kind)
                },
                schedule: r.schedule.clone(),
                stage: if r.stage == DrillStage::Returning {
                    "back"
                } else {
                    "go"
                },
            });
        }
        (_, None) => {
            let message = format!("its Failover {} was deleted", r.failover);
            finish(out, &r, DrillOutcome::Failed, None, now, Some(message));
        }
        (_, Some(f)) => match f.phase {
            // Its probes still wait for the target to answer (bounded by
            // `probes::SETTLE`): the drill records the user-visible time too.
            Some(FailoverPhase::Succeeded) if f.probes_pending => {
                wait(out, Duration::from_secs(5));
                out.status.running = Some(r);
            }
            Some(FailoverPhase::Succeeded)
                if r.stage == DrillStage::Going && r.kind == DrillKind::RoundTrip =>
            {
                let hold = hold_of(input.spec, &r.schedule);
                r.stage = DrillStage::Holding;
                r.hold_until = Some(time(now.checked_add(secs(hold)).unwrap_or(now)));
                r.rto_seconds = f.rto_seconds;
                r.user_visible_seconds = f.user_visible_seconds;
                r.data_loss_seconds = f.data_loss_seconds;
                wait(out, hold.max(Duration::from_secs(1)));
                out.status.running = Some(r);
            }
            Some(FailoverPhase::Succeeded) => {
                finish(out, &r, DrillOutcome::Succeeded, Some(f), now, None);
            }
            Some(p) if p.is_terminal() => {
                let message = f
                    .failed_step
                    .as_ref()
                    .map(|(s, m)| format!("{s}: {m}"))
                    .unwrap_or_else(|| format!("{} ended {p:?}", f.name));
                finish(out, &r, DrillOutcome::Failed, Some(f), now, Some(message));
            }
            _ => {
                if !r.created {
                    r.created = true;
                    out.status.running = Some(r);
                }
                wait(out, Duration::from_secs(5));
            }
        },
    }
}

/// The next drill the schedules start after `now`: (schedule, its time), the earliest of
/// the schedules not suspended; None when none will.
pub fn next_scheduled(spec: &DrillsSpec, now: Timestamp) -> Option<(&DrillSchedule, Timestamp)> {
    spec.schedules
        .iter()
        .filter(|s| !s.suspend)
        .filter_map(|s| {
            let cron = Cron::parse(&s.cron).ok()?;
            let tz = k8s_openapi::jiff::tz::TimeZone::get(s.time_zone.as_deref().unwrap_or("UTC"))
                .ok()?;
            Some((s, cron.next(&tz, now)?))
        })
        .min_by_key(|(_, at)| *at)
}

/// Whether `DrillOverdue` holds: no drill succeeded within `required` (counted from the
/// plan's creation when none ever did).
pub fn overdue(
    spec: &DrillsSpec,
    status: &DrillsStatus,
    plan_created: Option<Timestamp>,
    now: Timestamp,
) -> Option<String> {
    let required = crate::validate::parse_duration(spec.required_interval.as_deref()?).ok()?;
    let since = status.last_success.as_ref().map(|t| t.0).or(plan_created)?;
    let age = now.as_second() - since.as_second();
    (age > required.as_secs() as i64).then(|| match &status.last_success {
        Some(t) => format!(
            "no drill has succeeded since {}, more than {} ago",
            t.0,
            humantime::format_duration(required)
        ),
        None => format!(
            "no drill has succeeded in the {} since the plan was created",
            humantime::format_duration(required)
        ),
    })
}

#[cfg(test)]
mod tests;
