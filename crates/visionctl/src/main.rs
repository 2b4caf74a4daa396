//! visionctl: submit, list, follow, explain and control VisionJobs. See
//! docs/VISIONCTL.md.
#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    visionctl::cli::main("visionctl")
}
