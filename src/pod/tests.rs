//! Unit tests of the pod builder and of the reading of pods. Inputs are the
//! typed fixtures of `vision_api::testing`; expected pods are whole JSON
//! documents, as the API server would receive them.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Container, ContainerState, ContainerStateRunning, ContainerStateTerminated, ContainerStatus,
    EmptyDirVolumeSource, EnvVar, PodCondition, PodSecurityContext, PodSpec, PodStatus,
    PodTemplateSpec, ResourceRequirements, SecurityContext, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde_json::{Value, json};
use vision_api::testing::{AlgorithmFixture, JOB_UID, JobFixture, mk_algorithm, mk_job};

use super::*;

const NS: &str = "team-a";
const UID: &str = JOB_UID;
const JOB: &str = "cam42-frame-0001";
const ALGO: &str = "yolo-detect";
const IMAGE: &str = "registry.example/yolo:1";

fn t(s: i64) -> Time {
    Time(k8s_openapi::jiff::Timestamp::from_second(s).unwrap())
}

/// The usual job: yolo-detect on one frame through queue gpu-a.
fn the_job() -> VisionJob {
    mk_job(NS, JOB, ALGO)
        .with_queue("gpu-a")
        .with_input(json!({"uri": "s3://frames/cam42/0001.jpg"}))
        .with_params(json!({"confidence": 0.5}))
}

/// A job of the usual algorithm with nothing but its name set.
fn plain_job(name: &str) -> VisionJob {
    mk_job(NS, name, ALGO)
}

/// An algorithm (all defaults: 1 GPU, 3600 s, 2 retries) whose template is
/// `spec`, without template metadata.
fn algorithm_with(spec: PodSpec) -> VisionAlgorithm {
    algorithm_template(PodTemplateSpec {
        metadata: None,
        spec: Some(spec),
    })
}

/// An algorithm (all defaults) with the given template.
fn algorithm_template(template: PodTemplateSpec) -> VisionAlgorithm {
    mk_algorithm(ALGO).with_template(template)
}

/// A pod spec with these containers and nothing else.
fn containers(containers: Vec<Container>) -> PodSpec {
    PodSpec {
        containers,
        ..Default::default()
    }
}

/// A container with only a name and the image.
fn bare_container(name: &str, image: &str) -> Container {
    Container {
        name: name.into(),
        image: Some(image.into()),
        ..Default::default()
    }
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

fn env(name: &str, value: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: Some(value.into()),
        ..Default::default()
    }
}

fn mount(name: &str, path: &str) -> VolumeMount {
    VolumeMount {
        name: name.into(),
        mount_path: path.into(),
        ..Default::default()
    }
}

fn quantities(entries: &[(&str, &str)]) -> BTreeMap<String, Quantity> {
    entries
        .iter()
        .map(|(k, v)| (k.to_string(), Quantity(v.to_string())))
        .collect()
}

/// The algorithm container of the usual template: arguments that a shell would
/// mangle, to see that they are passed through as they are.
fn algorithm_container() -> Container {
    Container {
        command: Some(strings(&["python", "-m", "detect"])),
        args: Some(strings(&[
            "--input",
            "s3://frames/a b.jpg",
            "$(HOME); rm -rf / && echo '*'",
        ])),
        ..bare_container("algorithm", IMAGE)
    }
}

/// The usual algorithm: one container, all defaults (1 GPU, 3600 s, 2 retries).
fn the_algorithm() -> VisionAlgorithm {
    algorithm_with(containers(vec![algorithm_container()]))
}

fn build(job: &VisionJob, algorithm: &VisionAlgorithm, attempt: i32) -> Value {
    serde_json::to_value(build_pod(job, algorithm, attempt).unwrap()).unwrap()
}

/// The built pod's spec.
fn build_spec(job: &VisionJob, algorithm: &VisionAlgorithm) -> Value {
    build(job, algorithm, 1)["spec"].clone()
}

/// The built pod's container of the given name.
fn build_container(job: &VisionJob, algorithm: &VisionAlgorithm, name: &str) -> Value {
    let spec = build_spec(job, algorithm);
    spec["containers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap()
        .clone()
}

/// The job JSON of the usual job, attempt 1 (keys sorted, as serde_json writes them).
const THE_JOB_JSON: &str = concat!(
    r#"{"algorithm":"yolo-detect","attempt":1,"input":{"uri":"s3://frames/cam42/0001.jpg"},"#,
    r#""name":"cam42-frame-0001","namespace":"team-a","params":{"confidence":0.5},"#,
    r#""uid":"6f1c2b7e-0000-4000-8000-000000000001"}"#
);

/// The container security context the operator adds where the template has none.
fn restricted_container() -> Value {
    json!({"allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}})
}

// ---------------------------------------------------------------------------
// pod_name

#[test]
fn pod_name_is_job_dash_attempt() {
    assert_eq!(pod_name(JOB, 1), "cam42-frame-0001-1");
    assert_eq!(pod_name(JOB, 2), "cam42-frame-0001-2");
    assert_eq!(pod_name(JOB, 21), "cam42-frame-0001-21");
    assert_eq!(pod_name("a.b", 3), "a.b-3");
}

#[test]
fn pod_name_kept_when_it_just_fits() {
    let name = "a".repeat(251);
    assert_eq!(pod_name(&name, 1), format!("{name}-1"));
    assert_eq!(pod_name(&name, 1).len(), 253);
}

#[test]
fn pod_name_of_a_long_job_is_shortened_with_a_hash() {
    let name = "a".repeat(253);
    // FNV-1a (32 bits) of the whole name.
    let expected = format!("{}-{}-1", "a".repeat(242), "df1f7590");
    assert_eq!(pod_name(&name, 1), expected);
    assert_eq!(expected.len(), 253);
    // Deterministic.
    assert_eq!(pod_name(&name, 1), pod_name(&name, 1));
    assert_eq!(
        pod_name(&name, 12),
        format!("{}-{}-12", "a".repeat(241), "df1f7590")
    );
}

#[test]
fn pod_names_of_a_long_job_are_unique_per_attempt_and_at_most_253() {
    let name = format!("cam42-{}", "x".repeat(247));
    assert_eq!(name.len(), 253);
    let names: Vec<String> = (1..=25).map(|a| pod_name(&name, a)).collect();
    for (i, n) in names.iter().enumerate() {
        assert!(n.len() <= 253, "{n} is {} long", n.len());
        assert!(n.ends_with(&format!("-{}", i + 1)), "{n}");
        assert!(is_dns_subdomain(n), "{n}");
    }
    let mut unique = names.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), names.len());
    assert_eq!(pod_name(&name, i32::MAX).len(), 253);
}

#[test]
fn pod_names_of_long_jobs_differing_only_past_the_cut_differ() {
    let a = format!("{}a", "x".repeat(252));
    let b = format!("{}b", "x".repeat(252));
    assert_ne!(pod_name(&a, 1), pod_name(&b, 1));
    assert_eq!(pod_name(&a, 1)[..242], pod_name(&b, 1)[..242]);
}

#[test]
fn pod_name_switches_to_the_short_form_when_the_attempt_no_longer_fits() {
    let name = "a".repeat(251);
    assert_eq!(pod_name(&name, 9), format!("{name}-9"));
    let tenth = pod_name(&name, 10);
    assert_eq!(tenth.len(), 253);
    assert!(tenth.ends_with("-10"));
    assert!(!tenth.starts_with(&name));
}

#[test]
fn pod_name_never_leaves_a_dash_or_dot_before_the_hash() {
    // The cut (242 characters for attempt 1) falls right after the separator.
    for sep in ["-", "."] {
        let name = format!("{}{sep}{}", "a".repeat(241), "b".repeat(20));
        let pod = pod_name(&name, 1);
        assert!(pod.starts_with(&format!("{}-", "a".repeat(241))), "{pod}");
        assert_eq!(pod.len(), 241 + 1 + 8 + 2, "{pod}");
        assert!(is_dns_subdomain(&pod), "{pod}");
    }
}

/// RFC 1123 subdomain, as Kubernetes checks pod names.
fn is_dns_subdomain(s: &str) -> bool {
    s.len() <= 253
        && s.split('.').all(|label| {
            !label.is_empty()
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

// ---------------------------------------------------------------------------
// job_json and defaults

#[test]
fn job_json_is_exact() {
    assert_eq!(job_json(&the_job(), 1), THE_JOB_JSON);
    assert_eq!(
        serde_json::from_str::<Value>(&job_json(&the_job(), 3)).unwrap(),
        json!({
            "name": JOB,
            "namespace": NS,
            "uid": UID,
            "attempt": 3,
            "algorithm": ALGO,
            "input": {"uri": "s3://frames/cam42/0001.jpg"},
            "params": {"confidence": 0.5},
        })
    );
}

#[test]
fn job_json_without_input_or_params_has_empty_objects() {
    let job = plain_job("j");
    assert_eq!(
        serde_json::from_str::<Value>(&job_json(&job, 1)).unwrap(),
        json!({
            "name": "j",
            "namespace": NS,
            "uid": UID,
            "attempt": 1,
            "algorithm": ALGO,
            "input": {},
            "params": {},
        })
    );
}

#[test]
fn job_values_default_to_the_algorithms() {
    let algorithm = algorithm_template(PodTemplateSpec::default())
        .with_gpus_per_job(2)
        .with_timeout_seconds(600)
        .with_retries(5);
    let plain = plain_job("j");
    assert_eq!(job_gpus(&plain, &algorithm), 2);
    assert_eq!(job_timeout_seconds(&plain, &algorithm), 600);
    assert_eq!(job_retries(&plain, &algorithm), 5);

    let own = plain_job("j")
        .with_gpus(0)
        .with_timeout_seconds(30)
        .with_retries(0);
    assert_eq!(job_gpus(&own, &algorithm), 0);
    assert_eq!(job_timeout_seconds(&own, &algorithm), 30);
    assert_eq!(job_retries(&own, &algorithm), 0);

    let defaults = algorithm_template(PodTemplateSpec::default());
    assert_eq!(job_gpus(&plain, &defaults), 1);
    assert_eq!(job_timeout_seconds(&plain, &defaults), 3600);
    assert_eq!(job_retries(&plain, &defaults), 2);
}

// ---------------------------------------------------------------------------
// build_pod: the whole pod

#[test]
fn build_pod_whole_output() {
    assert_eq!(
        build(&the_job(), &the_algorithm(), 1),
        json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": "cam42-frame-0001-1",
                "namespace": NS,
                "labels": {
                    "app.kubernetes.io/managed-by": "vision-operator",
                    "vision.zjlab.io/algorithm": ALGO,
                    "vision.zjlab.io/attempt": "1",
                    "vision.zjlab.io/job": JOB,
                    "vision.zjlab.io/job-uid": UID,
                    "vision.zjlab.io/queue": "gpu-a",
                },
                "annotations": {"vision.zjlab.io/job-json": THE_JOB_JSON},
                "finalizers": ["vision.zjlab.io/outcome"],
                "ownerReferences": [{
                    "apiVersion": "vision.zjlab.io/v1alpha1",
                    "kind": "VisionJob",
                    "name": JOB,
                    "uid": UID,
                    "controller": true,
                    "blockOwnerDeletion": true,
                }],
            },
            "spec": {
                "restartPolicy": "Never",
                "activeDeadlineSeconds": 3600,
                "automountServiceAccountToken": false,
                "securityContext": {
                    "runAsNonRoot": true,
                    "seccompProfile": {"type": "RuntimeDefault"},
                },
                "volumes": [{
                    "name": "vision-job",
                    "downwardAPI": {"items": [{
                        "path": "job.json",
                        "fieldRef": {"fieldPath": "metadata.annotations['vision.zjlab.io/job-json']"},
                    }]},
                }],
                "containers": [{
                    "name": "algorithm",
                    "image": "registry.example/yolo:1",
                    "command": ["python", "-m", "detect"],
                    "args": ["--input", "s3://frames/a b.jpg", "$(HOME); rm -rf / && echo '*'"],
                    "env": [{"name": "VISION_JOB", "value": THE_JOB_JSON}],
                    "volumeMounts": [{
                        "name": "vision-job",
                        "mountPath": "/etc/vision",
                        "readOnly": true,
                    }],
                    "terminationMessagePolicy": "FallbackToLogsOnError",
                    "resources": {
                        "limits": {"nvidia.com/gpu": "1"},
                        "requests": {"nvidia.com/gpu": "1"},
                    },
                    "securityContext": restricted_container(),
                }],
            },
        })
    );
}

#[test]
fn build_pod_of_a_later_attempt() {
    let pod = build(&the_job(), &the_algorithm(), 3);
    let job_json_3 = THE_JOB_JSON.replace(r#""attempt":1"#, r#""attempt":3"#);
    assert_eq!(pod["metadata"]["name"], "cam42-frame-0001-3");
    assert_eq!(pod["metadata"]["labels"]["vision.zjlab.io/attempt"], "3");
    assert_eq!(
        pod["metadata"]["annotations"],
        json!({"vision.zjlab.io/job-json": job_json_3})
    );
    assert_eq!(
        pod["spec"]["containers"][0]["env"],
        json!([{"name": "VISION_JOB", "value": job_json_3}])
    );
}

// ---------------------------------------------------------------------------
// build_pod: spec.output

/// The usual job, writing its outputs to the claim `results` (at `path`).
fn with_output(job: VisionJob, path: Option<&str>) -> VisionJob {
    let mut job = job;
    job.spec.output = Some(vision_api::JobOutput {
        persistent_volume_claim: vision_api::OutputClaim {
            claim_name: "results".into(),
        },
        path: path.map(str::to_string),
    });
    job
}

/// The job JSON of the usual job with an output, attempt 2 (keys sorted).
const THE_JOB_JSON_WITH_OUTPUT: &str = concat!(
    r#"{"algorithm":"yolo-detect","attempt":2,"input":{"uri":"s3://frames/cam42/0001.jpg"},"#,
    r#""name":"cam42-frame-0001","namespace":"team-a","#,
    r#""output":{"claimName":"results","dir":"/var/run/vision/output","path":"cam42-frame-0001/2"},"#,
    r#""params":{"confidence":0.5},"uid":"6f1c2b7e-0000-4000-8000-000000000001"}"#
);

#[test]
fn job_json_of_a_job_with_an_output_names_its_directory() {
    assert_eq!(
        job_json(&with_output(the_job(), None), 2),
        THE_JOB_JSON_WITH_OUTPUT
    );
    let own_path: Value =
        serde_json::from_str(&job_json(&with_output(the_job(), Some("cams/42")), 1)).unwrap();
    assert_eq!(
        own_path["output"],
        json!({"claimName": "results", "dir": "/var/run/vision/output", "path": "cams/42/1"})
    );
}

#[test]
fn the_output_claim_is_mounted_at_the_attempts_directory() {
    let pod = build(&with_output(the_job(), None), &the_algorithm(), 2);
    assert_eq!(
        pod["metadata"]["annotations"],
        json!({"vision.zjlab.io/job-json": THE_JOB_JSON_WITH_OUTPUT})
    );
    assert_eq!(
        pod["spec"]["volumes"],
        json!([
            {
                "name": "vision-job",
                "downwardAPI": {"items": [{
                    "path": "job.json",
                    "fieldRef": {"fieldPath": "metadata.annotations['vision.zjlab.io/job-json']"},
                }]},
            },
            {"name": "vision-output", "persistentVolumeClaim": {"claimName": "results"}},
        ])
    );
    let container = &pod["spec"]["containers"][0];
    assert_eq!(
        container["env"],
        json!([
            {"name": "VISION_JOB", "value": THE_JOB_JSON_WITH_OUTPUT},
            {"name": "VISION_OUTPUT_DIR", "value": "/var/run/vision/output"},
        ])
    );
    assert_eq!(
        container["volumeMounts"],
        json!([
            {"name": "vision-job", "mountPath": "/etc/vision", "readOnly": true},
            {
                "name": "vision-output",
                "mountPath": "/var/run/vision/output",
                "subPath": "cam42-frame-0001/2",
            },
        ])
    );
}

#[test]
fn only_the_algorithm_container_mounts_the_output_and_its_own_output_dir_is_replaced() {
    let algorithm_container = Container {
        env: Some(vec![
            env("VISION_OUTPUT_DIR", "/tmp/out"),
            env("LOG", "debug"),
        ]),
        ..algorithm_container()
    };
    let algorithm = algorithm_with(containers(vec![
        bare_container("sidecar", "registry.example/sidecar:1"),
        algorithm_container,
    ]));
    let job = with_output(the_job(), Some("cams/42/"));
    let sidecar = build_container(&job, &algorithm, "sidecar");
    assert_eq!(sidecar.get("env"), None);
    assert_eq!(sidecar.get("volumeMounts"), None);
    let built = build_container(&job, &algorithm, "algorithm");
    let env_names: Vec<&str> = built["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert_eq!(env_names, ["LOG", "VISION_JOB", "VISION_OUTPUT_DIR"]);
    assert_eq!(built["env"][2]["value"], OUTPUT_DIR);
    assert_eq!(built["volumeMounts"][1]["subPath"], "cams/42/1");
}

#[test]
fn the_job_file_is_at_etc_vision_job_json() {
    assert_eq!(format!("{JOB_DIR}/{JOB_FILE}"), "/etc/vision/job.json");
    let pod = build_pod(&the_job(), &the_algorithm(), 1).unwrap();
    let spec = pod.spec.unwrap();
    let volume = &spec.volumes.as_ref().unwrap()[0];
    let item = &volume
        .downward_api
        .as_ref()
        .unwrap()
        .items
        .as_ref()
        .unwrap()[0];
    assert_eq!(item.path, JOB_FILE);
    let field = &item.field_ref.as_ref().unwrap().field_path;
    assert_eq!(
        field,
        &format!("metadata.annotations['{ANNOTATION_JOB_JSON}']")
    );
    // What the downward API puts in the file is what VISION_JOB holds.
    let annotation = &pod.metadata.annotations.as_ref().unwrap()[ANNOTATION_JOB_JSON];
    let env = spec.containers[0].env.as_ref().unwrap();
    assert_eq!(env.len(), 1);
    assert_eq!(env[0].value.as_deref(), Some(annotation.as_str()));
    let mount = &spec.containers[0].volume_mounts.as_ref().unwrap()[0];
    assert_eq!(
        (mount.name.as_str(), mount.mount_path.as_str()),
        (volume.name.as_str(), JOB_DIR)
    );
    assert_eq!(mount.read_only, Some(true));
}

// ---------------------------------------------------------------------------
// build_pod: metadata

#[test]
fn labels_skip_values_that_are_not_valid_label_values() {
    let long_name = format!("cam42-{}", "f".repeat(60));
    assert_eq!(long_name.len(), 66);
    let job = plain_job(&long_name).with_queue(&("q.".repeat(40) + "q"));
    let algorithm =
        mk_algorithm("a-very-long-algorithm-name-that-is-longer-than-sixty-three-characters")
            .with_template(PodTemplateSpec {
                metadata: None,
                spec: Some(containers(vec![algorithm_container()])),
            });
    let pod = build(&job, &algorithm, 2);
    assert_eq!(
        pod["metadata"]["labels"],
        json!({
            "app.kubernetes.io/managed-by": "vision-operator",
            "vision.zjlab.io/attempt": "2",
            "vision.zjlab.io/job-uid": UID,
        })
    );
    // The name and owner reference still carry the whole name.
    assert_eq!(pod["metadata"]["name"], format!("{long_name}-2"));
    assert_eq!(pod["metadata"]["ownerReferences"][0]["name"], long_name);
}

#[test]
fn labels_keep_the_templates_but_not_over_the_operators() {
    let algorithm = the_algorithm().with_template_labels(&[
        ("app", "yolo"),
        ("team", "vision"),
        ("vision.zjlab.io/job-uid", "forged"),
        ("vision.zjlab.io/attempt", "99"),
    ]);
    assert_eq!(
        build(&the_job(), &algorithm, 1)["metadata"]["labels"],
        json!({
            "app": "yolo",
            "team": "vision",
            "app.kubernetes.io/managed-by": "vision-operator",
            "vision.zjlab.io/algorithm": ALGO,
            "vision.zjlab.io/attempt": "1",
            "vision.zjlab.io/job": JOB,
            "vision.zjlab.io/job-uid": UID,
            "vision.zjlab.io/queue": "gpu-a",
        })
    );
}

#[test]
fn labels_use_the_default_queue() {
    let job = plain_job(JOB);
    assert_eq!(
        build(&job, &the_algorithm(), 1)["metadata"]["labels"]["vision.zjlab.io/queue"],
        "default"
    );
}

#[test]
fn annotations_are_the_templates_then_the_jobs_then_the_job_json() {
    let algorithm = the_algorithm().with_template_annotations(&[
        ("prometheus.io/scrape", "true"),
        ("shared", "from-template"),
    ]);
    let job = the_job().with_annotations(&[
        ("shared", "from-job"),
        ("sim.vision.zjlab.io/outcome", "fail"),
        (
            "kubectl.kubernetes.io/last-applied-configuration",
            "{\"huge\":true}",
        ),
        ("vision.zjlab.io/job-json", "forged"),
    ]);
    assert_eq!(
        build(&job, &algorithm, 1)["metadata"]["annotations"],
        json!({
            "prometheus.io/scrape": "true",
            "shared": "from-job",
            "sim.vision.zjlab.io/outcome": "fail",
            "vision.zjlab.io/job-json": THE_JOB_JSON,
        })
    );
}

#[test]
fn owner_reference_makes_the_job_the_controller() {
    let pod = build_pod(&the_job(), &the_algorithm(), 1).unwrap();
    assert_eq!(
        pod.metadata.owner_references,
        Some(vec![OwnerReference {
            api_version: "vision.zjlab.io/v1alpha1".into(),
            kind: "VisionJob".into(),
            name: JOB.into(),
            uid: UID.into(),
            controller: Some(true),
            block_owner_deletion: Some(true),
        }])
    );
}

// ---------------------------------------------------------------------------
// build_pod: spec

#[test]
fn active_deadline_is_the_jobs_timeout_else_the_algorithms() {
    let algorithm = the_algorithm().with_timeout_seconds(900);
    let own = plain_job(JOB).with_timeout_seconds(120);
    assert_eq!(build_spec(&own, &algorithm)["activeDeadlineSeconds"], 120);
    let plain = plain_job(JOB);
    assert_eq!(build_spec(&plain, &algorithm)["activeDeadlineSeconds"], 900);
}

#[test]
fn restart_policy_is_never_whatever_the_template_says() {
    let algorithm = algorithm_with(PodSpec {
        restart_policy: Some("Always".into()),
        active_deadline_seconds: Some(5),
        ..containers(vec![algorithm_container()])
    });
    let spec = build_spec(&the_job(), &algorithm);
    assert_eq!(spec["restartPolicy"], "Never");
    assert_eq!(spec["activeDeadlineSeconds"], 3600);
}

#[test]
fn gpus_are_the_jobs_own() {
    let job = plain_job(JOB).with_gpus(4);
    assert_eq!(
        build_container(&job, &the_algorithm(), "algorithm")["resources"],
        json!({"limits": {"nvidia.com/gpu": "4"}, "requests": {"nvidia.com/gpu": "4"}})
    );
}

#[test]
fn gpus_default_to_the_algorithms_and_keep_other_resources() {
    let container = Container {
        resources: Some(ResourceRequirements {
            limits: Some(quantities(&[
                ("cpu", "2"),
                ("memory", "4Gi"),
                ("nvidia.com/gpu", "8"),
            ])),
            requests: Some(quantities(&[("cpu", "1"), ("nvidia.com/gpu", "8")])),
            ..Default::default()
        }),
        ..algorithm_container()
    };
    let algorithm = algorithm_with(containers(vec![container])).with_gpus_per_job(2);
    let job = plain_job(JOB);
    assert_eq!(
        build_container(&job, &algorithm, "algorithm")["resources"],
        json!({
            "limits": {"cpu": "2", "memory": "4Gi", "nvidia.com/gpu": "2"},
            "requests": {"cpu": "1", "nvidia.com/gpu": "2"},
        })
    );
}

#[test]
fn zero_gpus_means_no_gpu_resource() {
    let container = Container {
        resources: Some(ResourceRequirements {
            limits: Some(quantities(&[("cpu", "2"), ("nvidia.com/gpu", "1")])),
            requests: Some(quantities(&[("cpu", "1"), ("nvidia.com/gpu", "1")])),
            ..Default::default()
        }),
        ..algorithm_container()
    };
    let algorithm = algorithm_with(containers(vec![container]));
    let job = plain_job(JOB).with_gpus(0);
    assert_eq!(
        build_container(&job, &algorithm, "algorithm")["resources"],
        json!({"limits": {"cpu": "2"}, "requests": {"cpu": "1"}})
    );
}

#[test]
fn zero_gpus_from_the_algorithm_without_resources() {
    let algorithm = the_algorithm().with_gpus_per_job(0);
    let job = plain_job(JOB);
    // No GPU anywhere (an empty limits map is all that is left).
    assert_eq!(
        build_container(&job, &algorithm, "algorithm")["resources"],
        json!({"limits": {}})
    );
}

#[test]
fn restricted_security_context_when_the_template_has_none() {
    let spec = build_spec(&the_job(), &the_algorithm());
    assert_eq!(
        spec["securityContext"],
        json!({"runAsNonRoot": true, "seccompProfile": {"type": "RuntimeDefault"}})
    );
    assert_eq!(
        spec["containers"][0]["securityContext"],
        restricted_container()
    );
}

#[test]
fn the_templates_own_security_contexts_are_kept() {
    let container = Container {
        security_context: Some(SecurityContext {
            run_as_user: Some(1000),
            read_only_root_filesystem: Some(true),
            ..Default::default()
        }),
        ..algorithm_container()
    };
    let algorithm = algorithm_with(PodSpec {
        security_context: Some(PodSecurityContext {
            run_as_user: Some(0),
            fs_group: Some(2000),
            ..Default::default()
        }),
        ..containers(vec![container])
    });
    let spec = build_spec(&the_job(), &algorithm);
    assert_eq!(
        spec["securityContext"],
        json!({"runAsUser": 0, "fsGroup": 2000})
    );
    assert_eq!(
        spec["containers"][0]["securityContext"],
        json!({"runAsUser": 1000, "readOnlyRootFilesystem": true})
    );
}

#[test]
fn service_account_token_not_mounted_unless_a_service_account_is_named() {
    let spec = build_spec(&the_job(), &the_algorithm());
    assert_eq!(spec["automountServiceAccountToken"], false);

    let named = algorithm_with(PodSpec {
        service_account_name: Some("yolo-reader".into()),
        ..containers(vec![algorithm_container()])
    });
    let spec = build_spec(&the_job(), &named);
    assert_eq!(spec["serviceAccountName"], "yolo-reader");
    assert_eq!(spec.get("automountServiceAccountToken"), None);

    let explicit = algorithm_with(PodSpec {
        automount_service_account_token: Some(true),
        ..containers(vec![algorithm_container()])
    });
    assert_eq!(
        build_spec(&the_job(), &explicit)["automountServiceAccountToken"],
        true
    );
}

#[test]
fn other_containers_get_only_a_security_context() {
    let sidecar = Container {
        args: Some(strings(&["--bucket", "results"])),
        env: Some(vec![env("BUCKET", "results")]),
        volume_mounts: Some(vec![mount("scratch", "/scratch")]),
        resources: Some(ResourceRequirements {
            limits: Some(quantities(&[("cpu", "500m")])),
            ..Default::default()
        }),
        ..bare_container("uploader", "registry.example/uploader:2")
    };
    let hardened = Container {
        name: "hardened".into(),
        security_context: Some(SecurityContext {
            privileged: Some(false),
            ..Default::default()
        }),
        ..sidecar.clone()
    };
    let algorithm = algorithm_with(PodSpec {
        volumes: Some(vec![Volume {
            name: "scratch".into(),
            empty_dir: Some(EmptyDirVolumeSource::default()),
            ..Default::default()
        }]),
        ..containers(vec![
            sidecar.clone(),
            algorithm_container(),
            hardened.clone(),
        ])
    });
    let spec = build_spec(&the_job(), &algorithm);
    assert_eq!(
        spec["containers"][0],
        json!({
            "name": "uploader",
            "image": "registry.example/uploader:2",
            "args": ["--bucket", "results"],
            "env": [{"name": "BUCKET", "value": "results"}],
            "volumeMounts": [{"name": "scratch", "mountPath": "/scratch"}],
            "resources": {"limits": {"cpu": "500m"}},
            "securityContext": restricted_container(),
        })
    );
    assert_eq!(spec["containers"][1]["name"], "algorithm");
    assert_eq!(
        spec["containers"][1]["env"],
        json!([{"name": "VISION_JOB", "value": THE_JOB_JSON}])
    );
    assert_eq!(
        spec["containers"][2],
        json!({
            "name": "hardened",
            "image": "registry.example/uploader:2",
            "args": ["--bucket", "results"],
            "env": [{"name": "BUCKET", "value": "results"}],
            "volumeMounts": [{"name": "scratch", "mountPath": "/scratch"}],
            "resources": {"limits": {"cpu": "500m"}},
            "securityContext": {"privileged": false},
        })
    );
    // The template's volumes are kept, the job's is added last.
    assert_eq!(
        spec["volumes"],
        json!([
            {"name": "scratch", "emptyDir": {}},
            {"name": "vision-job", "downwardAPI": {"items": [{
                "path": "job.json",
                "fieldRef": {"fieldPath": "metadata.annotations['vision.zjlab.io/job-json']"},
            }]}},
        ])
    );
}

#[test]
fn init_containers_get_only_a_security_context() {
    let init = Container {
        args: Some(strings(&["model"])),
        ..bare_container("fetch", "registry.example/fetch:1")
    };
    let hardened = Container {
        security_context: Some(SecurityContext {
            run_as_user: Some(1000),
            ..Default::default()
        }),
        ..bare_container("warm", "registry.example/warm:1")
    };
    let algorithm = algorithm_with(PodSpec {
        init_containers: Some(vec![init, hardened]),
        ..containers(vec![algorithm_container()])
    });
    assert_eq!(
        build_spec(&the_job(), &algorithm)["initContainers"],
        json!([
            {
                "name": "fetch",
                "image": "registry.example/fetch:1",
                "args": ["model"],
                "securityContext": restricted_container(),
            },
            {
                "name": "warm",
                "image": "registry.example/warm:1",
                "securityContext": {"runAsUser": 1000},
            },
        ])
    );
}

#[test]
fn algorithm_container_keeps_its_env_and_mounts_and_gets_the_job() {
    let container = Container {
        env: Some(vec![
            env("MODEL", "yolov8"),
            env("VISION_JOB", "set by the user"),
            env("LOG", "debug"),
        ]),
        volume_mounts: Some(vec![mount("models", "/models")]),
        termination_message_policy: Some("File".into()),
        ..algorithm_container()
    };
    let algorithm = algorithm_with(containers(vec![container]));
    let built = build_container(&the_job(), &algorithm, "algorithm");
    assert_eq!(
        built["env"],
        json!([
            {"name": "MODEL", "value": "yolov8"},
            {"name": "LOG", "value": "debug"},
            {"name": "VISION_JOB", "value": THE_JOB_JSON},
        ])
    );
    assert_eq!(
        built["volumeMounts"],
        json!([
            {"name": "models", "mountPath": "/models"},
            {"name": "vision-job", "mountPath": "/etc/vision", "readOnly": true},
        ])
    );
    assert_eq!(built["terminationMessagePolicy"], "FallbackToLogsOnError");
}

#[test]
fn command_and_args_pass_through_unchanged() {
    let container = build_container(&the_job(), &the_algorithm(), "algorithm");
    assert_eq!(container["command"], json!(["python", "-m", "detect"]));
    assert_eq!(
        container["args"],
        json!([
            "--input",
            "s3://frames/a b.jpg",
            "$(HOME); rm -rf / && echo '*'"
        ])
    );

    // A template without command or args gets none (the image's entrypoint runs).
    let algorithm = algorithm_with(containers(vec![bare_container("algorithm", IMAGE)]));
    let container = build_container(&the_job(), &algorithm, "algorithm");
    assert_eq!(container.get("command"), None);
    assert_eq!(container.get("args"), None);
}

#[test]
fn build_pod_needs_an_algorithm_container() {
    let algorithm = algorithm_with(containers(vec![bare_container("main", IMAGE)]));
    assert_eq!(
        build_pod(&the_job(), &algorithm, 1),
        Err(BuildError::NoAlgorithmContainer(ALGO.into()))
    );
    assert_eq!(
        BuildError::NoAlgorithmContainer(ALGO.into()).to_string(),
        r#"algorithm yolo-detect has no container named "algorithm" in its template"#
    );
    // An init container named "algorithm" does not count.
    let algorithm = algorithm_with(PodSpec {
        init_containers: Some(vec![bare_container("algorithm", IMAGE)]),
        ..containers(vec![bare_container("main", IMAGE)])
    });
    assert_eq!(
        build_pod(&the_job(), &algorithm, 1),
        Err(BuildError::NoAlgorithmContainer(ALGO.into()))
    );
    // Nor does a template without a spec.
    let algorithm = algorithm_template(PodTemplateSpec::default());
    assert_eq!(
        build_pod(&the_job(), &algorithm, 1),
        Err(BuildError::NoAlgorithmContainer(ALGO.into()))
    );
}

#[test]
fn build_pod_needs_the_jobs_uid() {
    let mut job = plain_job(JOB);
    job.metadata.uid = None;
    assert_eq!(build_pod(&job, &the_algorithm(), 1), Err(BuildError::NoUid));
}

// ---------------------------------------------------------------------------
// pod_state

/// A pod of the usual job with the given status and, optionally, a
/// deletion timestamp.
fn mk_pod(status: Option<PodStatus>, deleting: bool) -> Pod {
    Pod {
        metadata: ObjectMeta {
            name: Some("cam42-frame-0001-1".into()),
            namespace: Some(NS.into()),
            deletion_timestamp: deleting.then(|| t(1_767_225_600)),
            ..Default::default()
        },
        spec: None,
        status,
    }
}

/// A pod status in `phase` with nothing else set.
fn in_phase(phase: &str) -> PodStatus {
    PodStatus {
        phase: Some(phase.into()),
        ..Default::default()
    }
}

/// A pod status in `phase` with these container statuses.
fn with_containers(phase: &str, statuses: Vec<ContainerStatus>) -> PodStatus {
    PodStatus {
        container_statuses: Some(statuses),
        ..in_phase(phase)
    }
}

/// A container status, terminated with the given exit code, reason and message.
fn terminated(name: &str, exit_code: i32, reason: &str, message: Option<&str>) -> ContainerStatus {
    ContainerStatus {
        name: name.into(),
        image: IMAGE.into(),
        image_id: String::new(),
        ready: false,
        restart_count: 0,
        state: Some(ContainerState {
            terminated: Some(ContainerStateTerminated {
                exit_code,
                reason: Some(reason.into()),
                message: message.map(String::from),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn running_container(name: &str) -> ContainerStatus {
    ContainerStatus {
        name: name.into(),
        image: IMAGE.into(),
        image_id: String::new(),
        ready: true,
        restart_count: 0,
        state: Some(ContainerState {
            running: Some(ContainerStateRunning {
                started_at: Some(t(100)),
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[test]
fn pod_without_status_is_pending() {
    assert_eq!(pod_state(&mk_pod(None, false)), PodState::Pending);
    assert_eq!(
        pod_state(&mk_pod(Some(PodStatus::default()), false)),
        PodState::Pending
    );
}

#[test]
fn pending_pod_is_pending() {
    let status = PodStatus {
        conditions: Some(vec![PodCondition {
            type_: "PodScheduled".into(),
            status: "False".into(),
            reason: Some("Unschedulable".into()),
            ..Default::default()
        }]),
        ..in_phase("Pending")
    };
    assert_eq!(pod_state(&mk_pod(Some(status), false)), PodState::Pending);
}

#[test]
fn unknown_phase_reads_as_pending() {
    assert_eq!(
        pod_state(&mk_pod(Some(in_phase("Unknown")), false)),
        PodState::Pending
    );
}

#[test]
fn running_pod_is_running_since_its_start_time() {
    let status = PodStatus {
        start_time: Some(t(100)),
        ..with_containers("Running", vec![running_container("algorithm")])
    };
    assert_eq!(
        pod_state(&mk_pod(Some(status), false)),
        PodState::Running {
            started: Some(t(100))
        }
    );
    assert_eq!(
        pod_state(&mk_pod(Some(in_phase("Running")), false)),
        PodState::Running { started: None }
    );
}

#[test]
fn succeeded_pod_carries_the_algorithm_containers_message() {
    let status = with_containers(
        "Succeeded",
        vec![
            terminated("uploader", 0, "Completed", Some("uploaded")),
            terminated("algorithm", 0, "Completed", Some(r#"{"boxes":3}"#)),
        ],
    );
    assert_eq!(
        pod_state(&mk_pod(Some(status), false)),
        PodState::Succeeded {
            message: Some(r#"{"boxes":3}"#.into())
        }
    );
}

#[test]
fn succeeded_pod_without_a_message() {
    let status = with_containers(
        "Succeeded",
        vec![terminated("algorithm", 0, "Completed", None)],
    );
    assert_eq!(
        pod_state(&mk_pod(Some(status), false)),
        PodState::Succeeded { message: None }
    );
    assert_eq!(
        pod_state(&mk_pod(Some(in_phase("Succeeded")), false)),
        PodState::Succeeded { message: None }
    );
}

#[test]
fn failed_pod_carries_exit_code_reason_and_message_of_the_algorithm_container() {
    let status = with_containers(
        "Failed",
        vec![
            terminated("uploader", 2, "Error", Some("upload failed")),
            terminated("algorithm", 3, "Error", Some("CUDA out of memory")),
        ],
    );
    assert_eq!(
        pod_state(&mk_pod(Some(status), false)),
        PodState::Failed {
            exit_code: Some(3),
            reason: Some("Error".into()),
            message: Some("CUDA out of memory".into()),
        }
    );
}

#[test]
fn failed_pod_without_an_algorithm_container_status_reads_the_first() {
    let status = with_containers(
        "Failed",
        vec![
            terminated("main", 137, "OOMKilled", None),
            terminated("uploader", 1, "Error", Some("upload failed")),
        ],
    );
    assert_eq!(
        pod_state(&mk_pod(Some(status), false)),
        PodState::Failed {
            exit_code: Some(137),
            reason: Some("OOMKilled".into()),
            message: None
        }
    );
}

#[test]
fn failed_pod_without_container_statuses_reads_the_pods_reason() {
    let status = PodStatus {
        reason: Some("Evicted".into()),
        message: Some("The node was low on resource: memory.".into()),
        ..in_phase("Failed")
    };
    assert_eq!(
        pod_state(&mk_pod(Some(status), false)),
        PodState::Failed {
            exit_code: None,
            reason: Some("Evicted".into()),
            message: Some("The node was low on resource: memory.".into()),
        }
    );
    assert_eq!(
        pod_state(&mk_pod(Some(in_phase("Failed")), false)),
        PodState::Failed {
            exit_code: None,
            reason: None,
            message: None
        }
    );
}

#[test]
fn failed_pod_past_its_deadline_reads_deadline_exceeded() {
    // The kubelet kills the container (reason "Error") and gives the pod the
    // reason DeadlineExceeded; the controller fails the job with Timeout on it.
    let status = PodStatus {
        reason: Some("DeadlineExceeded".into()),
        message: Some("Pod was active on the node longer than the specified deadline".into()),
        ..with_containers(
            "Failed",
            vec![terminated("algorithm", 137, "Error", Some("step 812/1000"))],
        )
    };
    assert_eq!(
        pod_state(&mk_pod(Some(status), false)),
        PodState::Failed {
            exit_code: Some(137),
            reason: Some("DeadlineExceeded".into()),
            message: Some("step 812/1000".into()),
        }
    );
}

#[test]
fn pod_being_deleted_is_terminating_until_it_finished() {
    for phase in [None, Some("Pending"), Some("Running"), Some("Unknown")] {
        let status = phase.map(|p| PodStatus {
            start_time: Some(t(100)),
            ..in_phase(p)
        });
        assert_eq!(
            pod_state(&mk_pod(status, true)),
            PodState::Terminating,
            "{phase:?}"
        );
    }
}

#[test]
fn finished_pod_being_deleted_still_reads_as_finished() {
    let succeeded = with_containers(
        "Succeeded",
        vec![terminated("algorithm", 0, "Completed", Some("{}"))],
    );
    assert_eq!(
        pod_state(&mk_pod(Some(succeeded), true)),
        PodState::Succeeded {
            message: Some("{}".into())
        }
    );
    let failed = with_containers(
        "Failed",
        vec![terminated("algorithm", 1, "Error", Some("bad input"))],
    );
    assert_eq!(
        pod_state(&mk_pod(Some(failed), true)),
        PodState::Failed {
            exit_code: Some(1),
            reason: Some("Error".into()),
            message: Some("bad input".into()),
        }
    );
}

#[test]
fn live_states() {
    let cases = [
        (PodState::Pending, true),
        (PodState::Running { started: None }, true),
        (PodState::Terminating, true),
        (PodState::Succeeded { message: None }, false),
        (
            PodState::Failed {
                exit_code: Some(1),
                reason: None,
                message: None,
            },
            false,
        ),
    ];
    for (state, live) in cases {
        assert_eq!(state.is_live(), live, "{state:?}");
    }
}

#[test]
fn a_job_of_a_worker_mode_algorithm_whose_pods_count_against_a_queue_holds_no_gpus() {
    let mut algorithm = the_algorithm().with_gpus_per_job(2);
    let job = plain_job(JOB);
    assert_eq!(job_gpus(&job, &algorithm), 2);
    algorithm.spec.mode = crate::api::AlgorithmMode::Worker;
    algorithm.spec.workers = Some(crate::api::WorkerPool {
        min: 1,
        max: 2,
        tasks_per_worker: 1,
        idle_seconds: None,
        queue: None,
    });
    // Without workers.queue each task counts its GPUs as in pod mode.
    assert_eq!(job_gpus(&job, &algorithm), 2);
    algorithm.spec.workers.as_mut().unwrap().queue = Some("gpu-a".into());
    assert_eq!(job_gpus(&job, &algorithm), 0);
    assert_eq!(job_gpus(&job.with_gpus(4), &algorithm), 0);
}
