//! Sliding windows.

mod sliding;

pub use sliding::{SlidingWindow, WindowSpec};
