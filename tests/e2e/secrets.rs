//! End-to-end: secrets from each source (the applying machine's environment, a file on it, an
//! age file in the repo) reach the service's environment exactly, and appear in no plan (text,
//! JSON, Markdown), no debug log, not in what Slurm keeps (`scontrol write batch_script`,
//! `scontrol show job`), and in no file another user can read. Changing one secret replaces
//! exactly the replicas that use it; a secret that cannot be read stops everything. Files
//! written by `stackctl secret set` are read by Debian's `age`, and files `age -r` writes by
//! stackctl.
//!
//! The test has its own owner and cancels only its own job ids (see `common::TestRepo`).
#![cfg(feature = "cluster")]

use crate::common;

use common::*;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// The variable the `tok` secret is read from.
const TOK_VAR: &str = "STACKCTL_E2E_SECRET_TOK";

/// A service that prints the SHA-256 of each secret variable (never the values themselves),
/// then stays up.
const RECIPE: &str = "name: secrets\ncommand: |\n  for v in TOK PW KEY; do printf '%s=' \"$v\"; printenv \"$v\" | head -c -1 | sha256sum | cut -c1-64; done\n  exec sleep 600\nresources: {cpu: 1, memory: 64M, time_limit: 15}\n";

struct Setup {
    repo: TestRepo,
    identity: PathBuf,
    recipient: String,
    secrets_dir: PathBuf,
}

/// `age-keygen` into `path`; returns the public key.
fn keygen(path: &Path) -> String {
    let out = Command::new("age-keygen")
        .arg("-o")
        .arg(path)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let text = std::fs::read_to_string(path).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("# public key: "))
        .expect("age-keygen writes the public key")
        .to_owned()
}

fn setup(name: &str, pw: &str, key: &str) -> Setup {
    let repo = TestRepo::new(name);
    let dir = repo.path().to_path_buf();
    let identity = dir.join("operator.key");
    let recipient = keygen(&identity);
    // The age file comes from Debian's `age`, the reference implementation.
    std::fs::create_dir_all(dir.join("secrets")).unwrap();
    let mut age = Command::new("age")
        .args(["-r", &recipient, "-o"])
        .arg(dir.join("secrets/key.age"))
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    age.stdin.take().unwrap().write_all(key.as_bytes()).unwrap();
    assert!(age.wait().unwrap().success());
    std::fs::write(dir.join("pw.txt"), format!("{pw}\n")).unwrap();
    let secrets_dir = dir.join("secret-files");
    repo.append_settings(&format!(
            "secrets_dir: {}\nsecrets:\n  tok: {{env: {TOK_VAR}}}\n  pw: {{file: {}}}\n  key: {{age: secrets/key.age}}\nage:\n  recipients: [{recipient}]\n  identity_file: {}\n",
            secrets_dir.display(),
            dir.join("pw.txt").display(),
            identity.display()
    ));
    std::fs::write(dir.join("recipes/test/secrets.yaml"), RECIPE).unwrap();
    repo.write_stack(
        "s",
        "services:\n  uses:\n    recipe: test/secrets\n    environment:\n      TOK: {secret: tok}\n      PW: {secret: pw}\n      KEY: {secret: key}\n  other:\n    recipe: test/secrets\n    environment:\n      PW: {secret: pw}\n",
    );
    Setup {
        repo,
        identity,
        recipient,
        secrets_dir,
    }
}

fn run(repo: &TestRepo, tok: Option<&str>, args: &[&str]) -> Output {
    let mut cmd = repo.command(args);
    match tok {
        Some(tok) => cmd.env(TOK_VAR, tok),
        None => cmd.env_remove(TOK_VAR),
    };
    cmd.output().unwrap()
}

fn all_output(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The hashes a replica of `service` printed, once it did.
fn printed(repo: &TestRepo, service: &str) -> String {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(240);
    loop {
        let out = repo
            .command(&["logs", &format!("s/{service}")])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        if text.lines().filter(|l| l.contains('=')).count() == 3 {
            return text;
        }
        if std::time::Instant::now() > deadline {
            let err = repo
                .command(&["logs", "--stderr", &format!("s/{service}")])
                .output()
                .unwrap();
            panic!(
                "{service} printed no hashes in 240 s; stdout:\n{text}\nstderr log:\n{}\njobs: {:?}",
                all_output(&err),
                repo.jobs()
            );
        }
        std::thread::sleep(std::time::Duration::from_secs(2));
    }
}

fn files_under(dir: &Path, found: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            files_under(&path, found);
        } else {
            found.push(path);
        }
    }
}

/// A stack `s` with one service `uses`, whose `TOK` is the secret `tok`, printing its hash.
fn write_one_secret_service(repo: &TestRepo) {
    std::fs::write(
        repo.path().join("recipes/test/secrets.yaml"),
        "name: secrets\ncommand: |\n  printf 'TOK=%s\\n' \"$(printenv TOK | head -c -1 | sha256sum | cut -c1-64)\"\n  exec sleep 600\nresources: {cpu: 1, memory: 64M, time_limit: 15}\n",
    )
    .unwrap();
    repo.write_stack(
        "s",
        "services:\n  uses:\n    recipe: test/secrets\n    environment:\n      TOK: {secret: tok}\n",
    );
}

#[test]
fn secrets_from_env_file_and_age_reach_the_service_and_nothing_else() {
    // Values with quotes, a dollar sign, spaces and a newline: each must arrive exactly.
    let (tok, pw, key) = (
        "tok-'q'\"d\"-$HOME-7f3a",
        "p@ss word 91c2",
        "line one\nline 'two' 5e8b",
    );
    let s = setup("secrets", pw, key);
    let repo = &s.repo;

    // Every view of the plan, and the apply at debug level, name no value.
    for args in [
        vec!["plan"],
        vec!["plan", "--json"],
        vec!["plan", "--format", "markdown"],
        vec!["render", "s/uses"],
    ] {
        let out = run(repo, Some(tok), &args);
        assert!(out.status.success(), "{args:?}: {}", all_output(&out));
        let text = all_output(&out);
        for value in [tok, pw, key] {
            assert!(!text.contains(value), "{args:?} shows a secret:\n{text}");
        }
    }
    // A saved plan, and `show` of it, hold no value either.
    let out = run(repo, Some(tok), &["plan", "-out", "saved.plan"]);
    assert!(out.status.success(), "{}", all_output(&out));
    let saved = std::fs::read_to_string(repo.path().join("saved.plan")).unwrap();
    let shown = all_output(&run(repo, None, &["show", "saved.plan"]));
    assert!(shown.contains("s.uses"), "{shown}");
    for value in [tok, pw, key] {
        assert!(
            !saved.contains(value) && !shown.contains(value),
            "a saved plan shows a secret"
        );
    }
    let mut apply = repo.command(&["apply", "--auto-approve"]);
    apply.env(TOK_VAR, tok).env("STACKCTL_LOG", "debug");
    let out = apply.output().unwrap();
    assert!(out.status.success(), "{}", all_output(&out));
    for value in [tok, pw, key] {
        assert!(
            !all_output(&out).contains(value),
            "apply at debug level shows a secret"
        );
    }

    // The service got exactly the values.
    let expected = format!(
        "TOK={}\nPW={}\nKEY={}\n",
        sha256(tok),
        sha256(pw),
        sha256(key)
    );
    assert_eq!(printed(repo, "uses"), expected);

    // Not in what Slurm keeps.
    let job = repo.alive("s.uses").remove(0);
    for args in [
        vec!["write", "batch_script", job.id.as_str(), "-"],
        vec!["show", "job", job.id.as_str()],
    ] {
        let out = Command::new("scontrol")
            .env("SLURM_CONF", slurm_conf())
            .args(&args)
            .output()
            .unwrap();
        assert!(out.status.success(), "scontrol {args:?}");
        let text = all_output(&out);
        assert!(text.contains("stackctl"), "scontrol {args:?} said: {text}");
        for value in [tok, pw, key] {
            assert!(!text.contains(value), "scontrol {args:?} shows a secret");
        }
    }

    // Where a value is in a file, only its user can read it.
    let mut files = Vec::new();
    files_under(repo.path(), &mut files);
    let mut carrying = 0;
    for file in files {
        let Ok(text) = std::fs::read_to_string(&file) else {
            continue;
        };
        if file.ends_with("pw.txt") {
            continue; // the source the test itself wrote
        }
        if [tok, pw, key].iter().any(|v| text.contains(v)) {
            carrying += 1;
            let mode = std::fs::metadata(&file).unwrap().permissions().mode();
            assert_eq!(mode & 0o077, 0, "{} is readable by others", file.display());
            assert!(file.starts_with(&s.secrets_dir), "{}", file.display());
        }
    }
    assert_eq!(carrying, 2, "one secrets file per spec (uses, other)");
    let dir_mode = std::fs::metadata(
        s.secrets_dir.join(
            std::fs::read_dir(&s.secrets_dir)
                .unwrap()
                .next()
                .unwrap()
                .unwrap()
                .file_name(),
        ),
    )
    .unwrap()
    .permissions()
    .mode();
    assert_eq!(
        dir_mode & 0o077,
        0,
        "the owner's secrets directory is private"
    );

    // Unchanged secrets replace nothing, on the next run.
    let out = run(repo, Some(tok), &["plan", "--detailed-exitcode"]);
    assert_eq!(out.status.code(), Some(0), "{}", all_output(&out));
}

#[test]
fn a_changed_secret_replaces_exactly_its_users_and_an_unreadable_one_stops_everything() {
    let s = setup("secrets-rotate", "pw-a1", "key-b2");
    let repo = &s.repo;
    let out = run(repo, Some("tok-old"), &["apply", "--auto-approve"]);
    assert!(out.status.success(), "{}", all_output(&out));
    let uses_before = repo.alive("s.uses")[0].id.clone();
    let other_before = repo.alive("s.other")[0].id.clone();

    // A new value of tok: the plan names the variable, shows no value, and replaces `uses`.
    let out = run(repo, Some("tok-new-c3"), &["plan"]);
    let text = all_output(&out);
    assert!(
        text.contains("environment.TOK = (sensitive value changed) # secret tok"),
        "{text}"
    );
    assert!(
        !text.contains("tok-new-c3") && !text.contains("tok-old"),
        "{text}"
    );
    assert!(!text.contains("s.other"), "other does not use tok:\n{text}");
    let out = run(repo, Some("tok-new-c3"), &["apply", "--auto-approve"]);
    assert!(out.status.success(), "{}", all_output(&out));
    wait_for("the old replica of uses to end", 60, || {
        repo.alive("s.uses").iter().all(|j| j.id != uses_before)
    });
    assert_eq!(repo.alive("s.uses").len(), 1);
    assert_eq!(
        repo.alive("s.other")[0].id,
        other_before,
        "other was not touched"
    );
    assert!(printed(repo, "uses").contains(&format!("TOK={}", sha256("tok-new-c3"))));

    // Missing variable, missing file, wrong identity: exit 1 naming the secret; nothing done.
    let jobs_before: Vec<String> = repo
        .jobs()
        .into_iter()
        .filter(|j| j.alive())
        .map(|j| j.id)
        .collect();
    let out = run(repo, None, &["apply", "--auto-approve"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        all_output(&out).contains("secret tok") && all_output(&out).contains(TOK_VAR),
        "{}",
        all_output(&out)
    );
    let other_key = repo.path().join("stranger.key");
    keygen(&other_key);
    let mut cmd = repo.command(&["plan"]);
    cmd.env(TOK_VAR, "tok-new-c3")
        .env("STACKCTL_AGE_IDENTITY", &other_key);
    let out = cmd.output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        all_output(&out).contains("secret key") && all_output(&out).contains("stranger.key"),
        "{}",
        all_output(&out)
    );
    std::fs::remove_file(repo.path().join("pw.txt")).unwrap();
    let out = run(repo, Some("tok-new-c3"), &["apply", "--auto-approve"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        all_output(&out).contains("secret pw"),
        "{}",
        all_output(&out)
    );
    let jobs_after: Vec<String> = repo
        .jobs()
        .into_iter()
        .filter(|j| j.alive())
        .map(|j| j.id)
        .collect();
    assert_eq!(
        jobs_before, jobs_after,
        "nothing was cancelled or submitted"
    );
}

#[test]
fn secret_set_writes_what_age_decrypts_and_list_names_no_value() {
    let s = setup("secrets-set", "pw-x", "key-y");
    let repo = &s.repo;
    let mut set = repo.command(&["secret", "set", "api_key"]);
    set.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = set.spawn().unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"v4lue with spaces\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", all_output(&out));
    let file = repo.path().join("secrets/api_key.age");
    let out = Command::new("age")
        .arg("-d")
        .arg("-i")
        .arg(&s.identity)
        .arg(&file)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", all_output(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "v4lue with spaces");
    assert!(!std::fs::read_to_string(&file).unwrap().contains("v4lue"));
    assert!(!s.recipient.is_empty());

    let listed = repo.expect(&["secret", "list"], 0);
    assert!(listed.contains("tok: environment variable"), "{listed}");
    assert!(
        listed.contains("s.uses (KEY)") && listed.contains("s.other (PW)"),
        "{listed}"
    );
    assert!(
        !listed.contains("pw-x") && !listed.contains("key-y"),
        "{listed}"
    );
}

#[test]
fn over_ssh_the_secrets_file_is_written_on_the_login_node_for_its_user_only() {
    use common::ssh::{SSH_HOME, SshRepo};
    let ssh = SshRepo::new("secrets-ssh");
    let repo = &ssh.repo;
    repo.append_settings(&format!(
        "secrets_dir: ~/secrets\nsecrets:\n  tok: {{env: {TOK_VAR}}}\n"
    ));
    write_one_secret_service(repo);
    let tok = "over ssh 'q' $Z 4d1e";
    let out = ssh
        .over_ssh(&["apply", "--auto-approve"])
        .env(TOK_VAR, tok)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", all_output(&out));
    assert!(!all_output(&out).contains(tok));

    // The file is the login user's, private, under its home; the job read it.
    let owner_dir = Path::new(SSH_HOME)
        .join("secrets")
        .join(stackctl::secret::owner_dir_name(&repo.owner));
    let mut files = Vec::new();
    files_under(&owner_dir, &mut files);
    let ours: Vec<&PathBuf> = files
        .iter()
        .filter(|f| std::fs::read_to_string(f).is_ok_and(|t| t.contains("4d1e")))
        .collect();
    assert_eq!(ours.len(), 1, "{files:?}");
    let meta = std::fs::metadata(ours[0]).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    use std::os::unix::fs::MetadataExt;
    let login_uid = std::fs::metadata(SSH_HOME).unwrap().uid();
    assert_eq!(meta.uid(), login_uid, "written as the login user");
    let expected = format!("TOK={}", sha256(tok));
    wait_for("the replica to print its secret's hash", 240, || {
        let mut logs = Vec::new();
        files_under(&ssh.log_dir(), &mut logs);
        logs.iter()
            .any(|f| std::fs::read_to_string(f).is_ok_and(|t| t.contains(&expected)))
    });
    let _ = std::fs::remove_dir_all(&owner_dir);
}

#[test]
fn over_rest_the_service_receives_the_same_value() {
    use common::rest::{REST_URL, configure, token};
    let repo = TestRepo::new("secrets-rest");
    let logs = repo.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    configure(repo.path(), &repo.owner, &logs, REST_URL, "root");
    let value = "over rest 'q' $Y 6a0d";
    std::fs::write(repo.path().join("tok.txt"), value).unwrap();
    repo.append_settings(&format!(
        "secrets_dir: {}\nsecrets:\n  tok: {{file: {}}}\n",
        repo.path().join("secret-files").display(),
        repo.path().join("tok.txt").display()
    ));
    write_one_secret_service(&repo);
    let jwt = token("root", 900);
    let out = common::rest::command(repo.path(), &jwt, &["apply", "--auto-approve"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", all_output(&out));
    assert!(!all_output(&out).contains("6a0d"));
    let expected = format!("TOK={}", sha256(value));
    wait_for("the replica to print its secret's hash", 240, || {
        let mut logs = Vec::new();
        files_under(&repo.path().join("logs"), &mut logs);
        logs.iter()
            .any(|f| std::fs::read_to_string(f).is_ok_and(|t| t.contains(&expected)))
    });
}
