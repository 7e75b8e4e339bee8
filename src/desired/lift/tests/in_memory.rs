//! Lifting needs nothing but what the loader read: repos given wholly in memory.

use super::*;
use crate::desired::load::{Listing, Read, YamlFile};
use crate::desired::yaml;
use std::path::PathBuf;

/// Parses `text` as the file `relative` of the listing of `dir`.
fn file<T: serde::de::DeserializeOwned>(dir: &str, relative: &str, text: &str) -> YamlFile<T> {
    YamlFile {
        relative: PathBuf::from(relative),
        parsed: yaml::parse(text, &Path::new(dir).join(relative)),
    }
}

/// A repo with one charliecloud recipe built from `recipes/Dockerfile`, one stack running it,
/// and an SSH target whose key lives under `~`; `definitions` is what the loader read.
fn read(definitions: Definitions) -> Read {
    let config = "owner: github.com/team/infra\ncluster:\n  ssh:\n    host: login\n    \
                  identity_file: ~/.ssh/id\n";
    let recipe = "name: web\ncommand: serve\n\
                  container: {runtime: charliecloud, image: site, build: Dockerfile}\n";
    Read {
        config: yaml::parse(config, Path::new("stackctl.yaml")),
        remote_url: None,
        home: Some("/home/in-memory".to_owned()),
        recipes: Listing {
            problems: Vec::new(),
            files: vec![file("recipes", "web.yaml", recipe)],
        },
        stacks: Listing {
            problems: Vec::new(),
            files: vec![file(
                "stacks",
                "demo.yaml",
                "services:\n  web:\n    recipe: web\n",
            )],
        },
        definitions,
    }
}

#[test]
fn lifting_takes_files_and_home_from_the_loader_only() {
    let definitions = [(
        PathBuf::from("recipes/Dockerfile"),
        Ok(b"FROM alpine:3\n".to_vec()),
    )]
    .into();
    let repo = lift(read(definitions)).unwrap();
    let ssh = repo.settings.ssh.unwrap();
    assert_eq!(
        ssh.identity_file,
        Some(PathBuf::from("/home/in-memory/.ssh/id"))
    );
    let service = repo.desired.services.values().next().unwrap();
    let build = service.spec.container.as_ref().unwrap().build.as_ref();
    assert_eq!(build.map(|b| b.text.as_str()), Some("FROM alpine:3\n"));
    assert_eq!(build.map(|b| b.file.as_str()), Some("recipes/Dockerfile"));
}

#[test]
fn a_definition_the_loader_could_not_read_is_an_error_at_its_field() {
    let definitions = [(
        PathBuf::from("recipes/Dockerfile"),
        Err("permission denied".to_owned()),
    )]
    .into();
    let errors = lift(read(definitions)).unwrap_err();
    let error = &errors.0[0];
    assert_eq!(error.file, Path::new("recipes/web.yaml"), "{error}");
    assert_eq!(error.field.as_deref(), Some("container.build"), "{error}");
    assert_eq!(
        error.message, "cannot read recipes/Dockerfile: permission denied",
        "{error}"
    );
}
