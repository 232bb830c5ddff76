//! Game day on real replication (issue 13): the plan's RDS databases are PostgreSQL 15
//! servers (`seed.py --postgres`, e2e/awsbed/postgres.py), its writer workloads write real
//! rows while they have ready pods, and the rows each writer had acknowledged are counted in
//! the promoted database afterwards.

use std::time::Duration;

use drover::api::{Failover, FailoverMode, FailoverPhase};
use kube::Api;
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

/// The Failover once its user-visible recovery record is final: its probes may still wait
/// for the target's answer after the failover ended.
async fn probes_settled(client: &kube::Client, ns: &str, fo: &Failover) -> Failover {
    let api: Api<Failover> = Api::namespaced(client.clone(), ns);
    let name = fo.metadata.name.clone().expect("named");
    wait_for(
        &format!("failover {name}'s probes settled"),
        Duration::from_secs(60),
        || async {
            let fo = api.get(&name).await.ok()?;
            fo.status
                .as_ref()?
                .user_visible
                .as_ref()?
                .settled
                .then_some(fo)
        },
    )
    .await
}

/// The user-visible recovery time, checked: measured, from a stop after the orchestration
/// began or (`stopped_before_first_poll`) at its first poll, and no longer than the
/// orchestration plus the poll interval and a probe timeout.
fn user_visible(fo: &Failover, stopped_before_first_poll: bool) -> f64 {
    let status = fo.status.clone().unwrap_or_default();
    let record = status.user_visible.clone().expect("a user-visible record");
    let seconds = record
        .recovery_seconds
        .unwrap_or_else(|| panic!("no user-visible time: {record:?}"));
    assert_eq!(
        record.stopped_before_first_poll, stopped_before_first_poll,
        "{record:?}"
    );
    let started = status.timings.as_ref().and_then(|t| t.started_at.clone());
    let stopped = record.old_region_stopped_at.clone().expect("stopped");
    assert!(started.is_some_and(|s| s.0 <= stopped.0), "{record:?}");
    let total = status.timings.and_then(|t| t.total_seconds).expect("RTO");
    assert!(
        seconds > 0.0 && seconds <= total + 3.0,
        "user-visible {seconds} s against orchestration {total} s: {record:?}"
    );
    seconds
}

/// A failover that succeeded, once its probes settled, with the rows its writers lost
/// (per RDS database); its game-day row is printed and its user-visible time checked.
async fn succeeded_and_counted(
    client: &kube::Client,
    ns: &str,
    sc: &str,
    fo: Failover,
    mode: &str,
    stopped_before_first_poll: bool,
) -> (Failover, Vec<Value>) {
    assert_phase(&fo, FailoverPhase::Succeeded);
    let fo = probes_settled(client, ns, &fo).await;
    let lost: Vec<Value> = RDS_DATABASES
        .iter()
        .map(|db| lost_in_usw2(sc, db))
        .collect();
    report(mode, &fo, &lost);
    user_visible(&fo, stopped_before_first_poll);
    (fo, lost)
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
    let users = status.user_visible.as_ref().map(|u| {
        format!(
            "{} (stopped {}, answered {}{})",
            u.recovery_seconds
                .map(|s| format!("{s:.2} s"))
                .unwrap_or("-".into()),
            u.old_region_stopped_at
                .as_ref()
                .map(|t| t.0.to_string())
                .unwrap_or("-".into()),
            u.target_answered_at
                .as_ref()
                .map(|t| t.0.to_string())
                .unwrap_or("-".into()),
            if u.stopped_before_first_poll {
                ", already down at the first poll"
            } else {
                ""
            }
        )
    });
    println!(
        "game day | {mode} | orchestration RTO {} | user-visible RTO {} | estimated data loss {} | \
         measured data loss {}",
        rto.map(|s| format!("{s:.2} s")).unwrap_or("-".into()),
        users.unwrap_or("-".into()),
        estimate.unwrap_or("-".into()),
        measured.join("; ")
    );
}

/// A Planned failover fences the writers and waits until the standbys have everything:
/// not one acknowledged row is missing from the promoted databases.
#[tokio::test]
async fn planned_failover_loses_no_acknowledged_row_on_real_postgres() {
    let (scenario, _op) = Scenario::start("gdp", &["--postgres", "--probes"], &[], 15).await;
    let (client, ns, sc) = scenario.parts();
    writers_acknowledged(&sc, 40).await;
    let fo = run_failover(
        &client,
        &ns,
        failover("planned", &sc, "usw2", FailoverMode::Planned, false),
        120,
    )
    .await;
    // Users lost use1 when the fence stopped its writer, after the failover began.
    let (fo, lost) = succeeded_and_counted(&client, &ns, &sc, fo, "Planned", false).await;
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
        &["--postgres", "--lag", "3", "--probes"],
        &["--member-timeout-seconds", "2"],
        15,
    )
    .await;
    let (client, ns, sc) = scenario.parts();
    let _reset = BedReset;
    writers_acknowledged(&sc, 100).await;
    let (_frozen, fo) = lose_use1_and_fail_over(&client, &ns, &sc).await;
    // use1 was cut before the failover was created: down at the first poll.
    let (fo, lost) =
        succeeded_and_counted(&client, &ns, &sc, fo, "Unplanned, use1 cut", true).await;
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
