//! Breakwater's load lab and the bundled demo upstream.

pub mod cluster_bench;
pub mod demo;
pub mod gateway_yaml;
pub mod lab;
pub mod procs;
pub mod sim;
pub mod throughput;
