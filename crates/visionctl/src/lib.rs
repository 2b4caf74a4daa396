//! The library behind `visionctl` (and its kubectl plugin form,
//! `kubectl-vision`): the command line ([`cli`]) and the commands on the
//! API types of `vision-api` ([`jobs`], [`queue`]), with kubectl's
//! conventions for connecting ([`cluster`]) and printing ([`output`]), and
//! the local web view ([`ui`]).
//! Every failure is an [`Error`] with a documented exit code.
#![forbid(unsafe_code)]

pub mod cli;
pub mod cluster;
pub mod error;
pub mod jobs;
pub mod output;
pub mod queue;
pub mod ui;

pub use error::{Error, Result};
