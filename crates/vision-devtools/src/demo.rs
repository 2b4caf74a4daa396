//! `vision-dev demo`: a burst of mixed jobs, as the vision platform sends
//! them, followed to the end with a live view and a summary.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Client;
use serde_json::json;

use crate::error::{Result, fail};
use crate::run::{
    End, RUN_KEY, View, follow, print_stuck, print_summary, queue_limits, run_id, submit_all,
    track_jobs_and_pods,
};
use crate::stats::Rng;
use vision_api::{VisionJob, VisionJobSpec};
use visionctl::cluster::ensure_namespace;

const SIM: &str = "sim.vision.zjlab.io/";

pub struct DemoArgs {
    pub namespace: String,
    pub queue: String,
    pub count: usize,
    pub seed: u64,
    pub concurrency: usize,
    pub stall: Duration,
    pub timeout: Duration,
    pub metrics_url: Option<String>,
}

/// The demo's job mix: 50% detection, 30% OCR, 20% segmentation; 5% urgent
/// (priority 100), 15% high (10); a quarter of OCR jobs fail their first
/// attempt and succeed on retry; about 3% fail for good (a crashing model,
/// a timeout, an unknown algorithm, too many GPUs).
pub fn demo_jobs(
    namespace: &str,
    queue: &str,
    run: &str,
    count: usize,
    seed: u64,
) -> Vec<VisionJob> {
    let mut rng = Rng::new(seed);
    (0..count)
        .map(|i| {
            let kind = rng.unit();
            let (short, mut algorithm, lo, hi, params) = if kind < 0.5 {
                (
                    "detect",
                    "demo-detect",
                    1000,
                    2000,
                    json!({"confidence": 0.5}),
                )
            } else if kind < 0.8 {
                ("ocr", "demo-ocr", 500, 1000, json!({"lang": "en"}))
            } else {
                ("segment", "demo-segment", 2000, 3000, json!({"points": 3}))
            };
            let p = rng.unit();
            let priority = if p < 0.05 {
                100
            } else if p < 0.2 {
                10
            } else {
                0
            };
            let mut annotations = BTreeMap::new();
            annotations.insert(RUN_KEY.to_string(), run.to_string());
            let ms = lo + rng.below((hi - lo) as u64) as i64;
            annotations.insert(format!("{SIM}duration"), format!("{ms}ms"));
            let (mut timeout_seconds, mut gpus) = (None, None);
            let f = rng.unit();
            if f < 0.02 {
                annotations.insert(format!("{SIM}outcome"), "fail".into());
                annotations.insert(format!("{SIM}exit-code"), "137".into());
                annotations.insert(
                    format!("{SIM}message"),
                    r#"{"error":"CUDA error: out of memory"}"#.into(),
                );
            } else if f < 0.025 {
                timeout_seconds = Some(2);
                annotations.insert(format!("{SIM}duration"), "30s".into());
            } else if f < 0.028 {
                algorithm = "demo-track";
            } else if f < 0.03 && short == "segment" {
                gpus = Some(8);
            } else if short == "ocr" && f < 0.28 {
                annotations.insert(format!("{SIM}fail-attempts"), "1".into());
            }
            let cam = rng.below(64);
            let spec = VisionJobSpec {
                algorithm: algorithm.into(),
                queue: queue.into(),
                priority,
                input: Some(json!({"uri": format!("s3://frames/cam{cam:02}/{i:06}.jpg")})),
                params: Some(params),
                gpus,
                timeout_seconds,
                retries: None,
                suspend: false,
                ttl_seconds_after_finished: None,
                output: None,
            };
            let mut job = VisionJob::new("", spec);
            job.metadata = ObjectMeta {
                name: Some(format!("{short}-{run}-{i:04}")),
                namespace: Some(namespace.into()),
                labels: Some(BTreeMap::from([(RUN_KEY.to_string(), run.to_string())])),
                annotations: Some(annotations),
                ..Default::default()
            };
            job
        })
        .collect()
}

/// Runs the demo. Ok(true) when every job reached a final phase.
pub async fn demo(client: &Client, a: &DemoArgs) -> Result<bool> {
    ensure_namespace(client, &a.namespace).await?;
    let limits = queue_limits(client, &a.queue).await;
    if limits.slots.is_none() {
        return Err(fail(format!(
            "VisionQueue {} does not exist (kubectl apply --server-side -f hack/demo/)",
            a.queue
        )));
    }
    let run = run_id();
    let start = Instant::now();
    let (tx, mut rx, mut tr) = track_jobs_and_pods(client, &a.namespace, &run, start).await?;
    let jobs = demo_jobs(&a.namespace, &a.queue, &run, a.count, a.seed);
    eprintln!(
        "submitting {} VisionJobs (run {run}) to queue {} in namespace {} ...",
        jobs.len(),
        a.queue,
        a.namespace
    );
    let total = jobs.len();
    submit_all(client, &a.namespace, jobs, a.concurrency, start, tx.clone());
    drop(tx);
    let mut view = View::new(
        format!("vision-operator demo: {total} jobs -> queue {}", a.queue),
        Duration::from_secs(5),
    );
    let end = follow(
        client, &mut rx, &mut tr, &mut view, &a.queue, total, start, a.stall, a.timeout,
    )
    .await;
    let limits = queue_limits(client, &a.queue).await;
    print_summary(&tr, limits);
    let ok = match end {
        End::Done => true,
        End::Stalled => {
            eprintln!(
                "\nNo job changed for {}s; these are not finished:",
                a.stall.as_secs()
            );
            print_stuck(&tr);
            false
        }
        End::TimedOut => {
            eprintln!(
                "\nThe run took longer than {}s; not finished:",
                a.timeout.as_secs()
            );
            print_stuck(&tr);
            false
        }
        End::Interrupted => {
            eprintln!("\nInterrupted; not finished:");
            print_stuck(&tr);
            false
        }
    };
    println!();
    println!("Where to look:");
    println!("  kubectl get vj -n {} -l {RUN_KEY}={run}", a.namespace);
    println!("  visionctl get -n {} --phase Failed -o wide", a.namespace);
    println!("  visionctl queue {}", a.queue);
    if let Some(name) = tr.jobs.keys().min() {
        println!("  visionctl result -n {} {name}", a.namespace);
    }
    if let Some(url) = &a.metrics_url {
        println!("  curl -s {url} | grep '^vision_operator_'");
    }
    Ok(ok)
}
