//! Configuration: the YAML file layer and its compilation into a [`Snapshot`].
//!
//! Two layers, as the style guide asks. [`file`] holds serde structs that
//! mirror the YAML and reject unknown fields, so typos fail loudly. [`compile`]
//! validates them into the internal model, with errors that name the path
//! (`routes[1].cluster: unknown cluster "ordrs"`).
//!
//! [`Snapshot`]: crate::snapshot::Snapshot

pub mod admin;
pub mod compile;
pub mod file;
pub mod load;

pub use load::{parse_str, LoadError};

#[cfg(test)]
mod bounds_tests;
