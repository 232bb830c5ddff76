//! Error categories. Each maps to one metric label.

use thiserror::Error;

#[derive(Debug, Error)]
pub enum Error {
    #[error("Kubernetes API error: {0}")]
    Kube(#[from] kube::Error),

    #[error("cannot reach region {region} cluster: {reason}")]
    MemberCluster { region: String, reason: String },

    #[error("status patch failed: {0}")]
    Serialize(#[from] serde_json::Error),

    #[error("object has no namespace")]
    MissingNamespace,
}

impl Error {
    /// Every value `metric_label` returns.
    pub const METRIC_LABELS: [&'static str; 4] =
        ["kube", "member_cluster", "serialize", "missing_namespace"];

    /// A short, bounded label for `drover_reconcile_errors_total{error}`.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::Kube(_) => "kube",
            Self::MemberCluster { .. } => "member_cluster",
            Self::Serialize(_) => "serialize",
            Self::MissingNamespace => "missing_namespace",
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
