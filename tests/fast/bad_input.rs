//! A corpus of broken repos (`tests/fixtures/bad/<case>/`): each has exactly one broken file.
//! For every case, `validate`, `plan` and `apply --auto-approve` must exit 1 with a message
//! naming the broken file (and, where the parser knows them, the line and field path), must not
//! panic, and must never contact Slurm: the commands run with fake `sbatch`, `squeue`,
//! `scancel` and `scontrol` first in `PATH`, which log every call, and the log must stay empty.
//!
//! Fixtures are copied to a temp dir before running, so the tests never depend on whether the
//! checkout is a git repo. The 10 MB file is generated at test time, not committed.

use crate::common;

use assert_cmd::Command;
use common::copy_dir;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tempfile::TempDir;

/// The Slurm commands stackctl may run; each is faked by a script that logs and fails.
const SLURM_COMMANDS: [&str; 4] = ["sbatch", "squeue", "scancel", "scontrol"];

/// The three commands every broken repo must be refused by.
const COMMANDS: [&[&str]; 3] = [&["validate"], &["plan"], &["apply", "--auto-approve"]];

/// A copy of one fixture repo, plus a fake Slurm whose every call is logged.
struct Sandbox {
    /// Holds the temp dir alive; removed on drop.
    tmp: TempDir,
    /// The repo root (`<tmp>/repo`).
    repo: PathBuf,
    /// Directory with the fake Slurm commands.
    bin: PathBuf,
    /// Where the fake Slurm commands append their name and arguments.
    log: PathBuf,
}

impl Sandbox {
    /// Copies `tests/fixtures/bad/<case>` into a fresh temp dir that is not a git repo.
    fn new(case: &str) -> Sandbox {
        let source = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/bad")
            .join(case);
        assert!(source.is_dir(), "missing fixture {}", source.display());
        let tmp = tempfile::Builder::new()
            .prefix("stackctl-bad-input-")
            .tempdir()
            .expect("create temp dir");
        let repo = tmp.path().join("repo");
        copy_dir(&source, &repo);
        let bin = tmp.path().join("bin");
        let log = tmp.path().join("slurm-calls.log");
        std::fs::create_dir(&bin).expect("create fake bin dir");
        for name in SLURM_COMMANDS {
            write_fake_slurm_command(&bin.join(name), name, &log);
        }
        Sandbox {
            tmp,
            repo,
            bin,
            log,
        }
    }

    /// Returns `stackctl -C <repo> <args>` with the fake Slurm first in `PATH`, git confined to
    /// the temp dir (so a parent checkout is never found) and colour off.
    fn stackctl(&self, args: &[&str]) -> Command {
        let path = std::env::var_os("PATH").unwrap_or_default();
        let path = std::env::join_paths(
            std::iter::once(self.bin.clone()).chain(std::env::split_paths(&path)),
        )
        .expect("join PATH");
        let mut cmd = Command::cargo_bin("stackctl").expect("the stackctl binary");
        cmd.arg("-C")
            .arg(&self.repo)
            .args(args)
            .env("PATH", path)
            .env("HOME", self.tmp.path())
            .env("GIT_CEILING_DIRECTORIES", self.tmp.path())
            .env("NO_COLOR", "1")
            .env_remove("GIT_DIR")
            .env_remove("GIT_WORK_TREE")
            .env_remove("STACKCTL_LOG")
            .timeout(Duration::from_secs(60));
        cmd
    }

    /// Returns every logged call to the fake Slurm commands (empty if none).
    fn slurm_calls(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// Writes a fake Slurm command that logs its name and arguments, then fails.
fn write_fake_slurm_command(path: &Path, name: &str, log: &Path) {
    let script = format!(
        "#!/bin/sh\necho \"{name} $*\" >> '{}'\necho \"fake {name}: refusing\" >&2\nexit 1\n",
        log.display()
    );
    std::fs::write(path, script).expect("write fake slurm command");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))
            .expect("make fake slurm command executable");
    }
}

/// What a rejection message must contain.
#[derive(Debug, Clone, Copy, Default)]
struct Expect {
    /// The broken file, relative to the repo root, e.g. `stacks/web.yaml`.
    file: &'static str,
    /// `Some((line, column))` when the parser knows the position.
    at: Option<(u32, u32)>,
    /// The dotted field path, when known.
    field: Option<&'static str>,
    /// Further text the message must contain.
    says: &'static [&'static str],
}

impl Expect {
    fn file(file: &'static str) -> Self {
        Expect {
            file,
            ..Expect::default()
        }
    }
    fn at(mut self, line: u32, column: u32) -> Self {
        self.at = Some((line, column));
        self
    }
    fn field(mut self, field: &'static str) -> Self {
        self.field = Some(field);
        self
    }
    fn says(mut self, says: &'static [&'static str]) -> Self {
        self.says = says;
        self
    }
}

/// Runs validate, plan and apply on the fixture `case` and checks each refuses it as `expect`.
fn assert_rejected(case: &str, expect: Expect) {
    assert_rejected_in(&Sandbox::new(case), case, expect);
}

/// Like [`assert_rejected`], on an already prepared sandbox; returns the slowest run's time.
fn assert_rejected_in(sandbox: &Sandbox, case: &str, expect: Expect) -> Duration {
    let mut slowest = Duration::ZERO;
    for args in COMMANDS {
        let started = Instant::now();
        let output = sandbox.stackctl(args).output().expect("run stackctl");
        slowest = slowest.max(started.elapsed());
        let stderr = String::from_utf8_lossy(&output.stderr);
        let stdout = String::from_utf8_lossy(&output.stdout);
        let context = format!(
            "case {case}, `stackctl {}`\n--- stdout:\n{stdout}\n--- stderr:\n{stderr}",
            args.join(" ")
        );
        assert_eq!(output.status.code(), Some(1), "exit code, {context}");
        assert!(!stderr.contains("panicked"), "panic, {context}");
        assert!(
            stderr.starts_with("error: "),
            "stderr should start with `error: `, {context}"
        );
        // The message names the file, followed by its position or the message itself.
        let named = match expect.at {
            Some((line, column)) => format!("{}:{line}:{column}: ", expect.file),
            None => format!("{}: ", expect.file),
        };
        assert!(stderr.contains(&named), "expected `{named}`, {context}");
        if let Some(field) = expect.field {
            let field = format!("field `{field}`: ");
            assert!(stderr.contains(&field), "expected {field}, {context}");
        }
        for says in expect.says {
            assert!(stderr.contains(says), "expected {says:?}, {context}");
        }
        assert!(
            stderr.contains("nothing was planned or submitted"),
            "expected the summary line, {context}"
        );
        assert!(
            stdout.trim().is_empty(),
            "nothing should be printed to stdout, {context}"
        );
        assert_eq!(sandbox.slurm_calls(), "", "Slurm was contacted, {context}");
    }
    assert!(
        !sandbox.log.exists(),
        "case {case}: the fake Slurm log exists"
    );
    slowest
}

// ---------------------------------------------------------------------------------------------
// Positive controls: prove the harness can see success, and can see Slurm being called.

#[test]
fn control_valid_repo_passes_validate() {
    let sandbox = Sandbox::new("valid_control");
    let output = sandbox
        .stackctl(&["validate"])
        .output()
        .expect("run stackctl");
    let stderr = String::from_utf8_lossy(&output.stderr);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        output.status.code(),
        Some(0),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert!(
        stdout.contains("Valid: 1 services, 2 replicas, owner \"bad-input-test\""),
        "{stdout}"
    );
    assert_eq!(sandbox.slurm_calls(), "", "validate never contacts Slurm");
}

#[test]
fn control_valid_repo_reaches_the_fake_slurm_on_plan() {
    // A valid repo gets as far as asking Slurm for its jobs, so the log check is not vacuous.
    let sandbox = Sandbox::new("valid_control");
    let output = sandbox.stackctl(&["plan"]).output().expect("run stackctl");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("reading the live jobs from Slurm"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    let calls = sandbox.slurm_calls();
    assert!(
        calls.starts_with("squeue "),
        "expected a squeue call: {calls:?}"
    );
    assert!(!calls.contains("sbatch"), "{calls:?}");
}

// ---------------------------------------------------------------------------------------------
// Syntax.

#[test]
fn syntax_error_unclosed_bracket() {
    assert_rejected(
        "syntax_error",
        Expect::file("stacks/web.yaml")
            .at(2, 11)
            .says(&["unclosed bracket"]),
    );
}

#[test]
fn syntax_error_unclosed_flow_mapping() {
    assert_rejected(
        "syntax_error_flow_mapping",
        Expect::file("stacks/web.yaml")
            .at(6, 5)
            .says(&["flow mapping"]),
    );
}

#[test]
fn tab_indentation() {
    assert_rejected(
        "tab_indent",
        Expect::file("stacks/web.yaml").at(3, 2).says(&["tabs"]),
    );
}

#[test]
fn stack_file_is_a_list() {
    assert_rejected("stack_is_a_list", Expect::file("stacks/web.yaml").at(1, 1));
}

#[test]
fn multiple_documents_in_one_file() {
    assert_rejected(
        "multi_document",
        Expect::file("stacks/web.yaml").at(4, 1).says(&["multiple"]),
    );
}

// ---------------------------------------------------------------------------------------------
// Unknown keys (every struct denies them) and duplicate keys.

#[test]
fn unknown_key_in_stack() {
    // The field path is lost inside `services.<name>` (see the report), so only check the key.
    assert_rejected(
        "unknown_key_stack",
        Expect::file("stacks/web.yaml")
            .at(5, 5)
            .field("services.app.replicaz")
            .says(&["unknown field `replicaz`"]),
    );
}

#[test]
fn unknown_key_in_recipe() {
    assert_rejected(
        "unknown_key_recipe",
        Expect::file("recipes/demo/svc.yaml")
            .at(5, 3)
            .field("resources.gpus")
            .says(&["unknown field `gpus`"]),
    );
}

/// A relative log directory would land wherever the submitting shell happened to be.
#[test]
fn relative_log_dir() {
    assert_rejected(
        "relative_log_dir",
        Expect::file("stackctl.yaml")
            .at(2, 10)
            .field("log_dir")
            .says(&["must be an absolute path"]),
    );
}

#[test]
fn unknown_key_in_config() {
    assert_rejected(
        "unknown_key_config",
        Expect::file("stackctl.yaml")
            .at(5, 3)
            .field("cluster.partition")
            .says(&["unknown field `partition`"]),
    );
}

#[test]
fn duplicate_field() {
    assert_rejected(
        "duplicate_field",
        Expect::file("stacks/web.yaml")
            .at(6, 5)
            .says(&["duplicate mapping key: replicas"]),
    );
}

#[test]
fn duplicate_service() {
    assert_rejected(
        "duplicate_service",
        Expect::file("stacks/web.yaml")
            .at(5, 3)
            .says(&["duplicate mapping key: app"]),
    );
}

#[test]
fn duplicate_environment_key() {
    assert_rejected(
        "duplicate_env_key",
        Expect::file("stacks/web.yaml")
            .at(7, 7)
            .says(&["duplicate mapping key: A"]),
    );
}

// ---------------------------------------------------------------------------------------------
// Wrong types and missing fields.

#[test]
fn replicas_is_a_string() {
    assert_rejected(
        "wrong_type_replicas",
        Expect::file("stacks/web.yaml").at(5, 15),
    );
}

#[test]
fn environment_is_a_list() {
    assert_rejected(
        "wrong_type_environment",
        Expect::file("stacks/web.yaml").at(6, 7),
    );
}

#[test]
fn environment_value_is_a_map() {
    assert_rejected(
        "wrong_type_env_value",
        Expect::file("recipes/demo/svc.yaml")
            .at(5, 5)
            .field("environment.MODEL")
            .says(&["not a list or mapping"]),
    );
}

#[test]
fn environment_value_is_null() {
    assert_rejected(
        "null_env_value",
        Expect::file("stacks/web.yaml")
            .at(6, 10)
            .field("services.app.environment.A")
            .says(&["no value given"]),
    );
}

#[test]
fn service_without_recipe() {
    assert_rejected(
        "missing_recipe_key",
        Expect::file("stacks/web.yaml")
            .at(4, 5)
            .says(&["missing field `recipe`"]),
    );
}

#[test]
fn recipe_without_command_or_container() {
    assert_rejected(
        "recipe_without_command",
        Expect::file("recipes/demo/svc.yaml")
            .at(1, 7)
            .field("command")
            .says(&["needs a `container`, a `command`, or both"]),
    );
}

// ---------------------------------------------------------------------------------------------
// Values out of range.

#[test]
fn negative_replicas() {
    assert_rejected(
        "negative_replicas",
        Expect::file("stacks/web.yaml")
            .at(5, 15)
            .field("services.app.replicas")
            .says(&["got -1"]),
    );
}

#[test]
fn too_many_replicas() {
    assert_rejected(
        "too_many_replicas",
        Expect::file("stacks/web.yaml")
            .at(5, 15)
            .field("services.app.replicas")
            .says(&["got 100001"]),
    );
}

#[test]
fn zero_cpu() {
    assert_rejected(
        "zero_cpu",
        Expect::file("stacks/web.yaml")
            .at(6, 12)
            .field("services.app.resources.cpu")
            .says(&["got 0"]),
    );
}

#[test]
fn port_out_of_range() {
    assert_rejected(
        "port_out_of_range",
        Expect::file("recipes/demo/svc.yaml")
            .at(5, 5)
            .field("ports[1]")
            .says(&["got 70000"]),
    );
}

#[test]
fn memory_and_memory_per_cpu_both_set() {
    assert_rejected(
        "memory_and_memory_per_cpu",
        Expect::file("recipes/demo/svc.yaml")
            .at(5, 19)
            .field("resources.memory_per_cpu")
            .says(&["not both"]),
    );
}

#[test]
fn bad_memory_amount() {
    assert_rejected(
        "bad_memory",
        Expect::file("stacks/web.yaml")
            .at(6, 15)
            .field("services.app.resources.memory")
            .says(&["\"32GB\""]),
    );
}

#[test]
fn gpu_type_with_space() {
    assert_rejected(
        "gpu_type_with_space",
        Expect::file("stacks/web.yaml")
            .at(7, 17)
            .field("services.app.resources.gpu_type")
            .says(&["\"a100 80gb\""]),
    );
}

#[test]
fn bad_environment_variable_name() {
    assert_rejected(
        "bad_env_name",
        Expect::file("stacks/web.yaml")
            .at(6, 17)
            .field("services.app.environment.BAD-NAME")
            .says(&["not a valid environment variable name"]),
    );
}

// ---------------------------------------------------------------------------------------------
// Names and references.

#[test]
fn missing_recipe_suggests_the_nearest() {
    assert_rejected(
        "missing_recipe",
        Expect::file("stacks/web.yaml")
            .at(4, 13)
            .field("services.app.recipe")
            .says(&[
                "no recipe \"demo/scv\"",
                "recipes/demo/scv.yaml",
                "did you mean \"demo/svc\"?",
            ]),
    );
}

#[test]
fn recipe_path_escaping_with_dotdot() {
    assert_rejected(
        "recipe_path_escape_dotdot",
        Expect::file("stacks/web.yaml")
            .at(4, 13)
            .field("services.app.recipe")
            .says(&["\"../../etc/passwd\"", "must be a path under recipes/"]),
    );
}

#[test]
fn recipe_path_escaping_with_an_absolute_path() {
    assert_rejected(
        "recipe_path_escape_absolute",
        Expect::file("stacks/web.yaml")
            .at(4, 13)
            .field("services.app.recipe")
            .says(&["\"/etc/passwd\"", "must be a path under recipes/"]),
    );
}

#[test]
fn stack_name_not_matching_file_name() {
    assert_rejected(
        "stack_name_mismatch",
        Expect::file("stacks/web.yaml")
            .at(1, 7)
            .field("name")
            .says(&["\"webapp\" must match the file name \"web\""]),
    );
}

#[test]
fn bad_stack_file_name() {
    assert_rejected(
        "bad_stack_file_name",
        Expect::file("stacks/Web App.yaml").says(&["stack file name"]),
    );
}

#[test]
fn bad_service_name() {
    assert_rejected(
        "bad_service_name",
        Expect::file("stacks/web.yaml")
            .at(4, 13)
            .field("services.App")
            .says(&["\"App\""]),
    );
}

// ---------------------------------------------------------------------------------------------
// stackctl.yaml and the repo layout.

#[test]
fn no_owner_and_no_git_remote() {
    assert_rejected(
        "no_owner",
        Expect::file("stackctl.yaml").says(&["no owner"]),
    );
}

#[test]
fn no_config_file_and_no_git_remote() {
    let sandbox = Sandbox::new("valid_control");
    std::fs::remove_file(sandbox.repo.join("stackctl.yaml")).expect("remove stackctl.yaml");
    assert_rejected_in(
        &sandbox,
        "no_config_file",
        Expect::file("stackctl.yaml").says(&["no owner"]),
    );
}

#[test]
fn bad_owner() {
    assert_rejected(
        "bad_owner",
        Expect::file("stackctl.yaml")
            .at(1, 8)
            .field("owner")
            .says(&["\"bad input test\""]),
    );
}

#[test]
fn unknown_backend() {
    assert_rejected(
        "unknown_backend",
        Expect::file("stackctl.yaml")
            .at(3, 12)
            .field("cluster.backend")
            .says(&["\"slurmrestd\""]),
    );
}

#[test]
fn unknown_accounting() {
    assert_rejected(
        "unknown_accounting",
        Expect::file("stackctl.yaml")
            .at(3, 15)
            .field("cluster.accounting")
            .says(&["\"sometimes\"", "\"auto\" or \"off\""]),
    );
}

#[test]
fn missing_stacks_dir() {
    assert_rejected(
        "missing_stacks_dir",
        Expect::file("stacks").says(&["a missing one is an error"]),
    );
}

// ---------------------------------------------------------------------------------------------
// Hostile files: encoding, size, alias bombs.

#[test]
fn non_utf8_recipe() {
    assert_rejected(
        "non_utf8",
        Expect::file("recipes/demo/svc.yaml")
            .at(3, 17)
            .says(&["not valid UTF-8"]),
    );
}

#[test]
fn non_utf8_stack() {
    assert_rejected(
        "non_utf8_stack",
        Expect::file("stacks/web.yaml")
            .at(6, 19)
            .says(&["not valid UTF-8"]),
    );
}

#[test]
fn ten_megabyte_file() {
    // Valid YAML padded with comments to 10 MiB: only the size limit can refuse it.
    let sandbox = Sandbox::new("valid_control");
    let path = sandbox.repo.join("stacks/web.yaml");
    let mut text = std::fs::read_to_string(&path).expect("read stack");
    let pad = format!("# {}\n", "x".repeat(97));
    while text.len() < 10 * 1024 * 1024 {
        text.push_str(&pad);
    }
    std::fs::write(&path, text).expect("write 10 MB stack");
    let slowest = assert_rejected_in(
        &sandbox,
        "huge_file",
        Expect::file("stacks/web.yaml").says(&["larger than the 1024 KiB limit"]),
    );
    // Refused by its size before it is parsed: a parse of 10 MiB would take minutes in a debug
    // build; the margin holds on a loaded 2-core machine.
    assert!(
        slowest < Duration::from_secs(30),
        "a 10 MB file took {slowest:?}"
    );
}

/// The most an alias bomb may cost one command: a debug build is several times slower.
fn bomb_time_limit() -> Duration {
    if cfg!(debug_assertions) {
        Duration::from_secs(10)
    } else {
        Duration::from_secs(2)
    }
}

#[test]
fn alias_bomb_stopped_by_the_parser_budget() {
    // Every node is schema-valid (environment maps built by merging 10 copies of the previous
    // one, 9 levels deep), so only the parser's budget can stop the expansion.
    let sandbox = Sandbox::new("alias_bomb");
    let slowest = assert_rejected_in(
        &sandbox,
        "alias_bomb",
        Expect::file("stacks/web.yaml")
            .at(14, 68)
            .says(&["alias bomb"]),
    );
    assert!(
        slowest < bomb_time_limit(),
        "an alias bomb took {slowest:?}"
    );
}

#[test]
fn alias_bomb_classic_billion_laughs() {
    // The classic form under `environment`: stopped at the first list where a scalar belongs.
    let sandbox = Sandbox::new("alias_bomb_classic");
    let slowest = assert_rejected_in(
        &sandbox,
        "alias_bomb_classic",
        Expect::file("stacks/web.yaml").at(7, 15),
    );
    assert!(
        slowest < bomb_time_limit(),
        "an alias bomb took {slowest:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Regression tests for holes found while writing this corpus.

#[test]
fn same_stack_as_yaml_and_yml() {
    let sandbox = Sandbox::new("valid_control");
    std::fs::write(
        sandbox.repo.join("stacks/web.yml"),
        "name: web\nservices:\n  app:\n    recipe: demo/svc\n    replicas: 7\n",
    )
    .expect("write stacks/web.yml");
    assert_rejected_in(
        &sandbox,
        "stack_yaml_and_yml",
        Expect::file("stacks/web.yml"),
    );
}

#[test]
fn same_recipe_as_yaml_and_yml() {
    let sandbox = Sandbox::new("valid_control");
    std::fs::write(
        sandbox.repo.join("recipes/demo/svc.yml"),
        "name: svc\ncommand: echo not the recipe you reviewed\n",
    )
    .expect("write recipes/demo/svc.yml");
    assert_rejected_in(
        &sandbox,
        "recipe_yaml_and_yml",
        Expect::file("recipes/demo/svc.yml"),
    );
}

#[cfg(unix)]
#[test]
fn recipe_symlink_escaping_the_repo() {
    let sandbox = Sandbox::new("valid_control");
    let outside = sandbox.tmp.path().join("outside.yaml");
    std::fs::write(&outside, "name: svc\ncommand: echo from outside the repo\n")
        .expect("write outside recipe");
    let link = sandbox.repo.join("recipes/demo/svc.yaml");
    std::fs::remove_file(&link).expect("remove recipe");
    std::os::unix::fs::symlink(&outside, &link).expect("symlink recipe");
    assert_rejected_in(
        &sandbox,
        "recipe_symlink_escape",
        Expect::file("recipes/demo/svc.yaml"),
    );
}

// ---------------------------------------------------------------------------------------------
// No silent input: the stacks/ listing.

/// A stack moved into a subdirectory would no longer be read, and its services destroyed.
#[test]
fn stack_in_a_subdirectory() {
    assert_rejected(
        "stack_in_subdirectory",
        Expect::file("stacks/team").says(&["is a directory", "does not read subdirectories"]),
    );
}

#[test]
fn stack_with_another_extension() {
    assert_rejected(
        "stack_other_extension",
        Expect::file("stacks/web.yaml.bak").says(&["is not a stack file"]),
    );
}

/// Runs `validate` on a sandbox that must pass, returning its stdout.
fn assert_valid(sandbox: &Sandbox) -> String {
    let output = sandbox
        .stackctl(&["validate"])
        .output()
        .expect("run stackctl");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stdout}{stderr}");
    stdout
}

#[test]
fn hidden_files_are_ignored_in_stacks_and_recipes() {
    let sandbox = Sandbox::new("valid_control");
    // Each would be an error if it were read.
    for (path, text) in [
        ("stacks/.gitkeep", ""),
        ("stacks/.web.yaml.swp", "\0\u{1}binary swap file"),
        ("stacks/.hidden.yaml", "services: [not, a, stack]\n"),
        ("recipes/.broken.yaml", "name: [\n"),
        ("recipes/demo/.svc.yaml.swp", "\0\u{1}"),
        ("recipes/.cache/x.yaml", "not: a recipe\n"),
    ] {
        let path = sandbox.repo.join(path);
        std::fs::create_dir_all(path.parent().unwrap()).expect("create dir");
        std::fs::write(path, text).expect("write hidden file");
    }
    let stdout = assert_valid(&sandbox);
    assert!(stdout.contains("1 services, 2 replicas"), "{stdout}");
    // The same swap file without its leading dot is refused, so the above is no accident.
    std::fs::write(sandbox.repo.join("stacks/web.yaml.swp"), "x").expect("write");
    assert_rejected_in(
        &sandbox,
        "unhidden_swap_file",
        Expect::file("stacks/web.yaml.swp").says(&["is not a stack file"]),
    );
}

/// Asserts `validate` refuses the sandbox, names each of `links` as a symlink loop exactly
/// once, and says "symlink loop" nowhere else.
#[cfg(unix)]
fn assert_loops_reported_once(sandbox: &Sandbox, case: &str, links: &[&'static str]) {
    let started = Instant::now();
    let output = sandbox
        .stackctl(&["validate"])
        .output()
        .expect("run stackctl");
    // A loop followed without end would never return; the margin holds on a loaded machine.
    assert!(started.elapsed() < Duration::from_secs(60));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{case}: {stderr}");
    for link in links {
        let named = format!("{link}: is a symlink loop");
        assert_eq!(
            stderr.matches(&named).count(),
            1,
            "{case}: {named:?} in {stderr}"
        );
    }
    assert_eq!(
        stderr.matches("symlink loop").count(),
        links.len(),
        "{case}: {stderr}"
    );
    for link in links {
        assert_rejected_in(
            sandbox,
            case,
            Expect::file(link).says(&["is a symlink loop"]),
        );
    }
}

#[cfg(unix)]
#[test]
fn symlink_loop_in_stacks() {
    let sandbox = Sandbox::new("valid_control");
    std::os::unix::fs::symlink(".", sandbox.repo.join("stacks/loop")).expect("symlink");
    assert_loops_reported_once(&sandbox, "stacks_loop", &["stacks/loop"]);
}

#[cfg(unix)]
#[test]
fn symlink_loop_in_recipes() {
    let sandbox = Sandbox::new("valid_control");
    std::os::unix::fs::symlink("..", sandbox.repo.join("recipes/demo/loop")).expect("symlink");
    assert_loops_reported_once(&sandbox, "recipes_loop", &["recipes/demo/loop"]);
}

#[cfg(unix)]
#[test]
fn symlink_loop_through_two_directories() {
    // a/to_c -> c and c/to_a -> a: neither alone leads to its own parent.
    let sandbox = Sandbox::new("valid_control");
    let recipes = sandbox.repo.join("recipes");
    std::fs::create_dir_all(recipes.join("a")).expect("mkdir");
    std::fs::create_dir_all(recipes.join("c")).expect("mkdir");
    std::os::unix::fs::symlink("../c", recipes.join("a/to_c")).expect("symlink");
    std::os::unix::fs::symlink("../a", recipes.join("c/to_a")).expect("symlink");
    assert_loops_reported_once(
        &sandbox,
        "two_dir_loop",
        &["recipes/a/to_c", "recipes/c/to_a"],
    );
}

#[cfg(unix)]
#[test]
fn symlinks_pointing_at_each_other() {
    let sandbox = Sandbox::new("valid_control");
    std::os::unix::fs::symlink("b.yaml", sandbox.repo.join("stacks/a.yaml")).expect("symlink");
    std::os::unix::fs::symlink("a.yaml", sandbox.repo.join("stacks/b.yaml")).expect("symlink");
    assert_loops_reported_once(&sandbox, "link_pair", &["stacks/a.yaml", "stacks/b.yaml"]);
}

#[cfg(unix)]
#[test]
fn stack_symlink_escaping_the_repo_still_leads_outside() {
    let sandbox = Sandbox::new("valid_control");
    let outside = sandbox.tmp.path().join("elsewhere");
    std::fs::create_dir(&outside).expect("mkdir");
    std::os::unix::fs::symlink(&outside, sandbox.repo.join("stacks/team")).expect("symlink");
    assert_rejected_in(
        &sandbox,
        "stack_dir_link_outside",
        Expect::file("stacks/team").says(&["is a link that leads outside stacks/"]),
    );
}

// ---------------------------------------------------------------------------------------------
// No silent input: values.

#[test]
fn gpu_type_without_gpu_in_a_recipe() {
    assert_rejected(
        "gpu_type_without_gpu_recipe",
        Expect::file("recipes/demo/svc.yaml")
            .at(5, 13)
            .field("resources.gpu_type")
            .says(&["a GPU type needs GPUs"]),
    );
}

#[test]
fn gpu_type_without_gpu_in_a_stack() {
    assert_rejected(
        "gpu_type_without_gpu_stack",
        Expect::file("stacks/web.yaml")
            .at(5, 35)
            .field("services.app.resources.gpu_type")
            .says(&["a GPU type needs GPUs", "asks for none (recipe"]),
    );
}

#[test]
fn gpu_zero_on_a_gpu_recipe_drops_its_type() {
    let sandbox = Sandbox::new("gpu_type_without_gpu_stack");
    let stack = sandbox.repo.join("stacks/web.yaml");
    let render = |stack_resources: &str| {
        let text = format!(
            "name: web\nservices:\n  app:\n    recipe: demo/svc\n    resources: {stack_resources}\n"
        );
        std::fs::write(&stack, text).expect("write");
        assert_valid(&sandbox);
        let output = sandbox
            .stackctl(&["render", "web/app"])
            .output()
            .expect("run stackctl");
        assert_eq!(output.status.code(), Some(0));
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    let with_gpu = render("{}");
    assert!(with_gpu.contains("--gres=gpu:a100:1"), "{with_gpu}");
    let without = render("{gpu: 0}");
    assert!(
        !without.contains("--gres") && !without.contains("a100"),
        "{without}"
    );
}

#[test]
fn duplicate_port_in_a_recipe() {
    assert_rejected(
        "duplicate_port",
        Expect::file("recipes/demo/svc.yaml")
            .at(6, 5)
            .field("ports[2]")
            .says(&["port 8080 is already listed"]),
    );
}

#[test]
fn duplicate_port_in_a_stack_override() {
    assert_rejected(
        "duplicate_port_stack",
        Expect::file("stacks/web.yaml")
            .at(5, 25)
            .field("services.app.ports[2]")
            .says(&["port 8000 is already listed"]),
    );
}

#[test]
fn port_out_of_range_in_a_stack_override() {
    assert_rejected(
        "port_out_of_range_stack",
        Expect::file("stacks/web.yaml")
            .at(6, 9)
            .field("services.app.ports[0]")
            .says(&["got 0"]),
    );
}

#[test]
fn stack_ports_replace_the_recipes() {
    let sandbox = Sandbox::new("duplicate_port_stack");
    let stack = sandbox.repo.join("stacks/web.yaml");
    std::fs::write(
        &stack,
        "name: web\nservices:\n  app:\n    recipe: demo/svc\n    ports: [9000, 9001]\n",
    )
    .expect("write");
    std::fs::write(
        sandbox.repo.join("recipes/demo/svc.yaml"),
        "name: svc\ncommand: sleep infinity\nports: [8080]\n",
    )
    .expect("write");
    assert_valid(&sandbox);
    let output = sandbox
        .stackctl(&["render", "web/app"])
        .output()
        .expect("run stackctl");
    let script = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(0), "{script}");
    assert!(
        script.contains("9000") && script.contains("9001"),
        "{script}"
    );
    assert!(!script.contains("8080"), "{script}");
}

#[test]
fn recipe_name_not_matching_file_name() {
    assert_rejected(
        "recipe_name_mismatch",
        Expect::file("recipes/storage/redis.yaml")
            .at(1, 7)
            .field("name")
            .says(&["\"redis-cache\" must match the file name \"redis\""]),
    );
}

#[test]
fn environment_key_set_by_stackctl() {
    assert_rejected(
        "reserved_env_stackctl",
        Expect::file("stacks/web.yaml")
            .at(6, 25)
            .field("services.app.environment.STACKCTL_REPLICA")
            .says(&["stackctl sets the `STACKCTL_*` variables"]),
    );
}

#[test]
fn environment_key_set_by_slurm() {
    assert_rejected(
        "reserved_env_slurm",
        Expect::file("recipes/demo/svc.yaml")
            .at(5, 19)
            .field("environment.SLURM_CPU_BIND")
            .says(&["Slurm sets the `SLURM_*` variables"]),
    );
}

#[test]
fn environment_value_with_a_type_tag() {
    assert_rejected(
        "tagged_env_value",
        Expect::file("stacks/web.yaml")
            .at(6, 20)
            .field("services.app.environment.UMASK")
            .says(&["tagged value"]),
    );
}

#[test]
fn replicas_quoted() {
    assert_rejected(
        "replicas_quoted",
        Expect::file("stacks/web.yaml")
            .at(5, 15)
            .field("services.app.replicas")
            .says(&["must be an integer", "the string \"3\""]),
    );
}

#[test]
fn replicas_with_a_decimal_point() {
    assert_rejected(
        "replicas_float",
        Expect::file("stacks/web.yaml")
            .at(5, 15)
            .field("services.app.replicas")
            .says(&["must be an integer", "decimal number"]),
    );
}

#[test]
fn replicas_yes() {
    assert_rejected(
        "replicas_bool",
        Expect::file("stacks/web.yaml")
            .at(5, 15)
            .field("services.app.replicas")
            .says(&["must be an integer", "boolean"]),
    );
}

#[test]
fn gpu_count_quoted() {
    assert_rejected(
        "gpu_quoted",
        Expect::file("recipes/demo/svc.yaml")
            .at(3, 18)
            .field("resources.gpu")
            .says(&["must be an integer", "the string \"2\""]),
    );
}

#[test]
fn empty_stack_file() {
    assert_rejected(
        "empty_stack",
        Expect::file("stacks/web.yaml").says(&["the file is empty", "`services: {}`"]),
    );
}

#[test]
fn zero_byte_stack_file() {
    let sandbox = Sandbox::new("valid_control");
    std::fs::write(sandbox.repo.join("stacks/web.yaml"), "").expect("truncate");
    assert_rejected_in(
        &sandbox,
        "zero_byte_stack",
        Expect::file("stacks/web.yaml").says(&["the file is empty", "`services: {}`"]),
    );
}

#[test]
fn stack_without_services() {
    assert_rejected(
        "stack_without_services",
        Expect::file("stacks/web.yaml")
            .at(1, 1)
            .says(&["missing field `services`", "`services: {}`"]),
    );
}

#[test]
fn bad_partition_list() {
    assert_rejected(
        "bad_partition_list",
        Expect::file("stacks/web.yaml")
            .at(5, 24)
            .field("services.app.slurm.partition")
            .says(&["\"gpu,,debug\""]),
    );
}

#[test]
fn partition_lists_are_valid() {
    let sandbox = Sandbox::new("bad_partition_list");
    let stack = sandbox.repo.join("stacks/web.yaml");
    let text = std::fs::read_to_string(&stack).expect("read");
    std::fs::write(&stack, text.replace("gpu,,debug", "gpu,debug")).expect("write");
    assert_valid(&sandbox);
    let output = sandbox
        .stackctl(&["render", "web/app"])
        .output()
        .expect("run stackctl");
    let script = String::from_utf8_lossy(&output.stdout);
    assert!(script.contains("#SBATCH --partition=gpu,debug"), "{script}");
}

// ---------------------------------------------------------------------------------------------
// stackctl.yaml: lock settings and owners derived from the remote.

#[test]
fn lock_expiry_too_short() {
    assert_rejected(
        "lock_expiry_too_short",
        Expect::file("stackctl.yaml")
            .at(4, 11)
            .field("lock.expiry")
            .says(&["at least 10s"]),
    );
}

#[test]
fn unknown_key_in_lock() {
    assert_rejected(
        "lock_unknown_key",
        Expect::file("stackctl.yaml")
            .at(5, 3)
            .field("lock.timeout")
            .says(&["unknown field `timeout`"]),
    );
}

#[test]
fn bad_lock_partition() {
    assert_rejected(
        "bad_lock_partition",
        Expect::file("stackctl.yaml")
            .at(3, 19)
            .field("lock.partition")
            .says(&["\"gpu debug\""]),
    );
}

/// Makes the sandbox's repo a git checkout with `url` as its `origin` remote.
fn add_git_remote(sandbox: &Sandbox, url: &str) {
    for args in [&["init", "-q"][..], &["remote", "add", "origin", url][..]] {
        let status = std::process::Command::new("git")
            .arg("-C")
            .arg(&sandbox.repo)
            .args(args)
            .env("GIT_CEILING_DIRECTORIES", sandbox.tmp.path())
            .status()
            .expect("run git");
        assert!(status.success(), "git {args:?}");
    }
}

#[test]
fn owner_from_a_remote_with_a_space_in_its_path() {
    let sandbox = Sandbox::new("no_owner");
    add_git_remote(&sandbox, "/srv/git/my repo.git");
    assert_rejected_in(
        &sandbox,
        "owner_remote_with_space",
        Expect::file("stackctl.yaml")
            .says(&["\"srv/git/my repo\"", "set `owner:` in stackctl.yaml"]),
    );
}

#[test]
fn owner_from_a_remote_includes_its_host() {
    let sandbox = Sandbox::new("no_owner");
    add_git_remote(&sandbox, "git@gitlab.a.example:team/infra.git");
    let stdout = assert_valid(&sandbox);
    assert!(
        stdout.contains("owner \"gitlab.a.example/team/infra\""),
        "{stdout}"
    );
}

/// clap exits 2 on usage errors by default, which `plan --detailed-exitcode` reserves for
/// "changes planned": a CI job with a typo in its flags must fail, not report changes.
#[test]
fn usage_errors_exit_1_not_2() {
    let output = assert_cmd::Command::cargo_bin("stackctl")
        .unwrap()
        .args(["plan", "--detailed-exitcod"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("--detailed-exitcode"));
}

/// The exit codes are documented where a user looks: `--help` and the man page list each one.
#[test]
fn help_and_man_page_list_every_exit_code() {
    for args in [&["--help"][..], &["man"]] {
        let output = Command::cargo_bin("stackctl")
            .unwrap()
            .args(args)
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(0), "{args:?}");
        let text = String::from_utf8_lossy(&output.stdout);
        for (code, meaning) in [
            (0, "success"),
            (1, "invalid repo"),
            (2, "the plan has changes"),
            (3, "refused by a safety rule"),
            (4, "another apply holds the lock"),
            (5, "Slurm unreachable"),
            (6, "apply incomplete"),
            (7, "saved plan stale"),
            (130, "interrupted"),
        ] {
            assert!(
                text.lines().any(|l| {
                    let l = l.trim_start();
                    l.starts_with(&format!("{code} ")) && l.contains(meaning)
                }),
                "{args:?}: exit code {code} ({meaning}) in:\n{text}"
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Health checks and named / `auto` ports
// ---------------------------------------------------------------------------------------------

#[test]
fn health_unknown_key() {
    assert_rejected(
        "health_unknown_key",
        Expect::file("recipes/demo/svc.yaml")
            .at(6, 3)
            .field("health.intervall")
            .says(&["unknown field `intervall`"]),
    );
}

#[test]
fn health_with_two_probe_kinds() {
    assert_rejected(
        "health_two_probes",
        Expect::file("recipes/demo/svc.yaml")
            .at(6, 8)
            .field("health")
            .says(&["exactly one of `http`, `tcp` or `command`, got 2"]),
    );
}

#[test]
fn health_zero_interval() {
    assert_rejected(
        "health_zero_interval",
        Expect::file("recipes/demo/svc.yaml")
            .at(6, 13)
            .field("health.interval")
            .says(&["must be between 1s and 1d, got 0s"]),
    );
}

#[test]
fn health_bad_duration() {
    assert_rejected(
        "health_bad_duration",
        Expect::file("recipes/demo/svc.yaml")
            .at(6, 12)
            .field("health.timeout")
            .says(&["\"2 seconds\" is not a duration"]),
    );
}

#[test]
fn health_zero_failure_threshold_in_a_stack() {
    assert_rejected(
        "health_zero_threshold_stack",
        Expect::file("stacks/web.yaml")
            .at(7, 26)
            .field("services.app.health.failure_threshold")
            .says(&["must be between 1 and 1000, got 0"]),
    );
}

#[test]
fn health_unknown_port_name() {
    assert_rejected(
        "health_unknown_port_name",
        Expect::file("recipes/demo/svc.yaml")
            .at(5, 16)
            .field("health.http.port")
            .says(&["no port named \"htp\"; named ports: http"]),
    );
}

#[test]
fn health_port_number_not_declared() {
    // `port: 2` is a port number, not a position in `ports`.
    assert_rejected(
        "health_port_out_of_range",
        Expect::file("recipes/demo/svc.yaml")
            .at(5, 15)
            .field("health.tcp.port")
            .says(&["port 2 is not one of the service's ports (auto, 9100)"]),
    );
}

/// The stack probes a port number its recipe does not declare; the message lists the ports
/// with their names.
#[test]
fn health_port_number_not_declared_in_a_stack() {
    assert_rejected(
        "health_port_number_stack",
        Expect::file("stacks/web.yaml")
            .at(6, 20)
            .field("services.app.health.http.port")
            .says(&["port 8080 is not one of the service's ports (http=8000, metrics=auto)"]),
    );
}

/// The recipe's health check names a port that the stack's own `ports:` no longer has.
#[test]
fn health_port_gone_after_a_stack_override() {
    assert_rejected(
        "health_port_gone_in_stack",
        Expect::file("recipes/demo/svc.yaml")
            .at(5, 16)
            .field("health.http.port")
            .says(&[
                "no port named \"http\"",
                "the ports are declared at stacks/web.yaml:5:12",
            ]),
    );
}

#[test]
fn duplicate_port_names() {
    assert_rejected(
        "port_name_duplicate",
        Expect::file("recipes/demo/svc.yaml")
            .at(5, 5)
            .field("ports[1].name")
            .says(&["port name \"http\" is already used (by ports[0])"]),
    );
}

#[test]
fn invalid_port_name() {
    assert_rejected(
        "port_name_invalid",
        Expect::file("recipes/demo/svc.yaml")
            .at(4, 5)
            .field("ports[0].name")
            .says(&["port name \"Http\" must be"]),
    );
}

#[test]
fn named_port_zero() {
    assert_rejected(
        "port_zero",
        Expect::file("recipes/demo/svc.yaml")
            .at(4, 5)
            .field("ports[0].port")
            .says(&["must be between 1 and 65535, got 0", "write `auto`"]),
    );
}

#[test]
fn restart_bad_backoff() {
    assert_rejected(
        "restart_bad_backoff",
        Expect::file("recipes/demo/svc.yaml")
            .at(4, 12)
            .field("restart.backoff")
            .says(&["\"10 seconds\" is not a duration"]),
    );
}

#[test]
fn restart_max_backoff_below_backoff_in_a_stack() {
    assert_rejected(
        "restart_max_below_backoff_stack",
        Expect::file("stacks/web.yaml")
            .at(6, 20)
            .field("services.app.restart.max_backoff")
            .says(&["max_backoff (5s) must be at least backoff (10s)"]),
    );
}

#[test]
fn restart_bad_max_attempts() {
    assert_rejected(
        "restart_bad_max_attempts",
        Expect::file("recipes/demo/svc.yaml")
            .at(4, 17)
            .field("restart.max_attempts")
            .says(&["must be an integer or `none`, got the string \"never\""]),
    );
}

#[test]
fn update_unknown_key() {
    assert_rejected(
        "update_unknown_key",
        Expect::file("recipes/demo/svc.yaml")
            .at(5, 3)
            .field("update.max_surges")
            .says(&["unknown field `max_surges`"]),
    );
}

/// A rollout that may neither add a successor nor remove a replica could never move; the error
/// points at the stack's line, which completes the pair.
#[test]
fn update_surge_and_unavailable_both_zero_in_a_stack() {
    assert_rejected(
        "update_surge_and_unavailable_zero_stack",
        Expect::file("stacks/web.yaml")
            .at(7, 24)
            .field("services.app.update.max_unavailable")
            .says(&["max_surge and max_unavailable cannot both be 0"]),
    );
}

#[test]
fn update_bad_duration() {
    assert_rejected(
        "update_bad_duration",
        Expect::file("recipes/demo/svc.yaml")
            .at(4, 18)
            .field("update.queue_timeout")
            .says(&["\"15 minutes\" is not a duration"]),
    );
}

#[test]
fn renew_before_not_below_the_time_limit() {
    assert_rejected(
        "renew_before_not_below_time_limit",
        Expect::file("stacks/web.yaml")
            .at(5, 19)
            .field("services.app.renew_before")
            .says(&["renew_before (300s) must be shorter than the time limit (3m)"]),
    );
}

// ---------------------------------------------------------------------------------------------
// endpoint_env: another service's endpoint as an environment value.

#[test]
fn endpoint_env_naming_a_service_the_repo_lacks() {
    assert_rejected(
        "endpoint_env_unknown_service",
        Expect::file("stacks/web.yaml")
            .at(6, 25)
            .field("services.app.endpoint_env.TARGET.service")
            .says(&["no service cache/redis in the repo"]),
    );
}

#[test]
fn endpoint_env_format_with_an_unknown_placeholder() {
    assert_rejected(
        "endpoint_env_bad_format",
        Expect::file("stacks/web.yaml")
            .at(9, 41)
            .field("services.app.endpoint_env.TARGET.format")
            .says(&["may only use the placeholders {host} and {port}"]),
    );
}

#[test]
fn endpoint_env_referring_to_its_own_service() {
    assert_rejected(
        "endpoint_env_self",
        Expect::file("stacks/web.yaml")
            .at(7, 25)
            .field("services.app.endpoint_env.TARGET.service")
            .says(&["cannot refer to its own endpoint"]),
    );
}

#[test]
fn endpoint_env_also_set_in_environment() {
    assert_rejected(
        "endpoint_env_also_in_environment",
        Expect::file("stacks/web.yaml")
            .at(10, 15)
            .field("services.app.endpoint_env.TARGET")
            .says(&["TARGET is set in `environment` too"]),
    );
}

#[test]
fn on_endpoint_move_is_replace_or_keep() {
    assert_rejected(
        "on_endpoint_move_bad_value",
        Expect::file("stacks/web.yaml")
            .at(10, 23)
            .field("services.app.on_endpoint_move")
            .says(&["\"restart\" is neither `replace` nor `keep`"]),
    );
}

#[test]
fn on_endpoint_move_without_endpoint_env() {
    assert_rejected(
        "on_endpoint_move_without_endpoint_env",
        Expect::file("stacks/web.yaml")
            .at(9, 23)
            .field("services.app.on_endpoint_move")
            .says(&["applies only to a service with `endpoint_env`"]),
    );
}

#[test]
fn endpoint_env_naming_a_port_the_service_lacks() {
    assert_rejected(
        "endpoint_env_unknown_port",
        Expect::file("stacks/web.yaml")
            .at(9, 39)
            .field("services.app.endpoint_env.TARGET.port")
            .says(&["web/db has no port named \"metrics\""]),
    );
}

/// `endpoint_env` names ports; a number gets the syntax that names it.
#[test]
fn endpoint_env_giving_a_port_number() {
    assert_rejected(
        "endpoint_env_port_number",
        Expect::file("stacks/web.yaml")
            .at(9, 39)
            .field("services.app.endpoint_env.TARGET.port")
            .says(&["give port 5432 a name", "`{name: http, port: 5432}`"]),
    );
}

#[test]
fn endpoint_env_entry_with_an_unknown_key() {
    assert_rejected(
        "endpoint_env_unknown_key",
        Expect::file("stacks/web.yaml")
            .at(9, 33)
            .field("services.app.endpoint_env.TARGET.host")
            .says(&["unknown field `host`"]),
    );
}

#[test]
fn ssh_host_that_would_be_an_option() {
    assert_rejected(
        "ssh_host_option",
        Expect::file("stackctl.yaml")
            .at(5, 11)
            .field("cluster.ssh.host")
            .says(&["\"-oProxyCommand=sh\" is not a host name"]),
    );
}

#[test]
fn ssh_port_out_of_range() {
    assert_rejected(
        "ssh_bad_port",
        Expect::file("stackctl.yaml")
            .at(6, 11)
            .field("cluster.ssh.port")
            .says(&["70000 is not a TCP port"]),
    );
}

#[test]
fn ssh_unknown_key() {
    assert_rejected(
        "ssh_unknown_key",
        Expect::file("stackctl.yaml").at(6, 5).says(&["identity"]),
    );
}

// ---------------------------------------------------------------------------------------------
// depends_on: services started (or ready) before this one.

#[test]
fn depends_on_naming_a_service_the_repo_lacks() {
    assert_rejected(
        "depends_on_unknown_service",
        Expect::file("stacks/web.yaml")
            .at(5, 18)
            .field("services.app.depends_on[0]")
            .says(&["no service web/db in the repo"]),
    );
}

#[test]
fn depends_on_its_own_service() {
    assert_rejected(
        "depends_on_self",
        Expect::file("stacks/web.yaml")
            .at(7, 9)
            .field("services.app.depends_on[1]")
            .says(&["a service cannot depend on itself"]),
    );
}

#[test]
fn depends_on_cycle_names_the_cycle() {
    assert_rejected(
        "depends_on_cycle",
        Expect::file("stacks/a.yaml")
            .at(5, 18)
            .field("services.db.depends_on[0]")
            .says(&["dependency cycle: a/db -> a/web -> a/db"]),
    );
}

#[test]
fn depends_on_with_an_unknown_condition() {
    assert_rejected(
        "depends_on_bad_condition",
        Expect::file("stacks/web.yaml")
            .at(6, 9)
            .field("services.app.depends_on[0].condition")
            .says(&["condition \"healthy\" must be `started` or `ready`"]),
    );
}

// ---------------------------------------------------------------------------------------------
// Keys written without a value: an error, never the default.

#[test]
fn replicas_without_a_value() {
    assert_rejected(
        "replicas_null",
        Expect::file("stacks/web.yaml")
            .at(5, 13)
            .field("services.app.replicas")
            .says(&["must be an integer, got no value"]),
    );
}

#[test]
fn time_limit_tilde_in_a_recipe() {
    assert_rejected(
        "null_time_limit_recipe",
        Expect::file("recipes/demo/svc.yaml")
            .at(5, 15)
            .field("resources.time_limit")
            .says(&["no value"]),
    );
}

#[test]
fn protect_null() {
    assert_rejected(
        "null_protect",
        Expect::file("stacks/web.yaml")
            .at(5, 14)
            .field("services.db.protect")
            .says(&["expected `true` or `false`"]),
    );
}

#[test]
fn time_limit_in_no_slurm_format() {
    assert_rejected(
        "time_limit_bad_format",
        Expect::file("stacks/web.yaml")
            .at(7, 19)
            .field("services.app.resources.time_limit")
            .says(&["\"1-2-3\" is not a time limit", "D-HH:MM:SS"]),
    );
}

/// A long owner, long names, 500 replicas and 60 ports: the comment a running replica writes
/// (marker plus readiness record) could pass Slurm's 1024 characters, so the service is
/// refused where its ports are declared, instead of its replicas never counting as ready.
#[test]
fn marker_and_readiness_record_too_long_for_a_slurm_comment() {
    assert_rejected(
        "marker_too_long",
        Expect::file("recipes/demo/svc.yaml")
            .at(3, 8)
            .field("ports")
            .says(&["Slurm allows 1024", "declare fewer ports", "60 port(s)"]),
    );
}
