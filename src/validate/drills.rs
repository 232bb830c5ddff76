//! Validation of `spec.drills` and `spec.approval`: every field bounded, every problem at
//! its path.

use std::collections::BTreeSet;

use super::{Problem, check_unique, parse_duration, parse_timeout};
use crate::api::{ApprovalPolicy, DrillsSpec};
use crate::engine::drill::{Cron, MANUAL, MAX_WINDOW};

const PATH: &str = "spec.drills";
/// Schedule names become part of Failover names (`<plan>-drill-<schedule>-<minute>-back`).
const MAX_SCHEDULE_NAME: usize = 40;
const MAX_SCHEDULES: usize = 20;

pub(super) fn check(drills: &DrillsSpec, regions: &BTreeSet<String>, problems: &mut Vec<Problem>) {
    if drills.schedules.len() > MAX_SCHEDULES {
        problems.push(Problem::new(
            format!("{PATH}.schedules"),
            format!(
                "at most {MAX_SCHEDULES} schedules, got {}",
                drills.schedules.len()
            ),
        ));
    }
    check_unique(
        problems,
        drills
            .schedules
            .iter()
            .enumerate()
            .map(|(i, s)| (format!("{PATH}.schedules[{i}].name"), s.name.clone())),
        "schedule name",
    );
    for (i, s) in drills.schedules.iter().enumerate() {
        let at = format!("{PATH}.schedules[{i}]");
        let label_ok = !s.name.is_empty()
            && s.name.len() <= MAX_SCHEDULE_NAME
            && s.name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            && !s.name.starts_with('-')
            && !s.name.ends_with('-');
        if !label_ok || s.name == MANUAL {
            problems.push(Problem::new(
                format!("{at}.name"),
                format!(
                    "must be a DNS label of at most {MAX_SCHEDULE_NAME} characters, not \
                     \"{MANUAL}\", got {:?}",
                    s.name
                ),
            ));
        }
        if let Err(reason) = Cron::parse(&s.cron) {
            problems.push(Problem::new(format!("{at}.cron"), reason));
        }
        let zone = s.time_zone.as_deref().unwrap_or("UTC");
        if k8s_openapi::jiff::tz::TimeZone::get(zone).is_err() {
            problems.push(Problem::new(
                format!("{at}.timeZone"),
                format!("unknown IANA time zone {zone:?}"),
            ));
        }
        if let Some(t) = s.target_region.as_ref().filter(|t| !regions.contains(*t)) {
            problems.push(Problem::new(
                format!("{at}.targetRegion"),
                format!("{t:?} is not a region of spec.regions"),
            ));
        }
        if let Some(Err(reason)) = s.hold.as_deref().map(parse_duration) {
            problems.push(Problem::new(format!("{at}.hold"), reason));
        }
        match s.window.as_deref().map(parse_timeout) {
            Some(Err(reason)) => problems.push(Problem::new(format!("{at}.window"), reason)),
            Some(Ok(d)) if d > MAX_WINDOW => problems.push(Problem::new(
                format!("{at}.window"),
                "must be at most 24h".to_string(),
            )),
            _ => {}
        }
    }
    if let Some(n) = drills.history_limit.filter(|n| !(1..=100).contains(n)) {
        problems.push(Problem::new(
            format!("{PATH}.historyLimit"),
            format!("must be between 1 and 100, got {n}"),
        ));
    }
    if let Some(Err(reason)) = drills.required_interval.as_deref().map(parse_timeout) {
        problems.push(Problem::new(format!("{PATH}.requiredInterval"), reason));
    }
}

pub(super) fn check_approval(approval: &ApprovalPolicy, problems: &mut Vec<Problem>) {
    if let Some(Err(reason)) = approval.timeout.as_deref().map(parse_timeout) {
        problems.push(Problem::new("spec.approval.timeout", reason));
    }
}
