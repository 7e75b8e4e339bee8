//! The recipes and examples the project ships must load, and render what their docs promise.

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

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

#[test]
fn every_shipped_recipe_loads_and_renders_an_apptainer_job() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let repo = tempfile::tempdir().unwrap();
    copy_dir(&root.join("recipes"), &repo.path().join("recipes"));
    std::fs::write(repo.path().join("stackctl.yaml"), "owner: shipped-test\n").unwrap();
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
    assert!(stdout.contains("9 services"), "{stdout}");
    for recipe in recipes {
        let name = recipe.rsplit('/').next().unwrap();
        let (code, script, stderr) = stackctl(&["render", "-C", dir, &format!("all/{name}")]);
        assert_eq!(code, 0, "{stderr}");
        assert!(
            script.contains("exec apptainer "),
            "{recipe} must run in Apptainer:\n{script}"
        );
        assert!(
            root.join("recipes").join(format!("{recipe}.def")).exists(),
            "{recipe} needs its .def"
        );
    }
    let (_, vllm, _) = stackctl(&["render", "-C", dir, "all/vllm"]);
    assert!(
        vllm.contains("#SBATCH --gres=gpu:a100:1") && vllm.contains("apptainer run --nv"),
        "{vllm}"
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
