//! `drover approve` and `drover reject`: a person's decision on a Failover that awaits
//! approval, recorded as a FailoverApproval. Creating one needs a permission (create
//! failoverapprovals) that creating a Failover does not.

use clap::Args;
use k8s_openapi::api::authentication::v1::SelfSubjectReview;
use kube::api::{Api, ObjectMeta, PostParams};
use kube::config::Kubeconfig;
use kube::{Resource, ResourceExt};

use crate::api::{ApprovalChoice, Failover, FailoverApproval, FailoverApprovalSpec};
use crate::cli::{CliError, KubeArgs, Session, connect};

/// The longest reason accepted: it is copied into status and Events.
pub const MAX_REASON: usize = 1024;

#[derive(Args, Debug, Clone)]
pub struct ApproveArgs {
    /// The Failover awaiting approval.
    pub failover: String,
    /// Why (optional when approving).
    #[arg(long)]
    pub reason: Option<String>,
}

#[derive(Args, Debug, Clone)]
pub struct RejectArgs {
    /// The Failover awaiting approval.
    pub failover: String,
    /// Why it is rejected; recorded in its status and Events.
    #[arg(long, required = true)]
    pub reason: String,
}

/// Who the client is, and where that name comes from.
struct Identity {
    name: Option<String>,
    source: String,
}

/// Asks the API server who we are (SelfSubjectReview, Kubernetes 1.28 and later); older
/// servers do not answer it, and the kubeconfig's user name is used, as the client's claim.
async fn identity(session: &Session, kube: &KubeArgs) -> Identity {
    let reviews: Api<SelfSubjectReview> = Api::all(session.client.clone());
    let review = SelfSubjectReview {
        metadata: ObjectMeta::default(),
        status: None,
    };
    let answered = reviews
        .create(&PostParams::default(), &review)
        .await
        .ok()
        .and_then(|answer| answer.status?.user_info?.username);
    if let Some(name) = answered {
        return Identity {
            name: Some(name),
            source: "SelfSubjectReview (the API server's answer)".into(),
        };
    }
    Identity {
        name: kubeconfig_user(kube),
        source: "kubeconfig user name (the client's claim)".into(),
    }
}

/// The user of the kubeconfig context in use (its impersonated user when it has one).
fn kubeconfig_user(kube: &KubeArgs) -> Option<String> {
    let config = match &kube.kubeconfig {
        Some(path) => Kubeconfig::read_from(path).ok()?,
        None => Kubeconfig::read().ok()?,
    };
    let context_name = kube.context.clone().or(config.current_context.clone())?;
    let user = config
        .contexts
        .iter()
        .find(|c| c.name == context_name)?
        .context
        .as_ref()?
        .user
        .clone()?;
    let impersonated = config
        .auth_infos
        .iter()
        .find(|a| a.name == user)
        .and_then(|a| a.auth_info.as_ref())
        .and_then(|a| a.impersonate.clone());
    Some(impersonated.unwrap_or(user))
}

/// The FailoverApproval that records `choice` on `fo`, owned by it (deleted with it).
pub fn approval_object(
    fo: &Failover,
    choice: ApprovalChoice,
    approver: Option<String>,
    approver_source: String,
    reason: Option<String>,
) -> FailoverApproval {
    let name = fo.name_any();
    let mut approval = FailoverApproval::new(
        &name,
        FailoverApprovalSpec {
            failover_ref: name.clone(),
            failover_uid: fo.uid(),
            decision: choice,
            approver,
            approver_source: Some(approver_source),
            reason,
        },
    );
    approval.metadata.namespace = fo.namespace();
    approval.metadata.owner_references = fo.controller_owner_ref(&()).map(|mut r| {
        r.controller = Some(false);
        r.block_owner_deletion = Some(false);
        vec![r]
    });
    approval
}

/// Checks that `fo` awaits a decision: it needs approval, none was made, and it is not over.
pub fn check_awaiting(fo: &Failover) -> Result<(), CliError> {
    let name = fo.name_any();
    let status = fo.status.clone().unwrap_or_default();
    if let Some(phase) = status.phase.filter(|p| p.is_terminal()) {
        return Err(CliError(format!(
            "failover {name} has already ended: {phase:?}"
        )));
    }
    match status.approval {
        None if status.phase.is_some() => {
            Err(CliError(format!("failover {name} does not need approval")))
        }
        None => Err(CliError(format!(
            "failover {name} has not been admitted yet; try again once it shows AwaitingApproval"
        ))),
        Some(a) if a.decision.is_some() => Err(CliError(format!(
            "failover {name} was already {:?} by {}",
            a.decision.unwrap_or(crate::api::ApprovalDecision::Approved),
            a.decided_by.as_deref().unwrap_or("an unnamed approver")
        ))),
        Some(_) => Ok(()),
    }
}

/// Records `choice` on the Failover named `failover`; returns what to print.
pub async fn decide(
    kube: &KubeArgs,
    failover: &str,
    choice: ApprovalChoice,
    reason: Option<String>,
) -> Result<String, CliError> {
    if let Some(r) = &reason {
        if r.trim().is_empty() && choice == ApprovalChoice::Reject {
            return Err(CliError("--reason must not be empty".into()));
        }
        if r.chars().count() > MAX_REASON {
            return Err(CliError(format!(
                "--reason is longer than {MAX_REASON} characters"
            )));
        }
    }
    let session = connect(kube).await?;
    let ns = session.namespace.clone();
    let failovers: Api<Failover> = Api::namespaced(session.client.clone(), &ns);
    let fo = failovers
        .get(failover)
        .await
        .map_err(|e| session.explain(&format!("failover {failover:?} in namespace {ns:?}"), e))?;
    check_awaiting(&fo)?;
    let who = identity(&session, kube).await;
    let approvals: Api<FailoverApproval> = Api::namespaced(session.client.clone(), &ns);
    let object = approval_object(&fo, choice, who.name.clone(), who.source, reason);
    match approvals.create(&PostParams::default(), &object).await {
        Ok(_) => Ok(format!(
            "failoverapproval.drover.io/{failover} created: failover {failover} {} by {}",
            match choice {
                ApprovalChoice::Approve => "approved",
                ApprovalChoice::Reject => "rejected",
            },
            who.name.as_deref().unwrap_or("an unnamed approver")
        )),
        Err(kube::Error::Api(s)) if s.code == 409 => {
            let existing = approvals.get(failover).await.ok();
            Err(CliError(match existing {
                Some(a) => format!(
                    "failover {failover} was already decided: {:?} by {}",
                    a.spec.decision,
                    a.spec.approver.as_deref().unwrap_or("an unnamed approver")
                ),
                None => format!("FailoverApproval {failover} already exists"),
            }))
        }
        Err(kube::Error::Api(s)) if s.code == 403 => Err(CliError(format!(
            "not allowed to approve or reject failovers in namespace {ns}: {}. Approving \
             needs `create` on failoverapprovals.drover.io (the drover-approver role)",
            s.message
        ))),
        Err(e) => Err(session.explain(&format!("a FailoverApproval in namespace {ns:?}"), e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{ApprovalStatus, FailoverMode, FailoverPhase, FailoverSpec, FailoverStatus};

    fn fo(status: Option<FailoverStatus>) -> Failover {
        let mut fo = Failover::new(
            "back",
            FailoverSpec::new("shop", "use1", FailoverMode::Planned),
        );
        fo.metadata.namespace = Some("shop".into());
        fo.metadata.uid = Some("uid-1".into());
        fo.status = status;
        fo
    }

    #[test]
    fn an_approval_names_the_failover_by_name_and_uid_and_is_owned_by_it() {
        let a = approval_object(
            &fo(None),
            ApprovalChoice::Approve,
            Some("alice".into()),
            "kubeconfig user name (the client's claim)".into(),
            None,
        );
        assert_eq!(a.metadata.name.as_deref(), Some("back"));
        assert_eq!(a.metadata.namespace.as_deref(), Some("shop"));
        assert_eq!(a.spec.failover_uid.as_deref(), Some("uid-1"));
        let owner = a.metadata.owner_references.unwrap_or_default();
        assert_eq!(owner.len(), 1);
        assert_eq!(owner[0].uid, "uid-1");
        assert_eq!(owner[0].kind, "Failover");
    }

    #[test]
    fn only_a_failover_awaiting_a_decision_can_be_decided() {
        let awaiting = FailoverStatus {
            phase: Some(FailoverPhase::AwaitingApproval),
            approval: Some(ApprovalStatus {
                reason: "failback to use1".into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert!(check_awaiting(&fo(Some(awaiting.clone()))).is_ok());
        let mut decided = awaiting.clone();
        if let Some(a) = decided.approval.as_mut() {
            a.decision = Some(crate::api::ApprovalDecision::Approved);
            a.decided_by = Some("bob".into());
        }
        let err = check_awaiting(&fo(Some(decided))).err().map(|e| e.0);
        assert_eq!(
            err.as_deref(),
            Some("failover back was already Approved by bob")
        );
        let ended = FailoverStatus {
            phase: Some(FailoverPhase::Rejected),
            ..awaiting
        };
        let err = check_awaiting(&fo(Some(ended))).err().map(|e| e.0);
        assert_eq!(
            err.as_deref(),
            Some("failover back has already ended: Rejected")
        );
        let running = FailoverStatus {
            phase: Some(FailoverPhase::Running),
            ..Default::default()
        };
        let err = check_awaiting(&fo(Some(running))).err().map(|e| e.0);
        assert_eq!(err.as_deref(), Some("failover back does not need approval"));
    }
}
