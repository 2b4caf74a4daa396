//! The name derivation against vectors computed outside Rust (Python's
//! hashlib and re, as docs/CLIENTS.md writes the rule), and the comparison
//! of submissions field by field.

use serde_json::json;

use super::*;
use crate::testing::{JobFixture, mk_job};

#[test]
fn names_follow_the_documented_rule() {
    // (prefix, request id, name): computed with
    //   h = hashlib.sha256(rid.encode()).hexdigest()[:20]
    //   p = re.sub('[^a-z0-9]+', '-', ascii_lower(prefix)).strip('-')[:42].rstrip('-')
    //   name = f'{p}-{h}' if p else h
    let cases = [
        ("yolo-detect", "req-42", "yolo-detect-fd1180d9f0c0819f0005"),
        (
            "Team A/Cam 42",
            "order:7f3a",
            "team-a-cam-42-803c72e4498cb6153023",
        ),
        ("", "req-42", "fd1180d9f0c0819f0005"),
        ("---", "x", "2d711642b726b0440162"),
        ("ocr", "Zürich-1", "ocr-b7731d2d6b91ba4164d5"),
        (
            &"a".repeat(60),
            "req-42",
            "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-fd1180d9f0c0819f0005",
        ),
        // Cut at 42 characters, then the '-' left at the end is dropped.
        (
            &format!("{}.y", "x".repeat(41)),
            "r",
            "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx-454349e422f05297191e",
        ),
    ];
    for (prefix, request_id, name) in cases {
        assert_eq!(
            job_name_for_request(prefix, request_id),
            name,
            "{prefix:?} {request_id:?}"
        );
        assert!(name.len() <= MAX_DERIVED_NAME_LEN);
    }
}

#[test]
fn with_request_id_names_the_job_and_records_the_request() {
    let mut job = mk_job("team-a", "", "yolo");
    job.metadata.name = None;
    job.metadata.generate_name = Some("yolo-".into());
    let job = with_request_id(job, "yolo", "req-42");
    assert_eq!(
        job.metadata.name.as_deref(),
        Some("yolo-fd1180d9f0c0819f0005")
    );
    assert_eq!(job.metadata.generate_name, None);
    assert_eq!(
        job.metadata.annotations.unwrap()[ANNOTATION_REQUEST_ID],
        "req-42"
    );
}

fn submission() -> VisionJob {
    let job = mk_job("team-a", "", "yolo")
        .with_input(json!({"uri": "s3://f/1.jpg", "frames": [1, 2]}))
        .with_params(json!({"confidence": 0.5}));
    with_request_id(job, "yolo", "req-42")
}

#[test]
fn the_same_spec_is_the_same_submission() {
    assert!(same_submission(&submission(), &submission()));
}

#[test]
fn json_is_compared_by_meaning() {
    let mut stored = submission();
    // Keys in another order, 2 as 2.0, a null key missing.
    stored.spec.input = Some(json!({"frames": [1, 2.0], "uri": "s3://f/1.jpg"}));
    let mut wanted = submission();
    wanted.spec.input = Some(json!({"uri": "s3://f/1.jpg", "frames": [1, 2], "crop": null}));
    assert_eq!(differences(&stored, &wanted), Vec::<String>::new());

    wanted.spec.input = Some(json!({"uri": "s3://f/1.jpg", "frames": [2, 1]}));
    assert_eq!(differences(&stored, &wanted), ["spec.input"]);
    wanted.spec.input = Some(json!({"uri": "s3://f/1.jpg", "frames": [1, 2.5]}));
    assert_eq!(differences(&stored, &wanted), ["spec.input"]);
}

#[test]
fn fields_that_may_change_after_creation_do_not_count() {
    let mut stored = submission();
    stored.spec.priority = 50;
    stored.spec.suspend = true;
    stored.spec.ttl_seconds_after_finished = Some(60);
    stored.status = Some(Default::default());
    stored
        .metadata
        .labels
        .get_or_insert_with(Default::default)
        .insert("team".into(), "a".into());
    assert!(same_submission(&stored, &submission()));
}

#[test]
fn each_differing_field_is_named() {
    let stored = submission();
    let mut wanted = submission();
    wanted.spec.algorithm = "ocr".into();
    wanted.spec.queue = "gpu-b".into();
    wanted.spec.params = None;
    wanted.spec.gpus = Some(2);
    wanted.spec.timeout_seconds = Some(60);
    wanted.spec.retries = Some(0);
    assert_eq!(
        differences(&stored, &wanted),
        [
            "spec.algorithm",
            "spec.gpus",
            "spec.params",
            "spec.queue",
            "spec.retries",
            "spec.timeoutSeconds"
        ]
    );
}

#[test]
fn another_request_id_is_another_submission_even_with_the_same_spec() {
    let stored = submission();
    let mut wanted = submission();
    wanted
        .metadata
        .annotations
        .as_mut()
        .unwrap()
        .insert(ANNOTATION_REQUEST_ID.into(), "req-43".into());
    assert_eq!(
        differences(&stored, &wanted),
        ["metadata.annotations.vision.zjlab.io/request-id"]
    );
    // A job created without the annotation is judged by its spec alone.
    let mut bare = submission();
    bare.metadata.annotations = None;
    assert!(same_submission(&bare, &wanted));
}
