//! Helpers shared by the end-to-end suites against the real Slurm test cluster: plain
//! `squeue`/`scancel` (independent of stackctl's own listing code), throwaway repos with an
//! owner of their own, and waiting. [`ssh`] and [`rest`] reach the same cluster through the
//! other two backends.
#![allow(dead_code)] // each test binary uses its own subset

pub mod rest;
pub mod ssh;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

/// The test cluster's config, unless the environment names another.
pub const DEFAULT_SLURM_CONF: &str = "/etc/stackctl-dev-slurm/slurm.conf";

pub fn slurm_conf() -> String {
    std::env::var("SLURM_CONF").unwrap_or_else(|_| DEFAULT_SLURM_CONF.to_owned())
}

/// A job as plain squeue shows it.
#[derive(Debug, Clone)]
pub struct Job {
    /// `<array>_<task>`, or the plain job id.
    pub id: String,
    pub task: Option<u32>,
    pub state: String,
    pub gres: String,
    pub name: String,
    pub comment: String,
}

impl Job {
    /// Whether the job still holds or waits for resources (STOPPED and held jobs included).
    pub fn alive(&self) -> bool {
        !matches!(
            self.state.as_str(),
            "COMPLETED"
                | "COMPLETING"
                | "CANCELLED"
                | "FAILED"
                | "TIMEOUT"
                | "NODE_FAIL"
                | "PREEMPTED"
                | "BOOT_FAIL"
                | "DEADLINE"
                | "OUT_OF_MEMORY"
        )
    }
}

/// Lists every job of this user, ended ones included, with plain squeue.
pub fn squeue() -> Vec<Job> {
    squeue_of(&["--me"])
}

/// Lists every job of `user`, ended ones included, with plain squeue (read-only).
pub fn user_jobs(user: &str) -> Vec<Job> {
    squeue_of(&["-u", user])
}

/// Plain squeue over every job `selector` picks (`--me`, `-u USER`), array tasks one a line.
fn squeue_of(selector: &[&str]) -> Vec<Job> {
    let output = Command::new("squeue")
        .env("SLURM_CONF", slurm_conf())
        .args(selector)
        .args(["-h", "-r", "-t", "all", "-o", "%F|%K|%T|%b|%j|%k"])
        .output()
        .expect("squeue runs");
    assert!(
        output.status.success(),
        "squeue failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(|line| {
            let f: Vec<&str> = line.splitn(6, '|').collect();
            let task = f[1].parse().ok();
            Job {
                id: task.map_or(f[0].to_owned(), |t: u32| format!("{}_{t}", f[0])),
                task,
                state: f[2].to_owned(),
                gres: f[3].to_owned(),
                name: f[4].to_owned(),
                comment: f[5].to_owned(),
            }
        })
        .collect()
}

pub fn scancel(ids: &[String]) {
    if ids.is_empty() {
        return;
    }
    let _ = Command::new("scancel")
        .env("SLURM_CONF", slurm_conf())
        .args(ids)
        .output();
}

/// Submits a job outside stackctl (a "foreign" job) and returns its id.
pub fn sbatch_foreign(args: &[&str]) -> String {
    let output = Command::new("sbatch")
        .env("SLURM_CONF", slurm_conf())
        .args(["--parsable", "--time=10", "--mem=64M", "--output=/dev/null"])
        .args(args)
        .args(["--wrap", "sleep 600"])
        .output()
        .expect("sbatch runs");
    assert!(
        output.status.success(),
        "sbatch failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap().trim().to_owned()
}

/// A throwaway repo with its own owner; cancels that owner's jobs (by id) when dropped.
pub struct TestRepo {
    pub dir: tempfile::TempDir,
    pub owner: String,
    /// Extra job ids (foreign jobs) to cancel on drop.
    pub extra: std::cell::RefCell<Vec<String>>,
}

pub const RECIPES: &[(&str, &str)] = &[
    (
        "test/sleeper",
        "name: sleeper\ncommand: exec sleep 600\nresources: {cpu: 1, memory: 64M, time_limit: 15}\nenvironment: {MODE: a}\nports: [7000]\n",
    ),
    (
        "test/gpu",
        "name: gpu\ncommand: exec sleep 600\nresources: {cpu: 1, memory: 64M, gpu: 1, gpu_type: a100, time_limit: 15}\n",
    ),
    (
        "test/echo",
        "name: echo\ncommand: |\n  printf '%s' \"$VALUE\"\n  exec sleep 600\nresources: {cpu: 1, memory: 64M, time_limit: 15}\n",
    ),
];

impl TestRepo {
    /// The results directory of one-shot job `stack.job` (every spec, every run) under the
    /// repo's `logs/`.
    pub fn results_dir(&self, job: &str) -> PathBuf {
        self.path().join("logs/results").join(&self.owner).join(job)
    }

    /// The run directories of `stack.job` (every spec), by job id.
    pub fn run_dirs(&self, job: &str) -> Vec<PathBuf> {
        let mut dirs = Vec::new();
        for spec in std::fs::read_dir(self.results_dir(job))
            .into_iter()
            .flatten()
            .flatten()
        {
            for run in std::fs::read_dir(spec.path())
                .into_iter()
                .flatten()
                .flatten()
            {
                dirs.push(run.path());
            }
        }
        dirs.sort();
        dirs
    }

    /// The `run` records of `stack.job` that say how the run ended.
    pub fn ended_runs(&self, job: &str) -> Vec<String> {
        self.run_dirs(job)
            .iter()
            .filter_map(|d| std::fs::read_to_string(d.join("run")).ok())
            .filter(|text| text.contains("\nexit="))
            .collect()
    }

    pub fn new(name: &str) -> TestRepo {
        require_cluster();
        let dir = tempfile::tempdir().unwrap();
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let owner = format!("e2e-{name}-{}-{nanos}", std::process::id());
        std::fs::write(
            dir.path().join("stackctl.yaml"),
            format!(
                "owner: {owner}\nlog_dir: {}\n",
                dir.path().join("logs").display()
            ),
        )
        .unwrap();
        for (path, text) in RECIPES {
            let file = dir.path().join("recipes").join(format!("{path}.yaml"));
            std::fs::create_dir_all(file.parent().unwrap()).unwrap();
            std::fs::write(file, text).unwrap();
        }
        std::fs::create_dir_all(dir.path().join("stacks")).unwrap();
        TestRepo {
            dir,
            owner,
            extra: Default::default(),
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Appends `yaml` (whole lines) to the repo's `stackctl.yaml`.
    pub fn append_settings(&self, yaml: &str) {
        let path = self.path().join("stackctl.yaml");
        let mut text = std::fs::read_to_string(&path).unwrap();
        text.push_str(yaml);
        std::fs::write(path, text).unwrap();
    }

    pub fn write_stack(&self, name: &str, yaml: &str) {
        std::fs::write(
            self.path().join("stacks").join(format!("{name}.yaml")),
            yaml,
        )
        .unwrap();
    }

    pub fn remove_stack(&self, name: &str) {
        std::fs::remove_file(self.path().join("stacks").join(format!("{name}.yaml"))).unwrap();
    }

    pub fn command(&self, args: &[&str]) -> Command {
        stackctl(self.path(), args)
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }

    /// Runs a command that must exit with `code`; returns its stdout.
    pub fn expect(&self, args: &[&str], code: i32) -> String {
        stdout_of(&self.run(args), args, code)
    }

    /// Runs a command a safety rule must refuse (exit 3); returns its stderr.
    pub fn refused(&self, args: &[&str]) -> String {
        self.fails(args, 3)
    }

    /// Runs a command that must fail with exit `code`; returns its stderr.
    pub fn fails(&self, args: &[&str], code: i32) -> String {
        let output = self.run(args);
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        assert_eq!(
            output.status.code(),
            Some(code),
            "stackctl {args:?}\nstdout:\n{}\nstderr:\n{stderr}",
            String::from_utf8_lossy(&output.stdout)
        );
        stderr
    }

    pub fn apply(&self) -> String {
        self.expect(&["apply", "--auto-approve"], 0)
    }

    pub fn assert_converged(&self) {
        let out = self.expect(&["plan", "--detailed-exitcode"], 0);
        assert!(
            out.contains("No changes. Your cluster matches the configuration."),
            "{out}"
        );
    }

    /// This owner's jobs, ended ones included.
    pub fn jobs(&self) -> Vec<Job> {
        of_owner(squeue(), &self.owner)
    }

    /// This owner's alive jobs of one service, sorted by replica index.
    pub fn alive(&self, service: &str) -> Vec<Job> {
        alive_of(self.jobs(), service)
    }

    /// The replica indexes of this owner's alive jobs of one service, sorted: an index
    /// submitted twice shows twice.
    pub fn indexes(&self, service: &str) -> Vec<u32> {
        indexes_of(&self.alive(service))
    }
}

/// The jobs among `jobs` whose marker or lock names `owner`, ended ones included.
pub fn of_owner(jobs: Vec<Job>, owner: &str) -> Vec<Job> {
    let tag = format!(";owner={owner};");
    jobs.into_iter()
        .filter(|j| j.comment.contains(&tag))
        .collect()
}

/// The alive jobs of `stack.service` among `jobs`, sorted by replica index.
pub fn alive_of(jobs: Vec<Job>, service: &str) -> Vec<Job> {
    let (stack, svc) = service.split_once('.').unwrap();
    let tag = format!(";stack={stack};svc={svc};");
    let mut alive: Vec<Job> = jobs
        .into_iter()
        .filter(|j| j.alive() && j.comment.contains(&tag))
        .collect();
    alive.sort_by_key(|j| j.task);
    alive
}

/// The replica indexes (array task ids) of `jobs`.
pub fn indexes_of(jobs: &[Job]) -> Vec<u32> {
    jobs.iter()
        .map(|j| j.task.expect("replicas are array tasks"))
        .collect()
}

impl Drop for TestRepo {
    fn drop(&mut self) {
        let mut ids: Vec<String> = self
            .jobs()
            .into_iter()
            .filter(Job::alive)
            .map(|j| j.id)
            .collect();
        ids.extend(self.extra.borrow().iter().cloned());
        scancel(&ids);
    }
}

/// `stackctl -C dir args` on the test cluster, without colour.
pub fn stackctl(dir: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_stackctl"));
    cmd.env("SLURM_CONF", slurm_conf())
        .env("NO_COLOR", "1")
        .arg("-C")
        .arg(dir)
        .args(args);
    cmd
}

/// The stdout of a finished `stackctl args`, which must have exited with `code` (else the
/// assertion shows both streams).
pub fn stdout_of(output: &Output, args: &[&str], code: i32) -> String {
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert_eq!(
        output.status.code(),
        Some(code),
        "stackctl {args:?}\nstdout:\n{stdout}\nstderr:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

/// Copies a directory tree (regular files and directories only).
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("create dir");
    for entry in std::fs::read_dir(from).expect("read dir") {
        let entry = entry.expect("dir entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("file type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy file");
        }
    }
}

pub fn require_cluster() {
    let ok = Command::new("sinfo")
        .env("SLURM_CONF", slurm_conf())
        .arg("-h")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        ok,
        "no Slurm test cluster at SLURM_CONF={}; start it with `scripts/slurm-dev-cluster up`",
        slurm_conf()
    );
}

/// The SHA-256 of `text` in hex, from coreutils' `sha256sum` (independent of stackctl's own).
pub fn sha256(text: &str) -> String {
    use std::io::Write;
    let mut child = Command::new("sha256sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    String::from_utf8_lossy(&out.stdout)[..64].to_owned()
}

/// Waits until `check` holds, or panics after `seconds`.
pub fn wait_for(what: &str, seconds: u64, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    while !check() {
        assert!(
            Instant::now() < deadline,
            "timed out after {seconds} s waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// A directory with an `sbatch` wrapper first on PATH.
pub fn wrapped_path(dir: &Path, script: &str) -> String {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let real = which("sbatch");
    let file = bin.join("sbatch");
    std::fs::write(
        &file,
        script.replace("REAL_SBATCH", &real.display().to_string()),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o755)).unwrap();
    format!("{}:{}", bin.display(), std::env::var("PATH").unwrap())
}

/// A `PATH` (see [`wrapped_path`]) whose `sbatch` waits `seconds` before each real submit;
/// the lock's placeholders and `--test-only` go through at once. Widens the window between an
/// apply's last listing and its submit, where two applies without the lock would both submit.
pub fn slow_submits(dir: &Path, seconds: u32) -> String {
    wrapped_path(
        dir,
        &format!(
            "#!/bin/sh\nscript=$(mktemp)\ncat >\"$script\"\n\
             case \"$*\" in *--test-only*) ;; *) grep -q stackctl-lock \"$script\" || sleep {seconds} ;; esac\n\
             REAL_SBATCH \"$@\" <\"$script\"\nstatus=$?\nrm -f \"$script\"\nexit $status\n"
        ),
    )
}

pub fn which(program: &str) -> PathBuf {
    let out = Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .output()
        .unwrap();
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

/// A running `stackctl watch`; killed (SIGKILL) if a test fails before stopping it.
pub struct Watch {
    child: Option<Child>,
    log: PathBuf,
    _log_dir: tempfile::TempDir,
}

impl Watch {
    pub fn start(dir: &Path, args: &[&str]) -> Watch {
        Watch::start_with_path(dir, args, &std::env::var("PATH").unwrap())
    }

    /// Starts watch with its own `PATH` (to put a wrapped sbatch first).
    pub fn start_with_path(dir: &Path, args: &[&str], path: &str) -> Watch {
        let log_dir = tempfile::tempdir().unwrap();
        let log = log_dir.path().join("watch.log");
        let child = Command::new(env!("CARGO_BIN_EXE_stackctl"))
            .env("SLURM_CONF", slurm_conf())
            .env("PATH", path)
            .env("NO_COLOR", "1")
            .arg("-C")
            .arg(dir)
            .arg("watch")
            .args(args)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("stackctl watch starts");
        Watch {
            child: Some(child),
            log,
            _log_dir: log_dir,
        }
    }

    pub fn log(&self) -> String {
        let mut text = String::new();
        std::fs::File::open(&self.log)
            .unwrap()
            .read_to_string(&mut text)
            .unwrap();
        text
    }

    pub fn wait_log(&self, what: &str, seconds: u64, needle: &str) {
        let deadline = Instant::now() + Duration::from_secs(seconds);
        while !self.log().contains(needle) {
            assert!(
                Instant::now() < deadline,
                "timed out after {seconds} s waiting for {what}; log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().unwrap().is_none())
    }

    /// Sends SIGTERM and returns the exit code.
    pub fn terminate(&mut self) -> Option<i32> {
        let mut child = self.child.take().unwrap();
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        wait_child(&mut child, 60, "watch to exit after SIGTERM").code()
    }
}

/// Waits up to `seconds` for `child` to end and returns its status; kills it and fails the
/// test, naming `what`, when it does not.
pub fn wait_child(child: &mut Child, seconds: u64, what: &str) -> ExitStatus {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("timed out after {seconds} s waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
            eprintln!("watch log:\n{}", self.log());
        }
    }
}

pub fn stack(replicas: u32) -> String {
    format!("services:\n  app:\n    recipe: test/sleeper\n    replicas: {replicas}\n")
}

/// A stack of one service `web`: `replicas` sleepers with `MODE` (a change of it replaces them).
pub fn sleepers(replicas: u32, mode: &str) -> String {
    format!(
        "services:\n  web:\n    recipe: test/sleeper\n    replicas: {replicas}\n    environment: {{MODE: {mode}}}\n"
    )
}

/// The alive lock placeholders of the repo's owner.
pub fn locks(repo: &TestRepo) -> usize {
    lock_placeholders(squeue(), &repo.owner).len()
}

/// The alive lock placeholders of `owner` among `jobs`, lowest id (the holder) first.
pub fn lock_placeholders(jobs: Vec<Job>, owner: &str) -> Vec<Job> {
    let tag = format!("stackctl-lock/v1;owner={owner};");
    let mut locks: Vec<Job> = jobs
        .into_iter()
        .filter(|j| j.alive() && j.comment.starts_with(&tag))
        .collect();
    locks.sort_by_key(|j| j.id.parse::<u64>().unwrap_or(u64::MAX));
    locks
}

/// `GET /` over HTTP/1.0 to `host:port`; returns the status line.
pub fn http_get(endpoint: &str) -> String {
    use std::io::Write;
    let mut stream =
        std::net::TcpStream::connect(endpoint).unwrap_or_else(|e| panic!("{endpoint}: {e}"));
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream
        .write_all(b"GET / HTTP/1.0\r\nHost: test\r\n\r\n")
        .unwrap();
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    response.lines().next().unwrap_or_default().to_owned()
}
