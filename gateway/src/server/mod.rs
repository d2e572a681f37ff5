//! The process: the command line, assembling the Pingora server and its
//! workers, logging, process limits, the runtime directory, housekeeping, the
//! health prober and the DNS refresh.

pub mod assemble;
pub mod capped;
pub mod cli;
pub mod connections;
pub mod drain_signal;
pub mod housekeeping;
pub mod limits;
pub mod logging;
pub mod prober;
pub mod resolver;
pub mod runtime_dir;
pub mod workers;
