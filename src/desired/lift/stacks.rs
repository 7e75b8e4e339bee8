//! Stack files and their services: names, the recipe each runs, replicas, and the overrides
//! laid over the recipe's defaults.

use super::*;

/// Lifts every stack the loader read, after the problems it met listing `stacks/`, then checks
/// what crosses services: endpoint references, `depends_on:` and job targets.
pub(super) fn lift_stacks(
    listing: Listing<raw::Stack>,
    recipes: &RecipeTable,
    errors: &mut Vec<SpecError>,
) -> Desired {
    let mut desired = Desired::default();
    errors.extend(listing.problems);
    for file in listing.files {
        let file_name = file.relative;
        let shown = Path::new(STACKS_DIR).join(&file_name);
        let stem = file_name.with_extension("");
        let stem = stem.to_string_lossy();
        let stack = match file.parsed {
            Ok(stack) => stack,
            Err(e) => {
                errors.push(e);
                continue;
            }
        };
        if let Err(message) = check_name(&stem) {
            errors.push(SpecError::file(
                &shown,
                format!("stack file name: {message}"),
            ));
            continue;
        }
        if let Some(name) = &stack.name
            && name.value != stem
        {
            errors.push(SpecError::at(
                &shown,
                name.referenced,
                "name",
                format!(
                    "stack name {:?} must match the file name {stem:?}",
                    name.value
                ),
            ));
        }
        for (service_name, service) in stack.services {
            let field = format!("services.{service_name}");
            if let Err(message) = check_name(&service_name) {
                // Map keys carry no position; the service's `recipe:` line is right below.
                errors.push(SpecError::at(
                    &shown,
                    service.recipe.referenced,
                    &field,
                    message,
                ));
                continue;
            }
            let mut ctx = Ctx {
                file: &shown,
                errors,
            };
            if let Some(service) = lift_service(&mut ctx, &stem, &field, service, recipes) {
                desired
                    .services
                    .insert(ServiceAddr::new(stem.as_ref(), service_name), service);
            }
        }
    }
    check_endpoint_refs(&desired, errors);
    check_depends_on(&desired, errors);
    link_job_targets(&mut desired, errors);
    desired
}

/// Checks a recipe reference such as `inference/vllm`: relative, no `..`, no hidden parts.
pub(super) fn check_recipe_ref(reference: &str) -> Result<(), String> {
    let ok = !reference.is_empty()
        && reference.split('/').all(|part| {
            part.chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphanumeric())
                && part
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
                && !part.contains("..")
        });
    if ok {
        Ok(())
    } else {
        Err(format!(
            "recipe {reference:?} must be a path under recipes/ such as \"inference/vllm\" \
             (no leading '/', no '..')"
        ))
    }
}

/// Lifts one stack service: its recipe, replicas and overrides merged over the recipe's defaults,
/// its health check resolved against the merged ports, endpoints, dependencies and job settings.
pub(super) fn lift_service(
    ctx: &mut Ctx,
    stack: &str,
    field: &str,
    service: raw::Service,
    recipes: &RecipeTable,
) -> Option<Service> {
    let reference = &service.recipe;
    let recipe_field = format!("{field}.recipe");
    if let Err(message) = check_recipe_ref(&reference.value) {
        ctx.error(reference.referenced, &recipe_field, message);
        return None;
    }
    let recipe = service_recipe(ctx, reference, &recipe_field, recipes)?;
    let before = ctx.errors.len();
    let replicas_field = format!("{field}.replicas");
    let replicas = match &service.replicas {
        Some(r) => ctx
            .int_in(r, &replicas_field, 0, MAX_REPLICAS)
            .map(|n| Set {
                value: n,
                origin: ctx.origin(r.referenced, &replicas_field),
            }),
        None => None,
    };
    let mut overrides = lift_layer(
        ctx,
        &format!("{field}."),
        &service.resources,
        &service.slurm,
        &service.environment,
        service.ports.as_ref(),
        service.health.as_ref(),
    );
    if let Some(c) = &service.container {
        check_container_override(ctx, field, c);
    }
    let image = service.container.as_ref().and_then(|c| {
        let field = format!("{field}.container.image");
        lift_image(ctx, &c.image, &field).map(|value| Set {
            value,
            origin: ctx.origin(c.image.referenced, &field),
        })
    });
    let command = service.command.as_ref().and_then(|v| {
        let field = format!("{field}.command");
        lift_command(ctx, v, &field).map(|value| Set {
            value,
            origin: ctx.origin(v.referenced, &field),
        })
    });
    overrides.restart = service
        .restart
        .as_ref()
        .map(|r| lift_restart(ctx, &format!("{field}.restart"), r))
        .unwrap_or_default();
    overrides.update = lift_update(
        ctx,
        &format!("{field}."),
        service.update.as_ref(),
        service.renew_before.as_ref(),
    );
    if let Some(gpu_type) = &overrides.resources.gpu_type {
        let gpu_invalid = service.resources.gpu.is_some() && overrides.resources.gpu.is_none();
        let gpu = overrides
            .resources
            .gpu
            .as_ref()
            .or(recipe.defaults.resources.gpu.as_ref());
        ctx.errors.extend(gpu_type_needs_gpus(
            gpu_type,
            gpu,
            gpu_invalid,
            Some(&reference.value),
        ));
    }
    if ctx.errors.len() > before {
        return None;
    }
    let restart_over = std::mem::take(&mut overrides.restart);
    let restart = match RestartDraft::merge(restart_over, &recipe.defaults.restart) {
        Ok(policy) => policy,
        Err(error) => {
            ctx.errors.push(error);
            return None;
        }
    };
    let update_over = std::mem::take(&mut overrides.update);
    // `renew_before:` written on the service itself: a protected service's opt-in to renewal.
    let renew_written = update_over
        .renew_before
        .as_ref()
        .map(|set| (set.value.is_some(), set.origin.clone()));
    let (mut spec, mut origins, health) = recipe.with_overrides(overrides);
    if let Some(image) = image {
        spec.image = Some(image.value);
        origins.insert("container.image".to_owned(), image.origin);
    }
    if let Some(command) = command {
        spec.command = Some(command.value);
        origins.insert("command".to_owned(), command.origin);
    }
    if let Some(health) = health {
        let ports_origin = origins.get("ports");
        match health.resolve(&spec.ports, ports_origin) {
            Ok(health) => spec.health = Some(health),
            Err(error) => {
                ctx.errors.push(error);
                return None;
            }
        }
    }
    let before = ctx.errors.len();
    lift_endpoint_env(ctx, field, &service.endpoint_env, &mut spec, &mut origins);
    let depends_on = lift_depends_on(ctx, stack, field, service.depends_on.as_ref(), &mut origins);
    let replace_on_endpoint_move = lift_on_endpoint_move(ctx, field, &service);
    let job = lift_job(
        ctx,
        (stack, field),
        &service,
        &spec,
        replicas.as_ref(),
        &mut origins,
    );
    if ctx.errors.len() > before {
        return None;
    }
    origins.insert(
        "recipe".to_owned(),
        ctx.origin(reference.referenced, &recipe_field),
    );
    // An invalid count was reported above, so `None` here means none was written.
    let replicas = match replicas {
        Some(set) => {
            origins.insert("replicas".to_owned(), set.origin);
            set.value
        }
        None => 1,
    };
    let update = match UpdateDraft::merge(
        update_over,
        &recipe.defaults.update,
        UpdatePolicy::defaults_for(replicas, spec.health.is_some(), spec.resources.time_limit),
        spec.resources.time_limit,
    ) {
        Ok(policy) => policy,
        Err(error) => {
            ctx.errors.push(error);
            return None;
        }
    };
    let protect = service.protect.as_ref().is_some_and(|p| p.value);
    if let Some((renews, origin)) = renew_written {
        if protect && renews && spec.resources.time_limit.is_none() {
            ctx.errors.push(origin.error(
                "renew_before on a protected service allows its walltime renewal, but the \
                 service has no time_limit to renew before: set resources.time_limit or drop \
                 renew_before",
            ));
            return None;
        }
        origins.insert("renew_before".to_owned(), origin);
    }
    Some(Service {
        recipe: reference.value.clone(),
        replicas,
        hash: spec.hash(),
        spec,
        restart,
        protect,
        update,
        origins,
        depends_on,
        replace_on_endpoint_move,
        job,
    })
}

/// Returns the recipe `reference` names, or records why there is none: no such recipe (with
/// the nearest name), or one that failed (its own errors are reported).
fn service_recipe<'a>(
    ctx: &mut Ctx,
    reference: &Spanned<String>,
    recipe_field: &str,
    recipes: &'a RecipeTable,
) -> Option<&'a Recipe> {
    match recipes.get(&reference.value) {
        Some(Some(recipe)) => Some(recipe),
        Some(None) => {
            ctx.error(
                reference.referenced,
                recipe_field,
                format!(
                    "recipe {:?} is invalid (see its own error)",
                    reference.value
                ),
            );
            None
        }
        None => {
            let hint = nearest(&reference.value, recipes.keys())
                .map(|name| format!("; did you mean {name:?}?"))
                .unwrap_or_default();
            ctx.error(
                reference.referenced,
                recipe_field,
                format!(
                    "no recipe {:?} (looked for recipes/{}.yaml){hint}",
                    reference.value, reference.value
                ),
            );
            None
        }
    }
}
