//! Configuration and the snapshots workers read.

pub mod config;
