//! Services: overrides and their origins, environment, resources, ports and health,
//! `depends_on:`, names and the comment limit.

use super::*;

#[test]
fn depends_on_resolves_names_and_orders_services_after_their_dependencies() {
    let recipe = (
        "recipes/demo/svc.yaml",
        "name: svc\ncommand: sleep infinity\n",
    );
    let repo = load_files(
            &[
                ("stackctl.yaml", "owner: t\n"),
                recipe,
                (
                    "stacks/a.yaml",
                    "services:\n  web:\n    recipe: demo/svc\n    depends_on:\n      - api\n      - {service: b/db, condition: started}\n  api:\n    recipe: demo/svc\n    depends_on: [b/db]\n",
                ),
                ("stacks/b.yaml", "services:\n  db:\n    recipe: demo/svc\n"),
            ],
            None,
        )
        .unwrap();
    let desired = &repo.desired;
    let web = &desired.services[&ServiceAddr::new("a", "web")];
    assert_eq!(
        web.depends_on,
        vec![
            Dependency {
                service: ServiceAddr::new("a", "api"),
                condition: Condition::Ready,
            },
            Dependency {
                service: ServiceAddr::new("b", "db"),
                condition: Condition::Started,
            },
        ]
    );
    assert_eq!(
        web.origin("depends_on[1]").field,
        "services.web.depends_on[1]"
    );
    let order: Vec<String> = desired
        .dependency_order()
        .unwrap()
        .iter()
        .map(|a| a.reference())
        .collect();
    assert_eq!(order, ["b/db", "a/api", "a/web"]);
    // Not part of the spec: the hash is the one of the same service without depends_on.
    let plain = &desired.services[&ServiceAddr::new("b", "db")];
    assert_eq!(web.hash, plain.hash);
}

#[test]
fn a_dependency_cycle_is_named_from_its_first_service() {
    let recipe = (
        "recipes/demo/svc.yaml",
        "name: svc\ncommand: sleep infinity\n",
    );
    let errors = load_files(
            &[
                ("stackctl.yaml", "owner: t\n"),
                recipe,
                (
                    "stacks/a.yaml",
                    "services:\n  x:\n    recipe: demo/svc\n  y:\n    recipe: demo/svc\n    depends_on: [z]\n  z:\n    recipe: demo/svc\n    depends_on: [x, b/w]\n",
                ),
                (
                    "stacks/b.yaml",
                    "services:\n  w:\n    recipe: demo/svc\n    depends_on: [a/y]\n",
                ),
            ],
            None,
        )
        .unwrap_err();
    let text = errors.to_string();
    assert!(
        text.contains("dependency cycle: a/y -> a/z -> b/w -> a/y"),
        "{text}"
    );
    assert!(text.contains("services.y.depends_on[0]"), "{text}");
}

const VALUES: [(&str, &str); 9] = [
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

/// Loads one service whose recipe and stack environments are given as YAML.
fn environment(recipe_env: &str, stack_env: &str) -> BTreeMap<String, String> {
    let recipe = format!("name: svc\ncommand: run\nenvironment:{recipe_env}");
    let stack = format!("services:\n  app:\n    recipe: demo/svc\n    environment:{stack_env}");
    let repo = load_files(
        &[
            ("stackctl.yaml", "owner: t\n"),
            ("recipes/demo/svc.yaml", &recipe),
            ("stacks/web.yaml", &stack),
        ],
        None,
    )
    .unwrap_or_else(|e| panic!("{e}\n{recipe}\n{stack}"));
    repo.desired.services[&ServiceAddr::new("web", "app")]
        .spec
        .environment
        .clone()
}

#[test]
fn environment_values_reach_the_job_exactly_as_written_in_block_style() {
    let mut block = String::from("\n");
    for (key, value) in VALUES {
        block.push_str(&format!("  {key}: {value}   # a comment: {key}: 1\n"));
    }
    let expected: BTreeMap<String, String> = VALUES
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    assert_eq!(environment(&block, " {}\n"), expected, "in a recipe");
    let stack_block = block.replace("\n  ", "\n      ");
    assert_eq!(environment(" {}\n", &stack_block), expected, "in a stack");
}

#[test]
fn environment_values_reach_the_job_exactly_as_written_in_flow_style() {
    let entries: Vec<String> = VALUES.iter().map(|(k, v)| format!("{k}: {v}")).collect();
    let expected: BTreeMap<String, String> = VALUES
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    for flow in [
        format!(" {{{}}}  # trailing comment\n", entries.join(", ")),
        format!(" {{{}}}\n", entries.join(",")),
        format!(
            " {{\n  {}\n}}   # comment\n",
            entries.join(" ,  # comment\n  ")
        ),
    ] {
        assert_eq!(environment(&flow, " {}\n"), expected, "recipe: {flow}");
        assert_eq!(environment(" {}\n", &flow), expected, "stack: {flow}");
    }
}

#[test]
fn environment_values_keep_quoting_aliases_and_multibyte_neighbours() {
    let env = environment(
        "\n  Q: \"8.0\"   # quoted\n  S: 'yes'\n  U: \"naïve → 0.50\"\n",
        "\n      W: &w 1.50\n      W2: *w\n      X: ~user\n      Y: 0.9\n      Z: -0.0\n      N: .inf\n",
    );
    let expected = [
        ("N", ".inf"),
        ("Q", "8.0"),
        ("S", "yes"),
        ("U", "naïve → 0.50"),
        ("W", "1.50"),
        ("W2", "1.50"),
        ("X", "~user"),
        ("Y", "0.9"),
        ("Z", "-0.0"),
    ];
    let expected: BTreeMap<String, String> = expected
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    assert_eq!(env, expected);
}

#[test]
fn time_limits_are_read_in_slurm_formats_and_unlimited_is_never_renewed() {
    let service = |recipe_limit: &str, stack_limit: &str| {
        let repo = load_files(
            &[
                ("stackctl.yaml", "owner: t\n"),
                (
                    "recipes/demo/svc.yaml",
                    &format!(
                        "name: svc\ncommand: serve\nresources: {{time_limit: {recipe_limit}}}\n"
                    ),
                ),
                (
                    "stacks/s.yaml",
                    &format!("services:\n  a:\n    recipe: demo/svc\n{stack_limit}"),
                ),
            ],
            None,
        )
        .unwrap();
        repo.desired.services.into_values().next().unwrap()
    };
    let a = service("90", "");
    assert_eq!(a.spec.resources.time_limit, Some(90));
    assert_eq!(a.update.renew_before, Some(540));
    let b = service("90", "    resources: {time_limit: 2-12}\n");
    assert_eq!(b.spec.resources.time_limit, Some(3600));
    let c = service("'1:00:00'", "    resources: {time_limit: 45m}\n");
    assert_eq!(c.spec.resources.time_limit, Some(45));
    let d = service("2h", "    resources: {time_limit: UNLIMITED}\n");
    assert_eq!(
        d.spec.resources.time_limit,
        Some(crate::desired::UNLIMITED_MINUTES)
    );
    assert_eq!(d.update.renew_before, None);
    // The hash of a limit in minutes does not depend on how it was written.
    assert_eq!(service("1-00:00:00", "").hash, service("1440", "").hash);
}

#[test]
fn memory_is_read_as_written() {
    let load_memory = |memory: &str| {
        load_files(
            &[
                ("stackctl.yaml", "owner: t\n"),
                (
                    "recipes/demo/svc.yaml",
                    &format!("name: svc\ncommand: run\nresources: {{memory: {memory}}}\n"),
                ),
                ("stacks/web.yaml", "services: {app: {recipe: demo/svc}}\n"),
            ],
            None,
        )
        .map(|repo| {
            repo.desired.services[&ServiceAddr::new("web", "app")]
                .spec
                .resources
                .memory
                .clone()
        })
    };
    assert_eq!(load_memory("1024").unwrap().as_deref(), Some("1024"));
    // YAML would read these as 1024: as written they are no memory amounts.
    for odd in ["0x400", "1_024", "1024.0"] {
        let errors = load_memory(odd).unwrap_err();
        assert!(
            errors.0[0].message.contains(&format!("{odd:?}")),
            "{errors}"
        );
    }
}

#[test]
fn a_service_whose_comment_could_pass_slurms_limit_is_refused_at_its_ports() {
    let with = |owner: &str, service: &str, ports: usize, replicas: u32| {
        let list = vec!["auto"; ports].join(", ");
        load_files(
            &[
                ("stackctl.yaml", &format!("owner: {owner}\n")),
                ("recipes/demo/svc.yaml", "name: svc\ncommand: serve\n"),
                (
                    "stacks/s.yaml",
                    &format!(
                        "services:\n  {service}:\n    recipe: demo/svc\n    replicas: {replicas}\n    ports: [{list}]\n"
                    ),
                ),
            ],
            None,
        )
    };
    // Short names leave room for many ports; long ones and a long index list do not.
    assert!(with("t", "api", 80, 3).is_ok());
    let long_owner = format!("github.com/{}", "o".repeat(100));
    let long_name = "s".repeat(60);
    assert!(with(&long_owner, &long_name, 30, 3).is_ok());
    let errors = with(&long_owner, &long_name, 30, 2000).unwrap_err();
    assert_eq!(errors.0.len(), 1, "{errors}");
    let error = &errors.0[0];
    assert_eq!(error.file, Path::new("stacks/s.yaml"));
    assert_eq!(error.position, Some((5, 12)));
    assert_eq!(
        error.field.as_deref(),
        Some(&*format!("services.{long_name}.ports"))
    );
    assert!(error.message.contains("Slurm allows 1024"), "{error}");
    // The bound holds every comment a job of the service can really carry.
    let repo = with("t", "api", 3, 12).unwrap();
    let (addr, service) = repo.desired.services.iter().next().unwrap();
    let bound = worst_case_comment_len(&repo.settings.owner, addr, service);
    let real = format!(
        "stackctl/v1;owner=t;stack=s;svc=api;spec={};nonce=0123456789ab;idx=0-11;\
             restarts=3;fail=FAILED:1:1764000000;begin=1764000100;protect=1;pred=4242_7;\
             health=ready;ready_at=1764000200;addr=10.0.0.17;ports=40001,40002,40003",
        service.hash
    );
    assert!(
        crate::observed::Marker::parse(&real).is_some(),
        "a real comment"
    );
    assert!(real.len() <= bound, "{} > {bound}", real.len());
}

#[test]
fn a_stack_service_overrides_the_command_and_the_image() {
    let recipe = "name: worker\ncontainer: {image: base.sif}\ncommand: run --queue default\n";
    let stack = "services:\n  plain:\n    recipe: batch/worker\n  urgent:\n    recipe: batch/worker\n    command: run --queue urgent\n  gpu:\n    recipe: batch/worker\n    container: {image: docker://example/worker:cuda}\n";
    let repo = load_files(
        &[
            ("stackctl.yaml", "owner: t\n"),
            ("recipes/batch/worker.yaml", recipe),
            ("stacks/q.yaml", stack),
        ],
        None,
    )
    .unwrap();
    let get = |name: &str| &repo.desired.services[&ServiceAddr::new("q", name)];
    let (plain, urgent, gpu) = (get("plain"), get("urgent"), get("gpu"));
    assert_eq!(plain.spec.command.as_deref(), Some("run --queue default"));
    assert_eq!(urgent.spec.command.as_deref(), Some("run --queue urgent"));
    assert_eq!(urgent.spec.image.as_deref(), Some("base.sif"));
    assert_eq!(gpu.spec.command.as_deref(), Some("run --queue default"));
    assert_eq!(
        gpu.spec.image.as_deref(),
        Some("docker://example/worker:cuda")
    );
    assert_ne!(plain.hash, urgent.hash);
    assert_ne!(plain.hash, gpu.hash);
    let origin = &urgent.origins["command"];
    assert_eq!(
        (origin.position, origin.field.as_str()),
        (Some((6, 14)), "services.urgent.command")
    );
    assert!(!plain.origins.contains_key("command"));
    // An empty override is an error naming the stack's field.
    let errors = load_files(
        &[
            ("stackctl.yaml", "owner: t\n"),
            ("recipes/batch/worker.yaml", recipe),
            (
                "stacks/q.yaml",
                "services:\n  a:\n    recipe: batch/worker\n    command: ' '\n",
            ),
        ],
        None,
    )
    .unwrap_err();
    assert_eq!(
        errors.0[0].field.as_deref(),
        Some("services.a.command"),
        "{errors}"
    );
}

#[test]
fn origins_point_at_the_stack_override_or_the_recipe_default() {
    let recipe = "name: vllm\ncommand: serve\nresources:\n  cpu: 8\n  memory: 32G\n  gpu: 1\n  gpu_type: a100\nports: [8000]\nslurm: {partition: gpu, qos: normal}\n";
    let stack = "services:\n  llm:\n    recipe: inference/vllm\n    replicas: 3\n    resources:\n      gpu: 2\n      memory_per_cpu: 4G\n    slurm: {qos: high}\n    ports:\n      - 9000\n";
    let repo = load_files(
        &[
            ("stackctl.yaml", "owner: t\n"),
            ("recipes/inference/vllm.yaml", recipe),
            ("stacks/web.yaml", stack),
        ],
        None,
    )
    .unwrap();
    let service = &repo.desired.services[&ServiceAddr::new("web", "llm")];
    let at = |key: &str| {
        let o = &service.origins[key];
        (
            o.file.to_str().unwrap().to_owned(),
            o.position,
            o.field.clone(),
        )
    };
    let stack_at = |line, column, field: &str| {
        (
            "stacks/web.yaml".to_owned(),
            Some((line, column)),
            field.to_owned(),
        )
    };
    let recipe_at = |line, column, field: &str| {
        (
            "recipes/inference/vllm.yaml".to_owned(),
            Some((line, column)),
            field.to_owned(),
        )
    };
    assert_eq!(at("recipe"), stack_at(3, 13, "services.llm.recipe"));
    assert_eq!(at("replicas"), stack_at(4, 15, "services.llm.replicas"));
    assert_eq!(
        at("resources.gpu"),
        stack_at(6, 12, "services.llm.resources.gpu")
    );
    assert_eq!(
        at("resources.memory_per_cpu"),
        stack_at(7, 23, "services.llm.resources.memory_per_cpu")
    );
    assert_eq!(at("slurm.qos"), stack_at(8, 18, "services.llm.slurm.qos"));
    assert_eq!(at("ports"), stack_at(10, 7, "services.llm.ports"));
    assert_eq!(at("resources.cpu"), recipe_at(4, 8, "resources.cpu"));
    assert_eq!(
        at("resources.gpu_type"),
        recipe_at(7, 13, "resources.gpu_type")
    );
    assert_eq!(at("slurm.partition"), recipe_at(9, 20, "slurm.partition"));
    // The stack's memory_per_cpu replaced the recipe's memory; nothing else was written.
    for absent in [
        "resources.memory",
        "resources.nodes",
        "resources.time_limit",
        "resources.cpu_bind",
        "slurm.account",
    ] {
        assert!(!service.origins.contains_key(absent), "{absent}");
    }
    assert_eq!(
        service.origin("resources.nodes").field,
        "services.llm.recipe"
    );
    assert_eq!(service.spec.ports, vec![PortSpec::fixed(9000)]);
    assert_eq!(service.spec.resources.gpu, 2);
    assert_eq!(service.spec.resources.memory, None);
    assert_eq!(service.spec.resources.memory_per_cpu.as_deref(), Some("4G"));

    // Without overrides, every setting points into the recipe; `gpu: 0` drops the type.
    let stack = "services:\n  llm:\n    recipe: inference/vllm\n    resources: {gpu: 0}\n";
    let repo = load_files(
        &[
            ("stackctl.yaml", "owner: t\n"),
            ("recipes/inference/vllm.yaml", recipe),
            ("stacks/web.yaml", stack),
        ],
        None,
    )
    .unwrap();
    let service = &repo.desired.services[&ServiceAddr::new("web", "llm")];
    let at = |key: &str| {
        let o = &service.origins[key];
        (
            o.file.to_str().unwrap().to_owned(),
            o.position,
            o.field.clone(),
        )
    };
    assert_eq!(at("resources.memory"), recipe_at(5, 11, "resources.memory"));
    assert_eq!(at("ports"), recipe_at(8, 8, "ports"));
    assert_eq!(
        at("resources.gpu"),
        stack_at(4, 22, "services.llm.resources.gpu")
    );
    assert!(!service.origins.contains_key("resources.gpu_type"));
    assert!(!service.origins.contains_key("replicas"));
    assert_eq!(service.spec.resources.gpu_type, None);
}

#[test]
fn health_and_ports_are_read_with_defaults_and_resolved_after_stack_overrides() {
    let recipe = "name: web\ncommand: serve\nports: [8000, auto, {name: http, port: auto}, {name: metrics, port: 9100}]\nhealth:\n  http: {port: http, path: /health}\n  start_period: 1m\n";
    let load_with = |stack: &str| {
        load_files(
            &[
                ("stackctl.yaml", "owner: t\n"),
                ("recipes/demo/web.yaml", recipe),
                ("stacks/s.yaml", stack),
            ],
            None,
        )
        .map(|repo| repo.desired.services[&ServiceAddr::new("s", "app")].clone())
    };
    let service = load_with("services: {app: {recipe: demo/web}}\n").unwrap();
    assert_eq!(
        service.spec.ports,
        vec![
            PortSpec::fixed(8000),
            PortSpec {
                name: None,
                port: PortValue::Auto
            },
            PortSpec {
                name: Some("http".into()),
                port: PortValue::Auto
            },
            PortSpec {
                name: Some("metrics".into()),
                port: PortValue::Fixed(9100)
            },
        ]
    );
    assert_eq!(
        service.spec.health,
        Some(HealthSpec {
            probe: Probe::Http {
                port: 2,
                path: "/health".into()
            },
            interval: 5,
            timeout: 2,
            start_period: 60,
            failure_threshold: 3,
            on_failure: OnFailure::Restart,
        })
    );
    // The recipe's check by name follows the stack's own ports.
    let service =
        load_with("services: {app: {recipe: demo/web, ports: [{name: http, port: 81}]}}\n")
            .unwrap();
    assert!(matches!(
        service.spec.health.unwrap().probe,
        Probe::Http { port: 0, .. }
    ));
    // A stack replaces the whole check; a port number and the default (first port)
    // resolve.
    let service = load_with(
        "services: {app: {recipe: demo/web, health: {tcp: {port: 9100}, on_failure: ignore}}}\n",
    )
    .unwrap();
    let health = service.spec.health.unwrap();
    assert_eq!(health.probe, Probe::Tcp { port: 3 });
    assert_eq!(
        (health.start_period, health.on_failure),
        (0, OnFailure::Ignore)
    );
    let service = load_with("services: {app: {recipe: demo/web, health: {tcp: {}}}}\n").unwrap();
    assert_eq!(service.spec.health.unwrap().probe, Probe::Tcp { port: 0 });
    // A check that needs a port, on a service without any.
    let errors = load_with("services: {app: {recipe: demo/web, ports: [], health: {tcp: {}}}}\n")
        .unwrap_err();
    assert_eq!(
        errors.0[0].field.as_deref(),
        Some("services.app.health.tcp"),
        "{errors}"
    );
    assert!(errors.0[0].message.contains("declares none"), "{errors}");
}

#[test]
fn partition_lists_are_valid() {
    assert!(check_partition("gpu,debug").is_ok());
    assert!(check_partition("gpu").is_ok());
    for bad in ["", "gpu,", ",gpu", "gpu,,debug", "gpu debug", "gpu;debug"] {
        assert!(check_partition(bad).is_err(), "{bad}");
    }
}

#[test]
fn recipe_refs_cannot_escape_the_recipes_dir() {
    assert!(check_recipe_ref("inference/vllm").is_ok());
    for bad in [
        "../etc/passwd",
        "/etc/passwd",
        "a/../b",
        "a//b",
        ".hidden",
        "",
    ] {
        assert!(check_recipe_ref(bad).is_err(), "{bad}");
    }
}

#[test]
fn nearest_suggests_only_close_names() {
    let known = ["inference/vllm".to_string(), "storage/redis".to_string()];
    assert_eq!(nearest("inference/vlm", known.iter()), Some(&known[0]));
    assert_eq!(nearest("something/else", known.iter()), None);
}
