//! End to end: the `visionctl` binary (and its `kubectl-vision` form) against
//! the local cluster with an operator, checking every verb's output and exit
//! code, including the failure paths (a missing job, a refused manifest, a
//! job that fails while waited on, a client timeout).
//!
//! The binary belongs to another package of the workspace, so Cargo gives
//! this test no `CARGO_BIN_EXE_visionctl`: `harness::workspace_binary`
//! builds it from the current sources.
#![cfg(feature = "e2e")]

mod harness;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use harness::{Scenario, sim};
use serde_json::Value;
use vision_api::testing::{AlgorithmFixture, mk_algorithm, mk_queue};

/// The binary `name` of package visionctl, built from the current sources.
fn binary(name: &str) -> PathBuf {
    harness::workspace_binary(name)
}

/// What a run of the CLI did.
#[derive(Debug)]
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {}", self.stdout))
    }
}

/// Runs `bin` with the local cluster's kubeconfig and `args`.
fn run_bin(bin: &str, args: &[&str]) -> Run {
    let out = Command::new(binary(bin))
        .arg("--kubeconfig")
        .arg(harness::cluster::kubeconfig_path())
        .args(args)
        .output()
        .expect("running visionctl");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn visionctl(args: &[&str]) -> Run {
    run_bin("visionctl", args)
}

/// Runs and checks the exit code, showing everything when it differs.
fn expect(code: i32, args: &[&str]) -> Run {
    let r = visionctl(args);
    assert_eq!(r.code, code, "visionctl {args:?}: {r:#?}");
    r
}

/// Polls the job (as `visionctl get -o json`) until `pred` holds.
async fn until(ns: &str, name: &str, what: &str, pred: impl Fn(&Value) -> bool) {
    for _ in 0..300 {
        let r = visionctl(&["-n", ns, "get", name, "-o", "json"]);
        if r.code == 0 && pred(&r.json()) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("VisionJob {ns}/{name}: {what} did not happen within 60s");
}

fn phase(job: &Value) -> &str {
    job["status"]["phase"].as_str().unwrap_or("")
}

#[tokio::test]
async fn a_job_from_submit_to_result_retry_and_queue() {
    let w = Scenario::new("ctl-ok")
        .queue(mk_queue("pool", 4))
        .algorithm(mk_algorithm("detect").with_template_annotations(&[
            (sim::DURATION, "300ms"),
            (sim::MESSAGE, r#"{"objects":3}"#),
        ]))
        .operator()
        .start()
        .await;
    let ns = w.namespace.as_str();
    let (alg, queue) = (w.algorithm("detect"), w.queue().to_string());

    // Global flags after the verb; a human --wait-timeout.
    let r = expect(
        0,
        &[
            "submit",
            "-a",
            &alg,
            "-q",
            &queue,
            "--name",
            "ok-1",
            "--input",
            r#"{"uri":"s3://f/1.jpg"}"#,
            "--job-timeout",
            "2m",
            "--wait",
            "--wait-timeout",
            "60s",
            "-n",
            ns,
        ],
    );
    assert!(
        r.stdout
            .starts_with("visionjob.vision.zjlab.io/ok-1 created\n"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.contains("result: {\"objects\":3}\n"),
        "{}",
        r.stdout
    );

    // One named job is the object; a listing is a v1 List.
    let job = expect(0, &["-n", ns, "get", "ok-1", "-o", "json"]).json();
    assert_eq!(job["kind"], "VisionJob");
    assert_eq!(phase(&job), "Succeeded");
    assert_eq!(job["spec"]["timeoutSeconds"], 120);
    let list = expect(0, &["-n", ns, "get", "-o", "json"]).json();
    assert_eq!(list["kind"], "List");
    assert_eq!(list["apiVersion"], "v1");
    assert_eq!(list["items"].as_array().map(Vec::len), Some(1));
    let yaml = expect(0, &["get", "-n", ns, "-o", "yaml"]).stdout;
    assert!(yaml.starts_with("apiVersion: v1\nitems:\n"), "{yaml}");
    assert!(yaml.contains("kind: List\n"), "{yaml}");
    assert_eq!(
        expect(0, &["-n", ns, "get", "-o", "name"]).stdout,
        "visionjob.vision.zjlab.io/ok-1\n"
    );
    let table = expect(0, &["-n", ns, "get", "-o", "wide"]).stdout;
    let header: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        [
            "NAME",
            "ALGORITHM",
            "QUEUE",
            "PRIORITY",
            "PHASE",
            "REASON",
            "ATTEMPTS",
            "WAITED",
            "AGE",
            "POD",
            "MESSAGE"
        ]
    );

    // The kubeconfig's context by name works; an unknown one is exit 5.
    expect(
        0,
        &[
            "--context",
            "kwok-vision",
            "-n",
            ns,
            "get",
            "ok-1",
            "-o",
            "name",
        ],
    );
    let r = expect(
        5,
        &["--context", "no-such-context", "-n", ns, "get", "ok-1"],
    );
    assert!(
        r.stderr
            .starts_with("visionctl: cannot load the kubeconfig: "),
        "{}",
        r.stderr
    );

    assert_eq!(
        expect(0, &["-n", ns, "result", "ok-1"]).stdout,
        "{\n  \"objects\": 3\n}\n"
    );
    assert_eq!(
        expect(0, &["-n", ns, "result", "ok-1", "-o", "yaml"]).stdout,
        "objects: 3\n"
    );
    let d = expect(0, &["-n", ns, "describe", "ok-1"]).stdout;
    for line in [
        "Name:         ok-1\n".to_string(),
        format!("Algorithm:    {alg}\n"),
        "Phase:        Succeeded\n".to_string(),
        "Pod:          ok-1-1\n".to_string(),
        "Result:       {\"objects\":3}\n".to_string(),
        "Timeout:      120s\n".to_string(),
    ] {
        assert!(d.contains(&line), "describe lacks {line:?}:\n{d}");
    }
    assert!(
        d.contains("\nPods:\n  ok-1-1  Succeeded  node kwok-gpu-"),
        "{d}"
    );

    // retry: a new job with the same spec, which then succeeds.
    let r = expect(0, &["-n", ns, "retry", "ok-1", "--name", "ok-2"]);
    assert_eq!(r.stdout, "visionjob.vision.zjlab.io/ok-2 created\n");
    let r = expect(0, &["-n", ns, "wait", "ok-2", "--wait-timeout", "60s"]);
    assert_eq!(r.stdout, "visionjob.vision.zjlab.io/ok-2 Succeeded\n");
    let retried = expect(0, &["-n", ns, "get", "ok-2", "-o", "json"]).json();
    assert_eq!(retried["spec"], job["spec"]);
    assert_eq!(
        retried["metadata"]["annotations"]["vision.zjlab.io/retry-of"],
        "ok-1"
    );

    // queue: machine-readable.
    let q = expect(0, &["queue", &queue, "-o", "json"]).json();
    assert_eq!(q["queue"]["metadata"]["name"], queue.as_str());
    assert_eq!(q["waitingTotal"], 0);
    let all = expect(0, &["queue", "-o", "json"]).json();
    assert_eq!(all["kind"], "List");
    assert!(
        all["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|i| i["metadata"]["name"] == queue.as_str()),
        "{all}"
    );
    let pos = expect(0, &["-n", ns, "queue", "--job", "ok-2", "-o", "json"]).json();
    assert_eq!(pos["position"], Value::Null);
    assert_eq!(pos["phase"], "Succeeded");

    // The plugin form is the same program under kubectl's name.
    let r = run_bin("kubectl-vision", &["-n", ns, "get", "-o", "name"]);
    assert_eq!(
        (r.code, r.stdout.as_str()),
        (
            0,
            "visionjob.vision.zjlab.io/ok-1\nvisionjob.vision.zjlab.io/ok-2\n"
        )
    );
    let help = run_bin("kubectl-vision", &["--help"]);
    assert!(
        help.stdout
            .contains("Usage: kubectl vision [OPTIONS] <COMMAND>"),
        "{}",
        help.stdout
    );
    let completion = expect(0, &["completion", "bash"]).stdout;
    assert!(completion.contains("_visionctl()"), "{completion}");
}

#[tokio::test]
async fn failures_and_their_exit_codes() {
    let mut paused = mk_queue("held", 4);
    paused.spec.paused = true;
    let w = Scenario::new("ctl-fail")
        .queue(mk_queue("pool", 4))
        .queue(paused)
        .algorithm(mk_algorithm("crash").with_template_annotations(&[
            (sim::DURATION, "200ms"),
            (sim::OUTCOME, "fail"),
            (sim::EXIT_CODE, "137"),
        ]))
        .operator()
        .start()
        .await;
    let ns = w.namespace.as_str();
    let (alg, queue, held) = (w.algorithm("crash"), w.queue().to_string(), w.name("held"));

    // A job that fails while waited on: exit 1, the outcome on stderr.
    let r = expect(
        1,
        &[
            "-n",
            ns,
            "submit",
            "-a",
            &alg,
            "-q",
            &queue,
            "--name",
            "bad-1",
            "--retries",
            "0",
            "--wait",
        ],
    );
    assert!(
        r.stderr.starts_with("visionctl: VisionJob "),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr.contains(&format!("{ns}/bad-1 Failed (")),
        "{}",
        r.stderr
    );
    let r = expect(1, &["-n", ns, "wait", "bad-1"]);
    assert_eq!(r.stdout, "visionjob.vision.zjlab.io/bad-1 Failed\n");
    expect(1, &["-n", ns, "result", "bad-1"]);
    let r = expect(1, &["-n", ns, "watch", "bad-1"]);
    assert!(
        r.stdout
            .lines()
            .last()
            .unwrap_or("")
            .starts_with("Failed after "),
        "{}",
        r.stdout
    );
    assert!(
        r.stderr.contains(&format!("{ns}/bad-1 Failed (")),
        "{}",
        r.stderr
    );

    // A missing job: exit 3 from every verb that names one.
    for verb in [
        &["get", "nope"][..],
        &["describe", "nope"],
        &["wait", "nope"],
        &["watch", "nope"],
        &["result", "nope"],
        &["logs", "nope"],
        &["cancel", "nope"],
        &["suspend", "nope"],
        &["resume", "nope"],
        &["retry", "nope"],
        &["queue", "--job", "nope"],
    ] {
        let mut args = vec!["-n", ns];
        args.extend_from_slice(verb);
        let r = expect(3, &args);
        assert_eq!(
            r.stderr,
            format!("visionctl: VisionJob {ns}/nope not found\n"),
            "{verb:?}"
        );
    }
    expect(3, &["queue", "no-such-queue"]);

    // Manifests: refused by the API server (schema) or not a VisionJob: exit 2.
    let dir = std::env::temp_dir().join(format!("visionctl-e2e-{ns}"));
    std::fs::create_dir_all(&dir).unwrap();
    let manifest = |file: &str, text: String| {
        let path = dir.join(file);
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    };
    let good = manifest(
        "good.yaml",
        format!(
            "apiVersion: vision.zjlab.io/v1alpha1\nkind: VisionJob\nmetadata:\n  name: from-file\n  labels: {{team: a}}\nspec:\n  algorithm: {alg}\n  queue: {held}\n  input: {{uri: s3://f/2.jpg}}\n"
        ),
    );
    let refused = manifest(
        "refused.yaml",
        "apiVersion: vision.zjlab.io/v1alpha1\nkind: VisionJob\nmetadata:\n  name: refused\nspec:\n  algorithm: Not_A_Name\n".into(),
    );
    let pod = manifest(
        "pod.json",
        r#"{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}}"#.into(),
    );
    let r = expect(2, &["-n", ns, "submit", "-f", &refused]);
    assert!(
        r.stderr.starts_with(&format!(
            "visionctl: the API server refused VisionJob {ns}/refused: "
        )),
        "{}",
        r.stderr
    );
    let r = expect(2, &["-n", ns, "submit", "-f", &pod]);
    assert_eq!(
        r.stderr,
        format!(
            "visionctl: {pod}: document 1: kind \"Pod\" apiVersion \"v1\"; want kind VisionJob apiVersion vision.zjlab.io/v1alpha1\n"
        )
    );
    // Dry runs store nothing.
    let r = expect(0, &["-n", ns, "submit", "-f", &good, "--dry-run", "server"]);
    assert_eq!(
        r.stdout,
        "visionjob.vision.zjlab.io/from-file created (server dry run)\n"
    );
    let r = expect(
        0,
        &[
            "-n",
            ns,
            "submit",
            "-f",
            &good,
            "--dry-run",
            "client",
            "-o",
            "json",
        ],
    );
    assert_eq!(r.json()["metadata"]["namespace"], ns);
    expect(3, &["-n", ns, "get", "from-file"]);

    // A job in a paused queue: no pod to show logs of (3), the client's
    // wait times out (4); retry refuses an unfinished job (2).
    let r = expect(0, &["-n", ns, "submit", "-f", &good]);
    assert_eq!(r.stdout, "visionjob.vision.zjlab.io/from-file created\n");
    let r = expect(3, &["-n", ns, "logs", "from-file"]);
    assert!(
        r.stderr.starts_with(&format!(
            "visionctl: pod of VisionJob {ns}/from-file (it has not started: "
        )),
        "{}",
        r.stderr
    );
    expect(3, &["-n", ns, "logs", "from-file", "--attempt", "7"]);
    let r = expect(4, &["-n", ns, "wait", "from-file", "--wait-timeout", "2s"]);
    assert_eq!(
        r.stderr,
        format!("visionctl: VisionJob {ns}/from-file did not finish within 2s\n")
    );
    let r = expect(2, &["-n", ns, "retry", "from-file"]);
    assert!(
        r.stderr.contains("only a finished job can be retried"),
        "{}",
        r.stderr
    );
    let pos = expect(0, &["-n", ns, "queue", "--job", "from-file", "-o", "json"]).json();
    assert_eq!(
        (pos["position"].clone(), pos["waiting"].clone()),
        (Value::from(1), Value::from(1))
    );

    // get's filters, evaluated by the API server: phase, queue, label;
    // -A lists every namespace (here: of this test's queue) with a
    // NAMESPACE column.
    let names = |filters: &[&str]| {
        let mut args = vec!["-n", ns, "get", "-o", "name"];
        args.extend_from_slice(filters);
        expect(0, &args).stdout
    };
    let (bad, queued) = (
        "visionjob.vision.zjlab.io/bad-1\n",
        "visionjob.vision.zjlab.io/from-file\n",
    );
    assert_eq!(names(&["--phase", "Failed"]), bad);
    assert_eq!(names(&["--phase", "Queued"]), queued);
    assert_eq!(names(&["--queue", &held]), queued);
    assert_eq!(names(&["-l", "team=a"]), queued);
    assert_eq!(names(&["-A", "--queue", &queue]), bad);
    let table = expect(0, &["get", "-A", "--queue", &queue]).stdout;
    let rows: Vec<Vec<&str>> = table
        .lines()
        .map(|l| l.split_whitespace().take(2).collect())
        .collect();
    assert_eq!(
        rows,
        [vec!["NAMESPACE", "NAME"], vec![ns, "bad-1"]],
        "{table}"
    );

    // Usage errors are exit 2 (clap's own and ours).
    expect(2, &["submit"]);
    expect(2, &["-n", ns, "submit", "-a", &alg, "--input", "[1]"]);
    std::fs::remove_dir_all(&dir).ok();
}

#[tokio::test]
async fn suspend_resume_and_cancel() {
    let w = Scenario::new("ctl-ctl")
        .queue(mk_queue("pool", 4))
        .algorithm(mk_algorithm("slow").with_template_annotations(&[(sim::DURATION, "10m")]))
        .operator()
        .start()
        .await;
    let ns = w.namespace.as_str();
    let (alg, queue) = (w.algorithm("slow"), w.queue().to_string());
    expect(
        0,
        &[
            "-n", ns, "submit", "-a", &alg, "-q", &queue, "--name", "long",
        ],
    );
    until(ns, "long", "Running", |j| phase(j) == "Running").await;

    let r = expect(0, &["-n", ns, "suspend", "long"]);
    assert_eq!(r.stdout, "visionjob.vision.zjlab.io/long suspended\n");
    until(ns, "long", "Suspended", |j| phase(j) == "Suspended").await;
    let r = expect(0, &["-n", ns, "resume", "long"]);
    assert_eq!(r.stdout, "visionjob.vision.zjlab.io/long resumed\n");
    until(ns, "long", "running again", |j| {
        j["spec"]["suspend"] == false && matches!(phase(j), "Admitted" | "Running")
    })
    .await;

    let r = expect(0, &["-n", ns, "cancel", "long", "--wait", "60s"]);
    assert_eq!(r.stdout, "visionjob.vision.zjlab.io/long deleted\n");
    expect(3, &["-n", ns, "get", "long"]);
}

#[tokio::test]
async fn a_request_submitted_twice_is_one_job() {
    let w = Scenario::new("ctl-once")
        .queue(mk_queue("pool", 4))
        .algorithm(mk_algorithm("detect").with_template_annotations(&[
            (sim::DURATION, "300ms"),
            (sim::MESSAGE, r#"{"objects":1}"#),
        ]))
        .operator()
        .start()
        .await;
    let ns = w.namespace.as_str();
    let (alg, queue) = (w.algorithm("detect"), w.queue().to_string());
    let name = vision_api::submit::job_name_for_request(&alg, "order-7f3a");
    let submit = |code: i32, input: &str, extra: &[&str]| {
        let mut args = vec![
            "-n",
            ns,
            "submit",
            "-a",
            &alg,
            "-q",
            &queue,
            "--request-id",
            "order-7f3a",
            "--input",
            input,
        ];
        args.extend_from_slice(extra);
        expect(code, &args)
    };

    // The first submission creates the job; a retry of it (the backend
    // never saw the answer) finds the same job and succeeds too.
    let first = submit(0, r#"{"uri":"s3://f/1.jpg"}"#, &["-o", "json"]).json();
    assert_eq!(first["metadata"]["name"], name.as_str());
    assert_eq!(
        first["metadata"]["annotations"]["vision.zjlab.io/request-id"],
        "order-7f3a"
    );
    // The same input in another key order is the same submission.
    let again = submit(0, r#"{ "uri" : "s3://f/1.jpg" }"#, &["-o", "json"]).json();
    assert_eq!(again["metadata"]["uid"], first["metadata"]["uid"]);
    let r = submit(0, r#"{"uri":"s3://f/1.jpg"}"#, &[]);
    assert_eq!(
        r.stdout,
        format!("visionjob.vision.zjlab.io/{name} unchanged (already submitted)\n")
    );
    // Waiting through a repeated submission follows the one job.
    submit(
        0,
        r#"{"uri":"s3://f/1.jpg"}"#,
        &["--wait", "--wait-timeout", "60s"],
    );
    let list = expect(0, &["-n", ns, "get", "-o", "json"]).json();
    let names: Vec<&str> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["metadata"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, [name.as_str()]);

    // The same request id with another input: a conflict, exit 6, no job.
    let r = submit(6, r#"{"uri":"s3://f/2.jpg"}"#, &[]);
    assert_eq!(
        r.stderr,
        format!(
            "visionctl: VisionJob {ns}/{name} exists with another spec.input: request id \"order-7f3a\" was submitted before with other values\n"
        )
    );
    assert_eq!(r.stdout, "");
    // A fixed name that is taken: exit 6 as well.
    let r = expect(
        6,
        &[
            "-n", ns, "submit", "-a", &alg, "-q", &queue, "--name", &name,
        ],
    );
    assert_eq!(
        r.stderr,
        format!("visionctl: VisionJob {ns}/{name} already exists\n")
    );
    let list = expect(0, &["-n", ns, "get", "-o", "name"]);
    assert_eq!(list.stdout, format!("visionjob.vision.zjlab.io/{name}\n"));
}
