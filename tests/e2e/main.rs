//! The cluster tier: end-to-end suites against the real Slurm test cluster
//! (`scripts/slurm-dev-cluster up`; `cargo test --features cluster`). Every test has an owner
//! of its own, so they run in parallel on the shared cluster. One binary, so the build links
//! once; `tests/watch_outage.rs` stops the controller and so stays a binary of its own.
#![cfg(feature = "cluster")]

#[path = "../common/mod.rs"]
mod common;

mod acct;
mod backends;
mod clients;
mod cluster_facts;
mod containers;
mod crashloop;
mod depends;
mod endpoints;
mod jobs;
mod lock_stress;
mod logs;
mod owner_case;
mod plan_apply;
mod readiness;
mod rest;
mod rolling;
mod safety;
mod saved_plan;
mod secrets;
mod ssh;
mod supervisor_env;
mod watch;
mod watch_refusals;
