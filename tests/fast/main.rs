//! The fast tier: unit-level suites that need no Slurm, no root and no network — plan and
//! render snapshots, the bad-input corpus, slurmrestd schemas, the shipped files, the watch
//! HTTP endpoints. Some suites hold cluster-tier tests too (`--features cluster`). One binary,
//! so the build links once.

#[path = "../common/mod.rs"]
mod common;

mod bad_input;
mod layers;
mod plan_render;
mod rest_versions;
mod scaffold;
mod shipped;
mod watch_http;
