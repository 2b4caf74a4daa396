//! Who may serve an algorithm: a worker presents its pod's projected
//! ServiceAccount token; a TokenReview says which pod it is bound to, and
//! that pod must be a live pod of the algorithm in the workers' namespace.

use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec, TokenReviewStatus};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, PostParams};

use crate::api::contract::LABEL_ALGORITHM;

/// The audience a worker's projected token must be minted for.
pub const TOKEN_AUDIENCE: &str = "vision-operator";
/// The `extra` keys of a bound token's TokenReview user info.
const EXTRA_POD_NAME: &str = "authentication.kubernetes.io/pod-name";
const EXTRA_POD_UID: &str = "authentication.kubernetes.io/pod-uid";

/// How workers are authenticated.
#[derive(Clone)]
pub enum Auth {
    /// TokenReview of the presented token; the pod it is bound to must be
    /// in `namespace` and carry the label `vision.zjlab.io/algorithm` with
    /// the algorithm's name.
    TokenReview {
        client: kube::Client,
        namespace: String,
    },
    /// TEST ONLY: every worker is trusted and named by its worker id. For
    /// workers run as local processes by the tests; never in a cluster
    /// (the operator's flag `--worker-trust-local-test-only`, off by default).
    TrustLocalTestOnly,
}

/// The pod a worker proved it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub namespace: String,
    pub pod: String,
}

/// Why a worker may not serve.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Denied {
    /// The token is missing, invalid, expired, for another audience, or not
    /// bound to a pod.
    #[error("{0}")]
    Unauthenticated(String),
    /// A valid token of a pod that may not serve this algorithm.
    #[error("{0}")]
    WrongAlgorithm(String),
    /// The TokenReview or the pod's GET failed: the worker should retry.
    #[error("{0}")]
    Unavailable(String),
}

impl Auth {
    pub async fn authenticate(
        &self,
        token: &str,
        algorithm: &str,
        worker_id: &str,
    ) -> Result<Identity, Denied> {
        match self {
            Auth::TrustLocalTestOnly => Ok(Identity {
                namespace: String::new(),
                pod: worker_id.to_string(),
            }),
            Auth::TokenReview { client, namespace } => {
                if token.is_empty() {
                    return Err(Denied::Unauthenticated("no token: a worker presents its pod's projected ServiceAccount token (audience vision-operator)".into()));
                }
                let review = TokenReview {
                    spec: TokenReviewSpec {
                        token: Some(token.to_string()),
                        audiences: Some(vec![TOKEN_AUDIENCE.to_string()]),
                    },
                    ..TokenReview::default()
                };
                let reviewed = Api::<TokenReview>::all(client.clone())
                    .create(&PostParams::default(), &review)
                    .await
                    .map_err(|e| Denied::Unavailable(format!("TokenReview failed: {e}")))?;
                let claim = bound_pod(reviewed.status.as_ref(), namespace)?;
                let pod = Api::<Pod>::namespaced(client.clone(), namespace)
                    .get_opt(&claim.pod)
                    .await
                    .map_err(|e| Denied::Unavailable(format!("reading pod {}: {e}", claim.pod)))?;
                check_pod(pod.as_ref(), &claim, algorithm)?;
                Ok(Identity {
                    namespace: namespace.clone(),
                    pod: claim.pod,
                })
            }
        }
    }
}

/// The pod a reviewed token is bound to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BoundPod {
    pub pod: String,
    pub uid: String,
}

/// Reads a TokenReview's answer: authenticated, for our audience, a
/// ServiceAccount of `namespace`, bound to a pod.
pub fn bound_pod(status: Option<&TokenReviewStatus>, namespace: &str) -> Result<BoundPod, Denied> {
    let status =
        status.ok_or_else(|| Denied::Unauthenticated("the TokenReview has no status".into()))?;
    if status.authenticated != Some(true) {
        return Err(Denied::Unauthenticated(format!(
            "the token is not valid: {}",
            status.error.as_deref().unwrap_or("not authenticated")
        )));
    }
    if !status
        .audiences
        .iter()
        .flatten()
        .any(|a| a == TOKEN_AUDIENCE)
    {
        return Err(Denied::Unauthenticated(format!(
            "the token is not for the audience {TOKEN_AUDIENCE}"
        )));
    }
    let user = status.user.clone().unwrap_or_default();
    let prefix = format!("system:serviceaccount:{namespace}:");
    if !user
        .username
        .as_deref()
        .is_some_and(|u| u.starts_with(&prefix))
    {
        return Err(Denied::WrongAlgorithm(format!(
            "the token's ServiceAccount ({}) is not of the workers' namespace {namespace}",
            user.username.as_deref().unwrap_or("none")
        )));
    }
    let extra = user.extra.unwrap_or_default();
    let first = |key: &str| extra.get(key).and_then(|v| v.first()).cloned();
    match (first(EXTRA_POD_NAME), first(EXTRA_POD_UID)) {
        (Some(pod), Some(uid)) => Ok(BoundPod { pod, uid }),
        _ => Err(Denied::Unauthenticated(
            "the token is not bound to a pod (use a projected ServiceAccount token volume)".into(),
        )),
    }
}

/// The token's pod must still exist (same UID), not be ending, and belong
/// to the algorithm.
pub fn check_pod(pod: Option<&Pod>, claim: &BoundPod, algorithm: &str) -> Result<(), Denied> {
    let pod = pod
        .filter(|p| p.metadata.uid.as_deref() == Some(claim.uid.as_str()))
        .ok_or_else(|| Denied::Unauthenticated(format!("the token's pod {} is gone", claim.pod)))?;
    if pod.metadata.deletion_timestamp.is_some() {
        return Err(Denied::Unauthenticated(format!(
            "the token's pod {} is being deleted",
            claim.pod
        )));
    }
    let label = pod
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(LABEL_ALGORITHM));
    if label.map(String::as_str) != Some(algorithm) {
        return Err(Denied::WrongAlgorithm(format!(
            "pod {} may not serve algorithm {algorithm}: its label {LABEL_ALGORITHM} is {}",
            claim.pod,
            label.map_or("unset".to_string(), |l| format!("{l:?}"))
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use k8s_openapi::api::authentication::v1::UserInfo;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};

    use super::*;

    fn review(username: &str, audiences: &[&str], pod: Option<(&str, &str)>) -> TokenReviewStatus {
        let mut extra = BTreeMap::new();
        if let Some((name, uid)) = pod {
            extra.insert(EXTRA_POD_NAME.to_string(), vec![name.to_string()]);
            extra.insert(EXTRA_POD_UID.to_string(), vec![uid.to_string()]);
        }
        TokenReviewStatus {
            authenticated: Some(true),
            audiences: Some(audiences.iter().map(|a| a.to_string()).collect()),
            user: Some(UserInfo {
                username: Some(username.into()),
                extra: Some(extra),
                ..UserInfo::default()
            }),
            ..TokenReviewStatus::default()
        }
    }

    fn pod(uid: &str, algorithm: Option<&str>) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some("w-1".into()),
                uid: Some(uid.into()),
                labels: algorithm
                    .map(|a| BTreeMap::from([(LABEL_ALGORITHM.to_string(), a.to_string())])),
                ..ObjectMeta::default()
            },
            ..Pod::default()
        }
    }

    const SA: &str = "system:serviceaccount:vision-workers:detect";

    #[test]
    fn a_bound_token_of_the_namespace_names_its_pod() {
        let ok = review(SA, &[TOKEN_AUDIENCE], Some(("w-1", "u1")));
        assert_eq!(
            bound_pod(Some(&ok), "vision-workers"),
            Ok(BoundPod {
                pod: "w-1".into(),
                uid: "u1".into()
            })
        );
    }

    #[test]
    fn tokens_that_are_invalid_unbound_foreign_or_for_another_audience_are_refused() {
        let invalid = TokenReviewStatus {
            authenticated: Some(false),
            error: Some("token expired".into()),
            ..TokenReviewStatus::default()
        };
        assert_eq!(
            bound_pod(Some(&invalid), "vision-workers"),
            Err(Denied::Unauthenticated(
                "the token is not valid: token expired".into()
            ))
        );
        assert!(matches!(
            bound_pod(
                Some(&review(
                    SA,
                    &["https://kubernetes.default.svc"],
                    Some(("w-1", "u1"))
                )),
                "vision-workers"
            ),
            Err(Denied::Unauthenticated(_))
        ));
        assert!(matches!(
            bound_pod(Some(&review(SA, &[TOKEN_AUDIENCE], None)), "vision-workers"),
            Err(Denied::Unauthenticated(_))
        ));
        assert!(matches!(
            bound_pod(
                Some(&review(
                    "system:serviceaccount:team-a:default",
                    &[TOKEN_AUDIENCE],
                    Some(("w-1", "u1"))
                )),
                "vision-workers"
            ),
            Err(Denied::WrongAlgorithm(_))
        ));
        assert!(matches!(
            bound_pod(None, "vision-workers"),
            Err(Denied::Unauthenticated(_))
        ));
    }

    #[test]
    fn only_a_live_pod_labelled_with_the_algorithm_may_serve_it() {
        let claim = BoundPod {
            pod: "w-1".into(),
            uid: "u1".into(),
        };
        assert_eq!(
            check_pod(Some(&pod("u1", Some("detect"))), &claim, "detect"),
            Ok(())
        );
        assert_eq!(
            check_pod(Some(&pod("u1", Some("ocr"))), &claim, "detect"),
            Err(Denied::WrongAlgorithm(
                "pod w-1 may not serve algorithm detect: its label vision.zjlab.io/algorithm is \"ocr\"".into()
            ))
        );
        assert!(matches!(
            check_pod(Some(&pod("u1", None)), &claim, "detect"),
            Err(Denied::WrongAlgorithm(_))
        ));
        // A pod of the same name but another UID: the token's pod is gone.
        assert!(matches!(
            check_pod(Some(&pod("u2", Some("detect"))), &claim, "detect"),
            Err(Denied::Unauthenticated(_))
        ));
        assert!(matches!(
            check_pod(None, &claim, "detect"),
            Err(Denied::Unauthenticated(_))
        ));
        let mut ending = pod("u1", Some("detect"));
        ending.metadata.deletion_timestamp = Some(Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH));
        assert!(matches!(
            check_pod(Some(&ending), &claim, "detect"),
            Err(Denied::Unauthenticated(_))
        ));
    }
}
