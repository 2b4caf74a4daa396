//! The library behind `visionctl`: the commands (submit, get, watch, result,
//! queue) on the API types of `vision-api`, reusable by other tools.
#![forbid(unsafe_code)]

pub mod commands;

/// Errors shown to a person.
pub type Error = Box<dyn std::error::Error + Send + Sync>;
pub type Result<T> = std::result::Result<T, Error>;

/// An error with a message.
pub fn fail(m: impl Into<String>) -> Error {
    m.into().into()
}
