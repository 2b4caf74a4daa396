//! The committed CRDs must be exactly what the Rust types generate. When this
//! fails, run: cargo run --bin crdgen -- --write crds charts/vision-operator/crds

use std::path::Path;

#[test]
fn committed_crds_match_the_rust_types() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let generated = vision_operator::crd::files().expect("CRDs render as YAML");
    assert_eq!(generated.len(), 3);
    for dir in ["crds", "charts/vision-operator/crds"] {
        for (file, yaml) in &generated {
            let path = root.join(dir).join(file);
            let committed = std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("{} is missing ({e}); run crdgen", path.display()));
            assert!(
                committed == *yaml,
                "{} differs from the Rust types: run `cargo run --bin crdgen -- --write crds charts/vision-operator/crds`",
                path.display()
            );
        }
        let on_disk = std::fs::read_dir(root.join(dir)).unwrap().count();
        assert_eq!(
            on_disk,
            generated.len(),
            "{dir}/ holds files crdgen does not write"
        );
    }
}

#[test]
fn algorithm_crd_fits_client_side_apply() {
    // kubectl's client-side apply stores the object in an annotation limited
    // to 256 KiB; the embedded pod template must stay below that.
    let (_, yaml) = vision_operator::crd::files()
        .unwrap()
        .into_iter()
        .find(|(f, _)| f.starts_with("visionalgorithms"))
        .unwrap();
    let json = serde_json::to_string(&serde_saphyr::from_str::<serde_json::Value>(&yaml).unwrap())
        .unwrap();
    assert!(
        json.len() < 256 * 1024,
        "visionalgorithms CRD is {} bytes of JSON",
        json.len()
    );
}
