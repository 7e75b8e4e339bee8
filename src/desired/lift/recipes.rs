//! Recipe files: the name, what runs (image, command, setup) and the default settings a stack
//! service may override.

use super::*;

/// Lifted recipes by reference; `None` marks a recipe that failed (its errors are reported).
pub(super) type RecipeTable = BTreeMap<String, Option<Recipe>>;

/// A recipe after validation: what it runs, plus its default settings.
pub(super) struct Recipe {
    pub(super) image: Option<String>,
    pub(super) command: Option<String>,
    pub(super) container: Option<crate::container::ContainerSpec>,
    pub(super) setup: Vec<String>,
    pub(super) defaults: Layer,
}

/// Lifts every recipe the loader read, after the problems it met listing `recipes/`.
pub(super) fn lift_recipes(
    listing: Listing<raw::Recipe>,
    definitions: &Definitions,
    runtime: crate::container::Runtime,
    errors: &mut Vec<SpecError>,
) -> RecipeTable {
    let mut table = RecipeTable::new();
    errors.extend(listing.problems);
    for file in listing.files {
        let relative = &file.relative;
        let name = relative
            .with_extension("")
            .to_string_lossy()
            .replace('\\', "/");
        let stem = relative
            .file_stem()
            .expect("a listed file has a name")
            .to_string_lossy()
            .into_owned();
        let shown = Path::new(RECIPES_DIR).join(relative);
        let recipe = match file.parsed {
            Ok(recipe) => {
                let before = errors.len();
                let mut ctx = Ctx {
                    file: &shown,
                    errors,
                };
                let where_ = RecipeDir {
                    definitions,
                    shown: shown.parent().unwrap_or(Path::new(RECIPES_DIR)),
                    runtime,
                };
                let lifted = lift_recipe(&mut ctx, recipe, &stem, &where_);
                lifted.filter(|_| errors.len() == before)
            }
            Err(e) => {
                errors.push(e);
                None
            }
        };
        table.insert(name, recipe);
    }
    table
}

/// Where a recipe lives, for the definition files next to it, and the default runtime.
pub(super) struct RecipeDir<'a> {
    /// The definition files the loader read, by their path as shown.
    pub(super) definitions: &'a Definitions,
    /// The directory as messages and specs name it (`recipes/web`).
    pub(super) shown: &'a Path,
    /// `container_runtime:` of `stackctl.yaml`.
    pub(super) runtime: crate::container::Runtime,
}

pub(super) fn lift_recipe(
    ctx: &mut Ctx,
    recipe: raw::Recipe,
    stem: &str,
    where_: &RecipeDir,
) -> Option<Recipe> {
    if recipe.name.value != stem {
        ctx.error(
            recipe.name.referenced,
            "name",
            format!(
                "recipe name {:?} must match the file name {stem:?}",
                recipe.name.value
            ),
        );
    }
    if recipe.container.is_none() && recipe.command.is_none() {
        ctx.error(
            recipe.name.referenced,
            "command",
            "a recipe needs a `container`, a `command`, or both",
        );
        return None;
    }
    let image = recipe
        .container
        .as_ref()
        .and_then(|c| lift_image(ctx, &c.image, "container.image"));
    let command = recipe
        .command
        .as_ref()
        .and_then(|v| lift_command(ctx, v, "command"));
    let container = recipe
        .container
        .as_ref()
        .and_then(|c| lift_container(ctx, c, where_));
    let setup = lift_setup(ctx, recipe.setup.as_deref());
    let defaults = lift_layer(
        ctx,
        "",
        &recipe.resources,
        &recipe.slurm,
        &recipe.environment,
        recipe.ports.as_ref(),
        recipe.health.as_ref(),
    );
    let defaults = Layer {
        restart: recipe
            .restart
            .as_ref()
            .map(|r| lift_restart(ctx, "restart", r))
            .unwrap_or_default(),
        update: lift_update(
            ctx,
            "",
            recipe.update.as_ref(),
            recipe.renew_before.as_ref(),
        ),
        ..defaults
    };
    if let Some(gpu_type) = &defaults.resources.gpu_type {
        let gpu_invalid = recipe.resources.gpu.is_some() && defaults.resources.gpu.is_none();
        ctx.errors.extend(gpu_type_needs_gpus(
            gpu_type,
            defaults.resources.gpu.as_ref(),
            gpu_invalid,
            None,
        ));
    }
    Some(Recipe {
        image,
        command,
        container,
        setup,
        defaults,
    })
}

/// Validates `setup:`: non-empty lines without NUL bytes.
pub(super) fn lift_setup(ctx: &mut Ctx, setup: Option<&[Spanned<String>]>) -> Vec<String> {
    let mut lines = Vec::new();
    for line in setup.into_iter().flatten() {
        if line.value.trim().is_empty() || line.value.contains('\0') {
            ctx.error(line.referenced, "setup", "must be a non-empty shell line");
        } else {
            lines.push(line.value.clone());
        }
    }
    lines
}

/// Validates a container image: a non-empty, single-line path or URI.
pub(super) fn lift_image(ctx: &mut Ctx, v: &Spanned<String>, field: &str) -> Option<String> {
    if v.value.trim().is_empty() || v.value.contains(['\n', '\0']) {
        ctx.error(
            v.referenced,
            field,
            "must be a non-empty, single-line path or URI",
        );
        None
    } else {
        Some(v.value.clone())
    }
}

/// Validates a command: non-empty, without NUL bytes.
pub(super) fn lift_command(ctx: &mut Ctx, v: &Spanned<String>, field: &str) -> Option<String> {
    if v.value.trim().is_empty() || v.value.contains('\0') {
        ctx.error(
            v.referenced,
            field,
            "must be a non-empty command without NUL bytes",
        );
        None
    } else {
        Some(v.value.clone())
    }
}
