//! Lifting's tests: small repos written to a temporary directory and loaded whole, as `plan`
//! reads them, and repos given in memory (`in_memory`).

mod container;
mod in_memory;
mod services;
mod settings;
mod update;

use super::*;
use crate::desired::load;

/// Writes `files` (path, text) into a fresh repo with a `stacks/` directory and loads it.
fn load_files(files: &[(&str, &str)], remote: Option<&str>) -> Result<Repo, SpecErrors> {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("stacks")).unwrap();
    for (path, text) in files {
        let path = dir.path().join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
    load(dir.path(), || remote.map(str::to_owned))
}
