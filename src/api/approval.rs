//! `FailoverApproval`: a person's decision on a Failover that awaits approval.
//!
//! A separate kind, so that approving needs a permission (create failoverapprovals) that
//! creating a Failover does not, and so that an approval can also be a reviewed Git commit.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Approves or rejects one Failover. Immutable: the first decision stands.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "drover.io",
    version = "v1alpha1",
    kind = "FailoverApproval",
    namespaced,
    shortname = "foa",
    printcolumn = r#"{"name":"Failover","type":"string","jsonPath":".spec.failoverRef"}"#,
    printcolumn = r#"{"name":"Decision","type":"string","jsonPath":".spec.decision"}"#,
    printcolumn = r#"{"name":"By","type":"string","jsonPath":".spec.approver"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct FailoverApprovalSpec {
    /// The Failover's name, in this namespace.
    pub failover_ref: String,
    /// The Failover's UID: when set, the decision applies to that Failover only, not to a
    /// later one of the same name. `drover approve` sets it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failover_uid: Option<String>,
    /// Approve or Reject.
    pub decision: ApprovalChoice,
    /// Who decides, as the client knows them. The API server checks only that the creator
    /// may create FailoverApprovals; see docs/operations.md.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approver: Option<String>,
    /// Where `approver` comes from, e.g. "SelfSubjectReview" or "kubeconfig user".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approver_source: Option<String>,
    /// Why (required to reject).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// What the approver decided.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum ApprovalChoice {
    Approve,
    Reject,
}
