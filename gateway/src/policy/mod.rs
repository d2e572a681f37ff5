//! Policies as a route holds them: the compiled chain, run in declared order.

pub mod chain;

pub use chain::{ChainEntry, PolicyChain, Verdict};
