//! Developer tools of vision-operator (the `vision-dev` binary): the demo's
//! burst and live view, the end-to-end benchmark scenarios, and the run
//! tracker and statistics they share. Not installed for users.
#![forbid(unsafe_code)]

pub mod bench;
pub mod demo;
pub mod run;
pub mod stats;

pub use visionctl::{Error, Result, fail};
