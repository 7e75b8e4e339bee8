//! The recipes and examples the project ships must load, and render what their docs promise.

use crate::common;

use common::copy_dir;
use std::path::Path;
use std::process::Command;

fn stackctl(args: &[&str]) -> (i32, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_stackctl"))
        .args(args)
        .output()
        .unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// The value of every password secret of [`shipped_recipes_repo`].
const PASSWORD: &str = "pw-3c9e1f";

/// A repo of the shipped recipes, no stacks yet; the recipes' passwords are secrets, each
/// read from a file holding [`PASSWORD`].
fn shipped_recipes_repo() -> tempfile::TempDir {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let repo = tempfile::tempdir().unwrap();
    copy_dir(&root.join("recipes"), &repo.path().join("recipes"));
    let password = repo.path().join("password");
    std::fs::write(&password, format!("{PASSWORD}\n")).unwrap();
    let secrets: String = [
        "postgres_password",
        "mysql_root_password",
        "minio_root_password",
        "grafana_admin_password",
    ]
    .iter()
    .map(|name| format!("  {name}: {{file: {}}}\n", password.display()))
    .collect();
    std::fs::write(
        repo.path().join("stackctl.yaml"),
        format!("owner: shipped-test\nsecrets:\n{secrets}"),
    )
    .unwrap();
    repo
}

#[test]
fn every_shipped_recipe_loads_and_renders_an_apptainer_job() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let repo = shipped_recipes_repo();
    let recipes = [
        "inference/vllm",
        "inference/ollama",
        "storage/redis",
        "storage/postgres",
        "storage/minio",
        "storage/mysql",
        "vector-db/chroma",
        "monitoring/prometheus",
        "monitoring/grafana",
        "gateway/traefik",
    ];
    let mut stack = String::from("services:\n");
    for recipe in recipes {
        let name = recipe.rsplit('/').next().unwrap();
        stack.push_str(&format!("  {name}:\n    recipe: {recipe}\n"));
    }
    std::fs::create_dir_all(repo.path().join("stacks")).unwrap();
    std::fs::write(repo.path().join("stacks/all.yaml"), stack).unwrap();
    let dir = repo.path().to_str().unwrap();
    let (code, stdout, stderr) = stackctl(&["validate", "-C", dir]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.contains("10 services"), "{stdout}");
    for recipe in recipes {
        let name = recipe.rsplit('/').next().unwrap();
        let (code, script, stderr) = stackctl(&["render", "-C", dir, &format!("all/{name}")]);
        assert_eq!(code, 0, "{stderr}");
        assert!(
            script.contains(" apptainer run --cleanenv ")
                || script.contains(" apptainer exec --cleanenv "),
            "{recipe} must run in Apptainer, with only its environment:\n{script}"
        );
        assert!(!script.contains(PASSWORD), "{recipe} shows a secret");
        assert!(
            root.join("recipes").join(format!("{recipe}.def")).exists(),
            "{recipe} needs its .def"
        );
    }
    // The gateway serves on its `http` port, from the file watch writes, with a health check.
    let (_, gateway, _) = stackctl(&["render", "-C", dir, "all/traefik"]);
    for needle in [
        "--entryPoints.web.address=\":$PORT_HTTP\"",
        "--providers.file.directory=",
        "${ENDPOINTS_FILE:?",
        "export PORT_HTTP=\"$PORT_0\"",
        "stackctl_http_probe \"$PORT_0\" '/ping'",
    ] {
        assert!(gateway.contains(needle), "missing {needle:?} in\n{gateway}");
    }
    let (_, vllm, _) = stackctl(&["render", "-C", dir, "all/vllm"]);
    assert!(
        vllm.contains("#SBATCH --gres=gpu:a100:1")
            && vllm.contains("apptainer run --cleanenv --nv"),
        "{vllm}"
    );
}

/// The recipes with a Dockerfile run under Charliecloud too: a repo set to it validates them and
/// renders `ch-run` of their built image (the Dockerfile's `/entrypoint`, or the command).
#[test]
fn the_recipes_with_a_dockerfile_render_under_charliecloud() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let repo = shipped_recipes_repo();
    let recipes = [
        ("storage/redis", "-- /entrypoint"),
        ("storage/postgres", "-- /entrypoint"),
        ("monitoring/prometheus", "-- /entrypoint"),
    ];
    // Only these: a recipe with only a `.def` is an error under Charliecloud.
    std::fs::remove_dir_all(repo.path().join("recipes")).unwrap();
    let mut stack = String::from("services:\n");
    for (recipe, _) in recipes {
        let (category, name) = recipe.split_once('/').unwrap();
        let dir = repo.path().join("recipes").join(category);
        std::fs::create_dir_all(&dir).unwrap();
        for file in [
            format!("{name}.yaml"),
            format!("{name}.def"),
            format!("{name}.Dockerfile"),
        ] {
            std::fs::copy(
                root.join("recipes").join(category).join(&file),
                dir.join(&file),
            )
            .unwrap_or_else(|e| panic!("{recipe}: {file}: {e}"));
        }
        stack.push_str(&format!("  {name}:\n    recipe: {recipe}\n"));
    }
    let settings = repo.path().join("stackctl.yaml");
    let mut text = std::fs::read_to_string(&settings).unwrap();
    text.push_str("container_runtime: charliecloud\nimage_dir: /images\n");
    std::fs::write(&settings, text).unwrap();
    std::fs::create_dir_all(repo.path().join("stacks")).unwrap();
    std::fs::write(repo.path().join("stacks/ch.yaml"), stack).unwrap();
    let dir = repo.path().to_str().unwrap();
    let (code, stdout, stderr) = stackctl(&["validate", "-C", dir]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    for (recipe, tail) in recipes {
        let name = recipe.rsplit('/').next().unwrap();
        let (code, script, stderr) = stackctl(&["render", "-C", dir, &format!("ch/{name}")]);
        assert_eq!(code, 0, "{stderr}");
        let run = script
            .lines()
            .find(|l| l.contains("exec ch-run "))
            .unwrap_or_else(|| panic!("{recipe} must run with ch-run:\n{script}"));
        assert!(
            run.contains(&format!("'/images/{name}-")) && run.contains(tail),
            "{recipe}: {run}"
        );
        assert!(!script.contains("apptainer") && !script.contains(PASSWORD));
    }
    // Apptainer-only recipes are named, with file and line, under Charliecloud.
    let chroma = repo.path().join("recipes/vector-db");
    std::fs::create_dir_all(&chroma).unwrap();
    for file in ["chroma.yaml", "chroma.def"] {
        std::fs::copy(root.join("recipes/vector-db").join(file), chroma.join(file)).unwrap();
    }
    let (code, _, stderr) = stackctl(&["validate", "-C", dir]);
    assert_ne!(code, 0);
    assert!(
        stderr.contains("recipes/vector-db/chroma.yaml:")
            && stderr.contains("charliecloud builds its image from `container.build`"),
        "{stderr}"
    );
}

#[test]
fn the_quickstart_example_runs_without_apptainer() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = root.join("examples/quickstart");
    let dir = dir.to_str().unwrap();
    let (code, stdout, stderr) = stackctl(&["validate", "-C", dir]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    for service in ["demo/web", "demo/inference"] {
        let (code, script, stderr) = stackctl(&["render", "-C", dir, service]);
        assert_eq!(code, 0, "{stderr}");
        assert!(!script.contains("apptainer"), "{script}");
    }
}

/// docs/repo-format.md promises environment values reach the job exactly as written, even where YAML
/// would read them as numbers or booleans (`8.0` → 8, `yes` → true, `0x1F` → 31).
#[test]
fn environment_values_render_exactly_as_written() {
    let repo = shipped_recipes_repo();
    let values = [
        ("A", "8.0"),
        ("B", "12.10"),
        ("C", "0022"),
        ("D", "yes"),
        ("E", "NO"),
        ("F", "0x1F"),
        ("G", "1_000"),
        ("H", "off"),
        ("I", "123456789012345678901234567890"),
    ];
    let block: String = values
        .iter()
        .map(|(k, v)| format!("      {k}: {v}  # was typed by YAML\n"))
        .collect();
    let flow: Vec<String> = values.iter().map(|(k, v)| format!("{k}: {v}")).collect();
    let stack = format!(
        "services:\n  block:\n    recipe: storage/redis\n    environment:\n{block}  \
         flow:\n    recipe: storage/redis\n    environment: {{{}}}  # flow\n  \
         llm:\n    recipe: inference/vllm\n",
        flow.join(", ")
    );
    std::fs::create_dir_all(repo.path().join("stacks")).unwrap();
    std::fs::write(repo.path().join("stacks/env.yaml"), stack).unwrap();
    let dir = repo.path().to_str().unwrap();
    for service in ["env/block", "env/flow"] {
        let (code, script, stderr) = stackctl(&["render", "-C", dir, service]);
        assert_eq!(code, 0, "{stderr}");
        // The container gets them through Apptainer (`--cleanenv` + `APPTAINERENV_`).
        for (key, value) in values {
            let line = format!("stackctl_env+=('APPTAINERENV_{key}={value}')\n");
            assert!(
                script.contains(&line),
                "{service}: expected {line:?} in\n{script}"
            );
        }
        // The recipe's own values too: a quoted "yes" and a plain number.
        assert!(
            script.contains("stackctl_env+=('APPTAINERENV_REDIS_APPENDONLY=yes')\n"),
            "{script}"
        );
        assert!(
            script.contains("stackctl_env+=('APPTAINERENV_REDIS_PORT=6379')\n"),
            "{script}"
        );
    }
    let (code, vllm, stderr) = stackctl(&["render", "-C", dir, "env/llm"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        vllm.contains("stackctl_env+=('APPTAINERENV_VLLM_GPU_MEMORY_UTILIZATION=0.9')\n"),
        "{vllm}"
    );
}

/// The repo root is a repo to fork: its stack validates and plans from the shipped recipes.
#[test]
fn the_root_stack_validates_and_renders_from_the_shipped_recipes() {
    let root = env!("CARGO_MANIFEST_DIR");
    let (code, stdout, stderr) = stackctl(&["validate", "-C", root]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.contains("2 services"), "{stdout}");
    // The cache runs in a container; the inference stand-in on the bare node.
    for (service, in_container) in [("example/cache", true), ("example/llm", false)] {
        let (code, script, stderr) = stackctl(&["render", "-C", root, service]);
        assert_eq!(code, 0, "{stderr}");
        assert_eq!(script.contains(" apptainer "), in_container, "{script}");
    }
    let stack = std::fs::read_to_string(Path::new(root).join("stacks/example.yaml")).unwrap();
    assert!(stack.contains("NEEDS A CONTAINER RUNTIME") && stack.contains("protect: true"));
}

fn yaml(path: &str) -> serde_json::Value {
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    let text = std::fs::read_to_string(&file).unwrap();
    serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Every `run:` script of a GitHub workflow, joined.
fn github_scripts(workflow: &serde_json::Value) -> String {
    let mut scripts = String::new();
    for job in workflow["jobs"].as_object().unwrap().values() {
        for step in job["steps"].as_array().unwrap() {
            if let Some(run) = step["run"].as_str() {
                scripts.push_str(run);
                scripts.push('\n');
            }
        }
    }
    scripts
}

#[test]
fn the_ci_workflows_have_the_jobs_and_flags_the_docs_promise() {
    let own = yaml(".github/workflows/ci.yml");
    assert!(github_scripts(&own).contains(".ci/run"), "{own}");

    let github = yaml("examples/github-actions/stackctl.yml");
    assert!(github["on"]["pull_request"].is_object() && github["on"]["push"].is_object());
    assert_eq!(github["concurrency"]["cancel-in-progress"], false);
    assert!(
        github["concurrency"]["group"]
            .as_str()
            .unwrap()
            .contains("cluster")
    );
    let scripts = github_scripts(&github);
    for needle in [
        "stackctl plan --max-destroy 5 -out plan.json",
        "--format markdown > plan.md",
        "gh pr comment",
        "stackctl apply --lock-timeout 10m --max-destroy 5 plan.json",
    ] {
        assert!(scripts.contains(needle), "{needle}:\n{scripts}");
    }

    let gitlab = yaml("examples/gitlab-ci/.gitlab-ci.yml");
    assert_eq!(gitlab["stages"], serde_json::json!(["plan", "apply"]));
    assert_eq!(
        gitlab[".cluster"]["resource_group"],
        "stackctl-cluster-prod"
    );
    let script = |job: &str| {
        gitlab[job]["script"]
            .as_array()
            .unwrap()
            .iter()
            .map(|line| line.as_str().unwrap().to_owned())
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert!(script("plan").contains("stackctl plan --max-destroy 5 -out plan.json"));
    assert!(script("plan").contains("merge_requests/$CI_MERGE_REQUEST_IID/notes"));
    assert_eq!(gitlab["plan"]["artifacts"]["paths"][0], "plan.json");
    assert_eq!(gitlab["apply"]["needs"], serde_json::json!(["plan"]));
    assert!(
        script("apply").contains("stackctl apply --lock-timeout 10m --max-destroy 5 plan.json")
    );
}

/// The GitHub anchor of a heading's text: lower case, letters, digits, `_`, `-` and spaces
/// kept (spaces as `-`), everything else (backticks, dots, commas, parentheses) dropped.
fn anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || matches!(c, '_' | '-' | ' '))
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

/// The lines of a markdown text outside its fenced code blocks, with their line numbers.
fn prose_lines(text: &str) -> Vec<(usize, &str)> {
    let mut fenced = false;
    let mut lines = Vec::new();
    for (number, line) in text.lines().enumerate() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
        } else if !fenced {
            lines.push((number + 1, line));
        }
    }
    lines
}

/// Every anchor a markdown text's headings define (a repeated heading gets `-1`, `-2`, …).
fn anchors(text: &str) -> Vec<String> {
    let mut found: Vec<String> = Vec::new();
    for (_, line) in prose_lines(text) {
        let hashes = line.chars().take_while(|&c| c == '#').count();
        if !(1..=6).contains(&hashes) || !line[hashes..].starts_with(' ') {
            continue;
        }
        let base = anchor(&line[hashes..]);
        let repeats = found
            .iter()
            .filter(|a| {
                **a == base
                    || a.strip_prefix(&format!("{base}-"))
                        .is_some_and(|n| n.parse::<u32>().is_ok())
            })
            .count();
        found.push(if repeats == 0 {
            base
        } else {
            format!("{base}-{repeats}")
        });
    }
    found
}

/// The relative links `[text](target)` of a markdown text outside code, with line numbers.
fn relative_links(text: &str) -> Vec<(usize, String)> {
    let mut links = Vec::new();
    for (number, line) in prose_lines(text) {
        // Inline code spans are not links: drop them, however many backticks they use.
        let mut prose = String::new();
        let mut rest = line;
        while let Some(start) = rest.find('`') {
            prose.push_str(&rest[..start]);
            let ticks = rest[start..].chars().take_while(|&c| c == '`').count();
            let fence = "`".repeat(ticks);
            let after = &rest[start + ticks..];
            rest = match after.find(&fence) {
                Some(end) => &after[end + ticks..],
                None => "",
            };
        }
        prose.push_str(rest);
        let mut rest = prose.as_str();
        while let Some(start) = rest.find("](") {
            let after = &rest[start + 2..];
            let Some(end) = after.find(')') else { break };
            let target = &after[..end];
            if !target.contains("://") && !target.starts_with("mailto:") && !target.is_empty() {
                links.push((number, target.to_owned()));
            }
            rest = &after[end..];
        }
    }
    links
}

/// What is wrong with the relative links of the markdown file `file` (text `text`): a target
/// that does not exist, or an `#anchor` no heading of the target defines. `read` gives the
/// text of another markdown file, `None` when it does not exist.
fn broken_links(
    file: &Path,
    text: &str,
    exists: &dyn Fn(&Path) -> bool,
    read: &dyn Fn(&Path) -> Option<String>,
) -> Vec<String> {
    let mut broken = Vec::new();
    for (line, target) in relative_links(text) {
        let (path, fragment) = match target.split_once('#') {
            Some((path, fragment)) => (path, Some(fragment)),
            None => (target.as_str(), None),
        };
        let resolved = if path.is_empty() {
            file.to_path_buf()
        } else {
            file.parent().unwrap().join(path)
        };
        let where_ = format!("{}:{line}: ({target})", file.display());
        if !exists(&resolved) {
            broken.push(format!("{where_}: no file {}", resolved.display()));
            continue;
        }
        if let Some(fragment) = fragment {
            let heading_text = if path.is_empty() {
                Some(text.to_owned())
            } else if path.ends_with(".md") {
                read(&resolved)
            } else {
                None
            };
            match heading_text {
                Some(target_text) if anchors(&target_text).iter().any(|a| a == fragment) => {}
                Some(_) => broken.push(format!("{where_}: no heading #{fragment}")),
                None => broken.push(format!(
                    "{where_}: an anchor into a file that is not markdown"
                )),
            }
        }
    }
    broken
}

/// README.md, every page in docs/ and the READMEs of recipes/ and examples/watch/ link only to
/// files and headings that exist, so moving or renaming a section cannot leave a dead link
/// behind (docs/incoming/ holds drafts, not pages, and is not checked).
#[test]
fn every_relative_link_in_the_docs_points_at_an_existing_file_and_heading() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut pages = vec![
        root.join("README.md"),
        root.join("recipes/README.md"),
        root.join("examples/watch/README.md"),
    ];
    let mut docs: Vec<_> = std::fs::read_dir(root.join("docs"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|e| e == "md"))
        .collect();
    docs.sort();
    assert!(docs.len() >= 10, "docs/ lost its pages: {docs:?}");
    pages.extend(docs);
    let exists = |path: &Path| path.exists();
    let read = |path: &Path| std::fs::read_to_string(path).ok();
    let mut broken = Vec::new();
    let mut checked = 0;
    for page in &pages {
        let text = std::fs::read_to_string(page).unwrap();
        checked += relative_links(&text).len();
        let relative = page.strip_prefix(root).unwrap();
        broken.extend(broken_links(
            relative,
            &text,
            &|p| exists(&root.join(p)),
            &|p| read(&root.join(p)),
        ));
    }
    assert!(
        checked > 50,
        "only {checked} links found: the link parser is broken"
    );
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}

/// The link check itself finds a missing file, a missing heading, and passes good links,
/// links inside code and repeated headings.
#[test]
fn the_link_check_reports_a_missing_file_and_a_missing_heading() {
    let a = "# Page\n\n## Two words\n\n## Two words\n\nSee [b](b.md#the-end), [c](c.md), \
             [here](#two-words-1), [gone](#nowhere).\n\n`[code](nothing.md)`\n\n```\n[x](y.md)\n```\n";
    let b = "# B\n\n## The `end`.\n";
    let files = |p: &Path| match p.to_str().unwrap() {
        "d/a.md" => Some(a.to_owned()),
        "d/b.md" => Some(b.to_owned()),
        _ => None,
    };
    let broken = broken_links(Path::new("d/a.md"), a, &|p| files(p).is_some(), &files);
    assert_eq!(
        broken,
        [
            "d/a.md:7: (c.md): no file d/c.md",
            "d/a.md:7: (#nowhere): no heading #nowhere",
        ],
        "{broken:#?}"
    );
}

/// The body of every `<<'WORD'` heredoc of `script` that feeds `python3 -`.
fn python_heredocs(script: &str) -> Vec<String> {
    let mut bodies = Vec::new();
    let mut lines = script.lines();
    while let Some(line) = lines.next() {
        let Some((_, word)) = line
            .split_once("python3 - <<'")
            .and_then(|(a, rest)| Some((a, rest.strip_suffix('\'')?)))
        else {
            continue;
        };
        let body: Vec<&str> = lines.by_ref().take_while(|l| *l != word).collect();
        bodies.push(body.join("\n"));
    }
    bodies
}

/// The benchmark clients and the OpenAI stand-in run on the bare node (no container): each
/// renders, as a job aimed at a shipped server, to a script bash parses, whose embedded Python
/// compiles, which names its tool and shows no secret.
#[test]
fn the_benchmark_clients_and_the_stand_in_render_scripts_that_parse() {
    let repo = shipped_recipes_repo();
    let stack = "services:\n  llm:\n    recipe: inference/openai-stand-in\n  kv:\n    recipe: storage/redis\n  db:\n    recipe: storage/postgres\n  http:\n    kind: job\n    recipe: benchmark/http-load\n    target: llm\n  redis:\n    kind: job\n    recipe: benchmark/redis\n    target: kv\n  pg:\n    kind: job\n    recipe: benchmark/postgres\n    target: db\n  chat:\n    kind: job\n    recipe: benchmark/openai-chat\n    target: llm\n";
    std::fs::create_dir_all(repo.path().join("stacks")).unwrap();
    std::fs::write(repo.path().join("stacks/bench.yaml"), stack).unwrap();
    let dir = repo.path().to_str().unwrap();
    let (code, stdout, stderr) = stackctl(&["validate", "-C", dir]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    for (service, tool, python) in [
        ("llm", "ThreadingHTTPServer", 1),
        ("http", "hey -n", 0),
        ("redis", "redis-benchmark -h", 0),
        ("pg", "pgbench -c", 0),
        ("chat", "/chat/completions", 1),
    ] {
        let (code, script, stderr) = stackctl(&["render", "-C", dir, &format!("bench/{service}")]);
        assert_eq!(code, 0, "{service}: {stderr}");
        assert!(!script.contains("apptainer"), "{service}:\n{script}");
        assert!(script.contains(tool), "{service} runs {tool}:\n{script}");
        assert!(!script.contains(PASSWORD), "{service} shows a secret");
        let file = repo.path().join(format!("{service}.sh"));
        std::fs::write(&file, &script).unwrap();
        let out = Command::new("bash").arg("-n").arg(&file).output().unwrap();
        assert!(
            out.status.success(),
            "{service}: bash -n: {}\n{script}",
            String::from_utf8_lossy(&out.stderr)
        );
        let bodies = python_heredocs(&script);
        assert_eq!(bodies.len(), python, "{service}:\n{script}");
        for body in bodies {
            let file = repo.path().join(format!("{service}.py"));
            std::fs::write(&file, &body).unwrap();
            let check = "import sys; compile(open(sys.argv[1]).read(), sys.argv[1], 'exec')";
            let out = Command::new("python3")
                .args(["-c", check])
                .arg(&file)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{service}: {}\n{body}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}
