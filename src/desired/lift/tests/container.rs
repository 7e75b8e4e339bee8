//! `container:`: definition files, runtimes and mistakes.

use super::*;

#[test]
fn a_container_definition_is_hashed_into_the_spec_and_the_runtime_defaults_from_settings() {
    let recipe = "name: web\ncontainer: {image: web, build: Dockerfile, binds: [/scratch]}\nsetup: [module load charliecloud]\ncommand: busybox httpd -f\n";
    let stack = "services:\n  a: {recipe: svc/web}\n  b: {recipe: svc/web}\n";
    let load = |settings: &str, dockerfile: &str| {
        load_files(
            &[
                ("stackctl.yaml", settings),
                ("recipes/svc/web.yaml", recipe),
                ("recipes/svc/Dockerfile", dockerfile),
                ("stacks/s.yaml", stack),
            ],
            None,
        )
    };
    let repo = load(
        "owner: t\ncontainer_runtime: charliecloud\n",
        "FROM debian-base\n",
    )
    .unwrap();
    let a = &repo.desired.services[&ServiceAddr::new("s", "a")];
    let c = a.spec.container.as_ref().unwrap();
    assert_eq!(c.runtime, crate::container::Runtime::Charliecloud);
    assert_eq!(c.binds, ["/scratch"]);
    let def = c.build.as_ref().unwrap();
    assert_eq!(def.file, "recipes/svc/Dockerfile");
    assert_eq!(
        def.sha256,
        crate::container::definition_hash(b"FROM debian-base\n")
    );
    assert_eq!(a.spec.setup, ["module load charliecloud"]);
    // An edited Dockerfile is a new spec; the same one is the same spec.
    let same = load(
        "owner: t\ncontainer_runtime: charliecloud\n",
        "FROM debian-base\n",
    )
    .unwrap();
    let edited = load(
        "owner: t\ncontainer_runtime: charliecloud\n",
        "FROM debian-base\nRUN true\n",
    )
    .unwrap();
    let hash = |r: &Repo| r.desired.services[&ServiceAddr::new("s", "a")].hash.clone();
    assert_eq!(hash(&repo), hash(&same));
    assert_ne!(hash(&repo), hash(&edited));
    // Under the Apptainer default the same recipe names the wrong key.
    let errors = load("owner: t\n", "FROM debian-base\n")
        .unwrap_err()
        .to_string();
    assert!(
        errors.contains("recipes/svc/web.yaml:2:")
            && errors.contains("`container.build`")
            && errors.contains("apptainer builds its image from `container.definition`"),
        "{errors}"
    );
    // A recipe naming both builds from the one its runtime uses.
    let both =
        "name: web\ncontainer: {image: web, build: Dockerfile, definition: web.def}\ncommand: x\n";
    for (settings, file) in [
        ("owner: t\n", "recipes/svc/web.def"),
        (
            "owner: t\ncontainer_runtime: podman\n",
            "recipes/svc/Dockerfile",
        ),
    ] {
        let repo = load_files(
            &[
                ("stackctl.yaml", settings),
                ("recipes/svc/web.yaml", both),
                ("recipes/svc/Dockerfile", "FROM debian-base\n"),
                ("recipes/svc/web.def", "Bootstrap: docker\n"),
                ("stacks/s.yaml", "services:\n  a: {recipe: svc/web}\n"),
            ],
            None,
        )
        .unwrap();
        let spec = &repo.desired.services[&ServiceAddr::new("s", "a")].spec;
        let build = spec.container.as_ref().unwrap().build.as_ref().unwrap();
        assert_eq!(build.file, file);
    }
    // A plain Apptainer image keeps the spec it had before containers had runtimes.
    let plain = load_files(
        &[
            ("stackctl.yaml", "owner: t\n"),
            (
                "recipes/svc/web.yaml",
                "name: web\ncontainer: {image: web.sif}\n",
            ),
            ("stacks/s.yaml", "services:\n  a: {recipe: svc/web}\n"),
        ],
        None,
    )
    .unwrap();
    let spec = &plain.desired.services[&ServiceAddr::new("s", "a")].spec;
    assert!(spec.container.is_none());
    assert!(!spec.to_canonical_json().contains("container"));
}

#[test]
fn container_mistakes_are_errors_at_their_line_and_field() {
    let cases: &[(&str, &str, &str)] = &[
        (
            "name: web\ncontainer: {runtime: docker, image: web}\ncommand: x\n",
            "recipes/svc/web.yaml:2:22: field `container.runtime`",
            "unknown container runtime \"docker\"",
        ),
        (
            "name: web\ncontainer:\n  runtime: podman\n  image: web\n  build: Missingfile\n",
            "recipes/svc/web.yaml:5:10: field `container.build`",
            "cannot read recipes/svc/Missingfile",
        ),
        (
            "name: web\ncontainer:\n  runtime: podman\n  image: web\n  build: ../Dockerfile\n",
            "recipes/svc/web.yaml:5:10: field `container.build`",
            "a file next to the recipe",
        ),
        (
            "name: web\ncontainer:\n  runtime: podman\n  image: Web/x\n  build: Dockerfile\n",
            "recipes/svc/web.yaml:4:10: field `container.image`",
            "not a path",
        ),
        (
            "name: web\ncontainer:\n  runtime: charliecloud\n  image: web\n  definition: web.def\n",
            "recipes/svc/web.yaml:5:15: field `container.definition`",
            "this recipe names only `definition`",
        ),
        (
            "name: web\ncontainer:\n  runtime: charliecloud\n  image: web\n  binds: [/a, data]\ncommand: x\n",
            "recipes/svc/web.yaml:5:15: field `container.binds`",
            "absolute paths",
        ),
        (
            "name: web\ncontainer: {image: web.sif}\nsetup: [\"module load x\", \" \"]\n",
            "recipes/svc/web.yaml:3:26: field `setup`",
            "non-empty shell line",
        ),
    ];
    for (recipe, at, message) in cases {
        let errors = load_files(
            &[
                ("stackctl.yaml", "owner: t\n"),
                ("recipes/svc/web.yaml", recipe),
                ("recipes/svc/Dockerfile", "FROM debian-base\n"),
                ("stacks/s.yaml", "services:\n  a: {recipe: svc/web}\n"),
            ],
            None,
        )
        .unwrap_err()
        .to_string();
        assert!(
            errors.contains(at) && errors.contains(message),
            "{recipe}: {errors}"
        );
    }
    let errors = load_files(
        &[
            (
                "stackctl.yaml",
                "owner: t\ncontainer_runtime: singularity\n",
            ),
            ("stacks/s.yaml", "services: {}\n"),
        ],
        None,
    )
    .unwrap_err()
    .to_string();
    assert!(
        errors.contains("stackctl.yaml:2:20: field `container_runtime`"),
        "{errors}"
    );
    let errors = load_files(
            &[
                ("stackctl.yaml", "owner: t\n"),
                ("recipes/svc/web.yaml", "name: web\ncontainer: {image: web.sif}\n"),
                (
                    "stacks/s.yaml",
                    "services:\n  a:\n    recipe: svc/web\n    container: {image: x.sif, runtime: podman}\n",
                ),
            ],
            None,
        )
        .unwrap_err()
        .to_string();
    assert!(
        errors.contains("stacks/s.yaml:4:40: field `services.a.container.runtime`"),
        "{errors}"
    );
}
