//! Route 53: what each zone should hold when a region is active, the changes that get it
//! there from what it holds now, and how those changes are split into batches that Route 53
//! accepts (at most 1,000 records and 32,000 value characters each, UPSERT counting twice;
//! at most one PRIMARY and one SECONDARY failover record per name and type).

use std::collections::BTreeMap;

use crate::api::{
    AliasTarget, DisasterRecoveryPlanSpec, HostedZoneSpec, RecordSpec, RoutingPolicy,
};

/// Route 53's per-request limits.
pub const MAX_BATCH_RECORDS: usize = 1000;
pub const MAX_BATCH_VALUE_CHARS: usize = 32_000;

/// One DNS record set as Route 53 holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordSet {
    pub name: String,
    pub record_type: String,
    pub set_identifier: Option<String>,
    /// "PRIMARY" or "SECONDARY" for failover routing.
    pub failover: Option<String>,
    pub weight: Option<i64>,
    pub ttl: Option<i64>,
    pub values: Vec<String>,
    pub alias: Option<AliasTarget>,
    pub health_check_id: Option<String>,
}

/// What one hosted zone should hold for the plan's records.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ZoneRecords {
    pub hosted_zone_id: String,
    pub records: Vec<RecordSet>,
}

/// A change in a batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChangeAction {
    Upsert,
    Delete,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordChange {
    pub action: ChangeAction,
    pub record: RecordSet,
}

const DEFAULT_TTL: i64 = 60;

/// The region after `active` in the failover order (wrapping), among `candidates`: the
/// SECONDARY of a failover record. The order is the plan's `failoverOrder`, else the
/// order of `spec.regions`.
pub fn secondary_region<'a>(
    spec: &'a DisasterRecoveryPlanSpec,
    active: &str,
    candidates: &[&str],
) -> Option<&'a str> {
    let order: Vec<&str> = match &spec.failover_order {
        Some(order) if !order.is_empty() => order.iter().map(String::as_str).collect(),
        _ => spec.regions.iter().map(|r| r.name.as_str()).collect(),
    };
    let at = order.iter().position(|r| *r == active)?;
    (1..order.len())
        .map(|i| order[(at + i) % order.len()])
        .find(|r| candidates.contains(r))
}

fn set_identifier(t: &crate::api::RecordTarget) -> String {
    t.set_identifier.clone().unwrap_or_else(|| t.region.clone())
}

fn record_sets(
    spec: &DisasterRecoveryPlanSpec,
    record: &RecordSpec,
    target: &str,
) -> Vec<RecordSet> {
    let ttl = Some(record.ttl.unwrap_or(DEFAULT_TTL));
    let make = |t: &crate::api::RecordTarget| RecordSet {
        name: record.name.clone(),
        record_type: record.record_type.clone(),
        set_identifier: None,
        failover: None,
        weight: None,
        ttl: if t.alias.is_some() { None } else { ttl },
        values: t.values.clone().unwrap_or_default(),
        alias: t.alias.clone(),
        health_check_id: t.health_check_id.clone(),
    };
    let target_of = |region: &str| record.targets.iter().find(|t| t.region == region);
    match record.routing {
        RoutingPolicy::Simple => target_of(target)
            .map(|t| RecordSet {
                health_check_id: None,
                ..make(t)
            })
            .into_iter()
            .collect(),
        // Exactly two regions: PRIMARY is the active one, SECONDARY the next in order.
        RoutingPolicy::Failover => {
            let regions: Vec<&str> = record.targets.iter().map(|t| t.region.as_str()).collect();
            let secondary = secondary_region(spec, target, &regions);
            [(Some(target), "PRIMARY"), (secondary, "SECONDARY")]
                .into_iter()
                .filter_map(|(region, role)| {
                    let t = target_of(region?)?;
                    Some(RecordSet {
                        set_identifier: Some(set_identifier(t)),
                        failover: Some(role.into()),
                        ..make(t)
                    })
                })
                .collect()
        }
        RoutingPolicy::Weighted => record
            .targets
            .iter()
            .map(|t| RecordSet {
                set_identifier: Some(set_identifier(t)),
                weight: Some(if t.region == target { 100 } else { 0 }),
                ..make(t)
            })
            .collect(),
    }
}

fn zone_records(
    spec: &DisasterRecoveryPlanSpec,
    zone: &HostedZoneSpec,
    target: &str,
) -> ZoneRecords {
    ZoneRecords {
        hosted_zone_id: zone.hosted_zone_id.clone(),
        records: zone
            .records
            .iter()
            .flat_map(|r| record_sets(spec, r, target))
            .collect(),
    }
}

/// What every zone of the plan should hold with `target` active.
pub fn dns_records(spec: &DisasterRecoveryPlanSpec, target: &str) -> Vec<ZoneRecords> {
    spec.dns
        .iter()
        .map(|zone| zone_records(spec, zone, target))
        .collect()
}

/// A record name as Route 53 compares it: case-insensitive, trailing dot optional, and
/// Route 53's octal escapes (`\052` for `*` in a wildcard) decoded, as it lists names so.
pub fn normalize_name(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut rest = name.trim_end_matches('.');
    while let Some(at) = rest.find('\\') {
        out.push_str(&rest[..at]);
        let code = rest.get(at + 1..at + 4);
        match code.and_then(|c| u8::from_str_radix(c, 8).ok()) {
            Some(byte) => {
                out.push(char::from(byte));
                rest = &rest[at + 4..];
            }
            None => {
                out.push('\\');
                rest = &rest[at + 1..];
            }
        }
    }
    out.push_str(rest);
    out.to_ascii_lowercase()
}

fn same_set(a: &RecordSet, b: &RecordSet) -> bool {
    normalize_name(&a.name) == normalize_name(&b.name)
        && a.record_type == b.record_type
        && a.set_identifier == b.set_identifier
}

/// Whether Route 53 already holds `desired` (so a change would be a repeat).
pub fn record_present(desired: &RecordSet, current: &[RecordSet]) -> bool {
    current.iter().any(|c| {
        let mut want: Vec<&String> = desired.values.iter().collect();
        let mut have: Vec<&String> = c.values.iter().collect();
        want.sort();
        have.sort();
        same_set(c, desired)
            && c.failover == desired.failover
            && c.weight == desired.weight
            && want == have
            && c.alias.as_ref().map(|a| normalize_name(&a.dns_name))
                == desired.alias.as_ref().map(|a| normalize_name(&a.dns_name))
    })
}

/// The changes that take a zone from `current` to what it should hold with `target`
/// active: UPSERTs of what is missing or different, and exact DELETEs of the plan's
/// failover records for regions that are neither PRIMARY nor SECONDARY now.
pub fn zone_changes(
    spec: &DisasterRecoveryPlanSpec,
    zone: &HostedZoneSpec,
    target: &str,
    current: &[RecordSet],
) -> Vec<RecordChange> {
    let desired = zone_records(spec, zone, target).records;
    let mut changes = Vec::new();
    for record in zone
        .records
        .iter()
        .filter(|r| r.routing == RoutingPolicy::Failover)
    {
        let plan_ids: Vec<String> = record.targets.iter().map(set_identifier).collect();
        for c in current {
            let ours = normalize_name(&c.name) == normalize_name(&record.name)
                && c.record_type == record.record_type
                && c.set_identifier
                    .as_ref()
                    .is_some_and(|id| plan_ids.contains(id));
            if ours && !desired.iter().any(|d| same_set(d, c)) {
                changes.push(RecordChange {
                    action: ChangeAction::Delete,
                    record: c.clone(),
                });
            }
        }
    }
    changes.extend(
        desired
            .into_iter()
            .filter(|d| !record_present(d, current))
            .map(|record| RecordChange {
                action: ChangeAction::Upsert,
                record,
            }),
    );
    changes
}

/// What a change costs against the batch limits: (records, value characters).
pub fn cost(change: &RecordChange) -> (usize, usize) {
    let factor = match change.action {
        ChangeAction::Upsert => 2,
        ChangeAction::Delete => 1,
    };
    let records = change.record.values.len().max(1);
    let chars: usize = change.record.values.iter().map(|v| v.chars().count()).sum();
    (records * factor, chars * factor)
}

/// Splits changes into batches within Route 53's limits. The changes of one name and type
/// stay in one batch, so no batch leaves two PRIMARY (or SECONDARY) records behind.
pub fn pack(changes: Vec<RecordChange>) -> Result<Vec<Vec<RecordChange>>, String> {
    let mut groups: BTreeMap<(String, String), Vec<RecordChange>> = BTreeMap::new();
    for c in changes {
        let key = (normalize_name(&c.record.name), c.record.record_type.clone());
        groups.entry(key).or_default().push(c);
    }
    let mut batches: Vec<Vec<RecordChange>> = Vec::new();
    let (mut records, mut chars) = (0, 0);
    for ((name, record_type), mut group) in groups {
        // Deletes first, so the batch never holds a third failover record mid-way.
        group.sort_by_key(|c| c.action == ChangeAction::Upsert);
        let (r, ch) = group
            .iter()
            .map(cost)
            .fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1));
        if r > MAX_BATCH_RECORDS || ch > MAX_BATCH_VALUE_CHARS {
            return Err(format!(
                "the changes to {name} {record_type} alone exceed Route 53's batch limits \
                 ({r} records, {ch} value characters; limits {MAX_BATCH_RECORDS} and \
                 {MAX_BATCH_VALUE_CHARS}, UPSERT counted twice)"
            ));
        }
        if batches.is_empty()
            || records + r > MAX_BATCH_RECORDS
            || chars + ch > MAX_BATCH_VALUE_CHARS
        {
            batches.push(Vec::new());
            (records, chars) = (0, 0);
        }
        records += r;
        chars += ch;
        if let Some(batch) = batches.last_mut() {
            batch.extend(group);
        }
    }
    Ok(batches)
}

/// Preflight: differences between the zone and the plan that Route 53 would reject or
/// that would leave the plan's failover records ambiguous.
pub fn zone_conflicts(zone: &HostedZoneSpec, current: &[RecordSet]) -> Vec<String> {
    let mut conflicts = Vec::new();
    for record in &zone.records {
        if record.routing == RoutingPolicy::Simple {
            continue;
        }
        let plan_ids: Vec<String> = record.targets.iter().map(set_identifier).collect();
        let same: Vec<&RecordSet> = current
            .iter()
            .filter(|c| {
                normalize_name(&c.name) == normalize_name(&record.name)
                    && c.record_type == record.record_type
            })
            .collect();
        for c in &same {
            match &c.set_identifier {
                Some(id) if !plan_ids.contains(id) => conflicts.push(format!(
                    "record {} {}: set identifier {id:?} in the zone is not one of the plan's \
                     ({})",
                    record.name,
                    record.record_type,
                    plan_ids.join(", ")
                )),
                None => conflicts.push(format!(
                    "record {} {}: the zone holds a record without a set identifier where \
                     the plan routes by {:?}",
                    record.name, record.record_type, record.routing
                )),
                _ => {}
            }
        }
        for role in ["PRIMARY", "SECONDARY"] {
            let n = same
                .iter()
                .filter(|c| c.failover.as_deref() == Some(role))
                .count();
            if n > 1 {
                conflicts.push(format!(
                    "record {} {}: the zone holds {n} {role} failover records",
                    record.name, record.record_type
                ));
            }
        }
    }
    conflicts
}

#[cfg(test)]
mod tests {
    use super::normalize_name;

    #[test]
    fn names_compare_as_route53_lists_them() {
        assert_eq!(normalize_name("\\052.Shop.Example."), "*.shop.example");
        assert_eq!(normalize_name("*.shop.example"), "*.shop.example");
        assert_eq!(normalize_name("a\\b.example."), "a\\b.example");
        assert_eq!(normalize_name("x\\05"), "x\\05");
    }
}
