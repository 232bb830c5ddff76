//! Game day on real replication (issue 13): the plan's RDS databases are PostgreSQL 15
//! servers (`seed.py --postgres`, e2e/awsbed/postgres.py), its writer workloads write real
//! rows while they have ready pods, and the rows each writer had acknowledged are counted in
//! the promoted database afterwards.

use std::time::Duration;

use drover::api::{Failover, FailoverMode, FailoverPhase};
use serde_json::{Value, json};

use crate::failover::*;
use crate::support::*;

const RDS_DATABASES: [&str; 2] = ["orders", "payments"];
/// How often the bed publishes ReplicaLag (a CloudWatch minute at its time factor, 0.02).
const METRIC_CADENCE_SECONDS: f64 = 1.2;

/// What a writer of `database` in use1 acknowledged that its usw2 copy lacks.
fn lost_in_usw2(sc: &str, database: &str) -> Value {
    bed(
        "POST",
        "/writers/lost",
        json!({"writer": ["us-east-1", format!("{sc}-{database}-use1")],
               "in": ["us-west-2", format!("{sc}-{database}-usw2")]}),
    )
}

/// Waits until every use1 writer of the plan has acknowledged at least `rows` rows.
async fn writers_acknowledged(sc: &str, rows: u64) {
    wait_for(
        &format!("use1's writers acknowledging {rows} rows"),
        Duration::from_secs(60),
        || {
            let writers = bed("GET", "/writers", json!({}));
            let done = RDS_DATABASES.iter().all(|db| {
                let ident = format!("{sc}-{db}-use1");
                writers["writers"].as_array().is_some_and(|all| {
                    all.iter().any(|w| {
                        w["identifier"] == ident.as_str()
                            && w["acked"].as_u64().is_some_and(|n| n >= rows)
                    })
                })
            });
            async move { done.then_some(()) }
        },
    )
    .await
}

/// One row of the game-day table, printed for BENCHMARKS.md.
fn report(mode: &str, fo: &Failover, lost: &[Value]) {
    let status = fo.status.clone().unwrap_or_default();
    let rto = status.timings.as_ref().and_then(|t| t.total_seconds);
    let estimate = status.data_loss.as_ref().map(|d| {
        if d.unknown_lag_databases.is_empty() {
            format!(
                "{:?} s (lag at promotion {:.2} s)",
                d.estimated_seconds, d.max_lag_seconds
            )
        } else {
            let per_database: Vec<String> = status
                .databases
                .iter()
                .map(|db| format!("{}: {:?}", db.name, db.loss_estimate_seconds))
                .collect();
            format!(
                "about {:?} s; lag unknown for {} (known: {:.2} s; per database {})",
                d.estimated_seconds,
                d.unknown_lag_databases.join(", "),
                d.max_lag_seconds,
                per_database.join(", ")
            )
        }
    });
    let measured: Vec<String> = lost
        .iter()
        .map(|l| {
            format!(
                "{} of {} rows ({} s)",
                l["lost"], l["acked"], l["lost_seconds"]
            )
        })
        .collect();
    println!(
        "game day | {mode} | orchestration RTO {} | estimated data loss {} | measured data loss {}",
        rto.map(|s| format!("{s:.2} s")).unwrap_or("-".into()),
        estimate.unwrap_or("-".into()),
        measured.join("; ")
    );
}

/// A Planned failover fences the writers and waits until the standbys have everything:
/// not one acknowledged row is missing from the promoted databases.
#[tokio::test]
async fn planned_failover_loses_no_acknowledged_row_on_real_postgres() {
    let (scenario, _op) = Scenario::start("gdp", &["--postgres"], &[], 15).await;
    let (client, ns, sc) = scenario.parts();
    writers_acknowledged(&sc, 40).await;
    let fo = run_failover(
        &client,
        &ns,
        failover("planned", &sc, "usw2", FailoverMode::Planned, false),
        120,
    )
    .await;
    let lost: Vec<Value> = RDS_DATABASES
        .iter()
        .map(|db| lost_in_usw2(&sc, db))
        .collect();
    report("Planned", &fo, &lost);
    assert_phase(&fo, FailoverPhase::Succeeded);
    // Every standby replayed past the fence: Drover estimates no loss.
    let estimate = fo.status.as_ref().and_then(|s| s.data_loss.clone());
    assert_eq!(
        estimate.as_ref().and_then(|d| d.estimated_seconds),
        Some(0.0),
        "{estimate:?}"
    );
    for l in &lost {
        assert!(l["acked"].as_u64().is_some_and(|n| n >= 40), "{l}");
        assert_eq!(l["lost"], 0, "{l}");
    }
}

/// An Unplanned failover (data loss allowed) with use1 cut while its writers write and each
/// standby's link is 3 s behind: the acknowledged rows still in the links are lost, and
/// Drover's estimate does not understate that loss by more than the metric cadence (the
/// issue's bar; CloudWatch stamps a datapoint with its period's start).
#[tokio::test]
async fn unplanned_failover_with_the_primary_region_cut_mid_stream() {
    let (scenario, _op) = Scenario::start(
        "gdu",
        &["--postgres", "--lag", "3"],
        &["--member-timeout-seconds", "2"],
        15,
    )
    .await;
    let (client, ns, sc) = scenario.parts();
    let _reset = BedReset;
    writers_acknowledged(&sc, 100).await;
    let (_frozen, fo) = lose_use1_and_fail_over(&client, &ns, &sc).await;
    let lost: Vec<Value> = RDS_DATABASES
        .iter()
        .map(|db| lost_in_usw2(&sc, db))
        .collect();
    report("Unplanned, use1 cut", &fo, &lost);
    assert_phase(&fo, FailoverPhase::Succeeded);
    let status = fo.status.clone().expect("status");
    for (db, l) in RDS_DATABASES.iter().zip(&lost) {
        assert!(
            l["lost"].as_u64().is_some_and(|n| n > 0),
            "rows in flight: {l}"
        );
        let measured = l["lost_seconds"].as_f64().expect("seconds");
        let estimate = status
            .databases
            .iter()
            .find(|d| d.name == *db)
            .and_then(|d| d.loss_estimate_seconds)
            .expect("an estimate from the lag read before replication stopped");
        assert!(
            estimate >= measured - METRIC_CADENCE_SECONDS,
            "{db}: estimate {estimate} s understates the {measured} s lost"
        );
    }
}
