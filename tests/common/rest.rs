//! The slurmrestd backend (`cluster.backend: rest`) of the test cluster: v0.0.38 with JWT at
//! [`REST_URL`]; tokens come from `scontrol token` (the tests run as root, which may mint one
//! for any user).

use super::slurm_conf;
use std::path::Path;
use std::process::Command;

/// The test cluster's slurmrestd.
pub const REST_URL: &str = "http://127.0.0.1:16820";

/// A fresh JWT for `user` from `scontrol token`, valid for `lifespan` seconds.
pub fn token(user: &str, lifespan: u32) -> String {
    let output = Command::new("scontrol")
        .env("SLURM_CONF", slurm_conf())
        .args([
            "token",
            &format!("username={user}"),
            &format!("lifespan={lifespan}"),
        ])
        .output()
        .expect("scontrol runs");
    assert!(output.status.success(), "{output:?}");
    let text = String::from_utf8(output.stdout).unwrap();
    text.trim().strip_prefix("SLURM_JWT=").unwrap().to_owned()
}

/// Writes `dir/stackctl.yaml` for slurmrestd at `url` acting as `user`, with `owner` and
/// `log_dir` (absolute, and it must exist: nothing over REST can create it). The token comes
/// from `SLURM_JWT`.
pub fn configure(dir: &Path, owner: &str, log_dir: &Path, url: &str, user: &str) {
    std::fs::write(
        dir.join("stackctl.yaml"),
        format!(
            "owner: {owner}\nlog_dir: {}\ncluster:\n  backend: rest\n  url: {url}\n  user: {user}\n",
            log_dir.display()
        ),
    )
    .unwrap();
}

/// `stackctl -C dir args` over REST with `token` in `SLURM_JWT` and no `SLURM_CONF`, so
/// nothing it does can reach Slurm but through slurmrestd.
pub fn command(dir: &Path, token: &str, args: &[&str]) -> Command {
    let mut command = super::stackctl(dir, args);
    command.env_remove("SLURM_CONF").env("SLURM_JWT", token);
    command
}
