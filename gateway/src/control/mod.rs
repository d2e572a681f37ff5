//! The control plane: the admin endpoint and the background reload triggers
//! (file watch, SIGHUP). Reloads themselves are [`crate::state::Reloader`]'s.

pub mod admin;
pub mod admin_endpoints;
pub mod admin_hotkeys;
pub mod admin_overload;
pub mod watch;
