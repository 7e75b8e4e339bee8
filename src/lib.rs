//! stackctl: a git repo of stacks and recipes as the single source of truth for long-running
//! services on Slurm.
//!
//! The core is pure: [`spec`] turns files into desired state, [`live`] turns Slurm's job list
//! into observed state, [`plan::compute`] diffs them and [`render`] draws the result. The
//! edges are thin: [`slurm`] is the only code that talks to Slurm, [`git`] the only code that
//! asks git, [`apply`] executes a plan through a backend, and [`cli`] wires them to commands.

pub mod apply;
pub mod cli;
pub mod cluster;
pub mod git;
pub mod hostlist;
pub mod live;
pub mod lock;
pub mod observe;
pub mod plan;
pub mod reconcile;
pub mod render;
pub mod slurm;
pub mod spec;
