//! Generates the gRPC code of proto/vision/worker/v1/worker.proto with
//! protox (a protobuf compiler in Rust), so no `protoc` is needed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto_root = "../../proto";
    println!("cargo:rerun-if-changed={proto_root}");
    let descriptors = protox::compile(["vision/worker/v1/worker.proto"], [proto_root])?;
    tonic_prost_build::configure().compile_fds(descriptors)?;
    Ok(())
}
