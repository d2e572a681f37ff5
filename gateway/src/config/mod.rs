//! Configuration: the YAML file layer and its compilation into a [`Snapshot`].
//!
//! Two layers, as the style guide asks. [`file`] holds serde structs that
//! mirror the YAML and reject unknown fields, so typos fail loudly. [`compile`]
//! validates them into the internal model, with errors that name the path
//! (`routes[1].cluster: unknown cluster "ordrs"`), one module per section of
//! the file, all in one [`CompileContext`].
//!
//! [`Snapshot`]: snapshot::Snapshot

pub mod admin;
pub mod admin_access;
mod clusters;
mod compile;
mod context;
pub mod file;
mod fleet;
pub mod fleet_file;
pub mod fleet_seed;
mod keys;
pub mod load;
mod matcher;
mod policies;
pub mod registry;
mod routes;
mod server;
pub mod snapshot;
pub mod tls;

pub use compile::compile;
pub use context::CompileContext;
pub use load::{parse_str, LoadError};
pub use registry::{Limit, Registries, TypedPolicy};

#[cfg(test)]
mod bounds_tests;
#[cfg(test)]
mod compile_tests;
