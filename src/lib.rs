//! stackctl: a git repo of stacks and recipes as the single source of truth for long-running
//! services on Slurm.
//!
//! The core is pure: [`desired`] turns files into desired state, [`observed`] turns Slurm's
//! job list into observed state, [`plan::compute`] diffs them and [`render`] draws the result; a submission is data
//! ([`job`]) that each backend renders its own way.
//! The edges are thin: [`slurm`] is the only code that talks to Slurm, [`git`] reads the
//! checkout, [`apply`] executes a plan through a backend, [`reconcile`] is the one pass that
//! plan, apply and [`watch`] share (it observes: lists the jobs and reads what a plan needs),
//! [`logs`] reads a replica's log file, and [`cli`] wires them to commands; [`error`] gives
//! every failure a kind and its exit code.
//!
//! The modules form layers, each using only those below it; `tests/fast/layers.rs` lists them and
//! fails on an upward import or an import cycle.

pub mod apply;
pub mod cli;
pub mod cluster;
pub mod container;
pub mod desired;
pub mod error;
pub mod git;
pub mod hostlist;
pub mod image;
pub mod interrupt;
pub mod job;
pub mod lock;
pub mod logs;
pub mod observed;
pub mod paths;
pub mod plan;
pub mod reconcile;
pub mod render;
pub mod results;
pub mod saved;
pub mod secret;
pub mod slurm;
pub mod utc;
pub mod watch;
