//! Checks of the observability artifacts against what the bed really produces: Argo CD
//! health scripts run by a real Lua, kube-state-metrics paths resolved on real status
//! objects, and the dashboard's PromQL names against a real /metrics scrape.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;

fn repo(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// A Lua table constructor for a JSON value. Strings use long brackets, so nothing needs
/// escaping unless a string contains the closing bracket (checked).
fn lua_literal(v: &Value) -> String {
    match v {
        Value::Null => "nil".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => {
            assert!(!s.contains("]==]"), "string not representable: {s}");
            format!("[==[{s}]==]")
        }
        Value::Array(items) => format!(
            "{{{}}}",
            items.iter().map(lua_literal).collect::<Vec<_>>().join(", ")
        ),
        Value::Object(map) => format!(
            "{{{}}}",
            map.iter()
                .map(|(k, v)| format!(
                    "[ {} ] = {}",
                    lua_literal(&Value::String(k.clone())),
                    lua_literal(v)
                ))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// Runs an Argo CD health script (`config/argocd/health-*.lua`) on `obj` with lua5.4, the
/// way Argo CD does: `obj` is a global, the chunk returns `hs`.
pub fn argo_health(script: &str, obj: &impl serde::Serialize) -> (String, String) {
    let obj = serde_json::to_value(obj).expect("object serializes");
    let script = repo(&format!("config/argocd/{script}"));
    let dir = repo("target/e2e-logs");
    std::fs::create_dir_all(&dir).expect("dir");
    let harness = dir.join(format!("argo-health-{}.lua", fastrand::u64(..)));
    std::fs::write(
        &harness,
        format!(
            "obj = {}\nlocal hs = dofile([==[{}]==])\nio.write(hs.status, \"\\n\", hs.message or \"\")\n",
            lua_literal(&obj),
            script.display()
        ),
    )
    .expect("harness written");
    let out = Command::new("lua5.4")
        .arg(&harness)
        .output()
        .expect("lua5.4 runs (e2e/install-deps.sh installs it)");
    let _ = std::fs::remove_file(&harness);
    assert!(
        out.status.success(),
        "{}: {}",
        script.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (status, message) = text.split_once('\n').unwrap_or((&text, ""));
    (status.to_string(), message.to_string())
}

/// Asserts the health an Argo CD script gives `obj`, showing the message on failure.
pub fn assert_health(script: &str, obj: &impl serde::Serialize, expected: &str) -> String {
    let (status, message) = argo_health(script, obj);
    assert_eq!(status, expected, "{script}: {message}");
    message
}

fn at<'a>(v: &'a Value, path: &Value) -> Option<&'a Value> {
    let mut cur = v;
    for key in path.as_array()? {
        cur = cur.get(key.as_str()?)?;
    }
    Some(cur)
}

fn is_gauge_value(v: &Value) -> bool {
    v.is_number() || v.is_boolean() || matches!(v.as_str(), Some("True" | "False"))
}

/// Why `metric` (one entry of a CustomResourceState resource) does not resolve on `obj`.
fn ksm_metric_problem(metric: &Value, obj: &Value) -> Option<String> {
    let each = &metric["each"];
    let kind = each["type"].as_str().unwrap_or("?");
    let spec = &each[match kind {
        "Gauge" => "gauge",
        "Info" => "info",
        "StateSet" => "stateSet",
        _ => return Some(format!("unknown type {kind}")),
    }];
    let empty = Value::Array(vec![]);
    let path = spec.get("path").unwrap_or(&empty);
    let Some(base) = at(obj, path) else {
        return Some(format!("path {path} missing"));
    };
    if kind == "StateSet" {
        let list = spec["list"].as_array().cloned().unwrap_or_default();
        return (!list.contains(base)).then(|| format!("{base} not in {list:?}"));
    }
    let elements: Vec<&Value> = match base {
        Value::Array(items) if !items.is_empty() => items.iter().collect(),
        Value::Array(_) => return Some(format!("path {path} is an empty list")),
        other => vec![other],
    };
    for element in elements {
        if let Some(labels) = spec.get("labelsFromPath").and_then(Value::as_object) {
            for (label, p) in labels {
                if at(element, p).is_none() {
                    return Some(format!("label {label}: path {p} missing under {path}"));
                }
            }
        }
        if let Some(value_from) = spec.get("valueFrom") {
            match at(element, value_from) {
                Some(v) if is_gauge_value(v) => {}
                Some(v) => return Some(format!("valueFrom {value_from} is {v}, not a number")),
                None => return Some(format!("valueFrom {value_from} missing under {path}")),
            }
        }
    }
    None
}

/// Resolves every path of `config/kube-state-metrics/custom-resource-state.yaml` against
/// real objects: each metric must resolve on at least one object of its kind.
pub fn assert_ksm_paths_resolve(objects: &[(&str, Value)]) {
    let text =
        std::fs::read_to_string(repo("config/kube-state-metrics/custom-resource-state.yaml"))
            .expect("KSM config");
    let config: Value = serde_yaml::from_str(&text).expect("KSM config is YAML");
    let resources = config["spec"]["resources"].as_array().expect("resources");
    let mut problems = Vec::new();
    let mut checked = 0;
    for resource in resources {
        let kind = resource["groupVersionKind"]["kind"].as_str().expect("kind");
        let of_kind: Vec<&Value> = objects
            .iter()
            .filter(|(k, _)| *k == kind)
            .map(|(_, o)| o)
            .collect();
        assert!(!of_kind.is_empty(), "no {kind} objects given");
        for obj in &of_kind {
            for (label, path) in resource["labelsFromPath"].as_object().expect("labels") {
                assert!(
                    at(obj, path).is_some(),
                    "{kind} label {label}: {path} missing"
                );
            }
        }
        for metric in resource["metrics"].as_array().expect("metrics") {
            checked += 1;
            let name = metric["name"].as_str().unwrap_or("?");
            let failures: Vec<String> = of_kind
                .iter()
                .filter_map(|o| ksm_metric_problem(metric, o))
                .collect();
            if failures.len() == of_kind.len() {
                problems.push(format!("{kind} {name}: {}", failures.join("; ")));
            }
        }
    }
    assert!(checked >= 9, "only {checked} metrics in the KSM config");
    assert!(
        problems.is_empty(),
        "unresolved KSM paths:\n{}",
        problems.join("\n")
    );
}

/// Metric names used in the dashboard's queries (`expr`, variable `definition`s).
pub fn dashboard_metric_names() -> BTreeSet<String> {
    let text = std::fs::read_to_string(repo("charts/drover/dashboards/drover.json"))
        .expect("dashboard JSON");
    let dashboard: Value = serde_json::from_str(&text).expect("dashboard is JSON");
    let mut queries = Vec::new();
    collect_queries(&dashboard, &mut queries);
    let mut names = BTreeSet::new();
    for q in &queries {
        let mut rest = q.as_str();
        while let Some(i) = rest.find("drover_") {
            let name: String = rest[i..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            rest = &rest[i + name.len()..];
            names.insert(name);
        }
    }
    names
}

fn collect_queries(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(map) => {
            for (k, v) in map {
                match (k.as_str(), v) {
                    ("expr" | "definition", Value::String(s)) => out.push(s.clone()),
                    _ => collect_queries(v, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|i| collect_queries(i, out)),
        _ => {}
    }
}

/// Every metric a dashboard panel queries has samples in `scrape` (a /metrics body).
pub fn assert_dashboard_metrics_exported(scrape: &str) {
    let mut exported: BTreeSet<String> = scrape
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(str::to_string)
        .collect();
    // A family declared with no series yet (e.g. drill gauges before the first drill)
    // is exported too: its series appear with the first value.
    for declared in scrape
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split(' ').next())
    {
        for suffix in ["", "_total", "_bucket", "_count", "_sum"] {
            exported.insert(format!("{declared}{suffix}"));
        }
    }
    let used = dashboard_metric_names();
    assert!(used.len() >= 12, "dashboard uses only {used:?}");
    // Drill gauges have series only once a plan has drilled, and the user-visible RTO only
    // for plans with probes: the real-Prometheus scenario (a drill, probes) checks them.
    let missing: Vec<&String> = used
        .iter()
        .filter(|n| !n.starts_with("drover_drill_"))
        .filter(|n| n.as_str() != "drover_last_failover_user_visible_rto_seconds")
        .filter(|n| !exported.contains(n.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "dashboard queries metrics /metrics does not export: {missing:?}"
    );
}
