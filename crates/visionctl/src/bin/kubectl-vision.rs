//! visionctl as a kubectl plugin: on PATH, `kubectl vision get -n team-a`
//! runs `kubectl-vision get -n team-a`.
#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    visionctl::cli::main("kubectl vision")
}
