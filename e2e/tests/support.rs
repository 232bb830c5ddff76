//! Helpers for e2e tests against the sandbox started by `e2e/sandbox.py up`.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use drover::api::{DisasterRecoveryPlan, crds};
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};

pub fn sandbox_dir() -> PathBuf {
    let dir = std::env::var("DROVER_SANDBOX_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/sandbox"));
    assert!(
        dir.join("pids").exists(),
        "sandbox not running in {}; start it with `make sandbox-up` (make test does this)",
        dir.display()
    );
    dir
}

pub fn kubeconfig_path(cluster: &str) -> PathBuf {
    sandbox_dir().join(cluster).join("admin.kubeconfig")
}

pub async fn client(cluster: &str) -> Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let kubeconfig = Kubeconfig::read_from(kubeconfig_path(cluster)).expect("kubeconfig readable");
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .expect("kubeconfig valid");
    Client::try_from(config).expect("client builds")
}

/// Polls `check` every 100 ms until it returns Some, or panics after `timeout`.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Creates the CRDs from `crds/` unless present, and waits until they are served.
pub async fn ensure_crds(client: &Client) {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in crds() {
        match api.create(&PostParams::default(), &crd).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 409 => {}
            Err(e) => panic!("creating CRD {:?}: {e}", crd.metadata.name),
        }
    }
    let plans: Api<DisasterRecoveryPlan> = Api::all(client.clone());
    wait_for("CRDs served", Duration::from_secs(30), || async {
        plans.list(&Default::default()).await.ok()
    })
    .await;
}

/// `base` with a suffix unique to this test process, so reruns against the same sandbox
/// do not collide (the bed has no controller-manager, so namespaces never finish deleting).
pub fn unique(base: &str) -> String {
    static SUFFIX: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let suffix = SUFFIX.get_or_init(|| format!("{:04x}", fastrand::u16(..)));
    format!("{base}-{suffix}")
}

/// Creates a fresh namespace for one test and returns its name.
pub async fn namespace(client: &Client, base: &str) -> String {
    let name = unique(base);
    let api: Api<Namespace> = Api::all(client.clone());
    let ns: Namespace = serde_json::from_value(serde_json::json!({"metadata": {"name": name}}))
        .expect("namespace object");
    api.create(&PostParams::default(), &ns)
        .await
        .expect("create ns");
    name
}

/// The sample plan, placed in `ns`, still reading the sandbox's kubeconfig Secrets.
pub fn sample_plan(ns: &str, name: &str) -> DisasterRecoveryPlan {
    let mut plan: DisasterRecoveryPlan =
        serde_yaml::from_str(include_str!("../../config/samples/plan.yaml")).expect("sample");
    plan.metadata.namespace = Some(ns.into());
    plan.metadata.name = Some(name.into());
    for region in &mut plan.spec.regions {
        if let Some(secret) = region.cluster.kubeconfig_secret_ref.as_mut() {
            secret.namespace = Some("drover-system".into());
        }
    }
    plan
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

/// The access key operators started by the tests sign with, so the emulator can tell
/// their calls from the tests' own (e2e/test_iam.py).
pub const OPERATOR_ACCESS_KEY: &str = "drover-operator";

/// A running `drover run`, stopped by PID when dropped.
pub struct Operator {
    pub child: Child,
    pub port: u16,
    pub identity: String,
    pub log: PathBuf,
}

impl Operator {
    pub fn start(identity: &str, watch_namespace: &str, lease_duration_seconds: u16) -> Self {
        Self::start_in(
            "mgmt",
            identity,
            watch_namespace,
            lease_duration_seconds,
            &[],
        )
    }

    /// Starts an operator whose management cluster is `cluster`.
    pub fn start_in(
        cluster: &str,
        identity: &str,
        watch_namespace: &str,
        lease_duration_seconds: u16,
        extra_args: &[&str],
    ) -> Self {
        let lease = ["--lease-namespace", watch_namespace];
        Self::start_with_kubeconfig(
            &kubeconfig_path(cluster),
            identity,
            watch_namespace,
            lease_duration_seconds,
            &[&lease, extra_args].concat(),
        )
    }

    /// Starts an operator that authenticates with `kubeconfig`; `extra_args` must name the
    /// lease namespace.
    pub fn start_with_kubeconfig(
        kubeconfig: &std::path::Path,
        identity: &str,
        watch_namespace: &str,
        lease_duration_seconds: u16,
        extra_args: &[&str],
    ) -> Self {
        let port = free_port();
        let logs = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/e2e-logs");
        std::fs::create_dir_all(&logs).expect("log dir");
        let log = logs.join(format!("{identity}.log"));
        let out = std::fs::File::create(&log).expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_drover"))
            .args(["run", "--http-addr", &format!("127.0.0.1:{port}")])
            .args(["--watch-namespace", watch_namespace])
            .args(["--identity", identity])
            .args(["--plan-resync-seconds", "5"])
            .args([
                "--lease-duration-seconds",
                &lease_duration_seconds.to_string(),
            ])
            .args(extra_args)
            .env("KUBECONFIG", kubeconfig)
            // The emulator records calls per access key; the IAM policy test reads them.
            .env("AWS_ACCESS_KEY_ID", OPERATOR_ACCESS_KEY)
            // E2E_RUST_LOG=drover=debug,kube_client=debug shows each pass and request.
            .env(
                "RUST_LOG",
                std::env::var("E2E_RUST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdout(Stdio::null())
            .stderr(out)
            .spawn()
            .expect("operator starts");
        Self {
            child,
            port,
            identity: identity.into(),
            log,
        }
    }

    pub fn get(&self, path: &str) -> Option<(u16, String)> {
        http("GET", self.port, path, None)
    }

    pub async fn wait_ready(&self) {
        wait_for(
            &format!("{} /readyz (log: {})", self.identity, self.log.display()),
            Duration::from_secs(60),
            || async { (self.get("/readyz")?.0 == 200).then_some(()) },
        )
        .await;
    }

    pub fn metric(&self, name: &str) -> Option<f64> {
        self.metric_with(name, "")
    }

    /// The first sample of `name` whose label set contains `labels`, e.g. `controller="plan"`.
    pub fn metric_with(&self, name: &str, labels: &str) -> Option<f64> {
        let (_, body) = self.get("/metrics")?;
        body.lines()
            .filter(|l| l.split([' ', '{']).next() == Some(name))
            .find(|l| l.contains(labels))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A minimal HTTP/1.1 client for loopback endpoints.
pub fn http(method: &str, port: u16, path: &str, body: Option<&str>) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    let body = body.unwrap_or("");
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let status = response.split(' ').nth(1)?.parse().ok()?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())?;
    Some((status, body))
}

pub fn aws_port() -> u16 {
    std::env::var("DROVER_AWS_PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(15000)
}

/// Calls the AWS emulator's control API and parses the JSON answer.
pub fn bed(method: &str, path: &str, body: serde_json::Value) -> serde_json::Value {
    let (status, text) = http(
        method,
        aws_port(),
        &format!("/_bed{path}"),
        Some(&body.to_string()),
    )
    .expect("AWS emulator answers");
    assert_eq!(status, 200, "{method} /_bed{path}: {text}");
    serde_json::from_str(&text).expect("JSON")
}
