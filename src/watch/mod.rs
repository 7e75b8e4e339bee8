//! `stackctl watch`: keeps the cluster converged to a branch of a git repo (or to local files),
//! heals drift, and reports what it does. Level-triggered: a new commit, a file event or the
//! timer only requests a reconcile; every reconcile is the full pass of [`crate::reconcile`]
//! from scratch. tokio lives here (the HTTP endpoints), not in the core.

pub mod state;
