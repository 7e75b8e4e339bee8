//! A recipe's `container:`: the runtime, the definition file next to the recipe, the binds.

use super::*;

/// Validates a recipe's `container:` beyond its image: the runtime, the definition file next
/// to the recipe (read and hashed), the binds. Returns `None` for a plain Apptainer image with
/// neither definition nor binds, and on errors (recorded).
pub(super) fn lift_container(
    ctx: &mut Ctx,
    c: &raw::Container,
    where_: &RecipeDir,
) -> Option<crate::container::ContainerSpec> {
    use crate::container::{ContainerSpec, ImageDefinition, Runtime, check_bind};
    let before = ctx.errors.len();
    let explicit = c
        .runtime
        .as_ref()
        .and_then(|v| match Runtime::parse(&v.value) {
            Ok(r) => Some(r),
            Err(message) => {
                ctx.error(v.referenced, "container.runtime", message);
                None
            }
        });
    if c.runtime.is_some() && explicit.is_none() {
        return None;
    }
    let runtime = explicit.unwrap_or(where_.runtime);
    let key = runtime.definition_key();
    let (wanted, other) = match runtime {
        Runtime::Apptainer => (&c.definition, &c.build),
        Runtime::Charliecloud | Runtime::Podman => (&c.build, &c.definition),
    };
    if let (Some(other), None) = (other, wanted) {
        let other_key = if key == "build" {
            "definition"
        } else {
            "build"
        };
        ctx.error(
            other.referenced,
            &format!("container.{other_key}"),
            format!(
                "{runtime} builds its image from `container.{key}` ({}); this recipe names only `{other_key}` (a recipe may name both, for either runtime)",
                if key == "build" {
                    "a Dockerfile"
                } else {
                    "an Apptainer .def file"
                }
            ),
        );
    }
    let build = wanted.as_ref().and_then(|v| {
        let field = format!("container.{key}");
        let name = v.value.as_str();
        if !is_plain_relative_path(name) {
            ctx.error(
                v.referenced,
                &field,
                format!(
                    "{name:?} must be a file next to the recipe (a relative path without `..`)"
                ),
            );
            return None;
        }
        let shown = where_.shown.join(name);
        let read = where_
            .definitions
            .get(&shown)
            .map_or(Err("the loader did not read it"), |read| {
                read.as_ref().map_err(String::as_str)
            });
        match read {
            Ok(content) => Some(ImageDefinition {
                file: shown.to_string_lossy().replace('\\', "/"),
                sha256: crate::container::definition_hash(content),
                text: String::from_utf8_lossy(content).into_owned(),
            }),
            Err(e) => {
                ctx.error(
                    v.referenced,
                    &field,
                    format!("cannot read {}: {e}", shown.display()),
                );
                None
            }
        }
    });
    if build.is_some()
        && let Err(message) = crate::container::check_image_name(&c.image.value)
    {
        ctx.error(c.image.referenced, "container.image", message);
    }
    let mut binds = Vec::new();
    for bind in c.binds.iter().flatten() {
        match check_bind(&bind.value) {
            Ok(()) => binds.push(bind.value.clone()),
            Err(message) => ctx.error(bind.referenced, "container.binds", message),
        }
    }
    if ctx.errors.len() > before {
        return None;
    }
    if runtime == Runtime::Apptainer && explicit.is_none() && build.is_none() && binds.is_empty() {
        return None;
    }
    Some(ContainerSpec {
        runtime,
        build,
        binds,
    })
}

/// Refuses what a stack service's `container:` may not override: everything but the image.
pub(super) fn check_container_override(ctx: &mut Ctx, field: &str, c: &raw::Container) {
    let extra = [
        ("runtime", c.runtime.as_ref().map(|v| v.referenced)),
        ("definition", c.definition.as_ref().map(|v| v.referenced)),
        ("build", c.build.as_ref().map(|v| v.referenced)),
    ];
    for (key, at) in extra {
        if let Some(at) = at {
            ctx.error(
                at,
                &format!("{field}.container.{key}"),
                "a stack may only override `container.image`; set the runtime and the \
                 image's definition in the recipe",
            );
        }
    }
    if let Some(bind) = c.binds.iter().flatten().next() {
        ctx.error(
            bind.referenced,
            &format!("{field}.container.binds"),
            "a stack may only override `container.image`; set binds in the recipe",
        );
    }
}

/// Returns whether `name` is a path relative to a recipe's directory that stays inside it: not
/// empty, not absolute, no `..`, no NUL. The loader reads only such definition files.
pub fn is_plain_relative_path(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('/')
        && !name.contains('\0')
        && Path::new(name)
            .components()
            .all(|part| matches!(part, std::path::Component::Normal(_)))
}
