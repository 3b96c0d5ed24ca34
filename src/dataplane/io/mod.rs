//! Drivers that feed frames to the pipeline.

pub mod replay;
