//! `shardgate-bench run`: the 1 vCPU / 1 GiB benchmark (orchestration, measurement, reports).
pub mod cgroup;
pub mod mcp;
pub mod model;
pub mod procs;
pub mod render;
pub mod runner;
pub mod stamp;
