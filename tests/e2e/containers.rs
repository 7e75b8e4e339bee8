//! End-to-end: services in real Charliecloud containers on the test cluster. A Dockerfile
//! `FROM debian-base` (the Debian image `scripts/slurm-dev-cluster` builds with mmdebstrap
//! and imports into ch-image's store) is built by apply in a Slurm job, once for the services
//! sharing it; the replicas run busybox's httpd from the image, become ready and serve files
//! that exist only in the image, with exactly their environment. An unchanged repo builds
//! nothing; an edited Dockerfile rebuilds once and replaces the replicas; a broken one holds
//! its services with the build's error and log, and a fixed one converges; `scancel` of a
//! replica leaves no process of it on the node. The shipped Redis and PostgreSQL recipes build
//! from their Dockerfiles and answer their own clients (`redis-cli`, `psql`), and the repo's
//! example stack runs: Redis in its container, the inference stand-in on the bare node
//! answering an OpenAI-style request.
//!
//! Each test has its own owner and cancels only its own job ids (see `common::TestRepo`).
#![cfg(feature = "cluster")]

use crate::common;

use common::*;
use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::time::Duration;

const RECIPE: &str = r#"name: site
container: {runtime: charliecloud, image: site, build: Dockerfile}
# The job's PATH starts with a pyenv shim on the test machines; ch-image needs Debian's
# python3 (with lark), as a site's `module load` would provide.
setup: ["export PATH=/usr/sbin:/usr/bin:/sbin:/bin"]
command: 'env | sort >&2; exec busybox httpd -f -p "$PORT" -h /srv/www'
resources: {cpu: 1, memory: 128M, time_limit: 15}
environment: {GREETING: "it's $HOME"}
ports: [{name: http, port: auto}]
health: {http: {port: http, path: /marker.txt}, interval: 1s, timeout: 2s, start_period: 120s}
"#;

fn dockerfile(marker: &str) -> String {
    format!(
        "FROM debian-base\nRUN mkdir -p /srv/www && echo '{marker}' > /srv/www/marker.txt && echo ok > /srv/www/index.html\n"
    )
}

/// A repo with the `web/site` recipe and its Dockerfile, images under its own directory.
fn repo(name: &str, marker: &str) -> TestRepo {
    let repo = TestRepo::new(name);
    repo.append_settings(&format!(
        "image_dir: {}\n",
        repo.path().join("images").display()
    ));
    std::fs::create_dir_all(repo.path().join("recipes/web")).unwrap();
    std::fs::write(repo.path().join("recipes/web/site.yaml"), RECIPE).unwrap();
    write_dockerfile(&repo, &dockerfile(marker));
    repo
}

fn write_dockerfile(repo: &TestRepo, text: &str) {
    std::fs::write(repo.path().join("recipes/web/Dockerfile"), text).unwrap();
}

/// This owner's build jobs (ended ones included).
fn builds(repo: &TestRepo) -> Vec<Job> {
    let tag = format!("stackctl-image/v1;owner={};", repo.owner);
    squeue()
        .into_iter()
        .filter(|j| j.comment.starts_with(&tag))
        .collect()
}

/// `GET path` over HTTP/1.0; returns the whole response.
fn get(endpoint: &str, path: &str) -> String {
    let mut stream =
        std::net::TcpStream::connect(endpoint).unwrap_or_else(|e| panic!("{endpoint}: {e}"));
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(stream, "GET {path} HTTP/1.0\r\nHost: test\r\n\r\n").unwrap();
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    response
}

/// The `addr:port` a ready replica recorded.
fn endpoint(job: &Job) -> String {
    let field = |name: &str| {
        job.comment
            .split(';')
            .find_map(|f| f.strip_prefix(&format!("{name}=")))
            .unwrap_or_else(|| panic!("no {name}= in {}", job.comment))
            .to_owned()
    };
    format!("{}:{}", field("addr"), field("ports"))
}

/// Waits until `service` has `n` alive replicas, all ready; returns them.
fn wait_ready(repo: &TestRepo, service: &str, n: usize) -> Vec<Job> {
    let mut jobs = Vec::new();
    wait_for(&format!("{n} ready replicas of {service}"), 240, || {
        jobs = repo.alive(service);
        jobs.len() == n && jobs.iter().all(|j| j.comment.contains(";health=ready"))
    });
    jobs
}

/// The pids of processes whose command line contains `needle`.
fn processes(needle: &str) -> Vec<String> {
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if cmdline.contains(needle) {
            pids.push(entry.file_name().to_string_lossy().into_owned());
        }
    }
    pids
}

#[test]
fn services_build_their_image_in_a_job_once_and_run_in_it() {
    let repo = repo("ct-run", "from the image v1");
    repo.write_stack(
        "s",
        "services:\n  web: {recipe: web/site, replicas: 2}\n  alt: {recipe: web/site}\n",
    );
    let plan = repo.expect(&["plan"], 0);
    assert!(
        plan.contains("Image: build image site (not built yet) with charliecloud for s.alt, s.web"),
        "{plan}"
    );
    let out = repo.apply();
    assert_eq!(out.matches("submitted build job").count(), 1, "{out}");
    let web = wait_ready(&repo, "s.web", 2);
    wait_ready(&repo, "s.alt", 1);
    assert_eq!(builds(&repo).len(), 1, "two services share one build");
    // Both replicas answer with a file only the image holds.
    assert!(!std::path::Path::new("/srv/www/marker.txt").exists());
    for job in &web {
        let response = get(&endpoint(job), "/marker.txt");
        assert!(response.contains("from the image v1"), "{response}");
    }
    // The service saw exactly its environment: nothing of the job's but what it asked for.
    let log = std::fs::read_to_string(
        repo.path()
            .join("logs")
            .join(format!("s.web-{}.err", web[0].id)),
    )
    .unwrap();
    let names: BTreeSet<&str> = log
        .lines()
        .filter_map(|l| l.split_once('=').map(|(k, _)| k))
        .filter(|k| !k.is_empty() && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
        .collect();
    let expected: BTreeSet<&str> = [
        "PATH",
        "GREETING",
        "PORT",
        "PORT_0",
        "PORT_HTTP",
        "STACKCTL_STACK",
        "STACKCTL_SERVICE",
        "STACKCTL_REPLICA",
        "SLURM_JOB_ID",
        "SLURM_JOB_NAME",
        "SLURM_JOB_NODELIST",
        "SLURM_NODELIST",
        "SLURM_ARRAY_JOB_ID",
        "SLURM_ARRAY_TASK_ID",
        // set by ch-run and the shell themselves
        "CH_RUNNING",
        "PWD",
        "SHLVL",
    ]
    .into_iter()
    .collect();
    let unexpected: Vec<&&str> = names.difference(&expected).collect();
    assert!(unexpected.is_empty(), "unexpected: {unexpected:?}\n{log}");
    assert!(log.contains("GREETING=it's $HOME\n"), "{log}");
    assert!(log.contains("STACKCTL_SERVICE=web\n"), "{log}");

    // Unchanged: nothing to build, nothing to do.
    repo.assert_converged();
    // An edited Dockerfile: one build, and every replica replaced into the new image.
    write_dockerfile(&repo, &dockerfile("from the image v2"));
    let plan = repo.expect(&["plan"], 0);
    assert!(
        plan.contains("Image: build image site (definition changed)"),
        "{plan}"
    );
    let out = repo.apply();
    assert_eq!(out.matches("submitted build job").count(), 1, "{out}");
    let old: BTreeSet<String> = web.iter().map(|j| j.id.clone()).collect();
    let mut web = Vec::new();
    wait_for("2 new ready replicas serving v2", 240, || {
        web = repo.alive("s.web");
        web.len() == 2
            && web.iter().all(|j| {
                !old.contains(&j.id)
                    && j.comment.contains(";health=ready")
                    && get(&endpoint(j), "/marker.txt").contains("from the image v2")
            })
    });
    wait_ready(&repo, "s.alt", 1);
    assert_eq!(builds(&repo).len(), 2);
    repo.assert_converged();
    // Both builds are listed; the old one is used by nothing now, and --prune removes it.
    let listed = repo.expect(&["images"], 0);
    let rows: Vec<&str> = listed.lines().filter(|l| l.starts_with("site-")).collect();
    assert_eq!(rows.len(), 2, "{listed}");
    assert_eq!(
        rows.iter()
            .filter(|r| r.ends_with("\ts.alt, s.web"))
            .count(),
        1,
        "{listed}"
    );
    assert!(
        rows.iter()
            .any(|r| r.contains("\tcharliecloud\t") && r.ends_with("(unused)"))
    );
    let pruned = repo.expect(&["images", "--prune"], 0);
    assert_eq!(pruned.matches("Removed site-").count(), 1, "{pruned}");
    let listed = repo.expect(&["images"], 0);
    assert!(!listed.contains("(unused)"), "{listed}");

    // scancel of one replica: its httpd is gone from the node, not left behind.
    let port = endpoint(&web[0]).rsplit(':').next().unwrap().to_owned();
    let needle = format!("busybox httpd -f -p {port} ");
    assert_eq!(processes(&needle).len(), 1, "{needle}");
    scancel(std::slice::from_ref(&web[0].id));
    wait_for("the cancelled replica's httpd to exit", 60, || {
        processes(&needle).is_empty()
    });
}

#[test]
fn a_broken_dockerfile_holds_its_services_until_fixed() {
    let repo = repo("ct-broken", "fixed");
    write_dockerfile(
        &repo,
        "FROM debian-base\nRUN echo 'stackctl-test: broken step' >&2; exit 3\n",
    );
    repo.write_stack("b", "services:\n  site: {recipe: web/site, replicas: 2}\n");
    repo.apply();
    wait_for("the build job to end", 180, || {
        let jobs = builds(&repo);
        jobs.len() == 1 && !jobs[0].alive()
    });
    // The plan holds the service with the build's error and log; nothing of it runs.
    let plan = repo.expect(&["plan"], 0);
    assert!(
        plan.contains("Held: b.site: image site failed to build")
            && plan.contains("stackctl-test: broken step")
            && plan.contains(&format!(
                "log: {}",
                repo.path().join("logs").join("image.site-").display()
            )),
        "{plan}"
    );
    assert!(
        repo.alive("b.site").iter().all(|j| j.state == "PENDING"),
        "no replica may start without its image"
    );
    let status = repo.run(&["status"]);
    let status = String::from_utf8_lossy(&status.stdout).into_owned();
    assert!(
        status.contains("held: image site failed to build")
            && status.contains("stackctl-test: broken step"),
        "{status}"
    );
    let log = repo.expect(&["logs", "image/site"], 0);
    assert!(log.contains("stackctl-test: broken step"), "{log}");
    assert!(log.contains("image build failed: ch-image build"), "{log}");
    // A second apply does not build the same broken definition again.
    let out = repo.expect(&["apply", "--auto-approve"], 0);
    assert!(!out.contains("submitted build job"), "{out}");
    // Fixed: one build, and the service converges.
    write_dockerfile(&repo, &dockerfile("fixed"));
    let out = repo.apply();
    assert_eq!(out.matches("submitted build job").count(), 1, "{out}");
    for job in wait_ready(&repo, "b.site", 2) {
        assert!(get(&endpoint(&job), "/marker.txt").contains("fixed"));
    }
    repo.assert_converged();
}

#[test]
fn an_unhealthy_containerised_replica_is_stopped_and_replaced() {
    let repo = repo("ct-unhealthy", "unused");
    // The files it serves come from the node through a bind; the probe wants health.txt.
    let www = repo.path().join("www");
    std::fs::create_dir_all(&www).unwrap();
    std::fs::write(www.join("health.txt"), "ok\n").unwrap();
    let recipe = RECIPE
        .replace(
            "build: Dockerfile}",
            &format!("build: Dockerfile, binds: ['{}:/srv/www']}}", www.display()),
        )
        .replace(
            "path: /marker.txt}",
            "path: /health.txt}, failure_threshold: 2",
        )
        .replace("start_period: 120s", "start_period: 5s");
    std::fs::write(repo.path().join("recipes/web/site.yaml"), recipe).unwrap();
    repo.write_stack("u", "services:\n  site: {recipe: web/site}\n");
    repo.apply();
    let job = wait_ready(&repo, "u.site", 1).remove(0);
    let port = endpoint(&job).rsplit(':').next().unwrap().to_owned();
    let needle = format!("busybox httpd -f -p {port} ");
    assert_eq!(processes(&needle).len(), 1, "{needle}");
    std::fs::remove_file(www.join("health.txt")).unwrap();
    // The supervisor stops the container's process and the job ends with the unhealthy code.
    wait_for("the unhealthy replica's job to end", 120, || {
        !squeue().iter().any(|j| j.id == job.id && j.alive())
    });
    assert!(processes(&needle).is_empty(), "no stray httpd");
    let exit = std::process::Command::new("scontrol")
        .env("SLURM_CONF", slurm_conf())
        .args(["show", "job", &job.id])
        .output()
        .unwrap();
    let exit = String::from_utf8_lossy(&exit.stdout).into_owned();
    assert!(exit.contains("ExitCode=97:0"), "{exit}");
    // The next apply replaces it, and the new one is ready once the file is back.
    std::fs::write(www.join("health.txt"), "ok\n").unwrap();
    repo.apply();
    let new = wait_ready(&repo, "u.site", 1).remove(0);
    assert_ne!(new.id, job.id);
}

/// Copies the shipped recipe `category/name` (its YAML, and its `.def` and Dockerfile when it
/// runs in a container) into `repo`, adding only this machine's PATH fix for ch-image (see
/// [`RECIPE`]) as a `setup:` line.
fn copy_shipped_recipe(repo: &TestRepo, recipe: &str) {
    let (category, name) = recipe.split_once('/').unwrap();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("recipes")
        .join(category);
    let dir = repo.path().join("recipes").join(category);
    std::fs::create_dir_all(&dir).unwrap();
    let yaml = std::fs::read_to_string(root.join(format!("{name}.yaml"))).unwrap();
    if yaml.contains("\ncontainer:") {
        for file in [format!("{name}.def"), format!("{name}.Dockerfile")] {
            std::fs::copy(root.join(&file), dir.join(&file))
                .unwrap_or_else(|e| panic!("{recipe}: {file}: {e}"));
        }
    }
    let yaml = yaml + "setup: [\"export PATH=/usr/sbin:/usr/bin:/sbin:/bin\"]\n";
    std::fs::write(dir.join(format!("{name}.yaml")), yaml).unwrap();
}

/// Settings for the shipped recipes under Charliecloud, images under the repo.
fn charliecloud_settings(repo: &TestRepo) {
    repo.append_settings(&format!(
        "image_dir: {}\ncontainer_runtime: charliecloud\n",
        repo.path().join("images").display()
    ));
}

/// The directory image `image` was built into under the repo's `images/`.
fn built_image(repo: &TestRepo, image: &str) -> std::path::PathBuf {
    std::fs::read_dir(repo.path().join("images"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            p.is_dir()
                && name
                    .strip_prefix(&format!("{image}-"))
                    .is_some_and(|hash| hash.chars().all(|c| c.is_ascii_hexdigit()))
        })
        .unwrap_or_else(|| panic!("no built image {image}"))
}

/// Runs `args` in the directory image `image` with ch-run, with `env` set; returns stdout
/// and stderr, trimmed.
fn in_image(image: &std::path::Path, env: &[&str], args: &[&str]) -> String {
    let mut command = std::process::Command::new("ch-run");
    command.env("USER", "root").env("PATH", "/usr/bin:/bin");
    for pair in env {
        command.arg(format!("--set-env={pair}"));
    }
    let output = command.arg(image).arg("--").args(args).output().unwrap();
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
    .trim()
    .to_owned()
}

/// A free-looking port for a fixed-port service, different per test process and `slot`.
fn test_port(slot: u32) -> u16 {
    20000 + ((std::process::id() * 3 + slot) % 9000) as u16
}

#[test]
fn the_shipped_redis_recipe_runs_in_charliecloud_and_answers_redis_cli() {
    let repo = TestRepo::new("ct-redis");
    charliecloud_settings(&repo);
    copy_shipped_recipe(&repo, "storage/redis");
    let port = test_port(0);
    repo.write_stack(
        "r",
        &format!(
            "services:\n  cache:\n    recipe: storage/redis\n    ports: [{port}]\n    \
             environment: {{REDIS_PORT: \"{port}\"}}\n    resources: {{memory: 512M, cpu: 1}}\n"
        ),
    );
    let out = repo.apply();
    assert_eq!(out.matches("submitted build job").count(), 1, "{out}");
    // Ready by its TCP check, on a node of this machine.
    wait_ready(&repo, "r.cache", 1);
    // redis-cli from the same image answers: PONG, then a value set and read back.
    let image = built_image(&repo, "redis");
    let port = port.to_string();
    let cli = |args: &[&str]| {
        let mut all = vec!["redis-cli", "-h", "127.0.0.1", "-p", &port];
        all.extend_from_slice(args);
        in_image(&image, &[], &all)
    };
    assert_eq!(cli(&["ping"]), "PONG");
    assert_eq!(cli(&["set", "stackctl", "in-a-container"]), "OK");
    assert_eq!(cli(&["get", "stackctl"]), "in-a-container");
}

/// PostgreSQL refuses to run as root and jobs here run as root: the shipped Dockerfile's
/// entrypoint runs it as the image's `postgres` user (a nested user namespace under ch-run).
#[test]
fn the_shipped_postgres_recipe_runs_in_charliecloud_and_answers_psql() {
    let repo = TestRepo::new("ct-postgres");
    charliecloud_settings(&repo);
    let password = "pg 'pw' $X 41c7";
    std::fs::write(repo.path().join("pw.txt"), password).unwrap();
    repo.append_settings(&format!(
        "secrets_dir: {}\nsecrets:\n  postgres_password: {{file: {}}}\n",
        repo.path().join("secret-files").display(),
        repo.path().join("pw.txt").display()
    ));
    copy_shipped_recipe(&repo, "storage/postgres");
    let port = test_port(1);
    let pgdata = repo.path().join("pgdata");
    repo.write_stack(
        "p",
        &format!(
            "services:\n  db:\n    recipe: storage/postgres\n    ports: [{port}]\n    \
             environment: {{POSTGRES_PORT: \"{port}\", POSTGRES_DB: app, PGDATA: {}}}\n    \
             resources: {{memory: 1G, cpu: 1}}\n",
            pgdata.display()
        ),
    );
    let out = repo.apply();
    assert_eq!(out.matches("submitted build job").count(), 1, "{out}");
    let job = wait_ready(&repo, "p.db", 1).remove(0);
    let image = built_image(&repo, "postgres");
    let port = port.to_string();
    let ready = in_image(&image, &[], &["pg_isready", "-h", "127.0.0.1", "-p", &port]);
    assert!(ready.ends_with("accepting connections"), "{ready}");
    // The password (a secret) and the database the recipe creates on first start.
    let env = format!("PGPASSWORD={password}");
    let psql = |env: &str| {
        in_image(
            &image,
            &[env],
            &[
                "psql",
                "-h",
                "127.0.0.1",
                "-p",
                &port,
                "-U",
                "postgres",
                "-d",
                "app",
                "-tAc",
                "select 40 + 2",
            ],
        )
    };
    assert_eq!(psql(&env), "42");
    let wrong = psql("PGPASSWORD=wrong");
    assert!(wrong.contains("password authentication failed"), "{wrong}");
    // The server runs as the image's postgres user, not root: its data is owned by it inside.
    assert!(pgdata.join("PG_VERSION").exists());
    let log = std::fs::read_to_string(
        repo.path()
            .join("logs")
            .join(format!("p.db-{}.err", job.id)),
    )
    .unwrap();
    assert!(!log.contains("cannot be run as root"), "{log}");
    // scancel stops the server: no postgres of this data directory is left on the node.
    let needle = format!("postgres -D {}", pgdata.display());
    assert_eq!(processes(&needle).len(), 1, "{needle}");
    scancel(std::slice::from_ref(&job.id));
    wait_for("the cancelled postgres to exit", 60, || {
        processes(&needle).is_empty()
    });
}

/// The repo's own example stack (stacks/example.yaml, as shipped but for Redis's fixed port)
/// runs from the shipped recipes, Redis under Charliecloud: Redis answers redis-cli and the
/// inference stand-in (on the bare node) answers an OpenAI-style completion.
#[test]
fn the_example_stack_runs_in_charliecloud() {
    let repo = TestRepo::new("ct-example");
    charliecloud_settings(&repo);
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let stack = std::fs::read_to_string(root.join("stacks/example.yaml")).unwrap();
    let redis = test_port(2);
    let mut recipes = Vec::new();
    for line in stack.lines() {
        if let Some(recipe) = line.trim().strip_prefix("recipe: ") {
            recipes.push(recipe.to_owned());
        }
    }
    assert_eq!(
        recipes,
        ["storage/redis", "inference/openai-stand-in"],
        "{stack}"
    );
    for recipe in &recipes {
        copy_shipped_recipe(&repo, recipe);
    }
    let stack = stack.replace(
        "recipe: storage/redis\n",
        &format!(
            "recipe: storage/redis\n    ports: [{redis}]\n    environment: {{REDIS_PORT: \"{redis}\"}}\n"
        ),
    );
    let name = stack
        .lines()
        .find_map(|l| l.strip_prefix("name: "))
        .unwrap()
        .to_owned();
    repo.write_stack(&name, &stack);
    let out = repo.apply();
    assert_eq!(out.matches("submitted build job").count(), 1, "{out}");
    wait_ready(&repo, &format!("{name}.cache"), 1);
    let llm = wait_ready(&repo, &format!("{name}.llm"), 1).remove(0);
    let image = built_image(&repo, "redis");
    let pong = in_image(
        &image,
        &[],
        &[
            "redis-cli",
            "-h",
            "127.0.0.1",
            "-p",
            &redis.to_string(),
            "ping",
        ],
    );
    assert_eq!(pong, "PONG");
    let body = r#"{"model": "m", "prompt": "hello from the example stack", "max_tokens": 3}"#;
    let mut stream = std::net::TcpStream::connect(endpoint(&llm)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        stream,
        "POST /v1/completions HTTP/1.1\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    assert!(
        response.starts_with("HTTP/1.1 200")
            && response.contains(r#""text": "tok0 tok1 tok2 ""#)
            && response.contains(r#""object": "text_completion""#)
            && response.contains(r#""prompt_tokens": 5"#),
        "{response}"
    );
    repo.assert_converged();
}

/// A secret reaches the process in the container exactly, and no process on the node carries
/// its value on its command line (which `ps` shows every user).
#[test]
fn a_secret_reaches_the_container_and_no_command_line() {
    let repo = repo("container-secret", "s");
    let value = "ch 'secret' $X 8b1f";
    std::fs::write(repo.path().join("tok.txt"), value).unwrap();
    repo.append_settings(&format!(
        "secrets_dir: {}\nsecrets:\n  tok: {{file: {}}}\n",
        repo.path().join("secret-files").display(),
        repo.path().join("tok.txt").display()
    ));
    std::fs::write(
        repo.path().join("recipes/web/secret.yaml"),
        "name: secret\ncontainer: {runtime: charliecloud, image: site, build: Dockerfile}\nsetup: [\"export PATH=/usr/sbin:/usr/bin:/sbin:/bin\"]\ncommand: 'echo \"TOK=$(printf %s \"$TOK\" | sha256sum | cut -c1-64)\"; exec sleep 600'\nresources: {cpu: 1, memory: 128M, time_limit: 15}\nenvironment: {TOK: {secret: tok}}\n",
    )
    .unwrap();
    repo.write_stack("s", "services:\n  secret:\n    recipe: web/secret\n");
    repo.apply();
    let expected = format!("TOK={}", sha256(value));
    let mut printed = String::new();
    wait_for("the container to print its secret's hash", 300, || {
        printed = String::from_utf8_lossy(&repo.run(&["logs", "s/secret"]).stdout).into_owned();
        printed.contains("TOK=")
    });
    assert!(printed.contains(&expected), "{printed}");
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        if let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) {
            let cmdline = String::from_utf8_lossy(&cmdline);
            assert!(
                !cmdline.contains("8b1f"),
                "a command line shows the secret: {cmdline}"
            );
        }
    }
}
