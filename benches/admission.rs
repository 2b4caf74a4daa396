//! placeholder, replaced by the admission-core benchmark
fn main() {}
