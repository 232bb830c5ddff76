//! The shipped alert rules and the Grafana dashboard, evaluated by a real Prometheus
//! (Debian's `prometheus`, installed by e2e/install-deps.sh) that scrapes an operator while
//! its plan lags above the RPO, fails a failover and runs a round-trip drill (issue 12).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use drover::api::{DisasterRecoveryPlan, FailoverMode, FailoverPhase};
use kube::api::{Api, Patch, PatchParams};
use serde_json::{Value, json};

use crate::drills::{Drover, wait_ready};
use crate::failover::*;
use crate::support::*;

/// Every alert's `for:` in the copy of the rules this Prometheus loads: the scenario sees
/// pending turn into firing in seconds. The expressions are the shipped ones.
const FOR: &str = "3s";

fn repo(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// A Prometheus on 127.0.0.1 scraping one operator every second, with the shipped rules
/// evaluated every second; stopped by its PID when dropped.
struct Prometheus {
    child: Child,
    port: u16,
    log: PathBuf,
}

impl Prometheus {
    fn start(name: &str, operator_port: u16) -> Self {
        let dir = repo(&format!("target/e2e-logs/prometheus-{name}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("Prometheus dir");
        let rules = std::fs::read_to_string(repo("config/prometheus/drover-rules.yaml"))
            .expect("rules file");
        let mut rules: serde_yaml::Value = serde_yaml::from_str(&rules).expect("rules YAML");
        for group in rules["groups"].as_sequence_mut().expect("groups") {
            for rule in group["rules"].as_sequence_mut().expect("rules") {
                if let Some(rule) = rule.as_mapping_mut()
                    && rule.contains_key("for")
                {
                    rule.insert("for".into(), FOR.into());
                }
            }
        }
        std::fs::write(
            dir.join("rules.yaml"),
            serde_yaml::to_string(&rules).expect("rules serialize"),
        )
        .expect("rules written");
        // honor_labels, as the chart's ServiceMonitor: Drover's `namespace` label is kept.
        let config = format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
             rule_files: [rules.yaml]\n\
             scrape_configs:\n  - job_name: drover\n    honor_labels: true\n    \
             static_configs:\n      - targets: ['127.0.0.1:{operator_port}']\n"
        );
        std::fs::write(dir.join("prometheus.yml"), config).expect("config written");
        let port = free_port();
        let log = dir.join("prometheus.log");
        let child = Command::new("prometheus")
            .arg(format!(
                "--config.file={}",
                dir.join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("prometheus runs (e2e/install-deps.sh installs it)");
        Self { child, port, log }
    }

    /// `data` of an API answer, or None while Prometheus does not answer.
    fn try_api(&self, path: &str) -> Option<Value> {
        // HTTP/1.0: the answer is not chunked, and ends when the connection closes.
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .ok()?;
        write!(stream, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
        let mut response = String::new();
        stream.read_to_string(&mut response).ok()?;
        let (head, body) = response.split_once("\r\n\r\n")?;
        if head.starts_with("HTTP/1.0 503") {
            return None; // starting: its storage is not open yet
        }
        assert!(
            head.starts_with("HTTP/1.0 200") || head.starts_with("HTTP/1.1 200"),
            "{path}: {head}\n{body}"
        );
        let answer: Value = serde_json::from_str(body).expect("JSON");
        assert_eq!(answer["status"], "success", "{path}: {body}");
        Some(answer["data"].clone())
    }

    fn api(&self, path: &str) -> Value {
        self.try_api(path).unwrap_or_else(|| {
            panic!(
                "Prometheus does not answer {path} (log: {})",
                self.log.display()
            )
        })
    }

    /// The instant vector `promql` evaluates to now.
    fn query(&self, promql: &str) -> Vec<Value> {
        let data = self.api(&format!("/api/v1/query?query={}", percent_encoded(promql)));
        data["result"].as_array().cloned().unwrap_or_default()
    }

    /// The active alert `name` (pending or firing) whose labels include `labels`, if any.
    fn alert(&self, name: &str, labels: &[(&str, &str)]) -> Option<Value> {
        let data = self.api("/api/v1/alerts");
        data["alerts"]
            .as_array()?
            .iter()
            .find(|a| {
                a["labels"]["alertname"] == name
                    && labels.iter().all(|(k, v)| a["labels"][*k] == *v)
            })
            .cloned()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // Its TSDB: every run has its own; the config and log stay for a look.
        if let Some(dir) = self.log.parent() {
            let _ = std::fs::remove_dir_all(dir.join("data"));
        }
    }
}

fn percent_encoded(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// Every query of the shipped dashboard with its panel's title, template variables
/// substituted as Grafana does for one plan over the last hour.
fn panel_queries(plan: &str) -> Vec<(String, String)> {
    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(repo("charts/drover/dashboards/drover.json")).expect("dashboard"),
    )
    .expect("dashboard JSON");
    let mut queries = Vec::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        let title = panel["title"].as_str().unwrap_or("?");
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"]
                .as_str()
                .expect("expr")
                .replace("$plan", plan)
                .replace("$__range", "1h")
                .replace("$__rate_interval", "1m")
                .replace("$__interval", "15s");
            assert!(
                !expr.contains('$'),
                "{title}: unsubstituted variable in {expr}"
            );
            queries.push((title.to_string(), expr));
        }
    }
    queries
}

/// Whether a query's answer has data Grafana can draw: a series with a number.
fn has_data(result: &[Value]) -> bool {
    result.iter().any(|series| {
        series["value"][1]
            .as_str()
            .and_then(|v| v.parse::<f64>().ok())
            .is_some_and(f64::is_finite)
    })
}

/// Follows an alert until it is in `until` (None: inactive), recording every state it
/// showed on the way.
async fn follow_alert(
    prom: &Prometheus,
    name: &str,
    labels: &[(&str, &str)],
    until: Option<&str>,
    seen: &mut Vec<String>,
) -> Option<Value> {
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    loop {
        let alert = prom.alert(name, labels);
        let state = alert
            .as_ref()
            .and_then(|a| a["state"].as_str())
            .unwrap_or("inactive")
            .to_string();
        if seen.last() != Some(&state) {
            seen.push(state.clone());
        }
        if state == until.unwrap_or("inactive") {
            return alert;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{name} not {until:?} within 90s; states seen: {seen:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Lag above the plan's RPO pages (pending, then firing) and resolves when it drains; a
/// failed Unplanned failover pages; after a round-trip drill every dashboard query has data.
#[tokio::test]
async fn a_real_prometheus_evaluates_the_rules_and_every_panel_has_data() {
    let (scenario, op) = Scenario::start("prom", &["--probes"], &[], 15).await;
    let (client, ns, sc) = scenario.parts();
    let plans: Api<DisasterRecoveryPlan> = Api::namespaced(client.clone(), &ns);
    op.wait_ready().await;
    let prom = Prometheus::start(&sc, op.port);
    let lag_series = format!("drover_replication_lag_seconds{{plan=\"{sc}\",region=\"usw2\"}}");
    wait_for(
        "Prometheus scraping the plan's lag",
        Duration::from_secs(60),
        || {
            let scraped = prom
                .try_api(&format!(
                    "/api/v1/query?query={}",
                    percent_encoded(&lag_series)
                ))
                .is_some_and(|d| d["result"].as_array().is_some_and(|r| !r.is_empty()));
            async move { scraped.then_some(()) }
        },
    )
    .await;

    // 1. Lag above the RPO (30s): pending, then firing, naming the database and region.
    let replica = format!("{sc}-orders-usw2");
    let set_lag = |seconds: f64| {
        bed(
            "POST",
            "/lag",
            json!({"region": "us-west-2", "identifier": replica, "seconds": seconds}),
        )
    };
    set_lag(60.0);
    let mut lag_states = Vec::new();
    let plan_labels = [("plan", sc.as_str())];
    let firing = follow_alert(
        &prom,
        "DroverReplicationLagAboveRPO",
        &plan_labels,
        Some("firing"),
        &mut lag_states,
    )
    .await
    .expect("the alert");
    println!("DroverReplicationLagAboveRPO: {lag_states:?}");
    assert!(
        lag_states.ends_with(&["pending".into(), "firing".into()]),
        "{lag_states:?}"
    );
    assert_eq!(
        (
            &firing["labels"]["namespace"],
            &firing["labels"]["database"],
            &firing["labels"]["region"],
            &firing["labels"]["severity"]
        ),
        (
            &json!(ns),
            &json!("orders"),
            &json!("usw2"),
            &json!("critical")
        )
    );
    let summary = firing["annotations"]["summary"].as_str().unwrap_or("");
    assert!(
        summary.contains(&format!("{ns}/{sc}")) && summary.contains("orders in usw2"),
        "{summary}"
    );

    // 2. An Unplanned failover that may not lose data fails on that lag, and pages. Before
    // it, the plan's Failed series is scraped at 0 and pages nothing.
    let failed_labels = [
        ("plan", sc.as_str()),
        ("mode", "Unplanned"),
        ("result", "Failed"),
    ];
    let zero = format!(
        "drover_failovers_total{{plan=\"{sc}\",mode=\"Unplanned\",result=\"Failed\"}} == 0"
    );
    assert_eq!(prom.query(&zero).len(), 1, "{zero}");
    assert_eq!(prom.alert("DroverFailoverFailed", &plan_labels), None);
    wait_published_lag_above(&replica, 30.0).await;
    let fo = run_failover(
        &client,
        &ns,
        failover("unplanned", &sc, "usw2", FailoverMode::Unplanned, false),
        60,
    )
    .await;
    assert_phase(&fo, FailoverPhase::Failed);
    let mut failed_states = Vec::new();
    let failed = follow_alert(
        &prom,
        "DroverFailoverFailed",
        &failed_labels,
        Some("firing"),
        &mut failed_states,
    )
    .await
    .expect("the alert");
    println!("DroverFailoverFailed: {failed_states:?}");
    assert_eq!(failed["labels"]["severity"], "critical");

    // 3. The lag drains: the lag alert resolves.
    set_lag(0.0);
    follow_alert(
        &prom,
        "DroverReplicationLagAboveRPO",
        &plan_labels,
        None,
        &mut lag_states,
    )
    .await;
    println!("DroverReplicationLagAboveRPO: {lag_states:?}");
    assert!(
        lag_states.ends_with(&["firing".into(), "inactive".into()]),
        "{lag_states:?}"
    );

    // 4. A round-trip drill: two successful failovers, measured, and a drill result.
    let patch = json!({"spec": {
        "reprotection": {"rds": "Recreate"},
        "drills": {
            "schedules": [{"name": "weekly", "cron": "0 3 * * 1", "kind": "RoundTrip",
                           "hold": "1s", "suspend": true}],
            "failbackExemptFromApproval": true,
        },
    }});
    plans
        .patch(&sc, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("plan patched");
    wait_ready(&plans, &sc).await;
    let (exit, out, err) =
        Drover::spawn(&["drill", &sc, "-n", &ns, "--kind", "RoundTrip", "--watch"])
            .finish(Duration::from_secs(180))
            .await;
    assert!(exit.success(), "{out}\n{err}");
    // Its history holds the recovery time users saw each way, by the plan's probes.
    let drilled = plans.get(&sc).await.expect("plan");
    let last = drilled
        .status
        .and_then(|s| s.drills)
        .and_then(|d| d.history.first().cloned())
        .expect("a drill result");
    assert!(
        last.user_visible_seconds.is_some_and(|s| s > 0.0)
            && last.user_visible_back_seconds.is_some_and(|s| s > 0.0),
        "{last:?}\n{out}"
    );
    assert!(out.contains("users without service there"), "{out}");
    let drilled = format!("drover_drill_last_succeeded{{plan=\"{sc}\"}} == 1");
    wait_for("the drill scraped", Duration::from_secs(30), || {
        let scraped = !prom.query(&drilled).is_empty();
        async move { scraped.then_some(()) }
    })
    .await;

    // 5. Every panel's query has data. The queries are retried for up to 60 s: while the
    // region the drill came back from is rebuilt (re-protection), its standbys' lag may
    // show no number.
    wait_ready(&plans, &sc).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let (lines, missing) = loop {
        let mut lines = Vec::new();
        let mut missing = Vec::new();
        for (title, expr) in panel_queries(&sc) {
            let result = prom.query(&expr);
            let data = has_data(&result);
            let shown: Vec<String> = result
                .iter()
                .take(4)
                .map(|r| {
                    let labels = r["metric"].as_object().map(|m| {
                        m.values()
                            .filter_map(Value::as_str)
                            .collect::<Vec<_>>()
                            .join(",")
                    });
                    format!(
                        "{{{}}} {}",
                        labels.unwrap_or_default(),
                        r["value"][1].as_str().unwrap_or("?")
                    )
                })
                .collect();
            lines.push(format!(
                "panel {title:?}: {} ({} series: {}) <- {expr}",
                if data { "data" } else { "NO DATA" },
                result.len(),
                shown.join("; ")
            ));
            if !data {
                missing.push(format!("{title}: {expr} -> {result:?}"));
            }
        }
        if missing.is_empty() || std::time::Instant::now() > deadline {
            break (lines, missing);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    println!("{}", lines.join("\n"));
    assert!(
        missing.is_empty(),
        "panels without data:\n{}",
        missing.join("\n")
    );
    // The bar chart counts the plan's first failovers: its series existed at 0 before them.
    let counted = |mode: &str, result: &str| {
        prom.query(&format!(
            "sum(increase(drover_failovers_total{{plan=\"{sc}\",mode=\"{mode}\",result=\"{result}\"}}[1h]))"
        ))
        .first()
        .and_then(|r| r["value"][1].as_str()?.parse::<f64>().ok())
        .unwrap_or(0.0)
    };
    let (failed, succeeded) = (
        counted("Unplanned", "Failed"),
        counted("Planned", "Succeeded"),
    );
    assert!(
        failed >= 0.5 && succeeded >= 1.5,
        "1 failed and 2 succeeded counted as {failed} and {succeeded}"
    );

    // What paged during the scenario, for the record.
    let paged = prom.query(&format!(
        "max by (alertname, alertstate) (max_over_time(ALERTS{{plan=\"{sc}\"}}[1h]))"
    ));
    let mut paged: Vec<String> = paged
        .iter()
        .map(|a| {
            format!(
                "{} {}",
                a["metric"]["alertname"].as_str().unwrap_or("?"),
                a["metric"]["alertstate"].as_str().unwrap_or("?")
            )
        })
        .collect();
    paged.sort();
    println!("alerts of the plan during the scenario: {paged:?}");
    // No false pages: a Planned round trip leaves nothing unfenced, and the leader held.
    // (NoLeader may fire in the first seconds, before the first scrape: its real `for` is
    // 5 minutes.)
    assert!(
        !paged.iter().any(|a| a.starts_with("DroverFencePending")),
        "{paged:?}"
    );
    let no_leader = prom.query("ALERTS{alertname=\"DroverNoLeader\"}");
    assert!(no_leader.is_empty(), "{no_leader:?}");
}
