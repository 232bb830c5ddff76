//! Autoscalers of the plan's workloads (HorizontalPodAutoscalers and KEDA ScaledObjects),
//! as read from a region's cluster: an autoscaler whose maximum is below a workload's
//! active count caps the standby below what the plan promises once it is active. And how
//! Drover drives them when it scales a workload (`drive`), so that they do not fight the
//! replica patch.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::api::WorkloadSpec;

/// One autoscaler, as the API server returns it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AutoscalerSeen {
    /// HorizontalPodAutoscaler or ScaledObject.
    pub kind: &'static str,
    pub name: String,
    /// The kind and name of the workload it scales, and its API group when the reference
    /// names one ("" is the core group).
    pub target_kind: String,
    pub target_name: String,
    pub target_group: Option<String>,
    pub min_replicas: Option<i32>,
    pub max_replicas: Option<i32>,
}

/// The group of an apiVersion ("apps/v1" → "apps", "v1" → "").
fn group(api_version: &str) -> &str {
    api_version.rsplit_once('/').map_or("", |(g, _)| g)
}

impl AutoscalerSeen {
    /// Whether it scales `w` (same namespace assumed): same kind and name, and the same API
    /// group where both say one (a custom resource may also be called "Deployment").
    pub fn scales(&self, w: &WorkloadSpec) -> bool {
        let groups_differ = match (self.target_group.as_deref(), w.effective_api_version()) {
            (Some(theirs), Some(ours)) => theirs != group(ours),
            _ => false,
        };
        self.target_kind == w.kind && self.target_name == w.name && !groups_differ
    }
}

/// The target's API group, from `scaleTargetRef.apiVersion` when it is there.
fn target_group(spec: &Value) -> Option<String> {
    spec["scaleTargetRef"]["apiVersion"]
        .as_str()
        .map(|v| group(v).to_string())
}

fn int(v: &Value) -> Option<i32> {
    v.as_i64().and_then(|n| i32::try_from(n).ok())
}

/// Whether a KEDA ScaledObject owns `obj`: KEDA creates and manages that HPA itself.
fn owned_by_scaled_object(obj: &Value) -> bool {
    let owners = obj["metadata"]["ownerReferences"].as_array();
    owners.into_iter().flatten().any(|o| {
        o["kind"] == "ScaledObject"
            && o["apiVersion"]
                .as_str()
                .is_some_and(|v| v.starts_with("keda.sh/"))
    })
}

/// An autoscaling/v1 HorizontalPodAutoscaler (`obj` is the whole object). None for one that
/// a ScaledObject owns: the ScaledObject is the one to read (and drive). While Drover holds
/// it at a standby count, its bounds are the ones saved in `SAVED`: the HPA gets them back
/// (at least) when its region becomes active.
pub fn hpa(obj: &Value) -> Option<AutoscalerSeen> {
    if owned_by_scaled_object(obj) {
        return None;
    }
    let spec = &obj["spec"];
    let saved = obj["metadata"]["annotations"][SAVED]
        .as_str()
        .and_then(|s| serde_json::from_str::<HpaSaved>(s).ok());
    // The API server defaults minReplicas to 1.
    let min = int(&spec["minReplicas"]).unwrap_or(1);
    let max = int(&spec["maxReplicas"]);
    let current = max.map(|max| HpaBounds {
        min_replicas: min,
        max_replicas: max,
    });
    let owners = current.map(|c| HpaSaved::owners(saved, c));
    Some(AutoscalerSeen {
        kind: "HorizontalPodAutoscaler",
        name: obj["metadata"]["name"].as_str()?.to_string(),
        target_kind: spec["scaleTargetRef"]["kind"].as_str()?.to_string(),
        target_name: spec["scaleTargetRef"]["name"].as_str()?.to_string(),
        target_group: target_group(spec),
        min_replicas: Some(owners.map_or(min, |b| b.min_replicas)),
        max_replicas: owners.map(|b| b.max_replicas),
    })
}

/// A KEDA (keda.sh/v1alpha1) ScaledObject: the target kind defaults to Deployment, the
/// bounds to KEDA's 0 and 100.
pub fn scaled_object(obj: &Value) -> Option<AutoscalerSeen> {
    let spec = &obj["spec"];
    Some(AutoscalerSeen {
        kind: "ScaledObject",
        name: obj["metadata"]["name"].as_str()?.to_string(),
        target_kind: spec["scaleTargetRef"]["kind"]
            .as_str()
            .unwrap_or("Deployment")
            .to_string(),
        target_name: spec["scaleTargetRef"]["name"].as_str()?.to_string(),
        target_group: target_group(spec),
        min_replicas: int(&spec["minReplicaCount"]).or(Some(0)),
        max_replicas: int(&spec["maxReplicaCount"]).or(Some(100)),
    })
}

/// The kinds of autoscaler Drover reads and drives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AutoscalerKind {
    /// autoscaling/v1 HorizontalPodAutoscaler.
    Hpa,
    /// keda.sh/v1alpha1 ScaledObject.
    ScaledObject,
}

impl AutoscalerKind {
    pub const ALL: [Self; 2] = [Self::Hpa, Self::ScaledObject];

    /// Group, version, kind and plural, as the API server serves it.
    pub fn api(self) -> (&'static str, &'static str, &'static str, &'static str) {
        match self {
            Self::Hpa => (
                "autoscaling",
                "v1",
                "HorizontalPodAutoscaler",
                "horizontalpodautoscalers",
            ),
            Self::ScaledObject => ("keda.sh", "v1alpha1", "ScaledObject", "scaledobjects"),
        }
    }

    /// `obj` (the whole object) as an autoscaler of this kind.
    pub fn read(self, obj: &Value) -> Option<AutoscalerSeen> {
        match self {
            Self::Hpa => hpa(obj),
            Self::ScaledObject => scaled_object(obj),
        }
    }
}

/// Every autoscaler of a namespace as read (objects of other kinds or shapes left out).
pub fn read_all(all: &[(AutoscalerKind, Value)]) -> Vec<AutoscalerSeen> {
    all.iter().filter_map(|(k, o)| k.read(o)).collect()
}

/// How a workload's autoscalers stand for a scale to `wanted`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Autoscaling {
    /// One of them may change its replica count now (an HPA whose bounds differ, or a
    /// ScaledObject not paused): the lowest count it may set. A count that one set, at or
    /// above that, is its doing, not a drift (an HPA under load, KEDA scaling to zero).
    pub live: Option<i32>,
    /// One of them is not yet as `drive` would set it: the scale must be sent (again).
    pub behind: bool,
}

/// `w`'s autoscalers among `all` (one namespace), judged for a scale to `wanted`. Err: a
/// plain sentence, as `drive` gives it.
pub fn scaling(
    all: &[(AutoscalerKind, Value)],
    w: &WorkloadSpec,
    wanted: i32,
    hold: bool,
) -> Result<Autoscaling, String> {
    let mut out = Autoscaling::default();
    for (kind, obj) in all {
        let Some(seen) = kind.read(obj) else { continue };
        if !seen.scales(w) {
            continue;
        }
        let spec = &obj["spec"];
        let live = match kind {
            AutoscalerKind::Hpa => {
                let min = int(&spec["minReplicas"]).unwrap_or(1);
                int(&spec["maxReplicas"])
                    .is_some_and(|max| max > min)
                    .then_some(min)
            }
            AutoscalerKind::ScaledObject => {
                (!keda_paused(obj)).then_some(int(&spec["minReplicaCount"]).unwrap_or(0))
            }
        };
        out.live = match (out.live, live) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        out.behind |= drive(*kind, obj, w, wanted, hold)?.is_some();
    }
    Ok(out)
}

/// The autoscalers in `all` that scale `w` (same namespace assumed).
pub fn of<'a>(w: &WorkloadSpec, all: &'a [AutoscalerSeen]) -> Vec<&'a AutoscalerSeen> {
    all.iter().filter(|a| a.scales(w)).collect()
}

/// Whether a ScaledObject is paused, by either of KEDA's annotations (`paused: "true"`
/// holds it at its current count).
fn keda_paused(obj: &Value) -> bool {
    let annotations = &obj["metadata"]["annotations"];
    !annotations[KEDA_PAUSED_REPLICAS].is_null()
        || annotations[KEDA_PAUSED].as_str() == Some("true")
}

/// Problems with `w`'s autoscalers in `region`: a maximum below the active count.
pub fn problems(w: &WorkloadSpec, region: &str, all: &[AutoscalerSeen]) -> Vec<String> {
    of(w, all)
        .into_iter()
        .filter_map(|a| {
            let max = a.max_replicas?;
            (max < w.active_replicas).then(|| {
                format!(
                    "{} {}/{} in {region} caps {} {}/{} at {max} replicas, below its active \
                     count {}",
                    a.kind, w.namespace, a.name, w.kind, w.namespace, w.name, w.active_replicas
                )
            })
        })
        .collect()
}

/// Where Drover keeps an autoscaler's own settings while a region is standby (JSON).
pub const SAVED: &str = "drover.io/autoscaler-original";
/// KEDA's annotation that holds a ScaledObject's target at a fixed count.
pub const KEDA_PAUSED_REPLICAS: &str = "autoscaling.keda.sh/paused-replicas";
/// KEDA's annotation that holds a ScaledObject at its current count.
pub const KEDA_PAUSED: &str = "autoscaling.keda.sh/paused";

/// Fields to set in a merge patch (null: remove).
type Fields = Map<String, Value>;

/// An HPA's bounds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct HpaBounds {
    min_replicas: i32,
    max_replicas: i32,
}

/// What Drover saves in `SAVED` on an HPA: its owner's bounds, and the bounds Drover set
/// (absent from annotations written before Drover recorded them).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct HpaSaved {
    min_replicas: i32,
    max_replicas: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    set: Option<HpaBounds>,
}

impl HpaSaved {
    /// The owner's bounds, for an HPA now at `current`: the saved ones while it is as Drover
    /// set it; once someone changed it since (its owner, a GitOps sync), theirs are newer.
    fn owners(saved: Option<Self>, current: HpaBounds) -> HpaBounds {
        match saved {
            Some(s) if s.set.is_none_or(|set| set == current) => HpaBounds {
                min_replicas: s.min_replicas,
                max_replicas: s.max_replicas,
            },
            _ => current,
        }
    }
}

/// A replica count field: None when absent, an error sentence when not an int32.
fn count(obj: &Value, field: &str, what: &str) -> Result<Option<i32>, String> {
    match &obj["spec"][field] {
        Value::Null => Ok(None),
        v => int(v)
            .map(Some)
            .ok_or_else(|| format!("{what} has a {field} that is not a replica count: {v}")),
    }
}

fn not_saved_by_drover(what: &str, shape: &str) -> String {
    format!(
        "{what} has an annotation {SAVED} that is not what Drover saves there ({shape}); set it \
         to the autoscaler's own settings in that form, or remove it if they are the current ones"
    )
}

/// The HPA's spec and annotation changes for `wanted` replicas (`standby`: below the
/// active count).
fn drive_hpa(
    obj: &Value,
    what: &str,
    saved: Option<&str>,
    standby: bool,
    wanted: i32,
) -> Result<(Fields, Fields), String> {
    let current = HpaBounds {
        // The API server defaults minReplicas to 1.
        min_replicas: count(obj, "minReplicas", what)?.unwrap_or(1),
        max_replicas: count(obj, "maxReplicas", what)?
            .ok_or_else(|| format!("{what} has no maxReplicas"))?,
    };
    let saved: Option<HpaSaved> = saved
        .map(|s| {
            serde_json::from_str(s)
                .map_err(|_| not_saved_by_drover(what, r#"{"minReplicas":N,"maxReplicas":N}"#))
        })
        .transpose()?;
    let originals = HpaSaved::owners(saved, current);
    let target = if standby {
        // An HPA's minimum is at least 1; at 0 replicas the HPA controller stands aside.
        let n = wanted.max(1);
        HpaBounds {
            min_replicas: n,
            max_replicas: n,
        }
    } else {
        HpaBounds {
            min_replicas: originals.min_replicas.max(wanted),
            max_replicas: originals.max_replicas.max(wanted),
        }
    };
    let mut spec = Map::new();
    if target.min_replicas != current.min_replicas {
        spec.insert("minReplicas".into(), target.min_replicas.into());
    }
    if target.max_replicas != current.max_replicas {
        spec.insert("maxReplicas".into(), target.max_replicas.into());
    }
    // The originals stay saved while the HPA is not at them, with what Drover set: never
    // overwritten by Drover's own values, but by its owner's newer ones.
    let keep = (target != originals).then_some(HpaSaved {
        min_replicas: originals.min_replicas,
        max_replicas: originals.max_replicas,
        set: Some(target),
    });
    let mut annotations = Map::new();
    match (keep, saved) {
        (Some(keep), saved) if saved != Some(keep) => {
            let text = serde_json::to_string(&keep).map_err(|e| e.to_string())?;
            annotations.insert(SAVED.into(), text.into());
        }
        (None, Some(_)) => {
            annotations.insert(SAVED.into(), Value::Null);
        }
        _ => {}
    }
    Ok((spec, annotations))
}

/// The ScaledObject's annotation changes for `wanted` replicas: paused at the standby
/// count, and back to its own pause state (saved in `SAVED`) once active.
fn drive_scaled_object(
    obj: &Value,
    what: &str,
    saved: Option<&str>,
    standby: bool,
    wanted: i32,
) -> Result<Fields, String> {
    let paused = obj["metadata"]["annotations"][KEDA_PAUSED_REPLICAS].as_str();
    let saved: Option<Option<String>> = saved
        .map(|s| {
            let v: Value = serde_json::from_str(s).unwrap_or(Value::Bool(false));
            match v.get("pausedReplicas") {
                Some(Value::Null) => Ok(None),
                Some(Value::String(p)) => Ok(Some(p.clone())),
                _ => Err(not_saved_by_drover(
                    what,
                    r#"{"pausedReplicas":null} or {"pausedReplicas":"N"}"#,
                )),
            }
        })
        .transpose()?;
    let mut annotations = Map::new();
    if standby {
        if saved.is_none() {
            let state = json!({"pausedReplicas": paused}).to_string();
            annotations.insert(SAVED.into(), state.into());
        }
        let want = wanted.max(0).to_string();
        if paused != Some(want.as_str()) {
            annotations.insert(KEDA_PAUSED_REPLICAS.into(), want.into());
        }
    } else if let Some(original) = saved {
        // Nothing saved: Drover never paused it, so it is left as it is.
        if paused != original.as_deref() {
            let value = original.map_or(Value::Null, Value::String);
            annotations.insert(KEDA_PAUSED_REPLICAS.into(), value);
        }
        annotations.insert(SAVED.into(), Value::Null);
    }
    Ok(annotations)
}

/// The JSON merge patch that makes autoscaler `obj` (of `kind`, the whole object as read)
/// agree with `w` scaled to `wanted` replicas, before the scale itself is patched. None when
/// it does not scale `w`, or nothing changes. Below the active count (standby): an HPA is
/// held at the standby count (at least 1), a ScaledObject paused at it; at or above it
/// (active): their own settings come back, an HPA's raised to `wanted` where below it.
/// `hold` (a region being brought up): a ScaledObject stays paused at `wanted` even at
/// the active count, its own state saved for later; an HPA's minimum is `wanted` anyway.
/// The patch carries the object's resourceVersion: a change in between is a conflict, and
/// the next pass reads again. Err: a plain sentence.
pub fn drive(
    kind: AutoscalerKind,
    obj: &Value,
    w: &WorkloadSpec,
    wanted: i32,
    hold: bool,
) -> Result<Option<Value>, String> {
    let Some(seen) = kind.read(obj) else {
        return Ok(None);
    };
    if !seen.scales(w) {
        return Ok(None);
    }
    let what = format!("{} {}/{}", seen.kind, w.namespace, seen.name);
    let saved = obj["metadata"]["annotations"][SAVED].as_str();
    // 0 is standby even for a workload whose active count is 0 (a returning region's
    // pending fence): a ScaledObject must be paused there, never unpaused.
    let standby = wanted == 0 || wanted < w.active_replicas;
    let (spec, annotations) = match kind {
        AutoscalerKind::Hpa => drive_hpa(obj, &what, saved, standby, wanted)?,
        AutoscalerKind::ScaledObject => (
            Map::new(),
            drive_scaled_object(obj, &what, saved, standby || hold, wanted)?,
        ),
    };
    if spec.is_empty() && annotations.is_empty() {
        return Ok(None);
    }
    let version = obj["metadata"]["resourceVersion"]
        .as_str()
        .ok_or_else(|| format!("{what} has no resourceVersion"))?;
    let mut metadata = Map::new();
    metadata.insert("resourceVersion".into(), version.into());
    if !annotations.is_empty() {
        metadata.insert("annotations".into(), Value::Object(annotations));
    }
    let mut patch = Map::new();
    patch.insert("metadata".into(), Value::Object(metadata));
    if !spec.is_empty() {
        patch.insert("spec".into(), Value::Object(spec));
    }
    Ok(Some(Value::Object(patch)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn web() -> WorkloadSpec {
        serde_json::from_value(
            json!({"kind": "Deployment", "namespace": "shop", "name": "web",
                                      "activeReplicas": 4, "standbyReplicas": 1}),
        )
        .expect("workload")
    }

    #[test]
    fn both_kinds_are_read_with_their_defaults() {
        let h = hpa(&json!({"metadata": {"name": "web"}, "spec": {
            "scaleTargetRef": {"kind": "Deployment", "name": "web", "apiVersion": "apps/v1"},
            "maxReplicas": 3}}))
        .expect("hpa");
        assert_eq!((h.min_replicas, h.max_replicas), (Some(1), Some(3)));
        let k = scaled_object(&json!({"metadata": {"name": "web-so"}, "spec": {
            "scaleTargetRef": {"name": "web"}}}))
        .expect("scaled object");
        assert_eq!(
            (k.target_kind.as_str(), k.min_replicas, k.max_replicas),
            ("Deployment", Some(0), Some(100))
        );
        assert_eq!(hpa(&json!({"spec": "x"})), None);
        assert_eq!(scaled_object(&json!(null)), None);
        assert_eq!(
            hpa(&json!({"metadata": {"name": "x"}, "spec": {
                "scaleTargetRef": {"kind": "Deployment", "name": "web"},
                "maxReplicas": 99999999999i64}}))
            .and_then(|h| h.max_replicas),
            None
        );
    }

    #[test]
    fn a_maximum_below_the_active_count_is_a_problem_for_that_workload_only() {
        let capped = hpa(&json!({"metadata": {"name": "web"}, "spec": {
            "scaleTargetRef": {"kind": "Deployment", "name": "web"}, "maxReplicas": 3}}))
        .expect("hpa");
        let other = scaled_object(&json!({"metadata": {"name": "api"}, "spec": {
            "scaleTargetRef": {"name": "api"}, "maxReplicaCount": 1}}))
        .expect("scaled object");
        let roomy = scaled_object(&json!({"metadata": {"name": "web-so"}, "spec": {
            "scaleTargetRef": {"name": "web"}}}))
        .expect("scaled object");
        assert_eq!(
            problems(&web(), "usw2", &[capped, other.clone(), roomy.clone()]),
            vec![
                "HorizontalPodAutoscaler shop/web in usw2 caps Deployment shop/web at 3 \
                 replicas, below its active count 4"
                    .to_string()
            ]
        );
        assert!(problems(&web(), "usw2", &[other, roomy]).is_empty());
    }

    /// An HPA on web as the API server returns it, with `annotations`.
    fn web_hpa(min: Option<i64>, max: i64, annotations: Value) -> Value {
        let mut obj = json!({"metadata": {"name": "web", "namespace": "shop",
            "resourceVersion": "7", "annotations": annotations},
            "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment",
                "name": "web"}, "maxReplicas": max}});
        if let Some(min) = min {
            obj["spec"]["minReplicas"] = min.into();
        }
        obj
    }

    /// `obj` with `patch` applied as a JSON merge patch (RFC 7386), as the API server would.
    fn applied(obj: &Value, patch: &Value) -> Value {
        let Value::Object(changes) = patch else {
            return patch.clone();
        };
        let mut out = obj.as_object().cloned().unwrap_or_default();
        for (k, v) in changes {
            if v.is_null() {
                out.remove(k);
            } else {
                let merged = applied(out.get(k).unwrap_or(&Value::Null), v);
                out.insert(k.clone(), merged);
            }
        }
        Value::Object(out)
    }

    fn hpa_drive(obj: &Value, wanted: i32) -> Result<Option<Value>, String> {
        drive(AutoscalerKind::Hpa, obj, &web(), wanted, false)
    }

    #[test]
    fn standby_saves_the_hpa_bounds_once_and_holds_it_at_the_standby_count() {
        let hpa = web_hpa(Some(4), 10, json!({"team": "shop"}));
        let patch = hpa_drive(&hpa, 1).expect("planned").expect("a patch");
        assert_eq!(
            patch,
            json!({"metadata": {"resourceVersion": "7", "annotations": {
                    SAVED: r#"{"minReplicas":4,"maxReplicas":10,"set":{"minReplicas":1,"maxReplicas":1}}"#}},
                "spec": {"minReplicas": 1, "maxReplicas": 1}})
        );
        let standby = applied(&hpa, &patch);
        // Again (a pass after a crash, or another scale to the same count): nothing to send.
        assert_eq!(hpa_drive(&standby, 1), Ok(None));
        // To another standby count: the saved originals stay as they were.
        let patch = hpa_drive(&standby, 2).expect("planned").expect("a patch");
        assert_eq!(
            patch,
            json!({"metadata": {"resourceVersion": "7", "annotations": {
                    SAVED: r#"{"minReplicas":4,"maxReplicas":10,"set":{"minReplicas":2,"maxReplicas":2}}"#}},
                "spec": {"minReplicas": 2, "maxReplicas": 2}})
        );
        // Scaled to 0 (a fenced writer): the HPA's minimum cannot be 0, it stays at 1.
        let patch = hpa_drive(&standby, 0).expect("planned");
        assert_eq!(patch, None);
        // minReplicas absent is the API server's default, 1.
        let defaulted = web_hpa(None, 3, json!({}));
        let patch = hpa_drive(&defaulted, 0).expect("planned").expect("a patch");
        assert_eq!(
            patch["metadata"]["annotations"][SAVED],
            r#"{"minReplicas":1,"maxReplicas":3,"set":{"minReplicas":1,"maxReplicas":1}}"#
        );
        assert_eq!(patch["spec"], json!({"maxReplicas": 1}));
    }

    #[test]
    fn preflight_reads_a_standby_hpa_by_its_saved_bounds() {
        let hpa_seen = |obj: &Value| hpa(obj).expect("an HPA");
        let roomy = web_hpa(Some(4), 10, json!({}));
        let standby = applied(&roomy, &hpa_drive(&roomy, 1).expect("ok").expect("patch"));
        assert_eq!(standby["spec"]["maxReplicas"], 1);
        let seen = hpa_seen(&standby);
        assert_eq!((seen.min_replicas, seen.max_replicas), (Some(4), Some(10)));
        assert!(problems(&web(), "usw2", &[seen]).is_empty());
        // Capped by its owner: still reported, held at standby or not.
        let capped = web_hpa(Some(1), 3, json!({}));
        let standby = applied(&capped, &hpa_drive(&capped, 1).expect("ok").expect("patch"));
        assert_eq!(problems(&web(), "usw2", &[hpa_seen(&standby)]).len(), 1);
        // An annotation Drover did not write: the spec is what there is.
        let garbage = web_hpa(Some(1), 3, json!({SAVED: "{"}));
        assert_eq!(hpa_seen(&garbage).max_replicas, Some(3));
    }

    #[test]
    fn active_restores_the_saved_hpa_bounds_and_removes_the_annotation() {
        let hpa = web_hpa(Some(4), 10, json!({}));
        let standby = applied(&hpa, &hpa_drive(&hpa, 1).expect("planned").expect("patch"));
        let patch = hpa_drive(&standby, 4).expect("planned").expect("a patch");
        assert_eq!(
            patch,
            json!({"metadata": {"resourceVersion": "7", "annotations": {SAVED: null}},
                "spec": {"minReplicas": 4, "maxReplicas": 10}})
        );
        let active = applied(&standby, &patch);
        assert_eq!(active["spec"], hpa["spec"]);
        assert_eq!(active["metadata"]["annotations"], json!({}));
        assert_eq!(hpa_drive(&active, 4), Ok(None), "already at its originals");
        // Never driven before (a region active from the start): nothing to do.
        assert_eq!(hpa_drive(&hpa, 4), Ok(None));
    }

    #[test]
    fn active_keeps_the_annotation_while_the_originals_are_below_the_active_count() {
        // Originals 2..3, active count 4: raised for now, the originals kept for later.
        let hpa = web_hpa(Some(2), 3, json!({}));
        let saved = |set: i32| {
            format!(
                r#"{{"minReplicas":2,"maxReplicas":3,"set":{{"minReplicas":{set},"maxReplicas":{set}}}}}"#
            )
        };
        let patch = hpa_drive(&hpa, 4).expect("planned").expect("a patch");
        assert_eq!(
            patch,
            json!({"metadata": {"resourceVersion": "7", "annotations": {SAVED: saved(4)}},
                "spec": {"minReplicas": 4, "maxReplicas": 4}})
        );
        let active = applied(&hpa, &patch);
        assert_eq!(hpa_drive(&active, 4), Ok(None));
        // Then standby: held at 1, the originals still the user's, not Drover's 4..4.
        let standby = applied(&active, &hpa_drive(&active, 1).expect("ok").expect("patch"));
        assert_eq!(standby["metadata"]["annotations"][SAVED], saved(1));
        assert_eq!(standby["spec"]["minReplicas"], 1);
        // From standby, the same: originals raised to the active count, annotation kept.
        let patch = hpa_drive(&standby, 4).expect("planned").expect("a patch");
        assert_eq!(
            patch,
            json!({"metadata": {"resourceVersion": "7", "annotations": {SAVED: saved(4)}},
                "spec": {"minReplicas": 4, "maxReplicas": 4}})
        );
    }

    #[test]
    fn bounds_its_owner_changed_while_drover_held_the_hpa_are_the_ones_restored() {
        let original = web_hpa(Some(4), 10, json!({}));
        let standby = applied(
            &original,
            &hpa_drive(&original, 1).expect("ok").expect("patch"),
        );
        // Its owner (or a GitOps sync) sets new bounds while the region is standby.
        let mut edited = standby.clone();
        edited["spec"]["minReplicas"] = 6.into();
        edited["spec"]["maxReplicas"] = 20.into();
        assert_eq!(hpa(&edited).and_then(|h| h.max_replicas), Some(20));
        // Held at standby again, with the owner's newest bounds saved...
        let held = applied(&edited, &hpa_drive(&edited, 1).expect("ok").expect("patch"));
        assert_eq!(
            held["metadata"]["annotations"][SAVED],
            r#"{"minReplicas":6,"maxReplicas":20,"set":{"minReplicas":1,"maxReplicas":1}}"#
        );
        // ...and restored when active: theirs, not the ones saved before.
        let active = applied(&held, &hpa_drive(&held, 4).expect("ok").expect("patch"));
        assert_eq!(
            (
                &active["spec"]["minReplicas"],
                &active["spec"]["maxReplicas"]
            ),
            (&json!(6), &json!(20))
        );
        assert_eq!(active["metadata"]["annotations"], json!({}));
        // An annotation from before Drover recorded what it set: the saved bounds count.
        let older = web_hpa(
            Some(1),
            1,
            json!({SAVED: r#"{"minReplicas":4,"maxReplicas":10}"#}),
        );
        let patch = hpa_drive(&older, 4).expect("ok").expect("patch");
        assert_eq!(patch["spec"], json!({"minReplicas": 4, "maxReplicas": 10}));
        assert_eq!(patch["metadata"]["annotations"][SAVED], Value::Null);
    }

    #[test]
    fn an_autoscaler_of_another_api_group_with_the_same_kind_and_name_is_not_the_workloads() {
        let mut foreign = web_hpa(Some(4), 10, json!({}));
        foreign["spec"]["scaleTargetRef"]["apiVersion"] = "example.com/v1".into();
        assert_eq!(hpa_drive(&foreign, 1), Ok(None));
        let seen = hpa(&foreign).expect("an HPA");
        assert!(!seen.scales(&web()));
        // No apiVersion in the reference: kind and name decide.
        let mut bare = web_hpa(Some(4), 10, json!({}));
        bare["spec"]["scaleTargetRef"]
            .as_object_mut()
            .map(|r| r.remove("apiVersion"));
        assert!(hpa(&bare).expect("an HPA").scales(&web()));
    }

    fn web_so(annotations: Value) -> Value {
        json!({"metadata": {"name": "web-so", "namespace": "shop", "resourceVersion": "9",
            "annotations": annotations},
            "spec": {"scaleTargetRef": {"name": "web"}}})
    }

    fn so_drive(obj: &Value, wanted: i32) -> Result<Option<Value>, String> {
        drive(AutoscalerKind::ScaledObject, obj, &web(), wanted, false)
    }

    #[test]
    fn a_scaled_object_not_paused_is_paused_at_standby_and_unpaused_when_active() {
        let so = web_so(json!({}));
        let patch = so_drive(&so, 1).expect("planned").expect("a patch");
        assert_eq!(
            patch,
            json!({"metadata": {"resourceVersion": "9", "annotations": {
                SAVED: r#"{"pausedReplicas":null}"#, KEDA_PAUSED_REPLICAS: "1"}}})
        );
        let standby = applied(&so, &patch);
        assert_eq!(so_drive(&standby, 1), Ok(None));
        // Another standby count: paused there, the saved state untouched.
        assert_eq!(
            so_drive(&standby, 0),
            Ok(Some(
                json!({"metadata": {"resourceVersion": "9", "annotations": {
                KEDA_PAUSED_REPLICAS: "0"}}})
            ))
        );
        let patch = so_drive(&standby, 4).expect("planned").expect("a patch");
        assert_eq!(
            patch,
            json!({"metadata": {"resourceVersion": "9", "annotations": {
                SAVED: null, KEDA_PAUSED_REPLICAS: null}}})
        );
        let active = applied(&standby, &patch);
        assert_eq!(active, so);
        assert_eq!(so_drive(&active, 4), Ok(None));
    }

    #[test]
    fn a_held_scaled_object_stays_paused_at_the_active_count_until_let_go() {
        // Standby, paused at 1 by Drover.
        let so = web_so(json!({}));
        let standby = applied(&so, &so_drive(&so, 1).expect("ok").expect("patch"));
        // Warming up (held): paused at the active count, the owner's state still saved,
        // so an idle KEDA cannot take it to 0 before DNS moves.
        let held = drive(AutoscalerKind::ScaledObject, &standby, &web(), 4, true)
            .expect("ok")
            .expect("patch");
        assert_eq!(
            held["metadata"]["annotations"],
            json!({KEDA_PAUSED_REPLICAS: "4"})
        );
        let warm = applied(&standby, &held);
        let judged = scaling(
            &[(AutoscalerKind::ScaledObject, warm.clone())],
            &web(),
            4,
            true,
        );
        assert_eq!(judged, Ok(Autoscaling::default()), "not live, not behind");
        // Verify lets it go: the owner's state back.
        let judged = scaling(
            &[(AutoscalerKind::ScaledObject, warm.clone())],
            &web(),
            4,
            false,
        );
        assert_eq!(judged.map(|a| a.behind), Ok(true));
        let active = applied(&warm, &so_drive(&warm, 4).expect("ok").expect("patch"));
        assert_eq!(active, so);
        // An HPA needs no hold: at the active count its minimum is that count already.
        let hpa = web_hpa(Some(2), 10, json!({}));
        assert_eq!(
            drive(AutoscalerKind::Hpa, &hpa, &web(), 4, true),
            drive(AutoscalerKind::Hpa, &hpa, &web(), 4, false)
        );
    }

    #[test]
    fn a_returning_regions_fence_pauses_a_scaled_object_at_0() {
        // A pending fence scales a workload whose active count it records as 0.
        let fenced = WorkloadSpec {
            active_replicas: 0,
            ..web()
        };
        let so = web_so(json!({}));
        let patch = drive(AutoscalerKind::ScaledObject, &so, &fenced, 0, false)
            .expect("planned")
            .expect("a patch");
        assert_eq!(
            patch["metadata"]["annotations"][KEDA_PAUSED_REPLICAS],
            json!("0")
        );
        let paused = applied(&so, &patch);
        assert_eq!(
            drive(AutoscalerKind::ScaledObject, &paused, &fenced, 0, false),
            Ok(None)
        );
    }

    #[test]
    fn scaling_says_whether_an_autoscaler_is_live_and_whether_it_is_behind() {
        let hpa = web_hpa(Some(4), 10, json!({}));
        let all = vec![(AutoscalerKind::Hpa, hpa.clone())];
        // Active, at its own bounds: live (it may scale web above 4), nothing to send.
        assert_eq!(
            scaling(&all, &web(), 4, false),
            Ok(Autoscaling {
                live: Some(4),
                behind: false
            })
        );
        // A standby count it has not been held at yet: the scale must be sent.
        assert_eq!(scaling(&all, &web(), 1, false).map(|a| a.behind), Ok(true));
        let held = applied(
            &hpa,
            &hpa_drive(&hpa, 1).expect("planned").expect("a patch"),
        );
        assert_eq!(
            scaling(&[(AutoscalerKind::Hpa, held)], &web(), 1, false),
            Ok(Autoscaling {
                live: None,
                behind: false
            })
        );
        // A ScaledObject is live at its minReplicaCount (KEDA's default 0) unless paused by
        // either annotation.
        let so = |annotations: Value| vec![(AutoscalerKind::ScaledObject, web_so(annotations))];
        assert_eq!(
            scaling(&so(json!({})), &web(), 4, false).map(|a| a.live),
            Ok(Some(0))
        );
        assert_eq!(
            scaling(&so(json!({KEDA_PAUSED: "true"})), &web(), 4, false).map(|a| a.live),
            Ok(None)
        );
        // The lowest count of the live ones.
        let both = vec![
            (AutoscalerKind::Hpa, hpa.clone()),
            (AutoscalerKind::ScaledObject, web_so(json!({}))),
        ];
        assert_eq!(
            scaling(&both, &web(), 4, false).map(|a| a.live),
            Ok(Some(0))
        );
        // A paused ScaledObject is not live; another workload's autoscalers do not count.
        let paused = web_so(json!({KEDA_PAUSED_REPLICAS: "1",
            SAVED: r#"{"pausedReplicas":null}"#}));
        let other = json!({"metadata": {"name": "api", "resourceVersion": "1"},
            "spec": {"scaleTargetRef": {"kind": "Deployment", "name": "api"}, "maxReplicas": 9}});
        let all = vec![
            (AutoscalerKind::ScaledObject, paused),
            (AutoscalerKind::Hpa, other),
        ];
        assert_eq!(scaling(&all, &web(), 1, false), Ok(Autoscaling::default()));
        // What `drive` refuses, `scaling` says (preflight reports it before any change).
        let garbage = web_hpa(Some(4), 10, json!({SAVED: "not json"}));
        assert!(scaling(&[(AutoscalerKind::Hpa, garbage)], &web(), 1, false).is_err());
    }

    #[test]
    fn a_scaled_object_paused_by_its_owner_gets_its_own_pause_back() {
        let so = web_so(json!({KEDA_PAUSED_REPLICAS: "3"}));
        let patch = so_drive(&so, 1).expect("planned").expect("a patch");
        assert_eq!(
            patch["metadata"]["annotations"],
            json!({SAVED: r#"{"pausedReplicas":"3"}"#, KEDA_PAUSED_REPLICAS: "1"})
        );
        let standby = applied(&so, &patch);
        let patch = so_drive(&standby, 4).expect("planned").expect("a patch");
        assert_eq!(
            patch["metadata"]["annotations"],
            json!({SAVED: null, KEDA_PAUSED_REPLICAS: "3"})
        );
        assert_eq!(applied(&standby, &patch), so);
        // Paused by its owner at the standby count already: only the state is saved.
        assert_eq!(
            so_drive(&so, 3).expect("planned").expect("a patch")["metadata"]["annotations"],
            json!({SAVED: r#"{"pausedReplicas":"3"}"#})
        );
        // Never paused by Drover: active leaves the owner's pause alone.
        assert_eq!(so_drive(&so, 4), Ok(None));
    }

    #[test]
    fn only_the_workloads_own_autoscalers_are_driven_and_not_the_hpa_keda_owns() {
        let mut keda_owned = web_hpa(Some(1), 100, json!({}));
        keda_owned["metadata"]["ownerReferences"] = json!([{"apiVersion": "keda.sh/v1alpha1",
            "kind": "ScaledObject", "name": "web-so", "uid": "u", "controller": true}]);
        assert_eq!(hpa_drive(&keda_owned, 1), Ok(None));
        assert_eq!(
            hpa(&keda_owned),
            None,
            "preflight reads its ScaledObject instead"
        );
        let mut other = web_hpa(Some(1), 2, json!({}));
        other["spec"]["scaleTargetRef"]["name"] = "api".into();
        assert_eq!(hpa_drive(&other, 1), Ok(None));
        let mut stateful = web_so(json!({}));
        stateful["spec"]["scaleTargetRef"]["kind"] = "StatefulSet".into();
        assert_eq!(so_drive(&stateful, 1), Ok(None));
        // Not an autoscaler at all.
        assert_eq!(hpa_drive(&json!({"spec": []}), 1), Ok(None));
        assert_eq!(so_drive(&json!(null), 1), Ok(None));
    }

    #[test]
    fn odd_objects_are_plain_errors_and_never_a_panic() {
        let garbage = web_hpa(Some(4), 10, json!({SAVED: "min 4, max 10"}));
        assert_eq!(
            hpa_drive(&garbage, 1),
            Err(format!(
                "HorizontalPodAutoscaler shop/web has an annotation {SAVED} that is not what \
                 Drover saves there ({{\"minReplicas\":N,\"maxReplicas\":N}}); set it to the \
                 autoscaler's own settings in that form, or remove it if they are the current \
                 ones"
            ))
        );
        let foreign = web_hpa(Some(4), 10, json!({SAVED: r#"{"pausedReplicas":null}"#}));
        assert!(hpa_drive(&foreign, 4).is_err());
        let so = web_so(json!({SAVED: "[1]"}));
        let told = so_drive(&so, 1).expect_err("not Drover's");
        assert!(
            told.starts_with(&format!(
                "ScaledObject shop/web-so has an annotation {SAVED}"
            )),
            "{told}"
        );
        let huge = web_hpa(Some(99_999_999_999), 10, json!({}));
        assert_eq!(
            hpa_drive(&huge, 1),
            Err(
                "HorizontalPodAutoscaler shop/web has a minReplicas that is not a replica \
                 count: 99999999999"
                    .into()
            )
        );
        let mut no_max = web_hpa(Some(1), 1, json!({}));
        no_max["spec"]
            .as_object_mut()
            .map(|s| s.remove("maxReplicas"));
        assert_eq!(
            hpa_drive(&no_max, 1),
            Err("HorizontalPodAutoscaler shop/web has no maxReplicas".into())
        );
        let mut no_version = web_hpa(Some(4), 10, json!({}));
        no_version["metadata"]["resourceVersion"] = Value::Null;
        assert_eq!(
            hpa_drive(&no_version, 1),
            Err("HorizontalPodAutoscaler shop/web has no resourceVersion".into())
        );
        // Annotations that are not a map, an annotation that is not a string: as absent.
        let mut odd = web_so(json!("x"));
        assert!(so_drive(&odd, 1).expect("planned").is_some());
        odd["metadata"]["annotations"] = json!({KEDA_PAUSED_REPLICAS: 3});
        assert!(so_drive(&odd, 1).expect("planned").is_some());
    }
}
