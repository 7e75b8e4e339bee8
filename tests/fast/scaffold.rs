//! `stackctl init` scaffolds a repo that validates and plans against the real Slurm test
//! cluster; `completions` and `man` are generated from the command definitions.
// Without the cluster tier, the helpers of its tests are unused.
#![cfg_attr(not(feature = "cluster"), allow(dead_code, unused_imports))]

use crate::common;

use common::*;
use std::process::{Command, Output};

fn stackctl(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_stackctl"))
        .env("SLURM_CONF", slurm_conf())
        .env("NO_COLOR", "1")
        .args(args)
        .output()
        .unwrap()
}

fn stdout(output: &Output) -> String {
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[cfg(feature = "cluster")]
#[test]
fn init_scaffolds_a_repo_that_validates_and_plans_and_never_overwrites() {
    require_cluster();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_str().unwrap();
    stdout(&stackctl(&["-C", root, "init", "repo"]));
    let repo = dir.path().join("repo");
    let repo = repo.to_str().unwrap();
    assert!(stdout(&stackctl(&["-C", repo, "validate"])).contains("1 services"));
    let plan = stdout(&stackctl(&["-C", repo, "plan"]));
    assert!(
        plan.contains("Plan: 1 to add, 0 to change, 0 to destroy."),
        "{plan}"
    );
    let script = stdout(&stackctl(&["-C", repo, "render", "demo/app"]));
    assert!(
        !script.contains("apptainer"),
        "runs on a bare node: {script}"
    );

    // A second init refuses, naming the files, and leaves them as they are.
    std::fs::write(dir.path().join("repo/stacks/demo.yaml"), "services: {}\n").unwrap();
    let again = stackctl(&["-C", repo, "init"]);
    assert_eq!(again.status.code(), Some(1));
    let error = String::from_utf8_lossy(&again.stderr);
    assert!(
        error.contains("refusing to overwrite") && error.contains("stacks/demo.yaml"),
        "{error}"
    );
    assert_eq!(
        std::fs::read_to_string(dir.path().join("repo/stacks/demo.yaml")).unwrap(),
        "services: {}\n"
    );
}

#[test]
fn completions_and_the_man_page_name_every_subcommand() {
    let subcommands = ["plan", "apply", "destroy", "status", "watch", "init"];
    for shell in ["bash", "zsh", "fish"] {
        let script = stdout(&stackctl(&["completions", shell]));
        for name in subcommands {
            assert!(script.contains(name), "{shell} lacks {name}");
        }
        assert!(
            script.contains("max-destroy"),
            "{shell} lacks apply's flags"
        );
    }
    let man = stdout(&stackctl(&["man"]));
    assert!(
        man.starts_with(".ie") || man.contains(".TH stackctl 1"),
        "{man}"
    );
    for name in subcommands {
        assert!(man.contains(name), "man lacks {name}");
    }
}
