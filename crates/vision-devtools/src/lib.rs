//! Developer tools of vision-operator (the `vision-dev` binary), not
//! installed for users: the demo's burst with its live view ([`demo`]), the
//! end-to-end benchmark scenarios with typed results ([`bench`]), the run
//! tracker they share ([`run`]), and the pure statistics ([`stats`]).
#![forbid(unsafe_code)]

pub mod bench;
pub mod demo;
pub mod error;
pub mod fairness;
pub mod run;
pub mod stats;
pub mod turn;
pub mod workers;

pub use error::{Error, Result, fail};
