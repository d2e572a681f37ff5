//! Sliding windows.

mod sliding;
mod top;

pub use sliding::{SlidingWindow, Tick, WindowSpec};
pub use top::hottest;
