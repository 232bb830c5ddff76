//! `drover failover` and `drover status`: the terminal side, with kubectl's kubeconfig and
//! context rules. Rendering is pure (tested below); the async parts only fetch and watch.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, ValueEnum};
use futures::StreamExt;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ObjectMeta, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use serde::Serialize;

use crate::api::{
    DisasterRecoveryPlan, Failover, FailoverMode, FailoverPhase, FailoverSpec, StepState,
};

/// Where to find the management cluster, as kubectl resolves it.
#[derive(Args, Debug, Clone, Default)]
pub struct KubeArgs {
    /// Path to the kubeconfig file (default: $KUBECONFIG, then ~/.kube/config).
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context to use.
    #[arg(long)]
    pub context: Option<String>,
    /// Namespace of the plan (default: the context's namespace, else "default").
    #[arg(short = 'n', long)]
    pub namespace: Option<String>,
}

#[derive(Args, Debug, Clone)]
pub struct FailoverArgs {
    /// The DisasterRecoveryPlan to fail over.
    #[arg(long)]
    pub plan: String,
    /// The plan region to make active.
    #[arg(long = "to")]
    pub to: String,
    /// Planned, Unplanned or DryRun.
    #[arg(long, value_enum, default_value_t = ModeArg::Planned)]
    pub mode: ModeArg,
    /// Unplanned only: promote even though replication lag is above zero.
    #[arg(long)]
    pub allow_data_loss: bool,
    /// With --allow-data-loss: the largest lag accepted at promotion, e.g. 30s.
    #[arg(long, requires = "allow_data_loss")]
    pub max_data_loss: Option<String>,
    /// Follow the failover until it ends; exit non-zero unless it Succeeded.
    #[arg(long, short = 'w')]
    pub watch: bool,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
#[value(rename_all = "PascalCase")]
pub enum ModeArg {
    Planned,
    Unplanned,
    DryRun,
}

impl From<ModeArg> for FailoverMode {
    fn from(m: ModeArg) -> Self {
        match m {
            ModeArg::Planned => FailoverMode::Planned,
            ModeArg::Unplanned => FailoverMode::Unplanned,
            ModeArg::DryRun => FailoverMode::DryRun,
        }
    }
}

#[derive(Args, Debug, Clone)]
pub struct StatusArgs {
    /// Show only this plan.
    pub plan: Option<String>,
    /// Plans in every namespace.
    #[arg(short = 'A', long)]
    pub all_namespaces: bool,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t = Output::Table)]
    pub output: Output,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    Table,
    Json,
    Yaml,
}

/// A failure explained in one plain sentence.
#[derive(Debug)]
pub struct CliError(pub String);

impl std::fmt::Display for CliError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Turns a Kubernetes error into a sentence about `what`.
fn explain(what: &str, e: kube::Error) -> CliError {
    match e {
        kube::Error::Api(s) if s.code == 404 => CliError(format!("{what} not found")),
        kube::Error::Api(s) if s.code == 403 => CliError(format!(
            "not allowed to read or write {what}: {}",
            s.message
        )),
        kube::Error::Api(s) if s.code == 401 => CliError(format!(
            "{what}: the Kubernetes API server rejected your credentials (kubeconfig or \
             service account token): {}",
            crate::error::status_message(&s)
        )),
        // The reason only when it adds to the message ("Unauthorized (Unauthorized)" does not).
        kube::Error::Api(s) if s.reason.is_empty() || s.message.contains(&s.reason) => {
            CliError(format!("{what}: {}", crate::error::status_message(&s)))
        }
        kube::Error::Api(s) => CliError(format!("{what}: {} ({})", s.message, s.reason)),
        kube::Error::HyperError(_) | kube::Error::Service(_) => CliError(format!(
            "cannot reach the Kubernetes API server: {}",
            crate::error::root_cause(&e)
        )),
        other => CliError(format!("{what}: {}", crate::error::kube_message(&other))),
    }
}

/// A client and the namespace to use, from kubeconfig, context and `-n`.
pub async fn connect(args: &KubeArgs) -> Result<Session, CliError> {
    let options = KubeConfigOptions {
        context: args.context.clone(),
        ..Default::default()
    };
    let config = match &args.kubeconfig {
        Some(path) => {
            let kubeconfig = Kubeconfig::read_from(path)
                .map_err(|e| CliError(format!("cannot read kubeconfig {}: {e}", path.display())))?;
            kube::Config::from_custom_kubeconfig(kubeconfig, &options).await
        }
        None => kube::Config::from_kubeconfig(&options).await,
    }
    .map_err(|e| CliError(format!("cannot load the kubeconfig: {e}")))?;
    let namespace = args
        .namespace
        .clone()
        .unwrap_or_else(|| config.default_namespace.clone());
    let server = config.cluster_url.to_string();
    let client = Client::try_from(config)
        .map_err(|e| CliError(format!("cannot build a Kubernetes client: {e}")))?;
    Ok(Session {
        client,
        namespace,
        server,
    })
}

/// A connection to the management cluster.
pub struct Session {
    pub client: Client,
    pub namespace: String,
    /// The API server URL, for error messages.
    pub server: String,
}

impl Session {
    /// Like `explain`, naming the server when it cannot be reached.
    pub fn explain(&self, what: &str, e: kube::Error) -> CliError {
        let CliError(message) = explain(what, e);
        match message.strip_prefix("cannot reach the Kubernetes API server") {
            Some(rest) => CliError(format!(
                "cannot reach the Kubernetes API server at {}{rest}",
                self.server.trim_end_matches('/')
            )),
            None => CliError(message),
        }
    }
}

/// The Failover object `drover failover` creates.
pub fn failover_object(args: &FailoverArgs, namespace: &str) -> Failover {
    let mut fo = Failover::new(
        "",
        FailoverSpec {
            allow_data_loss: args.allow_data_loss,
            max_data_loss: args.max_data_loss.clone(),
            ..FailoverSpec::new(&args.plan, &args.to, args.mode.into())
        },
    );
    fo.metadata = ObjectMeta {
        generate_name: Some(format!("{}-to-{}-", args.plan, args.to)),
        namespace: Some(namespace.to_string()),
        ..Default::default()
    };
    fo
}

/// `drover failover`: creates the Failover; with `--watch`, follows it. Ok(true) when it
/// Succeeded (or was only created).
pub async fn failover(kube: &KubeArgs, args: &FailoverArgs) -> Result<bool, CliError> {
    let session = connect(kube).await?;
    let (client, ns) = (session.client.clone(), session.namespace.clone());
    let plans: Api<DisasterRecoveryPlan> = Api::namespaced(client.clone(), &ns);
    let plan = plans
        .get(&args.plan)
        .await
        .map_err(|e| session.explain(&format!("plan {:?} in namespace {ns:?}", args.plan), e))?;
    if !plan.spec.regions.iter().any(|r| r.name == args.to) {
        let names: Vec<&str> = plan.spec.regions.iter().map(|r| r.name.as_str()).collect();
        return Err(CliError(format!(
            "plan {:?} has no region {:?}; its regions are {}",
            args.plan,
            args.to,
            names.join(", ")
        )));
    }
    let api: Api<Failover> = Api::namespaced(client, &ns);
    let created = api
        .create(&PostParams::default(), &failover_object(args, &ns))
        .await
        .map_err(|e| session.explain(&format!("a Failover in namespace {ns:?}"), e))?;
    let name = created.name_any();
    println!("failover.drover.io/{name} created in namespace {ns}");
    if !args.watch {
        return Ok(true);
    }
    watch(&api, &name).await
}

/// Columns assumed when the terminal does not say.
const DEFAULT_WIDTH: usize = 80;

/// The width of the terminal on stdout, asked at each redraw: it can be resized.
fn terminal_width() -> Option<usize> {
    let mut size = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ only writes one `winsize` into `size`, which outlives the call.
    let answered = unsafe { libc::ioctl(libc::STDOUT_FILENO, libc::TIOCGWINSZ, &mut size) } == 0;
    (answered && size.ws_col > 0).then_some(usize::from(size.ws_col))
}

/// Follows one Failover until it is terminal, redrawing a live view on a terminal and
/// printing one line per step change otherwise. One not created yet is waited for.
pub(crate) async fn watch(api: &Api<Failover>, name: &str) -> Result<bool, CliError> {
    let tty = std::io::stdout().is_terminal();
    // Stopping the watch must not look like stopping the failover.
    eprintln!("watching {name}; Ctrl-C stops watching, not the failover");
    let mut events = watcher::watch_object(api.clone(), name).boxed();
    let mut ticker = tokio::time::interval(Duration::from_millis(150));
    let mut latest: Option<Failover> = None;
    let mut printed = PrintedSteps::default();
    // The display width of each line of the last frame, to erase it before the next.
    let mut drawn: Vec<usize> = Vec::new();
    let mut frame = 0usize;
    loop {
        tokio::select! {
            event = events.next() => match event {
                Some(Ok(Some(fo))) => latest = Some(fo),
                // Not created yet (a drill records its way back just before creating it).
                Some(Ok(None)) if latest.is_none() => {}
                Some(Ok(None)) => return Err(CliError(format!("failover {name} was deleted"))),
                // The watcher re-lists by itself after transient errors.
                Some(Err(e)) => { if !tty { eprintln!("watch interrupted, resuming: {}", crate::error::plain(&e)); } }
                None => return Err(CliError("the watch ended unexpectedly".into())),
            },
            _ = ticker.tick() => frame += 1,
        }
        let Some(fo) = &latest else { continue };
        let now = Timestamp::now();
        let mut out = std::io::stdout().lock();
        if tty {
            let width = terminal_width().unwrap_or(DEFAULT_WIDTH);
            let lines = live_view(fo, frame, now, width);
            let up = rows_taken(&drawn, width);
            if up > 0 {
                // Move up and clear what was drawn before.
                let _ = write!(out, "\x1b[{up}A\x1b[J");
            }
            for line in &lines {
                let _ = writeln!(out, "{line}");
            }
            drawn = lines.iter().map(|l| display_width(l)).collect();
        } else {
            for line in printed.changes(fo) {
                let _ = writeln!(out, "{line}");
            }
        }
        let _ = out.flush();
        let phase = fo.status.as_ref().and_then(|s| s.phase);
        // A success is watched on while its probes wait for the target to answer.
        if phase.is_some_and(FailoverPhase::is_terminal)
            && !crate::probes::settling(fo, std::time::SystemTime::now())
        {
            for line in summary(fo) {
                let _ = writeln!(out, "{line}");
            }
            return Ok(phase == Some(FailoverPhase::Succeeded));
        }
    }
}

/// The rows that lines of these display widths take on a terminal `width` columns wide.
/// Each was drawn narrower than the terminal then, so one row each unless the terminal has
/// since been narrowed and rewrapped them (tmux and most terminals do).
pub fn rows_taken(widths: &[usize], width: usize) -> usize {
    let width = width.max(1);
    widths.iter().map(|w| w.div_ceil(width).max(1)).sum()
}

fn display_width(line: &str) -> usize {
    unicode_width::UnicodeWidthStr::width(line)
}

/// `line` cut to leave the last of `width` columns free, ending in "…" when cut, with
/// control characters shown as spaces: a line that wraps takes two rows, and the redraw,
/// which moves up one row per line, would leave the top of the last frame behind. The free
/// column is for terminals that wrap as soon as the last one is written.
pub fn fit(line: &str, width: usize) -> String {
    use unicode_width::UnicodeWidthChar;
    let room = width.saturating_sub(1).max(1);
    let clean: String = line
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if display_width(&clean) <= room {
        return clean;
    }
    let mut cut = String::new();
    let mut used = 0;
    for c in clean.chars() {
        let w = c.width().unwrap_or(0);
        // One column for the "…".
        if used + w >= room {
            break;
        }
        cut.push(c);
        used += w;
    }
    format!("{}…", cut.trim_end())
}

const SPINNER: [&str; 10] = ["⠋", "⠙", "⠹", "⠸", "⠼", "⠴", "⠦", "⠧", "⠇", "⠏"];

fn state_mark(state: StepState, frame: usize) -> &'static str {
    match state {
        StepState::Pending => "·",
        StepState::Running => SPINNER[frame % SPINNER.len()],
        StepState::Succeeded => "✓",
        StepState::Failed => "✗",
        StepState::Skipped => "-",
    }
}

fn seconds(s: f64) -> String {
    format!("{s:.1}s")
}

fn since(
    started: &k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime,
    now: Timestamp,
) -> f64 {
    now.duration_since(started.0).as_secs_f64().max(0.0)
}

/// The live view: a header, one line per step with its state and duration, and the phase,
/// each line fitted to a terminal `width` columns wide.
pub fn live_view(fo: &Failover, frame: usize, now: Timestamp, width: usize) -> Vec<String> {
    let mut lines = vec![format!(
        "Failover {}: plan {} → {} ({:?})",
        fo.name_any(),
        fo.spec.plan_ref,
        fo.spec.target_region,
        fo.spec.mode
    )];
    let Some(status) = &fo.status else {
        lines.push("  waiting for the operator to pick it up".into());
        return fit_all(&lines, width);
    };
    for step in &status.steps {
        let duration = match (step.state, step.duration_seconds, &step.started_at) {
            (_, Some(d), _) => seconds(d),
            (StepState::Running, None, Some(started)) => seconds(since(started, now)),
            _ => String::new(),
        };
        let message = match step.state {
            StepState::Pending => "",
            _ => step.message.as_deref().unwrap_or(""),
        };
        lines.push(
            format!(
                "  {} {:<18} {:>7}  {}",
                state_mark(step.state, frame),
                step.name,
                duration,
                message.lines().next().unwrap_or("")
            )
            .trim_end()
            .to_string(),
        );
    }
    let timings = status.timings.as_ref();
    let elapsed = match (
        timings.and_then(|t| t.total_seconds),
        timings.and_then(|t| t.started_at.as_ref()),
    ) {
        (Some(total), _) => format!(" after {}", seconds(total)),
        (None, Some(started)) => format!(" for {}", seconds(since(started, now))),
        (None, None) => String::new(),
    };
    lines.extend(users_line(status, now));
    lines.push(format!("  phase {}{elapsed}", phase_name(status)));
    lines.extend(approval_hint(fo).into_iter().map(|l| format!("  {l}")));
    fit_all(&lines, width)
}

/// What the plan's probes showed users, while it is being measured.
fn users_line(status: &crate::api::FailoverStatus, now: Timestamp) -> Option<String> {
    let record = status.user_visible.as_ref()?;
    if record.settled {
        return None;
    }
    Some(match &record.old_region_stopped_at {
        None => "  users: the old region still answers".to_string(),
        Some(stopped) => format!(
            "  users: without service for {} (waiting for the target region to answer)",
            seconds(since(stopped, now))
        ),
    })
}

/// The user-visible RTO line of the summary, once measured or given up on.
fn user_visible_summary(status: &crate::api::FailoverStatus) -> Option<String> {
    let record = status.user_visible.as_ref()?;
    Some(match (record.recovery_seconds, &record.message) {
        (Some(took), _) => format!(
            "  user-visible RTO: {} (the old region's stop to the target's answer, by the plan's \
             probes{})",
            seconds(took),
            if record.stopped_before_first_poll {
                "; the old region was down at the first poll, so users lost it earlier"
            } else {
                ""
            }
        ),
        (None, Some(why)) if record.settled => format!("  user-visible RTO: not measured: {why}"),
        (None, _) => "  user-visible RTO: waiting for the target region to answer".to_string(),
    })
}

fn fit_all(lines: &[String], width: usize) -> Vec<String> {
    lines.iter().map(|l| fit(l, width)).collect()
}

fn first_line(text: &str, max: usize) -> String {
    let line = text.lines().next().unwrap_or("");
    if line.chars().count() > max {
        let cut: String = line.chars().take(max - 1).collect();
        format!("{cut}…")
    } else {
        line.to_string()
    }
}

/// Remembers what was printed, for one line per step change on a non-terminal.
#[derive(Default)]
pub struct PrintedSteps {
    seen: BTreeMap<String, StepState>,
    awaiting_shown: bool,
}

/// While a failover awaits approval: why, until when, and the commands that decide.
pub fn approval_hint(fo: &Failover) -> Vec<String> {
    let Some(status) = fo.status.as_ref() else {
        return Vec::new();
    };
    let Some(approval) = status
        .approval
        .as_ref()
        .filter(|_| status.phase == Some(FailoverPhase::AwaitingApproval))
    else {
        return Vec::new();
    };
    let name = fo.name_any();
    let ns = fo.namespace().unwrap_or_default();
    let deadline = approval
        .deadline
        .as_ref()
        .map(|d| format!(" until {}", d.0.strftime("%Y-%m-%d %H:%M:%S UTC")))
        .unwrap_or_default();
    vec![
        format!("awaiting approval{deadline}: {}", approval.reason),
        format!("approve: drover approve {name} -n {ns}"),
        format!("reject:  drover reject {name} -n {ns} --reason ..."),
    ]
}

impl PrintedSteps {
    pub fn changes(&mut self, fo: &Failover) -> Vec<String> {
        let Some(status) = &fo.status else {
            return Vec::new();
        };
        let mut lines = Vec::new();
        for step in &status.steps {
            if step.state == StepState::Pending || self.seen.get(&step.name) == Some(&step.state) {
                continue;
            }
            self.seen.insert(step.name.clone(), step.state);
            let duration = step
                .duration_seconds
                .map(|d| format!(" in {}", seconds(d)))
                .unwrap_or_default();
            let message = step
                .message
                .as_deref()
                .filter(|_| step.state != StepState::Running)
                .map(|m| format!(": {}", first_line(m, 200)))
                .unwrap_or_default();
            lines.push(format!("{} {:?}{duration}{message}", step.name, step.state));
        }
        let hint = approval_hint(fo);
        if !hint.is_empty() && !self.awaiting_shown {
            self.awaiting_shown = true;
            lines.extend(hint);
        }
        lines
    }
}

/// The phase as printed; a status without one is still Pending.
fn phase_name(status: &crate::api::FailoverStatus) -> String {
    format!("{:?}", status.phase.unwrap_or(FailoverPhase::Pending))
}

/// The closing lines: phase, measured RTO, data-loss estimate, and what failed.
pub fn summary(fo: &Failover) -> Vec<String> {
    let Some(status) = &fo.status else {
        return Vec::new();
    };
    let mut lines = vec![format!("Failover {} {}", fo.name_any(), phase_name(status))];
    if let Some(total) = status.timings.as_ref().and_then(|t| t.total_seconds) {
        let label = if status.phase == Some(FailoverPhase::Succeeded)
            && fo.spec.mode != FailoverMode::DryRun
        {
            "measured RTO"
        } else {
            "duration"
        };
        lines.push(format!("  {label}: {}", seconds(total)));
    }
    lines.extend(user_visible_summary(status));
    match &status.data_loss {
        Some(crate::api::DataLossEstimate {
            unknown_lag_databases: unknown,
            estimated_seconds: Some(estimate),
            ..
        }) if !unknown.is_empty() => lines.push(format!(
            "  data-loss estimate: about {} (replication of {} had stopped: the lag read before \
             it stopped, plus the time until it was seen stopped; more if the old primaries \
             took writes after that)",
            seconds(*estimate),
            unknown.join(", ")
        )),
        Some(d) if !d.unknown_lag_databases.is_empty() => lines.push(format!(
            "  data-loss estimate: unknown for {} (promoted without a known lag); {} for the others",
            d.unknown_lag_databases.join(", "),
            seconds(d.max_lag_seconds)
        )),
        Some(d) => lines.push(format!(
            "  data-loss estimate: {} (replication lag at promotion)",
            seconds(d.max_lag_seconds)
        )),
        None if fo.spec.mode != FailoverMode::DryRun => {
            lines.push("  data-loss estimate: none measured".into())
        }
        None => {}
    }
    for failure in &status.preflight_failures {
        lines.push(format!("  preflight: {failure}"));
    }
    // The condition repeats the preflight failures when there are any.
    if status.phase != Some(FailoverPhase::Succeeded)
        && status.preflight_failures.is_empty()
        && let Some(c) = status
            .conditions
            .iter()
            .find(|c| c.type_ == "Progressing" || c.type_ == "Valid")
            .filter(|c| !c.message.is_empty())
    {
        lines.push(format!("  {}: {}", c.reason, c.message));
    }
    if fo.spec.mode == FailoverMode::DryRun {
        for action in &status.planned_actions {
            lines.push(format!("  would: {action}"));
        }
    }
    lines
}

/// One plan in `drover status`, as printed with `-o json|yaml`.
#[derive(Serialize, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PlanSummary {
    pub namespace: String,
    pub name: String,
    pub active_region: Option<String>,
    pub ready: Option<bool>,
    pub ready_message: Option<String>,
    pub last_failover: Option<FailoverSummary>,
    /// Largest replication lag over databases and standby regions; None when unmeasured.
    pub max_lag_seconds: Option<f64>,
    pub replication: Vec<crate::api::ReplicationStatus>,
    /// The drill under way, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub running_drill: Option<crate::api::RunningDrill>,
    /// The newest drill result.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_drill: Option<crate::api::DrillResult>,
    /// Each health signal and why automatic failover did or did not trigger.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub automatic_failover: Option<crate::api::AutomaticFailoverStatus>,
    /// The newest drill that ran, when the newest result is a skip.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_drill_run: Option<crate::api::DrillResult>,
    /// The next drill a schedule starts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_drill: Option<NextDrill>,
    /// Why no schedule will start a drill, when the plan has schedules.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub no_next_drill: Option<String>,
    /// Why `DrillOverdue` is True, when it is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub drill_overdue: Option<String>,
    /// What the plan asks of automatic failover (with defaults); absent when it has none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub automatic_failover_policy: Option<AutomaticPolicy>,
}

/// The next drill a plan's schedules start.
#[derive(Serialize, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct NextDrill {
    pub schedule: String,
    pub kind: crate::api::DrillKind,
    pub at: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time,
    /// The time zone the schedule is read in.
    pub time_zone: String,
}

/// `spec.automaticFailover`, as its status is read against.
#[derive(Serialize, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AutomaticPolicy {
    /// spec.automaticFailover.paused (the operator can pause it too; the status says).
    pub paused: bool,
    /// Consecutive bad evaluations that make a signal count.
    pub consecutive: u32,
    /// Signals that must count at once.
    pub quorum: u32,
}

#[derive(Serialize, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct FailoverSummary {
    pub name: String,
    pub target_region: String,
    pub phase: Option<String>,
    pub rto_seconds: Option<f64>,
    pub data_loss_seconds: Option<f64>,
    /// While it awaits approval: why, and the command that approves it.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub awaiting_approval: Vec<String>,
}

/// Summarizes a plan at `now`, with its last Failover when it still exists.
pub fn summarize(
    plan: &DisasterRecoveryPlan,
    last: Option<&Failover>,
    now: Timestamp,
) -> PlanSummary {
    let status = plan.status.clone().unwrap_or_default();
    let drills = status.drills.clone().unwrap_or_default();
    let schedules = plan
        .spec
        .drills
        .as_ref()
        .map(|d| d.schedules.as_slice())
        .unwrap_or_default();
    let next = plan
        .spec
        .drills
        .as_ref()
        .and_then(|d| crate::engine::drill::next_scheduled(d, now));
    let no_next_drill = match next {
        Some(_) => None,
        None if schedules.is_empty() => None,
        None if schedules.iter().all(|s| s.suspend) => {
            Some("every schedule is suspended".to_string())
        }
        None => Some("no schedule names a time that comes".to_string()),
    };
    let next_drill = next.map(|(s, at)| NextDrill {
        schedule: s.name.clone(),
        kind: s.kind,
        at: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(at),
        time_zone: s.time_zone.clone().unwrap_or_else(|| "UTC".into()),
    });
    let drill_overdue = status
        .conditions
        .iter()
        .find(|c| c.type_ == "DrillOverdue" && c.status == "True")
        .map(|c| c.message.clone());
    let last_drill_run = drills
        .history
        .first()
        .filter(|h| h.outcome == crate::api::DrillOutcome::Skipped)
        .and_then(|_| {
            drills
                .history
                .iter()
                .find(|h| h.outcome != crate::api::DrillOutcome::Skipped)
                .cloned()
        });
    let automatic_failover_policy = plan.spec.automatic_failover.as_ref().map(|a| {
        let settings = crate::engine::automatic::Settings::of(a);
        AutomaticPolicy {
            paused: a.paused,
            consecutive: settings.consecutive,
            quorum: settings.quorum,
        }
    });
    let ready = status.conditions.iter().find(|c| c.type_ == "Ready");
    let lags: Vec<Option<f64>> = status.replication.iter().map(|r| r.lag_seconds).collect();
    let max_lag_seconds = if lags.is_empty() || lags.iter().any(Option::is_none) {
        None
    } else {
        lags.iter().flatten().copied().reduce(f64::max)
    };
    PlanSummary {
        namespace: plan.namespace().unwrap_or_default(),
        name: plan.name_any(),
        active_region: status.active_region.clone(),
        ready: ready.map(|c| c.status == "True"),
        ready_message: ready.map(|c| c.message.clone()),
        last_failover: status.last_failover.as_ref().map(|l| {
            let fo_status = last.and_then(|f| f.status.as_ref());
            FailoverSummary {
                name: l.name.clone(),
                target_region: l.target_region.clone(),
                phase: fo_status
                    .filter(|s| s.phase.is_some())
                    .map(phase_name)
                    .or_else(|| l.phase.clone()),
                rto_seconds: fo_status
                    .filter(|s| s.phase == Some(FailoverPhase::Succeeded))
                    .and_then(|s| s.timings.as_ref()?.total_seconds),
                data_loss_seconds: fo_status
                    .and_then(|s| Some(s.data_loss.as_ref()?.max_lag_seconds)),
                awaiting_approval: last.map(approval_hint).unwrap_or_default(),
            }
        }),
        max_lag_seconds,
        replication: status.replication,
        running_drill: status.drills.as_ref().and_then(|d| d.running.clone()),
        last_drill: status
            .drills
            .as_ref()
            .and_then(|d| d.history.first().cloned()),
        automatic_failover: status.automatic_failover,
        last_drill_run,
        next_drill,
        no_next_drill,
        drill_overdue,
        automatic_failover_policy,
    }
}

/// How long ago (or until), as kubectl prints ages: 45s, 12m, 5h, 3d.
fn age(from: Timestamp, to: Timestamp) -> String {
    let s = (to.as_second() - from.as_second()).max(0);
    match s {
        s if s < 120 => format!("{s}s"),
        s if s < 120 * 60 => format!("{}m", s / 60),
        s if s < 48 * 3600 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86400),
    }
}

fn clock(t: Timestamp) -> String {
    t.strftime("%Y-%m-%d %H:%M:%S UTC").to_string()
}

/// The drill lines of `drover status`: the one running, the last that ran, the last skip,
/// the next scheduled, DrillOverdue. Empty for a plan without drills.
pub fn drill_lines(p: &PlanSummary, now: Timestamp) -> Vec<String> {
    use crate::api::{DrillOutcome, DrillStage};
    let mut lines = Vec::new();
    if let Some(r) = &p.running_drill {
        let what = format!("running: {:?} {}", r.kind, r.schedule);
        lines.push(match r.stage {
            DrillStage::Going => format!(
                "{what}, {} to {} for {}",
                r.failover,
                r.target_region,
                age(r.started_at.0, now)
            ),
            DrillStage::Holding => match r.hold_until.as_ref().map(|t| t.0) {
                Some(until) if until > now => format!(
                    "{what}, holding in {} until {} (another {}), then back to {}",
                    r.target_region,
                    clock(until),
                    age(now, until),
                    r.source_region
                ),
                _ => format!(
                    "{what}, held in {}; fails back to {} once the plan is Ready",
                    r.target_region, r.source_region
                ),
            },
            DrillStage::Returning => {
                format!(
                    "{what}, failing back to {}: {}",
                    r.source_region, r.failover
                )
            }
        });
    }
    let ran = p
        .last_drill_run
        .as_ref()
        .or(p.last_drill.as_ref())
        .filter(|h| h.outcome != DrillOutcome::Skipped);
    match ran {
        Some(h) => {
            let mut line = format!(
                "last: {:?} {:?} {} ago ({})",
                h.kind,
                h.outcome,
                age(h.finished_at.0, now),
                h.schedule
            );
            match (h.kind, h.rto_seconds, h.rto_back_seconds) {
                (_, Some(there), Some(back)) => line.push_str(&format!(
                    ", RTO {} there, {} back",
                    seconds(there),
                    seconds(back)
                )),
                // A DryRun's "RTO" is how long its preflight took.
                (crate::api::DrillKind::DryRun, Some(took), None) => {
                    line.push_str(&format!(", took {}", seconds(took)))
                }
                (_, Some(there), None) => line.push_str(&format!(", RTO {} there", seconds(there))),
                _ => {}
            }
            match (h.user_visible_seconds, h.user_visible_back_seconds) {
                (Some(there), Some(back)) => line.push_str(&format!(
                    ", users without service {} there, {} back",
                    seconds(there),
                    seconds(back)
                )),
                (Some(there), None) => {
                    line.push_str(&format!(", users without service {} there", seconds(there)))
                }
                _ => {}
            }
            if h.outcome != DrillOutcome::Succeeded {
                match (&h.failing_step, &h.message) {
                    (Some(step), _) => line.push_str(&format!(", failed at {step}")),
                    (None, Some(m)) => line.push_str(&format!(": {m}")),
                    (None, None) => {}
                }
            }
            lines.push(line);
        }
        None if p.last_drill.is_some() || p.next_drill.is_some() => {
            lines.push("last: none has run".into())
        }
        None => {}
    }
    if let Some(h) = p
        .last_drill
        .as_ref()
        .filter(|h| h.outcome == DrillOutcome::Skipped)
    {
        lines.push(format!(
            "skipped: {:?} ({}) {} ago: {}",
            h.kind,
            h.schedule,
            age(h.finished_at.0, now),
            h.message.as_deref().unwrap_or("no reason recorded")
        ));
    }
    match (&p.next_drill, &p.no_next_drill) {
        (Some(n), _) => {
            let local = k8s_openapi::jiff::tz::TimeZone::get(&n.time_zone)
                .map(|tz| n.at.0.to_zoned(tz).strftime("%Y-%m-%d %H:%M").to_string())
                .unwrap_or_else(|_| clock(n.at.0));
            lines.push(format!(
                "next: {} ({:?}) at {local} {}, in {}",
                n.schedule,
                n.kind,
                n.time_zone,
                age(now, n.at.0)
            ));
        }
        (None, Some(why)) => lines.push(format!("next: none ({why})")),
        (None, None) => {}
    }
    if let Some(why) = &p.drill_overdue {
        lines.push(format!("DrillOverdue: {why}"));
    }
    lines
}

/// The automatic failover lines of `drover status`: enabled or paused, each watched
/// signal's bad evaluations against those needed, the last evaluation and its verdict.
pub fn automatic_lines(p: &PlanSummary, now: Timestamp) -> Vec<String> {
    let Some(policy) = &p.automatic_failover_policy else {
        return Vec::new();
    };
    let status = p.automatic_failover.clone().unwrap_or_default();
    let paused = policy.paused || status.paused;
    let region = status
        .active_region
        .clone()
        .or_else(|| p.active_region.clone())
        .unwrap_or_else(|| "-".into());
    let watched: Vec<&crate::api::SignalStatus> = status
        .signals
        .iter()
        .filter(|s| s.region == region)
        .collect();
    let counting = watched
        .iter()
        .filter(|s| s.consecutive_bad >= policy.consecutive)
        .count();
    let signals = watched
        .iter()
        .map(|s| {
            format!(
                "{} {:?} {}/{}",
                s.name, s.state, s.consecutive_bad, policy.consecutive
            )
        })
        .collect::<Vec<_>>()
        .join(", ");
    let mut lines = vec![if watched.is_empty() {
        format!(
            "{}; no signal of {region} evaluated",
            if paused { "paused" } else { "enabled" }
        )
    } else {
        format!(
            "{}; {region}: {signals}; {counting} of {} signals bad enough, {} needed",
            if paused { "paused" } else { "enabled" },
            watched.len(),
            policy.quorum
        )
    }];
    lines.push(match (&status.last_evaluation_time, &status.message) {
        (Some(t), Some(m)) => format!("evaluated {} ago: {m}", age(t.0, now)),
        (Some(t), None) => format!("evaluated {} ago", age(t.0, now)),
        (None, _) => "not evaluated yet".into(),
    });
    if let Some(t) = &status.last_trigger {
        lines.push(format!(
            "last trigger: {} ({} → {}) {} ago",
            t.failover,
            t.source_region,
            t.target_region,
            age(t.at.0, now)
        ));
    }
    lines
}

/// `text` cut at spaces into lines of at most `width` columns (leaving one free, as `fit`);
/// the lines after the first start with `indent` spaces. A longer word stays whole.
fn wrap(text: &str, width: usize, indent: usize) -> Vec<String> {
    let room = width.saturating_sub(1).max(indent + 20);
    let pad = " ".repeat(indent);
    let mut lines = Vec::new();
    let mut line = String::new();
    // Nothing but the indent on this line yet.
    let mut fresh = true;
    for word in text.split(' ') {
        if !fresh && display_width(&line) + 1 + display_width(word) > room {
            lines.push(std::mem::replace(&mut line, pad.clone()));
            fresh = true;
        }
        if !fresh {
            line.push(' ');
        }
        line.push_str(word);
        fresh = false;
    }
    lines.push(line);
    lines
}

/// Each Aurora snapshot AWS took of an old primary's volume after an Unplanned failover:
/// the writes that failover lost, deleted with the cluster's backup retention unless copied.
pub fn old_volume_lines(p: &PlanSummary) -> Vec<String> {
    p.replication
        .iter()
        .filter_map(|r| {
            let s = r.old_volume_snapshot.as_ref()?;
            Some(format!(
                "{} in {}: snapshot {} in {} after {}; copy it to keep it",
                r.database, r.region, s.identifier, s.aws_region, s.failover
            ))
        })
        .collect()
}

/// Below the table, for each plan with drills or automatic failover: one block of labelled
/// lines, wrapped to `width` columns when printing to a terminal.
fn details(
    plans: &[PlanSummary],
    with_namespace: bool,
    now: Timestamp,
    width: Option<usize>,
) -> String {
    const LABEL: usize = 22;
    let mut out = String::new();
    for p in plans {
        let sections = [
            ("Drills:", drill_lines(p, now)),
            ("Automatic failover:", automatic_lines(p, now)),
            ("Old volumes:", old_volume_lines(p)),
        ];
        if sections.iter().all(|(_, lines)| lines.is_empty()) {
            continue;
        }
        let name = if with_namespace {
            format!("{}/{}", p.namespace, p.name)
        } else {
            p.name.clone()
        };
        out.push_str(&format!("\n{name}\n"));
        for (label, lines) in sections {
            for (i, line) in lines.iter().enumerate() {
                let label = if i == 0 { label } else { "" };
                let text = format!("  {label:<width$}{line}", width = LABEL - 2);
                let wrapped = match width {
                    Some(w) => wrap(&text, w, LABEL + 2),
                    None => vec![text],
                };
                for l in wrapped {
                    out.push_str(l.trim_end());
                    out.push('\n');
                }
            }
        }
    }
    out
}

/// The `drover status` table, then each plan's drills and automatic failover (see
/// `details`), as of `now`; `width` is the terminal's, when printing to one.
pub fn status_table(
    plans: &[PlanSummary],
    with_namespace: bool,
    now: Timestamp,
    width: Option<usize>,
) -> String {
    let mut rows = vec![vec![
        "NAME".to_string(),
        "ACTIVE".into(),
        "READY".into(),
        "LAST FAILOVER".into(),
        "PHASE".into(),
        "RTO".into(),
        "LAG".into(),
    ]];
    if with_namespace {
        rows[0].insert(0, "NAMESPACE".into());
    }
    for p in plans {
        let dash = || "-".to_string();
        let last = p.last_failover.as_ref();
        let lag = match (p.max_lag_seconds, p.replication.is_empty()) {
            (Some(l), _) => seconds(l),
            (None, true) => dash(),
            (None, false) => "unknown".into(),
        };
        let mut row = vec![
            p.name.clone(),
            p.active_region.clone().unwrap_or_else(dash),
            match p.ready {
                Some(true) => "True".into(),
                Some(false) => "False".into(),
                None => "Unknown".into(),
            },
            last.map(|l| format!("{} → {}", l.name, l.target_region))
                .unwrap_or_else(dash),
            last.and_then(|l| l.phase.clone()).unwrap_or_else(dash),
            last.and_then(|l| l.rto_seconds)
                .map(seconds)
                .unwrap_or_else(dash),
            lag,
        ];
        if with_namespace {
            row.insert(0, p.namespace.clone());
        }
        rows.push(row);
    }
    let widths: Vec<usize> = (0..rows[0].len())
        .map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
        .collect();
    let table: String = rows
        .iter()
        .map(|r| {
            r.iter()
                .enumerate()
                .map(|(i, cell)| format!("{cell:<width$}", width = widths[i]))
                .collect::<Vec<_>>()
                .join("   ")
                .trim_end()
                .to_string()
                + "\n"
        })
        .collect();
    table + &details(plans, with_namespace, now, width)
}

/// `drover status`: prints the plans as a table, JSON or YAML.
pub async fn status(kube: &KubeArgs, args: &StatusArgs) -> Result<String, CliError> {
    let session = connect(kube).await?;
    let (client, ns) = (session.client.clone(), session.namespace.clone());
    let (plans_api, fo_api): (Api<DisasterRecoveryPlan>, Api<Failover>) = if args.all_namespaces {
        (Api::all(client.clone()), Api::all(client))
    } else {
        (
            Api::namespaced(client.clone(), &ns),
            Api::namespaced(client, &ns),
        )
    };
    let where_ = if args.all_namespaces {
        "any namespace".to_string()
    } else {
        format!("namespace {ns:?}")
    };
    let plans = match &args.plan {
        Some(name) => vec![
            plans_api
                .get(name)
                .await
                .map_err(|e| session.explain(&format!("plan {name:?} in {where_}"), e))?,
        ],
        None => {
            plans_api
                .list(&Default::default())
                .await
                .map_err(|e| session.explain(&format!("plans in {where_}"), e))?
                .items
        }
    };
    let failovers = fo_api
        .list(&Default::default())
        .await
        .map_err(|e| session.explain(&format!("failovers in {where_}"), e))?
        .items;
    let now = Timestamp::now();
    let summaries: Vec<PlanSummary> = plans
        .iter()
        .map(|p| {
            let last_name = p
                .status
                .as_ref()
                .and_then(|s| s.last_failover.as_ref())
                .map(|l| l.name.clone());
            let last = failovers
                .iter()
                .find(|f| Some(f.name_any()) == last_name && f.namespace() == p.namespace());
            summarize(p, last, now)
        })
        .collect();
    match args.output {
        Output::Table if summaries.is_empty() => Ok(format!("No plans found in {where_}.\n")),
        Output::Table => {
            let width = std::io::stdout()
                .is_terminal()
                .then(|| terminal_width().unwrap_or(DEFAULT_WIDTH));
            Ok(status_table(&summaries, args.all_namespaces, now, width))
        }
        Output::Json => serde_json::to_string_pretty(&summaries)
            .map(|s| s + "\n")
            .map_err(|e| CliError(format!("cannot render JSON: {e}"))),
        Output::Yaml => serde_yaml::to_string(&summaries)
            .map_err(|e| CliError(format!("cannot render YAML: {e}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{
        DataLossEstimate, DisasterRecoveryPlanStatus, FailoverStatus, FailoverTimings,
        LastFailover, ReplicationStatus, StepStatus,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, MicroTime, Time};

    fn ts(s: &str) -> Timestamp {
        s.parse().expect("timestamp")
    }

    fn fo(mode: FailoverMode, status: Option<FailoverStatus>) -> Failover {
        let mut fo = Failover::new(
            "shop-to-usw2-abcde",
            FailoverSpec::new("shop", "usw2", mode),
        );
        fo.status = status;
        fo
    }

    fn step(name: &str, state: StepState, duration: Option<f64>, message: &str) -> StepStatus {
        StepStatus {
            name: name.into(),
            state,
            started_at: Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime(
                ts("2026-11-22T00:00:00Z"),
            )),
            finished_at: None,
            duration_seconds: duration,
            attempts: 1,
            message: (!message.is_empty()).then(|| message.into()),
        }
    }

    fn running() -> FailoverStatus {
        FailoverStatus {
            phase: Some(FailoverPhase::Running),
            steps: vec![
                step(
                    "Preflight",
                    StepState::Succeeded,
                    Some(0.21),
                    "all checks passed",
                ),
                step("Fence", StepState::Running, None, "waiting for zero lag"),
                step("PromoteDatabases", StepState::Pending, None, ""),
            ],
            timings: Some(FailoverTimings {
                started_at: Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime(
                    ts("2026-11-22T00:00:00Z"),
                )),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn live_view_shows_each_step_state_and_duration() {
        let view = live_view(
            &fo(FailoverMode::Planned, Some(running())),
            0,
            ts("2026-11-22T00:00:02.5Z"),
            80,
        );
        assert_eq!(
            view,
            vec![
                "Failover shop-to-usw2-abcde: plan shop → usw2 (Planned)",
                "  ✓ Preflight             0.2s  all checks passed",
                "  ⠋ Fence                 2.5s  waiting for zero lag",
                "  · PromoteDatabases",
                "  phase Running for 2.5s",
            ]
        );
        // The spinner turns with the frame.
        let next = live_view(
            &fo(FailoverMode::Planned, Some(running())),
            1,
            ts("2026-11-22T00:00:02.5Z"),
            80,
        );
        assert!(next[2].starts_with("  ⠙ Fence"));
        let waiting = live_view(
            &fo(FailoverMode::Planned, None),
            0,
            ts("2026-11-22T00:00:00Z"),
            80,
        );
        assert_eq!(waiting[1], "  waiting for the operator to pick it up");
    }

    /// A failover whose every text is longer than a terminal line: a long name and plan,
    /// step messages of several hundred columns, with tabs, escapes and wide characters.
    fn long_winded() -> Failover {
        let long = "fenced use1: orders-writer → 0, payments-writer → 0, cron → 0, \
                    replication lag reached 0; "
            .repeat(5);
        let mut status = running();
        status.steps[0].message = Some(format!("{long}\tand\x1b[2Jmore"));
        status.steps[1].message = Some(format!("区域切换 {long}"));
        status.steps.push(step(
            "AVeryLongStepNameThatGoesOnAndOnAndOn",
            StepState::Failed,
            Some(1234.5),
            &long,
        ));
        let mut fo = fo(FailoverMode::Unplanned, Some(status));
        fo.metadata.name = Some(format!("{}-to-usw2-abcde", "checkout".repeat(8)));
        fo.spec.plan_ref = "checkout".repeat(8);
        fo
    }

    #[test]
    fn no_line_of_the_live_view_wraps_at_any_width() {
        let fo = long_winded();
        let now = ts("2026-11-22T00:00:02.5Z");
        for width in [1, 2, 10, 40, 79, 80, 81, 110, 200, 1000] {
            for frame in 0..SPINNER.len() {
                let view = live_view(&fo, frame, now, width);
                assert_eq!(view.len(), 6, "{view:?}");
                for line in &view {
                    let w = display_width(line);
                    assert!(
                        w < width || (width == 1 && w == 1),
                        "{w} columns at width {width}: {line:?}"
                    );
                    assert!(!line.chars().any(char::is_control), "{line:?}");
                }
            }
        }
        let view = live_view(&fo, 0, now, 80);
        // Cut lines end in "…" and use the width they have.
        assert_eq!(display_width(&view[1]), 79, "{:?}", view[1]);
        assert!(view[1].ends_with('…'), "{:?}", view[1]);
        assert!(view[1].starts_with("  ✓ Preflight             0.2s  fenced use1: "));
        // Two columns per CJK character.
        assert!(view[2].starts_with("  ⠋ Fence                 2.5s  区域切换 fenced"));
        assert_eq!(display_width(&view[2]), 79, "{:?}", view[2]);
        assert_eq!(view[5], "  phase Running for 2.5s");
        // Wide enough, nothing is cut.
        let wide = live_view(&fo, 0, now, 1000);
        assert!(wide.iter().all(|l| !l.ends_with('…')), "{wide:?}");
        assert!(
            wide[1].ends_with("reached 0;  and [2Jmore"),
            "{:?}",
            wide[1]
        );
    }

    #[test]
    fn fit_counts_display_columns() {
        assert_eq!(fit("  ✓ → ⠋ ok", 80), "  ✓ → ⠋ ok");
        assert_eq!(fit("abcdef", 6), "abcd…");
        assert_eq!(fit("abcde", 6), "abcde");
        assert_eq!(fit("ab   cdef", 7), "ab…", "no spaces before the ellipsis");
        // A wide character that would straddle the limit is left out whole.
        assert_eq!(fit("ab区域", 5), "ab…");
        assert_eq!(fit("ab区域", 6), "ab区…");
        assert_eq!(fit("anything", 0), "…");
        assert_eq!(fit("a\tb\x1bc", 80), "a b c");
    }

    #[test]
    fn the_rows_to_erase_follow_the_terminal_width() {
        // Lines drawn narrower than the terminal take one row each, empty ones too.
        assert_eq!(rows_taken(&[79, 0, 40], 80), 3);
        // Narrowed to 40 columns, the terminal rewraps a 79-column line into two rows.
        assert_eq!(rows_taken(&[79, 0, 40], 40), 4);
        assert_eq!(rows_taken(&[], 80), 0);
        assert_eq!(rows_taken(&[3], 0), 3);
    }

    #[test]
    fn old_volume_snapshots_are_listed_with_what_to_do() {
        let mut p = PlanSummary {
            namespace: "ns".into(),
            name: "shop".into(),
            active_region: Some("usw2".into()),
            ready: Some(true),
            ready_message: None,
            last_failover: None,
            max_lag_seconds: None,
            replication: vec![lag("orders", Some(0.4))],
            running_drill: None,
            last_drill: None,
            automatic_failover: None,
            last_drill_run: None,
            next_drill: None,
            no_next_drill: None,
            drill_overdue: None,
            automatic_failover_policy: None,
        };
        assert!(old_volume_lines(&p).is_empty());
        let mut catalog = lag("catalog", Some(1.0));
        catalog.region = "use1".into();
        catalog.old_volume_snapshot = Some(crate::api::OldVolumeSnapshot {
            identifier: "rds:unplanned-global-failover-catalog-use1-2026-11-30-14-00".into(),
            aws_region: "us-east-1".into(),
            cluster: "catalog-use1".into(),
            failover: "lost-use1".into(),
            created_at: None,
        });
        p.replication.push(catalog);
        assert_eq!(
            old_volume_lines(&p),
            vec![
                "catalog in use1: snapshot rds:unplanned-global-failover-catalog-use1-2026-11-30-14-00 \
                 in us-east-1 after lost-use1; copy it to keep it"
                    .to_string()
            ]
        );
    }

    #[test]
    fn kubernetes_errors_are_one_sentence_without_repeats() {
        let api = |code, reason: &str, message: &str| {
            kube::Error::Api(
                kube::core::Status::failure(message, reason)
                    .with_code(code)
                    .boxed(),
            )
        };
        let said = |e| explain("plan \"shop\"", e).0;
        assert_eq!(
            said(api(401, "Unauthorized", "Unauthorized")),
            "plan \"shop\": the Kubernetes API server rejected your credentials (kubeconfig or \
             service account token): Unauthorized"
        );
        assert_eq!(
            said(api(409, "AlreadyExists", "failovers \"x\" already exists")),
            "plan \"shop\": failovers \"x\" already exists (AlreadyExists)"
        );
        assert_eq!(
            said(api(422, "Invalid", "Invalid value: spec is Invalid")),
            "plan \"shop\": Invalid value: spec is Invalid"
        );
        assert_eq!(
            said(api(500, "", "")),
            "plan \"shop\": the API server answered 500"
        );
    }

    #[test]
    fn plain_output_prints_each_step_change_once() {
        let mut printed = PrintedSteps::default();
        let f = fo(FailoverMode::Planned, Some(running()));
        assert_eq!(
            printed.changes(&f),
            vec![
                "Preflight Succeeded in 0.2s: all checks passed",
                "Fence Running"
            ]
        );
        assert!(printed.changes(&f).is_empty());
        let mut done = running();
        done.steps[1] = step("Fence", StepState::Failed, Some(4.0), "lag 60s > 0\nmore");
        assert_eq!(
            printed.changes(&fo(FailoverMode::Planned, Some(done))),
            vec!["Fence Failed in 4.0s: lag 60s > 0"]
        );
    }

    #[test]
    fn a_failover_awaiting_approval_shows_why_and_the_commands_once() {
        let mut awaiting = running();
        awaiting.phase = Some(FailoverPhase::AwaitingApproval);
        awaiting.approval = Some(crate::api::ApprovalStatus {
            reason: "failback to use1 (active before the last failover)".into(),
            deadline: Some(MicroTime(ts("2026-11-22T01:00:00Z"))),
            ..Default::default()
        });
        let mut f = fo(FailoverMode::Planned, Some(awaiting));
        f.metadata.namespace = Some("shop".into());
        let view = live_view(&f, 0, ts("2026-11-22T00:00:02.5Z"), 200);
        assert_eq!(
            view[view.len() - 3..],
            [
                "  awaiting approval until 2026-11-22 01:00:00 UTC: failback to use1 (active \
                 before the last failover)",
                "  approve: drover approve shop-to-usw2-abcde -n shop",
                "  reject:  drover reject shop-to-usw2-abcde -n shop --reason ...",
            ]
        );
        let mut printed = PrintedSteps::default();
        let lines = printed.changes(&f);
        assert!(
            lines
                .iter()
                .any(|l| l == "approve: drover approve shop-to-usw2-abcde -n shop")
        );
        assert!(printed.changes(&f).is_empty(), "shown once");
        // Not awaiting: no hint.
        assert!(approval_hint(&fo(FailoverMode::Planned, Some(running()))).is_empty());
    }

    #[test]
    fn summary_reports_rto_data_loss_and_failures() {
        let mut ok = running();
        ok.phase = Some(FailoverPhase::Succeeded);
        ok.timings.as_mut().expect("timings").total_seconds = Some(5.68);
        ok.data_loss = Some(DataLossEstimate {
            max_lag_seconds: 0.0,
            databases: vec![],
            unknown_lag_databases: vec![],
            estimated_seconds: None,
        });
        assert_eq!(
            summary(&fo(FailoverMode::Planned, Some(ok.clone()))),
            vec![
                "Failover shop-to-usw2-abcde Succeeded",
                "  measured RTO: 5.7s",
                "  data-loss estimate: 0.0s (replication lag at promotion)",
            ]
        );
        ok.user_visible = Some(crate::api::UserVisibleRecovery {
            recovery_seconds: Some(7.04),
            settled: true,
            ..Default::default()
        });
        assert_eq!(
            summary(&fo(FailoverMode::Planned, Some(ok.clone())))[2],
            "  user-visible RTO: 7.0s (the old region's stop to the target's answer, by the \
             plan's probes)"
        );
        ok.user_visible = Some(crate::api::UserVisibleRecovery {
            settled: true,
            message: Some("The failover ended Failed.".into()),
            ..Default::default()
        });
        assert_eq!(
            summary(&fo(FailoverMode::Planned, Some(ok)))[2],
            "  user-visible RTO: not measured: The failover ended Failed."
        );
        let mut failed = running();
        failed.phase = Some(FailoverPhase::Failed);
        failed.preflight_failures = vec!["image x missing in us-west-2".into()];
        failed.conditions = vec![Condition {
            type_: "Progressing".into(),
            status: "False".into(),
            reason: "Failed".into(),
            message: "preflight failed".into(),
            last_transition_time: Time(ts("2026-11-22T00:00:00Z")),
            observed_generation: None,
        }];
        let lines = summary(&fo(FailoverMode::DryRun, Some(failed.clone())));
        assert_eq!(lines[0], "Failover shop-to-usw2-abcde Failed");
        assert!(lines.contains(&"  preflight: image x missing in us-west-2".to_string()));
        assert!(!lines.iter().any(|l| l.contains("Failed: ")), "{lines:?}");
        assert!(!lines.iter().any(|l| l.contains("data-loss")), "{lines:?}");
        failed.preflight_failures.clear();
        let lines = summary(&fo(FailoverMode::Planned, Some(failed)));
        assert!(
            lines.contains(&"  Failed: preflight failed".to_string()),
            "{lines:?}"
        );
        assert!(lines.contains(&"  data-loss estimate: none measured".to_string()));
    }

    fn plan(status: DisasterRecoveryPlanStatus) -> DisasterRecoveryPlan {
        let mut plan: DisasterRecoveryPlan =
            serde_yaml::from_str(include_str!("../config/samples/plan.yaml")).expect("sample");
        plan.status = Some(status);
        plan
    }

    fn ready(status: &str) -> Condition {
        Condition {
            type_: "Ready".into(),
            status: status.into(),
            reason: "RegionsReady".into(),
            message: "every region is reachable".into(),
            last_transition_time: Time(ts("2026-11-22T00:00:00Z")),
            observed_generation: None,
        }
    }

    fn lag(db: &str, seconds: Option<f64>) -> ReplicationStatus {
        ReplicationStatus {
            database: db.into(),
            region: "usw2".into(),
            lag_seconds: seconds,
            ..Default::default()
        }
    }

    #[test]
    fn status_table_lists_active_region_readiness_last_failover_and_lag() {
        let mut done = running();
        done.phase = Some(FailoverPhase::Succeeded);
        done.timings.as_mut().expect("timings").total_seconds = Some(5.68);
        let last = fo(FailoverMode::Planned, Some(done));
        let now = ts("2026-11-30T10:00:00Z");
        let with_failover = summarize(
            &plan(DisasterRecoveryPlanStatus {
                active_region: Some("usw2".into()),
                conditions: vec![ready("True")],
                last_failover: Some(LastFailover {
                    name: "shop-to-usw2-abcde".into(),
                    target_region: "usw2".into(),
                    phase: Some("Running".into()),
                    ..Default::default()
                }),
                replication: vec![lag("orders", Some(0.4)), lag("catalog", Some(1.31))],
                ..Default::default()
            }),
            Some(&last),
            now,
        );
        assert_eq!(with_failover.max_lag_seconds, Some(1.31));
        let fo = with_failover.last_failover.as_ref().expect("last");
        assert_eq!(fo.phase.as_deref(), Some("Succeeded"), "live phase wins");
        assert_eq!(fo.rto_seconds, Some(5.68));
        let mut fresh = summarize(
            &plan(DisasterRecoveryPlanStatus {
                active_region: Some("use1".into()),
                conditions: vec![ready("False")],
                replication: vec![lag("orders", None)],
                ..Default::default()
            }),
            None,
            now,
        );
        fresh.name = "billing".into();
        assert_eq!(fresh.max_lag_seconds, None);
        let table = status_table(&[with_failover, fresh], false, now, None);
        assert_eq!(
            table,
            "NAME      ACTIVE   READY   LAST FAILOVER               PHASE       RTO    LAG\n\
             shop      usw2     True    shop-to-usw2-abcde → usw2   Succeeded   5.7s   1.3s\n\
             billing   use1     False   -                           -           -      unknown\n"
        );
    }

    /// A plan with a weekly RoundTrip drill (Berlin time) and automatic failover on two
    /// use1 signals and one usw2 signal: its last drill failed, the next was skipped, it is
    /// overdue, and one use1 signal has been bad twice of the three needed.
    fn drilled() -> DisasterRecoveryPlan {
        let mut p = plan(DisasterRecoveryPlanStatus {
            active_region: Some("use1".into()),
            conditions: vec![
                ready("True"),
                Condition {
                    type_: "DrillOverdue".into(),
                    status: "True".into(),
                    reason: "NoRecentDrill".into(),
                    message:
                        "no drill has succeeded since 2026-11-20T00:00:00Z, more than 8days ago"
                            .into(),
                    last_transition_time: Time(ts("2026-11-28T00:00:00Z")),
                    observed_generation: None,
                },
            ],
            ..Default::default()
        });
        p.spec.drills = Some(
            serde_json::from_value(serde_json::json!({
                "schedules": [
                    {"name": "hourly", "cron": "0 * * * *", "kind": "DryRun", "suspend": true},
                    {"name": "weekly", "cron": "0 3 * * 1", "timeZone": "Europe/Berlin",
                     "kind": "RoundTrip", "hold": "10m"},
                ],
                "requiredInterval": "8d",
            }))
            .expect("drills spec"),
        );
        p.spec.automatic_failover = Some(
            serde_json::from_value(serde_json::json!({
                "consecutive": 3,
                "signals": [
                    {"name": "use1-api", "region": "use1", "route53HealthCheck": {"healthCheckId": "hc-1"}},
                    {"name": "use1-5xx", "region": "use1", "cloudWatchAlarm": {"alarmName": "use1-5xx"}},
                    {"name": "usw2-api", "region": "usw2", "route53HealthCheck": {"healthCheckId": "hc-2"}},
                ],
            }))
            .expect("automatic spec"),
        );
        let status = p.status.as_mut().expect("status");
        status.drills = Some(
            serde_json::from_value(serde_json::json!({
                "history": [
                    {"schedule": "weekly", "kind": "RoundTrip", "scheduledFor": "2026-11-30T02:00:00Z",
                     "finishedAt": "2026-11-30T09:55:00Z", "outcome": "Skipped",
                     "message": "the plan is not Ready: orders in usw2 Reprotecting"},
                    {"schedule": "manual", "kind": "RoundTrip", "scheduledFor": "2026-11-30T07:50:00Z",
                     "startedAt": "2026-11-30T07:50:00Z", "finishedAt": "2026-11-30T08:00:00Z",
                     "outcome": "Failed", "rtoSeconds": 5.2, "failingStep": "PromoteDatabases",
                     "message": "PromoteDatabases: orders did not promote"},
                ],
            }))
            .expect("drills status"),
        );
        status.automatic_failover = Some(
            serde_json::from_value(serde_json::json!({
                "activeRegion": "use1",
                "lastEvaluationTime": "2026-11-30T09:59:48Z",
                "message": "Not triggered: 0 of 2 signals of use1 have 3 or more bad evaluations in a row, and 1 must.",
                "signals": [
                    {"name": "use1-api", "region": "use1", "state": "Bad", "consecutiveBad": 2},
                    {"name": "use1-5xx", "region": "use1", "state": "Healthy", "consecutiveBad": 0},
                    {"name": "usw2-api", "region": "usw2", "state": "NotEvaluated", "consecutiveBad": 0},
                ],
            }))
            .expect("automatic status"),
        );
        p
    }

    #[test]
    fn status_shows_drills_and_automatic_failover_below_the_table() {
        let now = ts("2026-11-30T10:00:00Z");
        let shop = summarize(&drilled(), None, now);
        let mut billing = summarize(
            &plan(DisasterRecoveryPlanStatus {
                active_region: Some("use1".into()),
                conditions: vec![ready("True")],
                ..Default::default()
            }),
            None,
            now,
        );
        billing.name = "billing".into();
        let table = status_table(&[shop.clone(), billing], false, now, None);
        assert_eq!(
            table,
            "NAME      ACTIVE   READY   LAST FAILOVER   PHASE   RTO   LAG\n\
             shop      use1     True    -               -       -     -\n\
             billing   use1     True    -               -       -     -\n\
             \n\
             shop\n\
             \x20 Drills:             last: RoundTrip Failed 2h ago (manual), RTO 5.2s there, failed at PromoteDatabases\n\
             \x20                     skipped: RoundTrip (weekly) 5m ago: the plan is not Ready: orders in usw2 Reprotecting\n\
             \x20                     next: weekly (RoundTrip) at 2026-12-07 03:00 Europe/Berlin, in 6d\n\
             \x20                     DrillOverdue: no drill has succeeded since 2026-11-20T00:00:00Z, more than 8days ago\n\
             \x20 Automatic failover: enabled; use1: use1-api Bad 2/3, use1-5xx Healthy 0/3; 0 of 2 signals bad enough, 1 needed\n\
             \x20                     evaluated 12s ago: Not triggered: 0 of 2 signals of use1 have 3 or more bad evaluations in a row, and 1 must.\n"
        );
        // JSON and YAML carry the same.
        let json = serde_json::to_value(&shop).expect("json");
        assert_eq!(json["nextDrill"]["schedule"], "weekly");
        assert_eq!(json["nextDrill"]["at"], "2026-12-07T02:00:00Z");
        assert_eq!(json["lastDrill"]["outcome"], "Skipped");
        assert_eq!(json["lastDrillRun"]["outcome"], "Failed");
        assert_eq!(json["automaticFailoverPolicy"]["consecutive"], 3);

        // On an 80-column terminal, long lines wrap under their text, none wider.
        let narrow = status_table(std::slice::from_ref(&shop), false, now, Some(80));
        for line in narrow.lines() {
            assert!(
                display_width(line) < 80,
                "{line:?} ({})",
                display_width(line)
            );
        }
        assert!(
            narrow.contains(
                "  Automatic failover: enabled; use1: use1-api Bad 2/3, use1-5xx Healthy 0/3; 0\n\
                 \x20                       of 2 signals bad enough, 1 needed\n\
                 \x20                     evaluated 12s ago: Not triggered: 0 of 2 signals of use1\n\
                 \x20                       have 3 or more bad evaluations in a row, and 1 must.\n"
            ),
            "{narrow}"
        );
    }

    #[test]
    fn status_shows_a_running_drill_and_paused_automatic_failover() {
        let now = ts("2026-11-30T10:00:00Z");
        let mut p = drilled();
        if let Some(a) = p.spec.automatic_failover.as_mut() {
            a.paused = true;
        }
        let status = p.status.as_mut().expect("status");
        let drills = status.drills.as_mut().expect("drills");
        drills.running = Some(
            serde_json::from_value(serde_json::json!({
                "schedule": "manual", "kind": "RoundTrip",
                "scheduledFor": "2026-11-30T09:58:00Z", "startedAt": "2026-11-30T09:58:00Z",
                "stage": "Holding", "sourceRegion": "use1", "targetRegion": "usw2",
                "failover": "shop-drill-manual-202611300958", "created": true,
                "holdUntil": "2026-11-30T10:05:00Z",
            }))
            .expect("running"),
        );
        // The newest result ran: no skip line, and that one is the last.
        drills.history.remove(0);
        status.conditions.retain(|c| c.type_ != "DrillOverdue");
        status.automatic_failover = None;
        let lines = drill_lines(&summarize(&p, None, now), now);
        assert_eq!(
            lines,
            vec![
                "running: RoundTrip manual, holding in usw2 until 2026-11-30 10:05:00 UTC (another 5m), then back to use1",
                "last: RoundTrip Failed 2h ago (manual), RTO 5.2s there, failed at PromoteDatabases",
                "next: weekly (RoundTrip) at 2026-12-07 03:00 Europe/Berlin, in 6d",
            ]
        );
        let held = drill_lines(
            &summarize(&p, None, ts("2026-11-30T10:06:00Z")),
            ts("2026-11-30T10:06:00Z"),
        );
        assert_eq!(
            held[0],
            "running: RoundTrip manual, held in usw2; fails back to use1 once the plan is Ready"
        );
        assert_eq!(
            automatic_lines(&summarize(&p, None, now), now),
            vec!["paused; no signal of use1 evaluated", "not evaluated yet"]
        );
        // Every schedule suspended: no next drill, and why.
        if let Some(d) = p.spec.drills.as_mut() {
            for s in &mut d.schedules {
                s.suspend = true;
            }
        }
        let lines = drill_lines(&summarize(&p, None, now), now);
        assert_eq!(
            lines.last().map(String::as_str),
            Some("next: none (every schedule is suspended)")
        );
    }

    #[test]
    fn failover_object_has_a_generated_name_in_the_namespace() {
        let args = FailoverArgs {
            plan: "shop".into(),
            to: "usw2".into(),
            mode: ModeArg::Unplanned,
            allow_data_loss: true,
            max_data_loss: Some("30s".into()),
            watch: false,
        };
        let fo = failover_object(&args, "team-a");
        assert_eq!(fo.metadata.generate_name.as_deref(), Some("shop-to-usw2-"));
        assert_eq!(fo.metadata.name, None);
        assert_eq!(fo.metadata.namespace.as_deref(), Some("team-a"));
        assert_eq!(fo.spec.mode, FailoverMode::Unplanned);
        assert!(fo.spec.allow_data_loss);
        assert_eq!(fo.spec.max_data_loss.as_deref(), Some("30s"));
    }
}
