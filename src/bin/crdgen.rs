//! Writes the CRDs generated from the Rust types: `crdgen` prints them all
//! as one YAML stream; `crdgen --write DIR` writes one file per CRD.
#![forbid(unsafe_code)]

use std::{fs, path::PathBuf};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.as_slice() {
        [] => print!("{}", vision_operator::crd::all_yaml()?),
        [flag, dirs @ ..] if flag == "--write" && !dirs.is_empty() => {
            for dir in dirs {
                let dir = PathBuf::from(dir);
                fs::create_dir_all(&dir)?;
                for (file, yaml) in vision_operator::crd::files()? {
                    fs::write(dir.join(file), yaml)?;
                }
            }
        }
        _ => return Err("usage: crdgen [--write DIR...]".into()),
    }
    Ok(())
}
