//! What the chart grants people, checked with their own credentials (tokens
//! of ServiceAccounts from the TokenRequest API, not the admin impersonating
//! them) on the local cluster:
//!
//! - a namespace's `edit` (a RoleBinding of the built-in ClusterRole) may
//!   submit, suspend, resume and cancel VisionJobs there, with the API and
//!   with `visionctl`; not in another namespace, and never their status;
//! - a namespace's `view` may read VisionJobs and their status there, and
//!   change nothing;
//! - both read the cluster-scoped VisionQueues and VisionAlgorithms (and
//!   `visionctl queue` works) through the queue-reader binding of
//!   `rbac.queueReaderGroups`, and are refused them when it is empty;
//!   `visionctl queue NAME` and `queue --job` show them the waiting jobs of
//!   their own namespace, saying so (they may not list every namespace's),
//!   where the admin gets the whole queue;
//! - the platform-admin role, bound to `rbac.platformAdminGroups`, manages
//!   queues.
//!
//! The chart's rules reach `edit`/`view` through ClusterRole aggregation,
//! which kube-controller-manager does asynchronously: the test waits for the
//! rules to appear on the built-in roles (and for the API server's authorizer
//! to use them) before it asserts. Every refusal is exactly 403.
//!
//! The release runs no operator (`replicaCount: 0`): only the API server's
//! authorization is under test. (The chart as files: tests/helm_template.rs;
//! installed with its operator: tests/helm_install.rs.) Run with
//! `hack/test.sh` or `cargo test --features e2e --test rbac`; a missing
//! cluster or helm is a failure, never a skip.
#![cfg(feature = "e2e")]

mod harness;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use harness::cluster::{self, ClusterObjects};
use harness::helm::{CHART, Release, helm};
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec,
};
use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, RoleBinding, RoleRef, Subject};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::{Value, json};
use vision_api::testing::{JobFixture, mk_algorithm, mk_job, mk_queue};
use vision_api::{VisionAlgorithm, VisionJob, VisionQueue};

const GROUP: &str = "vision.zjlab.io";
/// How long aggregation and the authorizer's caches may take.
const CONVERGE: Duration = Duration::from_secs(60);

/// Allowed (`Ok`) or refused with this HTTP status.
fn outcome<T>(r: Result<T, kube::Error>) -> Result<(), u16> {
    match r {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) => Err(s.code),
        Err(e) => panic!("not an answer of the API server: {e}"),
    }
}

/// Whether a ClusterRole has a rule of the vision group with `resource` and
/// `verb`.
fn grants(role: &ClusterRole, resource: &str, verb: &str) -> bool {
    role.rules.iter().flatten().any(|r| {
        r.api_groups.iter().flatten().any(|g| g == GROUP)
            && r.resources.iter().flatten().any(|x| x == resource)
            && r.verbs.iter().any(|v| v == verb)
    })
}

/// Waits until the aggregation controller has put the chart's rule
/// (`resource`, `verb`) into the built-in ClusterRole `role`.
async fn wait_aggregated(admin: &Client, role: &str, resource: &str, verb: &str) {
    let roles: Api<ClusterRole> = Api::all(admin.clone());
    let done = harness::wait_for(CONVERGE, || {
        let roles = roles.clone();
        async move {
            roles
                .get(role)
                .await
                .is_ok_and(|r| grants(&r, resource, verb))
        }
    })
    .await;
    assert!(
        done,
        "ClusterRole {role} did not get {verb} {resource}.{GROUP} in {CONVERGE:?}: is the \
         clusterrole-aggregation-controller of kube-controller-manager running \
         (hack/kwok/kwokctl.yaml)?"
    );
}

/// Asks the API server what `user` may do (SelfSubjectAccessReview: with the
/// user's own credentials).
async fn may(user: &Client, verb: &str, resource: &str, namespace: Option<&str>) -> bool {
    let review = SelfSubjectAccessReview {
        spec: SelfSubjectAccessReviewSpec {
            resource_attributes: Some(ResourceAttributes {
                group: Some(GROUP.into()),
                resource: Some(resource.into()),
                verb: Some(verb.into()),
                namespace: namespace.map(Into::into),
                ..Default::default()
            }),
            ..Default::default()
        },
        ..Default::default()
    };
    Api::<SelfSubjectAccessReview>::all(user.clone())
        .create(&PostParams::default(), &review)
        .await
        .expect("a SelfSubjectAccessReview is answered")
        .status
        .is_some_and(|s| s.allowed)
}

/// Waits until the API server's authorizer allows (or refuses) `user` the
/// call: RBAC changes reach it through its informers, a moment after they
/// are stored.
async fn wait_may(user: &Client, want: bool, verb: &str, resource: &str, ns: Option<&str>) {
    let done = harness::wait_for(CONVERGE, || async move {
        may(user, verb, resource, ns).await == want
    })
    .await;
    assert!(
        done,
        "{verb} {resource} (namespace {ns:?}) not {} in {CONVERGE:?}",
        if want { "allowed" } else { "refused" }
    );
}

/// A ServiceAccount `name` in `ns` whose token is written into a kubeconfig
/// under `dir`; its path and a client with only that token.
async fn user(admin: &Client, ns: &str, name: &str, dir: &Path) -> (std::path::PathBuf, Client) {
    let sas: Api<ServiceAccount> = Api::namespaced(admin.clone(), ns);
    let sa = ServiceAccount {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        ..Default::default()
    };
    sas.create(&PostParams::default(), &sa)
        .await
        .unwrap_or_else(|e| panic!("creating ServiceAccount {ns}/{name}: {e}"));
    let request = TokenRequest {
        spec: TokenRequestSpec {
            audiences: vec![],
            expiration_seconds: Some(3600),
            ..Default::default()
        },
        ..Default::default()
    };
    let token = sas
        .create_token_request(name, &PostParams::default(), &request)
        .await
        .unwrap_or_else(|e| panic!("TokenRequest of {ns}/{name}: {e}"))
        .status
        .expect("a TokenRequest answers with a token")
        .token;
    let path = dir.join(format!("{name}.kubeconfig"));
    cluster::token_kubeconfig(&token, ns, &path);
    let client = cluster::client_from(&path).await;
    (path, client)
}

/// A RoleBinding in `ns` of the built-in ClusterRole `role` to the
/// ServiceAccount `sa` of `ns`.
async fn bind(admin: &Client, ns: &str, role: &str, sa: &str) {
    let rb = RoleBinding {
        metadata: ObjectMeta {
            name: Some(format!("{sa}-{role}")),
            ..Default::default()
        },
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".into(),
            kind: "ClusterRole".into(),
            name: role.into(),
        },
        subjects: Some(vec![Subject {
            kind: "ServiceAccount".into(),
            name: sa.into(),
            namespace: Some(ns.into()),
            ..Default::default()
        }]),
    };
    Api::<RoleBinding>::namespaced(admin.clone(), ns)
        .create(&PostParams::default(), &rb)
        .await
        .unwrap_or_else(|e| panic!("binding {role} to {ns}/{sa}: {e}"));
}

/// What a run of visionctl did.
#[derive(Debug)]
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

/// Runs visionctl with the kubeconfig of a user.
fn visionctl(kubeconfig: &Path, args: &[&str]) -> Run {
    let out = Command::new(harness::workspace_binary("visionctl"))
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(args)
        .output()
        .expect("running visionctl");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// The ClusterRoleBindings of other releases of the chart, for a failure
/// message: one bound to everyone grants what this test expects refused.
async fn other_releases_bindings(admin: &Client, ours: &str) -> Vec<String> {
    Api::<ClusterRoleBinding>::all(admin.clone())
        .list(&ListParams::default().labels("app.kubernetes.io/part-of=vision-operator"))
        .await
        .map(|l| {
            l.items
                .into_iter()
                .filter_map(|b| b.metadata.name)
                .filter(|n| !n.starts_with(ours))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_get_what_the_default_roles_and_the_chart_grant() {
    let admin = cluster::client().await;
    // The release (its own namespace), a team namespace with the users, and
    // another team's namespace.
    let rel = cluster::create_namespace(&admin, "rbac").await;
    let team = cluster::create_namespace(&admin, "rbac-team").await;
    let other = cluster::create_namespace(&admin, "rbac-other").await;
    let fullname = format!("{rel}-vision-operator");
    let queue = format!("{rel}-q");
    let admins_queue = format!("{rel}-admins");
    let algorithm = format!("{rel}-alg");
    let release = Release {
        name: rel.clone(),
        namespace: rel.clone(),
    };
    let _cleanup = ClusterObjects(vec![
        format!("namespace/{team}"),
        format!("namespace/{other}"),
        format!("visionqueue/{admins_queue}"),
        format!("visionalgorithm/{algorithm}"),
    ]);
    let dir = harness::repo_root().join(".local/rbac").join(&rel);
    std::fs::create_dir_all(&dir).unwrap();
    let _tokens = RemoveDir(dir.clone());

    // The chart's RBAC and a queue, no operator; nobody reads queues yet.
    let common = format!("replicaCount=0,defaultQueue.name={queue}");
    helm(&[
        "install",
        &rel,
        CHART,
        "-n",
        &rel,
        "--wait",
        "--timeout",
        "120s",
        "--set",
        &common,
        "--set-json",
        "rbac.queueReaderGroups=[]",
    ]);

    let (editor_kubeconfig, editor) = user(&admin, &team, "editor", &dir).await;
    let (viewer_kubeconfig, viewer) = user(&admin, &team, "viewer", &dir).await;
    bind(&admin, &team, "edit", "editor").await;
    bind(&admin, &team, "view", "viewer").await;

    // Aggregation into the built-in roles, then the authorizer.
    wait_aggregated(&admin, "edit", "visionjobs", "create").await;
    wait_aggregated(&admin, "admin", "visionjobs", "delete").await;
    wait_aggregated(&admin, "view", "visionjobs", "get").await;
    wait_aggregated(&admin, "view", "visionjobs/status", "get").await;
    wait_may(&editor, true, "create", "visionjobs", Some(&team)).await;
    wait_may(&viewer, true, "list", "visionjobs", Some(&team)).await;

    // The editor: submit, read, suspend, resume in its namespace.
    let jobs: Api<VisionJob> = Api::namespaced(editor.clone(), &team);
    let job = mk_job(&team, "by-editor", "some-algorithm").with_queue(&queue);
    assert_eq!(
        outcome(jobs.create(&PostParams::default(), &job).await),
        Ok(())
    );
    assert_eq!(outcome(jobs.get("by-editor").await), Ok(()));
    assert_eq!(outcome(jobs.list(&ListParams::default()).await), Ok(()));
    for suspend in [true, false] {
        let patch = Patch::Merge(json!({"spec": {"suspend": suspend}}));
        assert_eq!(
            outcome(
                jobs.patch("by-editor", &PatchParams::default(), &patch)
                    .await
            ),
            Ok(()),
            "suspend={suspend} by the editor"
        );
    }
    // Never the status (the operator's), never another namespace, never
    // every namespace, never a queue.
    let status = Patch::Merge(json!({"status": {"phase": "Succeeded"}}));
    assert_eq!(
        outcome(
            jobs.patch_status("by-editor", &PatchParams::default(), &status)
                .await
        ),
        Err(403),
        "status patch by the editor"
    );
    let elsewhere: Api<VisionJob> = Api::namespaced(editor.clone(), &other);
    assert_eq!(
        outcome(
            elsewhere
                .create(
                    &PostParams::default(),
                    &mk_job(&other, "x", "some-algorithm")
                )
                .await
        ),
        Err(403),
        "create in another namespace by the editor"
    );
    assert_eq!(
        outcome(elsewhere.list(&ListParams::default()).await),
        Err(403)
    );
    assert_eq!(
        outcome(
            Api::<VisionJob>::all(editor.clone())
                .list(&ListParams::default())
                .await
        ),
        Err(403),
        "list in every namespace by the editor"
    );
    assert_eq!(
        outcome(
            Api::<VisionQueue>::all(editor.clone())
                .create(&PostParams::default(), &mk_queue(&format!("{rel}-x"), 1))
                .await
        ),
        Err(403),
        "create a queue by the editor"
    );

    // The viewer: reads the job and its status; changes nothing.
    let read: Api<VisionJob> = Api::namespaced(viewer.clone(), &team);
    assert_eq!(outcome(read.get("by-editor").await), Ok(()));
    assert_eq!(outcome(read.get_status("by-editor").await), Ok(()));
    assert_eq!(outcome(read.list(&ListParams::default()).await), Ok(()));
    let refused = [
        (
            "create",
            outcome(
                read.create(
                    &PostParams::default(),
                    &mk_job(&team, "by-viewer", "some-algorithm"),
                )
                .await,
            ),
        ),
        (
            "suspend",
            outcome(
                read.patch(
                    "by-editor",
                    &PatchParams::default(),
                    &Patch::Merge(json!({"spec": {"suspend": true}})),
                )
                .await,
            ),
        ),
        (
            "cancel",
            outcome(read.delete("by-editor", &DeleteParams::default()).await),
        ),
    ];
    for (what, got) in refused {
        assert_eq!(got, Err(403), "{what} by the viewer");
    }

    // No queue-reader binding: queues and algorithms are refused to both,
    // and `visionctl queue` says so (exit 5, an API error).
    let others = other_releases_bindings(&admin, &fullname).await;
    for (who, client) in [("editor", &editor), ("viewer", &viewer)] {
        assert_eq!(
            outcome(
                Api::<VisionQueue>::all(client.clone())
                    .list(&ListParams::default())
                    .await
            ),
            Err(403),
            "queues listed by the {who} with rbac.queueReaderGroups=[] \
             (other releases' bindings: {others:?})"
        );
        assert_eq!(
            outcome(
                Api::<VisionAlgorithm>::all(client.clone())
                    .list(&ListParams::default())
                    .await
            ),
            Err(403),
            "algorithms listed by the {who} with rbac.queueReaderGroups=[]"
        );
    }
    let run = visionctl(&viewer_kubeconfig, &["queue"]);
    assert_eq!(run.code, 5, "visionctl queue without the binding: {run:?}");
    assert!(run.stderr.contains("forbidden"), "{run:?}");

    // The defaults: every authenticated user reads queues and algorithms;
    // the ServiceAccounts of the release namespace are platform admins.
    helm(&[
        "upgrade",
        &rel,
        CHART,
        "-n",
        &rel,
        "--reset-values",
        "--wait",
        "--timeout",
        "120s",
        "--set",
        &common,
        "--set-json",
        &format!(r#"rbac.platformAdminGroups=["system:serviceaccounts:{rel}"]"#),
    ]);
    let (_, platform) = user(&admin, &rel, "platform", &dir).await;
    wait_may(&editor, true, "list", "visionqueues", None).await;
    wait_may(&viewer, true, "list", "visionqueues", None).await;
    wait_may(&platform, true, "create", "visionqueues", None).await;
    for (who, client) in [("editor", &editor), ("viewer", &viewer)] {
        let queues = Api::<VisionQueue>::all(client.clone())
            .list(&ListParams::default())
            .await
            .unwrap_or_else(|e| panic!("queues listed by the {who}: {e}"));
        assert!(
            queues
                .items
                .iter()
                .any(|q| q.metadata.name.as_deref() == Some(queue.as_str())),
            "the {who} should see queue {queue}"
        );
        assert_eq!(
            outcome(
                Api::<VisionAlgorithm>::all(client.clone())
                    .list(&ListParams::default())
                    .await
            ),
            Ok(()),
            "algorithms listed by the {who}"
        );
        // Reading is all: no queue changes.
        assert_eq!(
            outcome(
                Api::<VisionQueue>::all(client.clone())
                    .patch(
                        &queue,
                        &PatchParams::default(),
                        &Patch::Merge(json!({"spec": {"paused": true}})),
                    )
                    .await
            ),
            Err(403),
            "queue patched by the {who}"
        );
    }
    for (who, kubeconfig) in [
        ("editor", &editor_kubeconfig),
        ("viewer", &viewer_kubeconfig),
    ] {
        let run = visionctl(kubeconfig, &["queue"]);
        assert_eq!(run.code, 0, "visionctl queue as the {who}: {run:?}");
        assert!(
            run.stdout.lines().any(|l| l.starts_with(&queue)),
            "visionctl queue as the {who} lists {queue}: {run:?}"
        );
        let run = visionctl(kubeconfig, &["queue", "-o", "json"]);
        assert_eq!(run.code, 0, "visionctl queue -o json as the {who}: {run:?}");
        let list: Value = serde_json::from_str(&run.stdout).expect("JSON");
        assert!(
            list["items"]
                .as_array()
                .expect("a List")
                .iter()
                .any(|q| q["metadata"]["name"] == queue.as_str()),
            "{list}"
        );
    }

    // A queue's waiting jobs and a job's position need VisionJobs of every
    // namespace: the editor and the viewer get their namespace's, told so
    // (exit 0); the admin gets the queue's. A job that waits whether or not
    // an operator runs on the cluster: its algorithm exists (no rejection)
    // and its queue is paused (no admission). Its priority puts it first,
    // ahead of by-editor (which waits too unless an operator rejected it:
    // its algorithm does not exist).
    Api::<VisionAlgorithm>::all(admin.clone())
        .create(&PostParams::default(), &mk_algorithm(&algorithm))
        .await
        .unwrap_or_else(|e| panic!("creating VisionAlgorithm {algorithm}: {e}"));
    Api::<VisionQueue>::all(admin.clone())
        .patch(
            &queue,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"paused": true}})),
        )
        .await
        .unwrap_or_else(|e| panic!("pausing {queue}: {e}"));
    assert_eq!(
        outcome(
            jobs.create(
                &PostParams::default(),
                &mk_job(&team, "waits", &algorithm)
                    .with_queue(&queue)
                    .with_priority(10)
            )
            .await
        ),
        Ok(())
    );
    let only_ours = format!(
        "showing only namespace {team}'s waiting jobs: you may not list VisionJobs in all \
         namespaces"
    );
    let not_visible = "jobs of other namespaces are not visible to you";
    for (who, kubeconfig) in [
        ("editor", &editor_kubeconfig),
        ("viewer", &viewer_kubeconfig),
    ] {
        let run = visionctl(kubeconfig, &["-n", &team, "queue", &queue]);
        assert_eq!(run.code, 0, "visionctl queue {queue} as the {who}: {run:?}");
        assert!(run.stdout.contains(&only_ours), "{who}: {run:?}");
        assert!(
            run.stdout
                .lines()
                .any(|l| l.starts_with("1 ") && l.contains(&format!("{team}/waits"))),
            "{who}: {run:?}"
        );
        let view: Value = serde_json::from_str(
            &visionctl(kubeconfig, &["-n", &team, "queue", &queue, "-o", "json"]).stdout,
        )
        .expect("JSON");
        assert_eq!(
            (
                &view["scope"],
                &view["namespace"],
                &view["positionLowerBound"],
                &view["waiting"][0]["position"],
                &view["waiting"][0]["name"],
            ),
            (
                &json!("namespace"),
                &json!(team),
                &json!(true),
                &json!(1),
                &json!("waits"),
            ),
            "{who}: {view}"
        );
        let run = visionctl(kubeconfig, &["-n", &team, "queue", "--job", "waits"]);
        assert_eq!(run.code, 0, "visionctl queue --job as the {who}: {run:?}");
        assert!(
            run.stdout.contains("at least position 1") && run.stdout.contains(not_visible),
            "{who}: {run:?}"
        );
        let run = visionctl(
            kubeconfig,
            &["-n", &team, "queue", "--job", "waits", "-o", "json"],
        );
        assert_eq!(run.code, 0, "{who}: {run:?}");
        let position: Value = serde_json::from_str(&run.stdout).expect("JSON");
        assert_eq!(
            (
                &position["scope"],
                &position["position"],
                &position["positionLowerBound"],
            ),
            (&json!("namespace"), &json!(1), &json!(true)),
            "{who}: {position}"
        );
        // In a namespace of another team even the fallback is refused.
        let run = visionctl(kubeconfig, &["-n", &other, "queue", &queue]);
        assert_eq!(
            run.code, 5,
            "visionctl queue in {other} as the {who}: {run:?}"
        );
        assert!(run.stderr.contains("forbidden"), "{run:?}");
    }
    let admin_kubeconfig = cluster::kubeconfig_path();
    let run = visionctl(&admin_kubeconfig, &["-n", &team, "queue", &queue]);
    assert_eq!(run.code, 0, "visionctl queue {queue} as the admin: {run:?}");
    assert!(
        !run.stdout.contains("showing only")
            && run
                .stdout
                .lines()
                .any(|l| l.starts_with("1 ") && l.contains(&format!("{team}/waits"))),
        "{run:?}"
    );
    let run = visionctl(&admin_kubeconfig, &["-n", &team, "queue", "--job", "waits"]);
    assert_eq!(run.code, 0, "visionctl queue --job as the admin: {run:?}");
    assert!(
        run.stdout.lines().any(|l| l.starts_with("position 1 of ")
            && l.contains(&format!(" waiting in queue {queue} ")))
            && !run.stdout.contains(not_visible),
        "{run:?}"
    );
    let run = visionctl(
        &admin_kubeconfig,
        &["-n", &team, "queue", "--job", "waits", "-o", "json"],
    );
    let position: Value = serde_json::from_str(&run.stdout).expect("JSON");
    assert_eq!(
        (
            &position["scope"],
            &position["positionLowerBound"],
            &position["position"]
        ),
        (&json!("cluster"), &json!(false), &json!(1)),
        "{position}"
    );

    // The editor with visionctl: submit, suspend, resume, cancel (delete).
    let run = visionctl(
        &editor_kubeconfig,
        &[
            "submit",
            "--algorithm",
            "some-algorithm",
            "--queue",
            &queue,
            "--name",
            "by-visionctl",
        ],
    );
    assert_eq!(run.code, 0, "visionctl submit as the editor: {run:?}");
    for verb in ["suspend", "resume"] {
        let run = visionctl(&editor_kubeconfig, &[verb, "by-visionctl"]);
        assert_eq!(run.code, 0, "visionctl {verb} as the editor: {run:?}");
    }
    let run = visionctl(&viewer_kubeconfig, &["cancel", "by-visionctl"]);
    assert_eq!(run.code, 5, "visionctl cancel as the viewer: {run:?}");
    assert!(run.stderr.contains("forbidden"), "{run:?}");
    for name in ["by-visionctl", "by-editor"] {
        let run = visionctl(&editor_kubeconfig, &["cancel", name, "--wait", "60s"]);
        assert_eq!(
            run.code, 0,
            "visionctl cancel {name} as the editor: {run:?}"
        );
    }
    assert_eq!(outcome(jobs.get("by-editor").await), Err(404));

    // The platform admin manages queues (never their status).
    let queues: Api<VisionQueue> = Api::all(platform.clone());
    assert_eq!(
        outcome(
            queues
                .create(&PostParams::default(), &mk_queue(&admins_queue, 1))
                .await
        ),
        Ok(())
    );
    assert_eq!(
        outcome(
            queues
                .patch_status(
                    &admins_queue,
                    &PatchParams::default(),
                    &Patch::Merge(json!({"status": {"running": 1}})),
                )
                .await
        ),
        Err(403),
        "queue status patched by the platform admin"
    );
    assert_eq!(
        outcome(queues.delete(&admins_queue, &DeleteParams::default()).await),
        Ok(())
    );

    drop(release);
}

/// A directory (of kubeconfigs with tokens) removed when dropped, also when
/// the test panics.
struct RemoveDir(std::path::PathBuf);

impl Drop for RemoveDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
