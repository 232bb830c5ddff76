//! Error categories. Each maps to one metric label.

use thiserror::Error;

#[derive(Debug, Error)]
pub enum Error {
    #[error("Kubernetes API error: {}", kube_message(.0))]
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

/// A Kubernetes error as one plain sentence. kube's own text for an API error appends a
/// Debug dump of the server's Status, which must never reach a status, an Event or a log.
pub fn kube_message(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) => status_message(s),
        kube::Error::HyperError(_) | kube::Error::Service(_) => {
            format!("cannot reach the API server: {}", root_cause(e))
        }
        kube::Error::Auth(_) => format!("cannot get credentials: {}", root_cause(e)),
        other => other.to_string(),
    }
}

/// What the API server said: its message, else its reason, else the HTTP code.
pub fn status_message(s: &kube::core::Status) -> String {
    if !s.message.is_empty() {
        s.message.clone()
    } else if !s.reason.is_empty() {
        s.reason.clone()
    } else {
        format!("the API server answered {}", s.code)
    }
}

/// The innermost error's message, e.g. "Connection refused (os error 111)".
pub fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

/// Any error's text, with the Kubernetes error it wraps (if any) told as `kube_message`
/// tells it: watcher and Lease errors embed kube's text, Status dump included.
pub fn plain(e: &(dyn std::error::Error + 'static)) -> String {
    let text = e.to_string();
    let mut cur = Some(e);
    while let Some(err) = cur {
        if let Some(k) = err.downcast_ref::<kube::Error>() {
            return text.replace(&k.to_string(), &kube_message(k));
        }
        cur = err.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn api_error(code: u16, reason: &str, message: &str) -> kube::Error {
        kube::Error::Api(
            kube::core::Status::failure(message, reason)
                .with_code(code)
                .boxed(),
        )
    }

    fn assert_plain(text: &str) {
        for dump in ["Status {", "ApiError", "Some(", "code:"] {
            assert!(!text.contains(dump), "{text}");
        }
    }

    #[test]
    fn kube_errors_are_told_without_a_status_dump() {
        let unauthorized = api_error(401, "Unauthorized", "Unauthorized");
        // What kube itself prints, and must not reach anyone.
        assert!(unauthorized.to_string().contains("Status {"));
        assert_eq!(kube_message(&unauthorized), "Unauthorized");
        assert_eq!(kube_message(&api_error(403, "Forbidden", "")), "Forbidden");
        assert_eq!(
            kube_message(&api_error(500, "", "")),
            "the API server answered 500"
        );
        let wrapped = Error::Kube(api_error(409, "Conflict", "the object has been modified"));
        assert_eq!(
            wrapped.to_string(),
            "Kubernetes API error: the object has been modified"
        );
        let watch = kube::runtime::watcher::Error::InitialListFailed(unauthorized);
        let text = plain(&watch);
        assert_eq!(text, "failed to perform initial object list: Unauthorized");
        assert_plain(&text);
        assert_plain(&plain(&Error::Kube(api_error(401, "Unauthorized", "x"))));
        let io = std::io::Error::other("disk full");
        assert_eq!(plain(&io), "disk full");
    }
}
