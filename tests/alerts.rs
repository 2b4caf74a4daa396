//! The chart's alert rules (templates/monitoring-prometheusrule.yaml) and
//! dashboard, checked with promtool (built from its Go module by
//! `hack/cluster.sh promtool`, or `$VISION_PROMTOOL`):
//!
//! - the rendered rules parse (`promtool check rules`);
//! - every alert fires on series of its failure and stays quiet on healthy
//!   ones (`promtool test rules` on tests/alerts/alerts.test.yaml);
//! - the rules and the dashboard name only metrics the operator exports;
//! - on the local cluster, the rules evaluated over the operator's real
//!   /metrics scraped before and after a scenario: the breaker alert fires
//!   for the algorithm whose breaker opened, the failing alert for the one
//!   whose jobs all failed, and no other alert does; and over the /metrics
//!   of real replicas: a leader with its standby is healthy, the standby
//!   alone raises VisionOperatorNoLeader, a second installation's leader
//!   VisionOperatorTwoLeaders; and VisionQueueStalled on a queue whose only
//!   job can never fit (ExceedsQueueGpus) while its slots are free.
//!
//! And VisionOperatorReconcileErrors on the error counters of an operator
//! whose pod creates the API answers with 500 (through the fault proxy),
//! grown at the rate measured over 10 s (2 jobs requeued every 2 s: about
//! 1/s, ten times the threshold).
//!
//! Like tests/helm_template.rs these need the helm binary that
//! `hack/cluster.sh` builds; the last test needs the running cluster.
#![cfg(feature = "e2e")]

mod harness;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use harness::helm::{CHART, KUBE_VERSION, helm, parse_docs};
use harness::{Operator, OperatorOptions, Scenario, repo_root, sim};
use serde_json::Value;
use vision_api::testing::{AlgorithmFixture, QueueFixture, mk_algorithm, mk_breaker, mk_queue};
use vision_chaos::proxy::{FaultAction, RequestKind};
use vision_operator::metrics::Metrics;

const RUNBOOKS: &str = "https://github.com/zjlab/vision-operator/blob/main/docs/RUNBOOKS.md";

/// promtool: `$VISION_PROMTOOL`, else the one `hack/cluster.sh promtool`
/// builds (once; cached in ~/.cache/vision-operator/bin). Never skipped.
fn promtool() -> PathBuf {
    if let Some(p) = std::env::var_os("VISION_PROMTOOL").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    let out = Command::new(repo_root().join("hack/cluster.sh"))
        .arg("promtool")
        .output()
        .expect("hack/cluster.sh runs");
    assert!(
        out.status.success(),
        "hack/cluster.sh promtool failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let path = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    assert!(path.exists(), "no promtool at {}", path.display());
    path
}

/// Runs promtool in `dir`; its output, asserting success.
fn run_promtool(dir: &Path, args: &[&str]) -> String {
    let out = Command::new(promtool())
        .current_dir(dir)
        .args(args)
        .output()
        .expect("promtool runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool {args:?} failed:\n{text}");
    text
}

/// The PrometheusRule rendered with the chart's defaults.
fn rendered_rule() -> Value {
    let docs = parse_docs(&helm(&[
        "template",
        "vo",
        CHART,
        "--namespace",
        "vision-system",
        "--kube-version",
        KUBE_VERSION,
        "--show-only",
        "templates/monitoring-prometheusrule.yaml",
        "--set",
        "monitoring.prometheusRule.enabled=true",
    ]));
    assert_eq!(docs.len(), 1, "one PrometheusRule: {docs:?}");
    docs.into_iter().next().unwrap()
}

/// A fresh directory under .local/alerts-tests with the rendered rules as
/// `rules.yaml` (the `spec` of a PrometheusRule is a Prometheus rules file;
/// JSON is YAML).
fn rules_dir(name: &str) -> PathBuf {
    let dir = repo_root()
        .join(".local/alerts-tests")
        .join(format!("{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let rule = rendered_rule();
    std::fs::write(dir.join("rules.yaml"), rule["spec"].to_string()).unwrap();
    dir
}

#[test]
fn the_rules_parse_and_each_alert_fires_on_its_failure_only() {
    let dir = rules_dir("unit");
    let checked = run_promtool(&dir, &["check", "rules", "rules.yaml"]);
    assert!(
        checked.contains("SUCCESS: 6 rules found"),
        "promtool check rules: {checked}"
    );
    std::fs::copy(
        repo_root().join("tests/alerts/alerts.test.yaml"),
        dir.join("alerts.test.yaml"),
    )
    .unwrap();
    let tested = run_promtool(&dir, &["test", "rules", "alerts.test.yaml"]);
    assert!(tested.contains("SUCCESS"), "promtool test rules: {tested}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// The metric families the operator exports (`# TYPE` lines), with one
/// sample each (a family without samples is not encoded).
fn exported_families() -> BTreeSet<String> {
    let m = Metrics::new();
    m.queue_gauges("q", 1, 1, 1, 1);
    m.queue_pool_gauges("q", Some(1), 1.0, &[1; 8]);
    m.queue_head_reason("q", Some("SlotsFull"));
    m.algorithm_gauges("a", 1, 1, 0);
    m.admitted("q", Some(1.0));
    m.rejected("q");
    m.admission_rolled_back();
    m.job_finished("q", "a", "Failed", "Timeout");
    m.job_run_time("a", Some(1.0));
    m.retried("a");
    m.reconcile_error("kube");
    m.reconciled(Duration::from_millis(1));
    m.set_leader(true);
    m.encode()
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .map(|l| l.split(' ').next().unwrap().to_owned())
        .collect()
}

/// Every `vision_operator_*` name in `text`, without the sample suffixes
/// of counters and histograms.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find("vision_operator_") {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        let name = &tail[..end];
        let family = ["_total", "_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .unwrap_or(name);
        names.insert(family.to_owned());
        rest = &tail[end..];
    }
    names
}

#[test]
fn the_rules_and_the_dashboard_use_only_exported_metrics() {
    let exported = exported_families();
    let rule = rendered_rule();
    let exprs: Vec<&str> = rule["spec"]["groups"][0]["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["expr"].as_str().unwrap())
        .collect();
    let used = metric_names(&exprs.join("\n"));
    assert_eq!(
        used.difference(&exported).collect::<Vec<_>>(),
        Vec::<&String>::new(),
        "the rules use metrics the operator does not export (it exports {exported:?})"
    );
    assert_eq!(
        used,
        [
            "vision_operator_admissions",
            "vision_operator_admitted_active_jobs",
            "vision_operator_algorithm_breaker_state",
            "vision_operator_is_leader",
            "vision_operator_job_outcomes",
            "vision_operator_pending_jobs",
            "vision_operator_queue_head_wait_reason",
            "vision_operator_queue_max_running",
            "vision_operator_reconcile_errors",
        ]
        .map(String::from)
        .into(),
    );

    let dashboard = std::fs::read_to_string(
        repo_root()
            .join(CHART)
            .join("dashboards/vision-operator.json"),
    )
    .unwrap();
    let used = metric_names(&dashboard);
    assert_eq!(
        used.difference(&exported).collect::<Vec<_>>(),
        Vec::<&String>::new(),
        "the dashboard uses metrics the operator does not export"
    );
}

/// The samples of a Prometheus text exposition: (series, value).
fn samples(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            Some((series.to_owned(), value.to_owned()))
        })
        .collect()
}

/// The value of `series` in `before`, else 0 for a counter or histogram
/// sample (its series appears with its first increment) and `after` for a
/// gauge.
fn before_value<'a>(before: &'a [(String, String)], series: &str, after: &'a str) -> &'a str {
    if let Some((_, v)) = before.iter().find(|(s, _)| s == series) {
        return v;
    }
    let name = series.split('{').next().unwrap_or(series);
    if ["_total", "_bucket", "_sum", "_count"]
        .iter()
        .any(|s| name.ends_with(s))
    {
        "0"
    } else {
        after
    }
}

/// A promtool rules test of two scrapes: every sample of `after` (with a
/// `pod` label, as a scrape adds) holds its `before` value for minutes 0-5
/// and its `after` value for minutes 6-20. At minute 15 it expects
/// VisionAlgorithmBreakerOpen for exactly `breakers`, VisionAlgorithmFailing
/// for exactly `failing` (both algorithm names, failing ones at 100%), and no
/// other alert.
fn test_file_of(
    before: &[(String, String)],
    after: &[(String, String)],
    breakers: &[&str],
    failing: &[&str],
) -> String {
    let mut y = String::from(
        "rule_files:\n  - rules.yaml\nevaluation_interval: 1m\ntests:\n  - interval: 1m\n    input_series:\n",
    );
    for (series, value) in after {
        let old = before_value(before, series, value);
        let series = match series.split_once('{') {
            Some((name, labels)) => format!("{name}{{pod=\"operator\",{labels}"),
            None => format!("{series}{{pod=\"operator\"}}"),
        };
        y.push_str(&format!(
            "      - series: '{}'\n        values: '{old}x5 {value}x14'\n",
            series.replace('\'', "''"),
        ));
    }
    y.push_str("    alert_rule_test:\n");
    for alert in [
        "VisionOperatorNoLeader",
        "VisionOperatorTwoLeaders",
        "VisionQueueStalled",
        "VisionOperatorReconcileErrors",
    ] {
        y.push_str(&format!(
            "      - eval_time: 15m\n        alertname: {alert}\n        exp_alerts: []\n"
        ));
    }
    y.push_str(
        "      - eval_time: 15m\n        alertname: VisionAlgorithmBreakerOpen\n        exp_alerts:\n",
    );
    if breakers.is_empty() {
        y.push_str("          []\n");
    }
    for algorithm in breakers {
        y.push_str(&format!(
            "          - exp_labels:\n              severity: warning\n              algorithm: {algorithm}\n            exp_annotations:\n              summary: The circuit breaker of algorithm {algorithm} is open\n              description: 'Algorithm {algorithm} failed too often: its breaker has been open or half-open (state 2: 2 open, 1 half-open) for 2m; its jobs wait with reason BreakerOpen.'\n              runbook_url: {RUNBOOKS}#visionalgorithmbreakeropen\n"
        ));
    }
    y.push_str(
        "      - eval_time: 15m\n        alertname: VisionAlgorithmFailing\n        exp_alerts:\n",
    );
    if failing.is_empty() {
        y.push_str("          []\n");
    }
    for algorithm in failing {
        y.push_str(&format!(
            "          - exp_labels:\n              severity: warning\n              algorithm: {algorithm}\n            exp_annotations:\n              summary: Jobs of algorithm {algorithm} are failing\n              description: 100% of the jobs of algorithm {algorithm} that finished in the last 15m failed (threshold 0.5, at least 5 failures).\n              runbook_url: {RUNBOOKS}#visionalgorithmfailing\n"
        ));
    }
    y
}

#[tokio::test]
async fn the_breaker_and_failing_alerts_fire_on_the_operators_metrics_of_a_scenario() {
    // Two failures in 10 minutes open "flaky"'s breaker for an hour;
    // "broken" (no breaker) fails every job; "fine" succeeds. Two slots, so
    // the breaker, not the slots, holds flaky's last jobs back.
    let w = Scenario::new("alerts")
        .queue(mk_queue("pool", 2))
        .algorithm(
            mk_algorithm("flaky")
                .with_retries(0)
                .with_breaker(mk_breaker(2, 600, 3600))
                .with_template_annotations(&[(sim::DURATION, "200ms"), (sim::OUTCOME, "fail")]),
        )
        .algorithm(
            mk_algorithm("broken")
                .with_retries(0)
                .with_template_annotations(&[(sim::DURATION, "100ms"), (sim::OUTCOME, "fail")]),
        )
        .algorithm(
            mk_algorithm("fine")
                .with_retries(0)
                .with_breaker(mk_breaker(2, 600, 3600))
                .with_template_annotations(&[(sim::DURATION, "100ms")]),
        )
        .operator()
        .start()
        .await;
    let (flaky, broken, fine) = (
        w.algorithm("flaky"),
        w.algorithm("broken"),
        w.algorithm("fine"),
    );
    let operator = w.operator();
    let queue = format!("queue=\"{}\"", w.queue());
    // The pool series appear with the leader's first refresh.
    let refreshed = harness::wait_for(Duration::from_secs(30), || async {
        operator
            .metric(
                "vision_operator_algorithm_breaker_state",
                &format!("algorithm=\"{broken}\""),
            )
            .await
            == Some(0.0)
    })
    .await;
    assert!(refreshed, "no pool series:\n{}", operator.metrics().await);
    let before = samples(&operator.metrics().await);

    for i in 0..4 {
        w.submit(w.job(&format!("f-{i}"), "flaky")).await;
    }
    for i in 0..5 {
        w.submit(w.job(&format!("b-{i}"), "broken")).await;
    }
    w.submit(w.job("ok-0", "fine")).await;
    // flaky open (2) with its other two jobs waiting for it as the queue's
    // head; broken's five and fine's one finished.
    let outcome =
        |algorithm: &str, phase: &str| format!("algorithm=\"{algorithm}\",phase=\"{phase}\"");
    let settled = harness::wait_for(Duration::from_secs(90), || async {
        operator
            .metric(
                "vision_operator_algorithm_breaker_state",
                &format!("algorithm=\"{flaky}\""),
            )
            .await
            == Some(2.0)
            && operator
                .metric("vision_operator_pending_jobs", &queue)
                .await
                == Some(2.0)
            && operator
                .metric("vision_operator_admitted_active_jobs", &queue)
                .await
                == Some(0.0)
            && operator
                .metric(
                    "vision_operator_queue_head_wait_reason",
                    &format!("{queue},reason=\"BreakerOpen\""),
                )
                .await
                == Some(1.0)
            && operator
                .metric(
                    "vision_operator_job_outcomes_total",
                    &outcome(&broken, "Failed"),
                )
                .await
                == Some(5.0)
            && operator
                .metric(
                    "vision_operator_job_outcomes_total",
                    &outcome(&fine, "Succeeded"),
                )
                .await
                == Some(1.0)
            && operator
                .metric(
                    "vision_operator_job_outcomes_total",
                    &outcome(&flaky, "Failed"),
                )
                .await
                == Some(2.0)
    })
    .await;
    let text = operator.metrics().await;
    assert!(settled, "the scenario did not settle as expected:\n{text}");
    // Only this scenario's queue and algorithms (the operator sees the
    // whole cluster) and the series of no queue or algorithm.
    let ours = [
        queue.clone(),
        format!("algorithm=\"{flaky}\""),
        format!("algorithm=\"{broken}\""),
        format!("algorithm=\"{fine}\""),
    ];
    let mine = |samples: Vec<(String, String)>| -> Vec<(String, String)> {
        samples
            .into_iter()
            .filter(|(s, _)| {
                !(s.contains("queue=\"") || s.contains("algorithm=\""))
                    || ours.iter().any(|o| s.contains(o.as_str()))
            })
            .collect()
    };
    let (before, after) = (mine(before), mine(samples(&text)));

    let dir = rules_dir("scenario");
    std::fs::write(
        dir.join("scenario.test.yaml"),
        test_file_of(&before, &after, &[&flaky], &[&broken]),
    )
    .unwrap();
    run_promtool(&dir, &["test", "rules", "scenario.test.yaml"]);
    // The same scrapes with every breaker closed and no job failed raise
    // no alert at all (so the expectations above can fail).
    let healthy = |samples: &[(String, String)]| -> Vec<(String, String)> {
        samples
            .iter()
            .map(|(s, v)| {
                let v = if s.starts_with("vision_operator_algorithm_breaker_state{")
                    || (s.starts_with("vision_operator_job_outcomes_total{")
                        && s.contains("phase=\"Failed\""))
                {
                    "0".to_owned()
                } else {
                    v.clone()
                };
                (s.clone(), v)
            })
            .collect()
    };
    std::fs::write(
        dir.join("healthy.test.yaml"),
        test_file_of(&healthy(&before), &healthy(&after), &[], &[]),
    )
    .unwrap();
    run_promtool(&dir, &["test", "rules", "healthy.test.yaml"]);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A promtool rules test: the samples of each scrape with its `pod` label,
/// constant for 10 minutes; at minute 8, VisionOperatorNoLeader fires iff
/// `no_leader` and VisionOperatorTwoLeaders iff `two_leaders`.
fn leader_test_of(
    scrapes: &[(&str, &[(String, String)])],
    no_leader: bool,
    two_leaders: bool,
) -> String {
    let mut y = String::from(
        "rule_files:\n  - rules.yaml\nevaluation_interval: 1m\ntests:\n  - interval: 1m\n    input_series:\n",
    );
    for (pod, samples) in scrapes {
        for (series, value) in samples.iter() {
            let series = match series.split_once('{') {
                Some((name, labels)) => format!("{name}{{pod=\"{pod}\",{labels}"),
                None => format!("{series}{{pod=\"{pod}\"}}"),
            };
            y.push_str(&format!(
                "      - series: '{}'\n        values: '{value}x10'\n",
                series.replace('\'', "''"),
            ));
        }
    }
    y.push_str(&format!(
        "    alert_rule_test:\n      - eval_time: 8m\n        alertname: VisionOperatorNoLeader\n        exp_alerts:{}\n",
        if no_leader {
            format!("\n          - exp_labels:\n              severity: critical\n            exp_annotations:\n              summary: No vision-operator replica is the leader\n              description: No replica has reported vision_operator_is_leader 1 for 5m; no job is admitted, started or finished.\n              runbook_url: {RUNBOOKS}#visionoperatornoleader")
        } else {
            " []".to_owned()
        }
    ));
    y.push_str(&format!(
        "      - eval_time: 8m\n        alertname: VisionOperatorTwoLeaders\n        exp_alerts:{}\n",
        if two_leaders {
            format!("\n          - exp_labels:\n              severity: critical\n            exp_annotations:\n              summary: More than one vision-operator replica reports being the leader\n              description: 2 replicas report vision_operator_is_leader 1; two admitting replicas could admit jobs twice.\n              runbook_url: {RUNBOOKS}#visionoperatortwoleaders")
        } else {
            " []".to_owned()
        }
    ));
    y
}

#[tokio::test]
async fn the_leader_alerts_fire_on_the_metrics_of_real_replicas() {
    // One installation: a leader and its standby (one election). A second
    // installation on the same cluster: its own election, so a second leader.
    let w = Scenario::new("leaders")
        .queue(mk_queue("pool", 1))
        .operator()
        .start()
        .await;
    let standby = Operator::start(&w.operator_options("standby")).await;
    let other_lease = format!("e2e-{}", w.name("other"));
    let other = Operator::start(&OperatorOptions::new(&other_lease, "other")).await;
    let leader = w.operator();
    let settled = harness::wait_for(Duration::from_secs(60), || async {
        leader.is_leader().await
            && !standby.is_leader().await
            && other.is_leader().await
            && standby.metric("vision_operator_is_leader", "").await == Some(0.0)
    })
    .await;
    assert!(
        settled,
        "expected one leader per election:\n{}\n{}",
        standby.log_tail(),
        other.log_tail()
    );
    let (a, b, c) = (
        samples(&leader.metrics().await),
        samples(&standby.metrics().await),
        samples(&other.metrics().await),
    );
    assert!(
        !b.iter().any(|(s, _)| s.contains("queue=\"")),
        "a standby reports no pool series: {b:?}"
    );

    let dir = rules_dir("leaders");
    for (file, scrapes, no_leader, two_leaders) in [
        // Healthy: the leader and its standby.
        (
            "healthy",
            vec![("vo-a", &a[..]), ("vo-b", &b[..])],
            false,
            false,
        ),
        // The leader gone, the standby not (yet) leading.
        ("no-leader", vec![("vo-b", &b[..])], true, false),
        // Two installations scraped together: two leaders.
        (
            "two-leaders",
            vec![("vo-a", &a[..]), ("vo-b", &b[..]), ("other-a", &c[..])],
            false,
            true,
        ),
    ] {
        let name = format!("{file}.test.yaml");
        std::fs::write(
            dir.join(&name),
            leader_test_of(&scrapes, no_leader, two_leaders),
        )
        .unwrap();
        run_promtool(&dir, &["test", "rules", &name]);
    }
    let _ = std::fs::remove_dir_all(&dir);
    drop(other);
    harness::kubectl([
        "-n",
        "default",
        "delete",
        "lease",
        &other_lease,
        "--ignore-not-found",
    ]);
}

/// The input series of two scrapes, as in [`test_file_of`]: each sample of
/// `after` holds its `before` value for minutes 0-5, its own for 6-20.
fn ramp_series(before: &[(String, String)], after: &[(String, String)]) -> String {
    let mut y = String::new();
    for (series, value) in after {
        let old = before_value(before, series, value);
        let series = match series.split_once('{') {
            Some((name, labels)) => format!("{name}{{pod=\"operator\",{labels}"),
            None => format!("{series}{{pod=\"operator\"}}"),
        };
        y.push_str(&format!(
            "      - series: '{}'\n        values: '{old}x5 {value}x14'\n",
            series.replace('\'', "''"),
        ));
    }
    y
}

#[tokio::test]
async fn the_stall_alert_fires_on_the_operators_metrics_when_a_queue_admits_nothing() {
    // A job asking for more GPUs than its queue allows waits for ever
    // (ExceedsQueueGpus), with both slots free: the queue admits nothing.
    let w = Scenario::new("stall")
        .queue(mk_queue("pool", 2).with_max_gpus(1))
        .algorithm(
            mk_algorithm("big")
                .with_gpus_per_job(2)
                .with_template_annotations(&[(sim::DURATION, "100ms")]),
        )
        .operator()
        .start()
        .await;
    let operator = w.operator();
    let queue = format!("queue=\"{}\"", w.queue());
    let refreshed = harness::wait_for(Duration::from_secs(30), || async {
        operator
            .metric("vision_operator_pending_jobs", &queue)
            .await
            == Some(0.0)
    })
    .await;
    assert!(refreshed, "no pool series:\n{}", operator.metrics().await);
    let before = samples(&operator.metrics().await);
    w.submit(w.job("too-big", "big")).await;
    let waiting = harness::wait_for(Duration::from_secs(30), || async {
        operator
            .metric("vision_operator_pending_jobs", &queue)
            .await
            == Some(1.0)
            && operator
                .metric(
                    "vision_operator_queue_head_wait_reason",
                    &format!("{queue},reason=\"ExceedsQueueGpus\""),
                )
                .await
                == Some(1.0)
    })
    .await;
    let text = operator.metrics().await;
    assert!(waiting, "the job does not wait as expected:\n{text}");
    let mine = |samples: Vec<(String, String)>| -> Vec<(String, String)> {
        samples
            .into_iter()
            .filter(|(s, _)| !s.contains("queue=\"") || s.contains(queue.as_str()))
            .filter(|(s, _)| !s.contains("algorithm=\""))
            .collect()
    };
    let (before, after) = (mine(before), mine(samples(&text)));
    let name = w.queue();
    let stalled = format!(
        "          - exp_labels:\n              severity: warning\n              queue: {name}\n            exp_annotations:\n              summary: Queue {name} has waiting jobs and free slots but admits nothing\n              description: Queue {name} has jobs waiting and a free slot, its first job is not held back by a pause, a GPU quota, an algorithm limit or a breaker, and no job was admitted in 10m.\n              runbook_url: {RUNBOOKS}#visionqueuestalled\n"
    );
    let file = format!(
        "rule_files:\n  - rules.yaml\nevaluation_interval: 1m\ntests:\n  - interval: 1m\n    input_series:\n{}    alert_rule_test:\n      - eval_time: 10m\n        alertname: VisionQueueStalled\n        exp_alerts: []\n      - eval_time: 12m\n        alertname: VisionQueueStalled\n        exp_alerts:\n{stalled}  - interval: 1m\n    input_series:\n{}    alert_rule_test:\n      - eval_time: 20m\n        alertname: VisionQueueStalled\n        exp_alerts: []\n",
        ramp_series(&before, &after),
        // Healthy: the scrape before the job, held for 20 minutes.
        ramp_series(&before, &before),
    );
    let dir = rules_dir("stall");
    std::fs::write(dir.join("stall.test.yaml"), file).unwrap();
    run_promtool(&dir, &["test", "rules", "stall.test.yaml"]);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn the_reconcile_errors_alert_fires_on_the_operators_metrics_when_the_api_fails() {
    // The operator reaches the API server only through a fault proxy that
    // answers every pod create with 500: each admitted job's reconcile fails
    // and is requeued (every 2 s).
    let mut w = Scenario::new("recerr")
        .queue(mk_queue("pool", 2))
        .algorithm(mk_algorithm("short").with_template_annotations(&[(sim::DURATION, "1s")]))
        .start()
        .await;
    let proxy = w.start_operator_behind_proxy().await;
    proxy.set(RequestKind::PodCreate, FaultAction::ServerError);
    for name in ["a", "b"] {
        w.submit(w.job(name, "short")).await;
    }
    let operator = w.operator();
    // The errors counted by kind, other than the routine ones.
    let errors = |text: &str| -> Vec<(String, f64)> {
        samples(text)
            .into_iter()
            .filter(|(s, _)| {
                s.starts_with("vision_operator_reconcile_errors_total{")
                    && !s.contains("kind=\"conflict\"")
                    && !s.contains("kind=\"pods_terminating\"")
            })
            .map(|(s, v)| (s, v.parse().unwrap()))
            .collect()
    };
    let failing = harness::wait_for(Duration::from_secs(60), || async {
        errors(&operator.metrics().await)
            .iter()
            .map(|(_, v)| v)
            .sum::<f64>()
            >= 2.0
    })
    .await;
    assert!(
        failing,
        "no reconcile errors:\n{}",
        operator.metrics().await
    );
    let start = std::time::Instant::now();
    let before = errors(&operator.metrics().await);
    // Let them run for a while (how many errors a while brings is what the
    // test measures, not a condition it waits for).
    tokio::time::sleep(Duration::from_secs(10)).await;
    let after = errors(&operator.metrics().await);
    let seconds = start.elapsed().as_secs_f64();
    let hits = proxy.hits();
    proxy.clear();
    assert!(
        hits.get(&(RequestKind::PodCreate, "500"))
            .copied()
            .unwrap_or(0)
            >= 2,
        "the fault never hit a pod create: {hits:?}"
    );
    // Each series goes on growing at the rate measured (per minute, at
    // least 1 where it grew).
    let mut series = String::new();
    let mut per_second = 0.0;
    for (s, v) in &after {
        let old = before.iter().find(|(b, _)| b == s).map_or(0.0, |(_, b)| *b);
        let per_minute = ((v - old) / seconds * 60.0).round();
        per_second += per_minute / 60.0;
        let (name, labels) = s.split_once('{').unwrap();
        series.push_str(&format!(
            "      - series: '{name}{{pod=\"operator\",{labels}'\n        values: '{v}+{per_minute}x20'\n"
        ));
    }
    assert!(
        per_second > 0.1,
        "errors at {per_second}/s, under the alert's threshold: before {before:?}, after {after:?} in {seconds} s"
    );
    let file = format!(
        "rule_files:\n  - rules.yaml\nevaluation_interval: 1m\ntests:\n  - interval: 1m\n    input_series:\n{series}    alert_rule_test:\n      - eval_time: 8m\n        alertname: VisionOperatorReconcileErrors\n        exp_alerts: []\n      - eval_time: 15m\n        alertname: VisionOperatorReconcileErrors\n        exp_alerts:\n          - exp_labels:\n              severity: warning\n            exp_annotations:\n              summary: The vision-operator's reconcile errors are rising\n              description: 'Reconcile errors other than conflicts and terminating pods have run above 0.1/s for 10m (by kind: sum by (kind) (rate(vision_operator_reconcile_errors_total[5m]))).'\n              runbook_url: {RUNBOOKS}#visionoperatorreconcileerrors\n"
    );
    let dir = rules_dir("recerr");
    std::fs::write(dir.join("recerr.test.yaml"), file).unwrap();
    run_promtool(&dir, &["test", "rules", "recerr.test.yaml"]);
    let _ = std::fs::remove_dir_all(&dir);
    w.wait_all_final(Duration::from_secs(90)).await;
}

#[test]
fn the_dashboard_queries_parse() {
    // Every panel query as a recording rule, for promtool's PromQL parser
    // (Grafana's $queue and $algorithm sit inside regex matchers).
    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(
            repo_root()
                .join(CHART)
                .join("dashboards/vision-operator.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let exprs: Vec<String> = dashboard["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["targets"].as_array().cloned().unwrap_or_default())
        .map(|t| t["expr"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(exprs.len(), 18, "{exprs:?}");
    let rules: Vec<Value> = exprs
        .iter()
        .enumerate()
        .map(|(i, e)| serde_json::json!({"record": format!("dashboard:query_{i}"), "expr": e}))
        .collect();
    let dir = repo_root()
        .join(".local/alerts-tests")
        .join(format!("dashboard-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("dashboard.yaml"),
        serde_json::json!({"groups": [{"name": "dashboard", "rules": rules}]}).to_string(),
    )
    .unwrap();
    let checked = run_promtool(&dir, &["check", "rules", "dashboard.yaml"]);
    assert!(
        checked.contains("SUCCESS: 18 rules found"),
        "promtool check rules: {checked}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
