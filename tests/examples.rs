//! Every manifest under examples/ parses into the crate's own types, and the
//! deliberately invalid one is refused by the CRD's CEL rules.

use std::path::{Path, PathBuf};

use vision_operator::api::{VisionAlgorithm, VisionJob, VisionQueue};

fn example_files() -> Vec<PathBuf> {
    let mut out = vec![];
    let mut dirs = vec![Path::new(env!("CARGO_MANIFEST_DIR")).join("examples")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "yaml") {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

fn documents(path: &Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(path).unwrap();
    serde_saphyr::from_multiple::<serde_json::Value>(&text)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .into_iter()
        .filter(|v| !v.is_null())
        .collect()
}

#[test]
fn every_example_parses_into_the_rust_types() {
    let mut kinds = std::collections::BTreeMap::<String, usize>::new();
    for path in example_files() {
        for doc in documents(&path) {
            let kind = doc["kind"].as_str().unwrap_or_default().to_string();
            let parsed = match kind.as_str() {
                "VisionJob" => serde_json::from_value::<VisionJob>(doc).map(|_| ()),
                "VisionQueue" => serde_json::from_value::<VisionQueue>(doc).map(|_| ()),
                "VisionAlgorithm" => serde_json::from_value::<VisionAlgorithm>(doc).map(|_| ()),
                other => panic!("{}: unexpected kind {other:?}", path.display()),
            };
            parsed.unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            *kinds.entry(kind).or_default() += 1;
        }
    }
    assert_eq!(kinds.get("VisionQueue"), Some(&1));
    // examples/algorithms.yaml (three simulated) and the real face-detect
    // one, in pod mode and in worker mode.
    assert_eq!(kinds.get("VisionAlgorithm"), Some(&5));
    assert!(
        kinds.get("VisionJob").copied().unwrap_or(0) >= 4,
        "{kinds:?}"
    );
}

#[test]
fn valid_examples_pass_the_cel_rules_and_the_invalid_one_does_not() {
    for path in example_files() {
        for doc in documents(&path) {
            if doc["kind"] == "VisionAlgorithm" {
                let algorithm: VisionAlgorithm = serde_json::from_value(doc).unwrap();
                kube::core::cel::validate_cel(&algorithm)
                    .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                continue;
            }
            if doc["kind"] != "VisionJob" {
                continue;
            }
            let job: VisionJob = serde_json::from_value(doc).unwrap();
            let verdict = kube::core::cel::validate_cel(&job);
            if path.ends_with("invalid.yaml") {
                let err = verdict
                    .expect_err("the invalid example must be refused")
                    .to_string();
                assert!(
                    err.contains("spec.algorithm must be a lowercase DNS name"),
                    "{err}"
                );
            } else {
                verdict.unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            }
        }
    }
}
