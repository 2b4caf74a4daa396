//! `visionctl`: the command-line client of vision-operator, built on the
//! crate's own API types. It submits, lists, follows and explains
//! VisionJobs, and drives the demo and the end-to-end benchmark.
//! See docs/VISIONCTL.md.

pub mod bench;
pub mod commands;
pub mod demo;
pub mod run;
pub mod stats;

/// Errors shown to a person.
pub type Error = Box<dyn std::error::Error + Send + Sync>;
pub type Result<T> = std::result::Result<T, Error>;

/// An error with a message.
pub fn fail(m: impl Into<String>) -> Error {
    m.into().into()
}
