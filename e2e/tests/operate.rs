//! Operating Drover on the bed: the Helm chart's RBAC is enough to run a failover, and the
//! `drover failover` / `drover status` CLI (also as `kubectl drover`) drives and reports it.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use drover::api::{FailoverMode, FailoverPhase};
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::ServiceAccount;
use kube::api::{Api, PostParams};

use crate::failover::*;
use crate::support::*;

fn drover(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_drover"))
        .args(args)
        .env("KUBECONFIG", kubeconfig_path("mgmt"))
        .output()
        .expect("drover runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The bed's admin kubeconfig for the management cluster, changed by `edit` and written
/// private to the owner; removed when dropped.
struct DerivedKubeconfig(PathBuf);

impl DerivedKubeconfig {
    fn write(name: &str, edit: impl FnOnce(&mut serde_json::Value)) -> Self {
        let admin = std::fs::read_to_string(kubeconfig_path("mgmt")).expect("admin kubeconfig");
        let mut config: serde_json::Value = serde_json::from_str(&admin).expect("JSON kubeconfig");
        edit(&mut config);
        let path = sandbox_dir()
            .join("mgmt")
            .join(format!("{name}.kubeconfig"));
        std::fs::write(&path, config.to_string()).expect("kubeconfig written");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        Self(path)
    }
}

impl Drop for DerivedKubeconfig {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Installs the chart with the Helm SDK (`e2e/chart.py`), as a platform team would.
fn helm_install(release: &str, namespace: &str, values: serde_json::Value) {
    let out = Command::new(python())
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/e2e/chart.py"))
        .args([
            "install",
            release,
            namespace,
            "--set-json",
            &values.to_string(),
        ])
        .env("KUBECONFIG", kubeconfig_path("mgmt"))
        .output()
        .expect("chart.py runs");
    assert!(
        out.status.success(),
        "helm install {release}: {}",
        text(&out.stderr)
    );
}

/// The chart's ServiceAccount and RBAC, and nothing else, run a planned failover: the
/// operator authenticates with a token of the chart's ServiceAccount. The release watches
/// one namespace, so the Drover kinds are granted there only.
#[tokio::test]
async fn chart_rbac_is_enough_to_run_a_failover() {
    let admin = client("mgmt").await;
    let release = unique("drover-rbac");
    let release_ns = unique("drover-chart-ns");
    let lease_name = format!("{release}-leader");
    let mut kubeconfig = None;
    let (scenario, op) = Scenario::start_with("rbac", &[], async |ns: String| {
        helm_install(
            &release,
            &release_ns,
            serde_json::json!({"operator": {
                "watchNamespace": ns,
                "secretNamespaces": ["drover-system"],
            }}),
        );
        let accounts: Api<ServiceAccount> = Api::namespaced(admin.clone(), &release_ns);
        let request = TokenRequest {
            spec: TokenRequestSpec {
                audiences: vec![],
                expiration_seconds: Some(3600),
                ..Default::default()
            },
            ..Default::default()
        };
        let token = accounts
            .create_token_request(&release, &PostParams::default(), &request)
            .await
            .expect("token for the chart's ServiceAccount")
            .status
            .expect("token status")
            .token;
        let file = DerivedKubeconfig::write(&release, |config| {
            config["users"][0]["user"] = serde_json::json!({ "token": token });
        });
        let op = Operator::start_with_kubeconfig(
            &file.0,
            "rbac-op",
            &ns,
            15,
            &[
                "--lease-namespace",
                &release_ns,
                "--lease-name",
                &lease_name,
            ],
        );
        kubeconfig = Some(file);
        op
    })
    .await;
    let (client, ns, sc) = scenario.parts();
    let api: Api<drover::api::Failover> = Api::namespaced(client.clone(), &ns);
    api.create(
        &PostParams::default(),
        &failover("rbac", &sc, "usw2", FailoverMode::Planned, false),
    )
    .await
    .expect("create failover");
    let fo = wait_terminal(&client, &ns, "rbac", Duration::from_secs(120)).await;
    assert_phase(&fo, FailoverPhase::Succeeded);
    let log = std::fs::read_to_string(&op.log).expect("operator log");
    assert!(
        !log.contains("forbidden"),
        "the chart's RBAC refused a call:\n{log}"
    );
    assert_eq!(op.metric("drover_leader"), Some(1.0));
}

/// `drover failover --watch` drives a failover to the end and exits 0; `drover status`
/// reports it as a table, JSON and YAML; errors are one plain sentence; the binary works
/// as a kubectl plugin.
#[tokio::test]
async fn cli_drives_and_reports_a_failover() {
    let (scenario, _op) = Scenario::start("cli", &[], &[], 15).await;
    let (_client, ns, sc) = scenario.parts();

    let out = drover(&[
        "failover", "-n", &ns, "--plan", &sc, "--to", "usw2", "--watch",
    ]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", text(&out.stderr));
    assert!(
        stdout.contains(&format!("created in namespace {ns}")),
        "{stdout}"
    );
    assert!(stdout.contains("PromoteDatabases Succeeded in"), "{stdout}");
    assert!(stdout.contains(" Succeeded\n  measured RTO: "), "{stdout}");
    assert!(stdout.contains("data-loss estimate: 0.0s"), "{stdout}");

    // The old primaries are not rebuilt (spec.reprotection is Manual): no failback yet. The
    // plan check that follows the failover says so.
    let expected = "a failback is not possible now: orders in use1 Unprotected";
    let plans: serde_json::Value = wait_for(
        "plan checked after the failover",
        Duration::from_secs(30),
        || async {
            let out = drover(&["status", "-n", &ns, "-o", "json"]);
            assert!(out.status.success(), "{}", text(&out.stderr));
            let plans: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
            plans[0]["readyMessage"]
                .as_str()
                .is_some_and(|m| m.starts_with(expected))
                .then_some(plans)
        },
    )
    .await;
    let plan = &plans[0];
    assert_eq!(plan["name"], sc.as_str());
    assert_eq!(plan["activeRegion"], "usw2");
    assert_eq!(plan["ready"], false);
    assert_eq!(plan["lastFailover"]["phase"], "Succeeded");
    assert!(
        plan["lastFailover"]["rtoSeconds"]
            .as_f64()
            .is_some_and(|r| r > 0.0)
    );
    assert_eq!(
        plan["replication"].as_array().map(Vec::len),
        Some(3),
        "{plan}"
    );

    let out = drover(&["status", "-A", "-o", "json"]);
    let all: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).expect("JSON");
    assert!(
        all.iter()
            .any(|p| p["namespace"] == ns.as_str() && p["name"] == sc.as_str()),
        "{all:?}"
    );

    let out = drover(&["status", &sc, "-n", &ns, "-o", "yaml"]);
    let yaml: serde_json::Value = serde_yaml::from_slice(&out.stdout).expect("YAML");
    assert_eq!(yaml[0]["activeRegion"], "usw2");

    let out = drover(&["status", "-n", &ns]);
    let table = text(&out.stdout);
    let header = table.lines().next().unwrap_or_default();
    assert!(
        header.starts_with("NAME") && header.ends_with("LAG"),
        "{table}"
    );
    let wide = text(&drover(&["status", "--all-namespaces"]).stdout);
    assert!(wide.starts_with("NAMESPACE"), "{wide}");
    assert!(
        wide.lines().any(|l| l.starts_with(&ns) && l.contains(&sc)),
        "{wide}"
    );
    let row = table
        .lines()
        .find(|l| l.starts_with(&sc))
        .expect("plan row");
    assert!(row.contains("usw2") && row.contains("Succeeded"), "{row}");

    // Going back without rebuilding the replicas: the DryRun fails, and so does the exit code.
    let out = drover(&[
        "failover", "-n", &ns, "--plan", &sc, "--to", "use1", "--mode", "DryRun", "--watch",
    ]);
    assert!(!out.status.success(), "{}", text(&out.stdout));
    assert!(
        text(&out.stdout).contains("preflight: "),
        "{}",
        text(&out.stdout)
    );

    // A kubeconfig whose server does not answer.
    let port = free_port();
    let dead = DerivedKubeconfig::write(&unique("dead"), |config| {
        config["clusters"][0]["cluster"]["server"] = format!("https://127.0.0.1:{port}").into();
    });
    let dead_arg = dead.0.display().to_string();
    for (args, expected) in [
        (
            vec!["status", "--kubeconfig", &dead_arg],
            format!(
                "error: cannot reach the Kubernetes API server at https://127.0.0.1:{port}: Connection refused"
            ),
        ),
        (
            vec!["status", "nope", "-n", &ns],
            format!("error: plan \"nope\" in namespace \"{ns}\" not found\n"),
        ),
        (
            vec!["failover", "-n", &ns, "--plan", &sc, "--to", "mars"],
            format!("error: plan \"{sc}\" has no region \"mars\"; its regions are use1, usw2\n"),
        ),
        (
            vec!["status", "--context", "elsewhere"],
            "error: cannot load the kubeconfig: ".into(),
        ),
    ] {
        let out = drover(&args);
        assert!(!out.status.success(), "{args:?}");
        let stderr = text(&out.stderr);
        assert!(stderr.starts_with(&expected), "{args:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
    }

    // As a kubectl plugin: `kubectl drover ...` runs `kubectl-drover` from PATH.
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join(format!("target/e2e-logs/{}", unique("plugin")));
    std::fs::create_dir_all(&dir).expect("plugin dir");
    let plugin = dir.join("kubectl-drover");
    let _ = std::fs::remove_file(&plugin);
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_drover"), &plugin).expect("symlink");
    let path = format!(
        "{}:{}",
        dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let kubectl = |args: &[&str]| {
        Command::new("kubectl")
            .args(args)
            .env("PATH", &path)
            .env("KUBECONFIG", kubeconfig_path("mgmt"))
            .output()
            .expect("kubectl runs")
    };
    let out = kubectl(&["drover", "status", "-n", &ns]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains(&sc), "{}", text(&out.stdout));
    let help = kubectl(&["drover", "--help"]);
    assert!(
        text(&help.stdout).contains("Usage: kubectl drover"),
        "{}",
        text(&help.stdout)
    );
    assert!(Path::new(&plugin).exists());
}

/// Applies the people's roles (`config/rbac/user_roles.yaml`) and binds `user` to `role`
/// in `ns`.
async fn bind_user_role(client: &kube::Client, ns: &str, user: &str, role: &str) {
    use k8s_openapi::api::rbac::v1::{ClusterRole, RoleBinding};
    use kube::api::{Patch, PatchParams};
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/config/rbac/user_roles.yaml"
    ))
    .expect("user roles");
    let roles: Api<ClusterRole> = Api::all(client.clone());
    for doc in serde_yaml::Deserializer::from_str(&text) {
        let role: ClusterRole = serde::Deserialize::deserialize(doc).expect("ClusterRole");
        let name = role.metadata.name.clone().expect("named");
        roles
            .patch(
                &name,
                &PatchParams::apply("e2e").force(),
                &Patch::Apply(&role),
            )
            .await
            .expect("apply ClusterRole");
    }
    let binding: RoleBinding = serde_json::from_value(serde_json::json!({
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {"name": format!("{user}-{role}"), "namespace": ns},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}],
    }))
    .expect("RoleBinding");
    Api::<RoleBinding>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &binding)
        .await
        .expect("create RoleBinding");
}

/// Section 1 of the DR lifecycle on the bed: a failback waits for approval; a user who may
/// request failovers may not approve them; the wait expires to Rejected, a rejection ends
/// it Rejected, and an approval by the approver role lets it run. Nothing changes before.
#[tokio::test]
async fn failback_needs_approval_from_the_approver_role() {
    let (scenario, _op) = Scenario::start("approval", &[], &[], 15).await;
    let (client, ns, sc) = scenario.parts();
    bind_user_role(&client, &ns, "alice-requester", "drover-failover-requester").await;
    bind_user_role(&client, &ns, "bob-approver", "drover-failover-approver").await;
    let as_user = |user: &str| {
        let user = user.to_string();
        DerivedKubeconfig::write(&unique(&user), move |config| {
            config["users"][0]["user"]["as"] = user.into();
        })
    };
    let requester = as_user("alice-requester");
    let approver = as_user("bob-approver");
    let run = |kubeconfig: &DerivedKubeconfig, args: &[&str]| {
        let mut all = args.to_vec();
        all.splice(
            1..1,
            ["--kubeconfig", kubeconfig.0.to_str().unwrap_or_default()],
        );
        drover(&all)
    };

    let out = run(
        &requester,
        &[
            "failover", "-n", &ns, "--plan", &sc, "--to", "usw2", "--watch",
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    seed(&[&sc, "use1", "--rebuild-replica"]);
    // A short wait, so that the expiry is seen here.
    let plans: Api<drover::api::DisasterRecoveryPlan> = Api::namespaced(client.clone(), &ns);
    plans
        .patch(
            &sc,
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(serde_json::json!({"spec": {"approval": {"timeout": "6s"}}})),
        )
        .await
        .expect("plan patched");

    let failback = |name: &str| {
        let mut fo = failover(name, &sc, "use1", FailoverMode::Planned, false);
        fo.metadata.namespace = Some(ns.clone());
        fo
    };
    let failovers: Api<drover::api::Failover> = Api::namespaced(client.clone(), &ns);
    let mut outcomes = Vec::new();
    for (name, decision) in [
        ("expires", None),
        ("rejected", Some("reject")),
        ("approved", Some("approve")),
    ] {
        let before = mutating_calls();
        failovers
            .create(&PostParams::default(), &failback(name))
            .await
            .expect("failback created");
        wait_phase(&client, &ns, name, FailoverPhase::AwaitingApproval).await;
        // The requester may not decide.
        let out = run(&requester, &["approve", name, "-n", &ns]);
        assert!(!out.status.success());
        let stderr = text(&out.stderr);
        assert!(
            stderr.starts_with(&format!(
                "error: not allowed to approve or reject failovers in namespace {ns}"
            )) && stderr.contains("failoverapprovals"),
            "{stderr}"
        );
        match decision {
            Some("reject") => {
                let out = run(
                    &approver,
                    &["reject", name, "-n", &ns, "--reason", "use1 is not ready"],
                );
                assert!(out.status.success(), "{}", text(&out.stderr));
                assert!(
                    text(&out.stdout).contains("rejected by bob-approver"),
                    "{}",
                    text(&out.stdout)
                );
            }
            Some(_) => {
                // `drover status` shows what it waits for, and the command that approves.
                let out = run(&requester, &["status", "-n", &ns, "-o", "json"]);
                let plans: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
                let hint = plans[0]["lastFailover"]["awaitingApproval"].to_string();
                assert!(
                    hint.contains(&format!("drover approve {name} -n {ns}"))
                        && hint.contains("failback to use1"),
                    "{plans}"
                );
                let out = run(&approver, &["approve", name, "-n", &ns]);
                assert!(out.status.success(), "{}", text(&out.stderr));
                assert!(
                    text(&out.stdout).contains("approved by bob-approver"),
                    "{}",
                    text(&out.stdout)
                );
                // A second decision is refused, naming the first.
                let again = run(
                    &approver,
                    &["reject", name, "-n", &ns, "--reason", "too late"],
                );
                assert!(!again.status.success());
            }
            None => {}
        }
        let fo = wait_terminal(&client, &ns, name, Duration::from_secs(120)).await;
        let approval = fo
            .status
            .as_ref()
            .and_then(|s| s.approval.clone())
            .expect("approval");
        outcomes.push((
            name,
            fo.status.as_ref().and_then(|s| s.phase),
            approval.message.clone(),
        ));
        if decision != Some("approve") {
            assert_eq!(
                delta(&before, &mutating_calls()),
                expected(&[]),
                "{name} changed nothing"
            );
        } else {
            assert_eq!(approval.decided_by.as_deref(), Some("bob-approver"));
            assert!(
                approval
                    .identity
                    .as_deref()
                    .is_some_and(|i| i.contains("kubeconfig user name (the client's claim)")),
                "{approval:?}"
            );
        }
    }
    assert_eq!(outcomes[0].1, Some(FailoverPhase::Rejected));
    assert!(
        outcomes[0]
            .2
            .as_deref()
            .is_some_and(|m| m.starts_with("not approved within 6s")),
        "{outcomes:?}"
    );
    assert_eq!(outcomes[1].1, Some(FailoverPhase::Rejected));
    assert_eq!(
        outcomes[1].2.as_deref(),
        Some("rejected by bob-approver: use1 is not ready")
    );
    assert_eq!(
        outcomes[2].1,
        Some(FailoverPhase::Succeeded),
        "{outcomes:?}"
    );
    let plan = plans.get(&sc).await.expect("plan");
    assert_eq!(
        plan.status.and_then(|s| s.active_region).as_deref(),
        Some("use1")
    );
}

/// A tmux server on a private socket, with one session `width` columns wide; the server
/// (and whatever runs in it) is stopped when dropped.
struct Tmux {
    socket: String,
}

impl Tmux {
    fn start(width: u16, height: u16) -> Self {
        let tmux = Self {
            socket: unique("drover-watch"),
        };
        // An idle pane that is kept after its command exits, so its screen can be read.
        let size = [width.to_string(), height.to_string()];
        tmux.run(&[
            "new-session",
            "-d",
            "-s",
            "w",
            "-x",
            &size[0],
            "-y",
            &size[1],
            "cat",
        ]);
        tmux.run(&["set-option", "-t", "w", "remain-on-exit", "on"]);
        tmux
    }

    fn run(&self, args: &[&str]) -> String {
        let out = Command::new("tmux")
            .args(["-L", &self.socket, "-f", "/dev/null"])
            .args(args)
            .output()
            .expect("tmux runs (apt-get install tmux)");
        assert!(out.status.success(), "tmux {args:?}: {}", text(&out.stderr));
        text(&out.stdout)
    }

    /// How the pane's command ended, once it printed "[exit N]" (see the respawn below),
    /// or "killed" when the pane died without printing it.
    fn ended(&self) -> Option<String> {
        let exit = || {
            self.screen().iter().find_map(|l| {
                Some(format!(
                    "exit {}",
                    l.strip_prefix("[exit ")?.strip_suffix(']')?
                ))
            })
        };
        if let Some(exit) = exit() {
            return Some(exit);
        }
        // Dead: the screen is final now (the status line is printed before the shell exits).
        let dead = self.run(&["display-message", "-p", "-t", "w", "#{pane_dead}"]);
        (dead.trim() == "1").then(|| exit().unwrap_or_else(|| "killed".to_string()))
    }

    /// Every line the pane showed, scrollback included, wrapped lines joined back into one.
    fn screen(&self) -> Vec<String> {
        self.run(&["capture-pane", "-p", "-J", "-S", "-", "-t", "w"])
            .lines()
            .map(|l| l.trim_end().to_string())
            .collect()
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["-L", &self.socket, "kill-server"])
            .output();
    }
}

/// `drover failover --watch` on a terminal 80 columns wide (tmux): step messages longer
/// than the line are cut to fit instead of wrapping, so each redraw erases exactly the
/// frame before it. Before, every redraw left the header behind in the scrollback.
#[tokio::test]
async fn watch_redraws_in_place_at_80_columns() {
    let (scenario, _op) = Scenario::start("tmux", &[], &[], 15).await;
    let (client, ns, sc) = scenario.parts();
    let tmux = Tmux::start(80, 40);
    let kubeconfig = format!("KUBECONFIG={}", kubeconfig_path("mgmt").display());
    tmux.run(&[
        "respawn-pane",
        "-k",
        "-t",
        "w",
        "-e",
        &kubeconfig,
        // tmux does not always fill in a dead pane's exit status: the shell prints it.
        "sh",
        "-c",
        "\"$0\" \"$@\"; echo \"[exit $?]\"",
        env!("CARGO_BIN_EXE_drover"),
        "failover",
        "-n",
        &ns,
        "--plan",
        &sc,
        "--to",
        "usw2",
        "--watch",
    ]);
    // Polled until the watch exits, within a deadline; the screen tells what it waited for.
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    let ended = loop {
        if let Some(ended) = tmux.ended() {
            break ended;
        }
        if std::time::Instant::now() > deadline {
            let failovers: Api<drover::api::Failover> = Api::namespaced(client.clone(), &ns);
            let listed = failovers.list(&Default::default()).await.map(|l| {
                l.items
                    .iter()
                    .map(|f| {
                        format!(
                            "{}: {}",
                            f.metadata.name.clone().unwrap_or_default(),
                            describe(f)
                        )
                    })
                    .collect::<Vec<_>>()
            });
            panic!(
                "drover failover --watch still running after 120 s:\n{}\nfailovers: {listed:?}",
                tmux.screen().join("\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let screen = tmux.screen();
    let shown = screen.join("\n");
    assert_eq!(ended, "exit 0", "{shown}");
    let headers = screen
        .iter()
        .filter(|l| l.starts_with("Failover ") && l.contains(&format!(": plan {sc} → usw2")))
        .count();
    assert_eq!(
        headers, 1,
        "the header was left behind by a redraw:\n{shown}"
    );
    for line in &screen {
        let columns = unicode_width::UnicodeWidthStr::width(line.as_str());
        assert!(columns <= 80, "{columns} columns: {line:?}\n{shown}");
    }
    // The case in point: step messages longer than the line, cut to fit.
    assert!(
        screen
            .iter()
            .any(|l| l.starts_with("  ✓ Fence") && l.ends_with('…')),
        "{shown}"
    );
    assert!(
        screen
            .iter()
            .any(|l| l.starts_with("  phase Succeeded after ")),
        "{shown}"
    );
    // Redrawn every 150 ms for as long as the failover ran: many frames, not a few.
    let rto: f64 = screen
        .iter()
        .find_map(|l| {
            l.strip_prefix("  measured RTO: ")?
                .strip_suffix('s')?
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("no measured RTO:\n{shown}"));
    assert!(rto > 1.5, "only {rto}s of redraws:\n{shown}");
}
