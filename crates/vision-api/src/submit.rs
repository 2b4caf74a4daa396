//! Exactly-once submission (docs/CLIENTS.md): how a platform backend creates
//! one VisionJob per request however often it retries the create.
//!
//! 1. Name the job after the request: [`job_name_for_request`] (or
//!    [`with_request_id`], which also records the request id in the
//!    annotation [`ANNOTATION_REQUEST_ID`]). The same request always gives
//!    the same name, so a second create cannot make a second job.
//! 2. Create it. `201 Created`: submitted.
//! 3. `409 AlreadyExists`: read the job of that name. If
//!    [`same_submission`] holds, the earlier create landed (its response was
//!    lost, or this is a retry): it is this submission, and a success. If
//!    not, the name is taken by a different job: a conflict, which retrying
//!    cannot fix ([`differences`] names the fields that differ).
//!
//! The exactly-once guarantee lasts as long as the job exists: once it is
//! deleted (by hand, or by its TTL) the same request creates a new job. Keep
//! the TTL longer than the longest time a backend may retry a request.
//!
//! Pure functions, no I/O; the same rules in any language are in
//! docs/CLIENTS.md, with test vectors in this module's tests.

use serde_json::{Map, Number, Value};
use sha2::{Digest, Sha256};

use crate::VisionJob;

/// The annotation that records the request id a job was submitted for.
pub const ANNOTATION_REQUEST_ID: &str = "vision.zjlab.io/request-id";

/// Hex digits of SHA-256(request id) in a derived name: 80 bits, so that a
/// namespace would need about 10^12 live jobs before two requests share a
/// name with even a one-in-a-million chance.
pub const REQUEST_HASH_LEN: usize = 20;

/// The longest derived name: 63 characters, a valid label value too (the
/// operator labels the job's pods with the job's name).
pub const MAX_DERIVED_NAME_LEN: usize = 63;

/// The fields of a job's spec that may change after it was created (by the
/// submitter or by someone else: a priority bump, a suspension, a TTL). They
/// do not tell two submissions apart.
pub const MUTABLE_SPEC_FIELDS: [&str; 3] = ["priority", "suspend", "ttlSecondsAfterFinished"];

/// The job name for a request: `<prefix>-<first 20 hex digits of
/// SHA-256(request_id)>`, a valid DNS name of at most 63 characters.
///
/// The prefix is made a DNS label the same way in every client: ASCII
/// letters are lowercased, every run of other characters than `a-z0-9`
/// becomes one `-`, leading and trailing `-` are dropped, it is cut to 42
/// characters (and a `-` left at its end dropped). An empty result leaves the
/// name as the hash alone. A backend must keep its prefix fixed: another
/// prefix is another name.
pub fn job_name_for_request(prefix: &str, request_id: &str) -> String {
    let digest = Sha256::digest(request_id.as_bytes());
    let hash: String = digest
        .iter()
        .take(REQUEST_HASH_LEN / 2)
        .map(|b| format!("{b:02x}"))
        .collect();
    let mut label = String::with_capacity(prefix.len());
    for c in prefix.chars().map(|c| c.to_ascii_lowercase()) {
        if c.is_ascii_lowercase() || c.is_ascii_digit() {
            label.push(c);
        } else if !label.ends_with('-') {
            label.push('-');
        }
    }
    let label = label.trim_matches('-');
    // Only ASCII is left, so any byte index is a char boundary.
    let keep = label.len().min(MAX_DERIVED_NAME_LEN - 1 - REQUEST_HASH_LEN);
    let label = label[..keep].trim_end_matches('-');
    if label.is_empty() {
        hash
    } else {
        format!("{label}-{hash}")
    }
}

/// `job` named for `request_id` ([`job_name_for_request`] with `prefix`),
/// without a generateName, with the request id in [`ANNOTATION_REQUEST_ID`].
pub fn with_request_id(mut job: VisionJob, prefix: &str, request_id: &str) -> VisionJob {
    job.metadata.name = Some(job_name_for_request(prefix, request_id));
    job.metadata.generate_name = None;
    job.metadata
        .annotations
        .get_or_insert_with(Default::default)
        .insert(ANNOTATION_REQUEST_ID.to_string(), request_id.to_string());
    job
}

/// Whether `existing` (the job found under the name) is the submission of
/// `wanted`: no [`differences`].
pub fn same_submission(existing: &VisionJob, wanted: &VisionJob) -> bool {
    differences(existing, wanted).is_empty()
}

/// What tells `existing` apart from the submission `wanted`, as field paths
/// (`spec.input`, `metadata.annotations.vision.zjlab.io/request-id`); empty
/// when it is the same submission.
///
/// Compared: every field of the spec but [`MUTABLE_SPEC_FIELDS`], as JSON
/// values by meaning (object keys in any order, a key holding null the same
/// as no key, 1 the same as 1.0: the API server may store either), and the
/// request ids when both jobs carry one. Labels, other annotations and the
/// status are not compared.
pub fn differences(existing: &VisionJob, wanted: &VisionJob) -> Vec<String> {
    let mut out = Vec::new();
    let request_id = |j: &VisionJob| {
        j.metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(ANNOTATION_REQUEST_ID))
            .cloned()
    };
    if let (Some(a), Some(b)) = (request_id(existing), request_id(wanted))
        && a != b
    {
        out.push(format!("metadata.annotations.{ANNOTATION_REQUEST_ID}"));
    }
    let (a, b) = (spec_fields(existing), spec_fields(wanted));
    let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
    keys.sort();
    keys.dedup();
    for key in keys {
        if MUTABLE_SPEC_FIELDS.contains(&key.as_str()) {
            continue;
        }
        if !same_value(a.get(key), b.get(key)) {
            out.push(format!("spec.{key}"));
        }
    }
    out
}

/// The job's spec as a JSON object.
fn spec_fields(job: &VisionJob) -> Map<String, Value> {
    match serde_json::to_value(&job.spec) {
        Ok(Value::Object(map)) => map,
        // A spec is a struct: it always serializes to an object.
        _ => Map::new(),
    }
}

/// JSON equality by meaning: null and absent alike, numbers by value.
fn same_value(a: Option<&Value>, b: Option<&Value>) -> bool {
    match (a.unwrap_or(&Value::Null), b.unwrap_or(&Value::Null)) {
        (Value::Number(x), Value::Number(y)) => same_number(x, y),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| same_value(Some(x), Some(y)))
        }
        (Value::Object(x), Value::Object(y)) => x
            .keys()
            .chain(y.keys())
            .all(|k| same_value(x.get(k), y.get(k))),
        (x, y) => x == y,
    }
}

fn same_number(x: &Number, y: &Number) -> bool {
    if let (Some(x), Some(y)) = (x.as_i64(), y.as_i64()) {
        return x == y;
    }
    if let (Some(x), Some(y)) = (x.as_u64(), y.as_u64()) {
        return x == y;
    }
    x.as_f64() == y.as_f64()
}

#[cfg(test)]
mod tests;
