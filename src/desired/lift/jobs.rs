//! `kind: job` services: run-to-completion jobs, their `target` and retries.

use super::*;

/// Lifts `kind:`, `target:` and `retries:`: a [`JobSpec`] for `kind: job`, none for a
/// service. `target` and `retries` apply only to a job; a job has no health check, no `auto`
/// port and at most one replica. Whether the target exists is checked once every stack is
/// loaded ([`link_job_targets`]).
pub(super) fn lift_job(
    ctx: &mut Ctx,
    (stack, field): (&str, &str),
    service: &raw::Service,
    spec: &ReplicaSpec,
    replicas: Option<&Set<u32>>,
    origins: &mut BTreeMap<String, Origin>,
) -> Option<JobSpec> {
    let is_job = match &service.kind {
        None => false,
        Some(kind) => match kind.value.as_str() {
            "service" => false,
            "job" => true,
            other => {
                ctx.error(
                    kind.referenced,
                    &format!("{field}.kind"),
                    format!("{other:?} is neither `service` nor `job`"),
                );
                return None;
            }
        },
    };
    if !is_job {
        if let Some(target) = &service.target {
            ctx.error(
                target.referenced,
                &format!("{field}.target"),
                "applies only to a one-shot job: add `kind: job`",
            );
        }
        if let Some(retries) = &service.retries {
            ctx.error(
                retries.referenced,
                &format!("{field}.retries"),
                "applies only to a one-shot job (a service's restarts are `restart:`): add `kind: job`",
            );
        }
        return None;
    }
    let at = service.kind.as_ref().map(|k| k.referenced);
    if let Some(set) = replicas.filter(|r| r.value > 1) {
        ctx.errors.push(set.origin.error(format!(
            "a job runs once per spec, so it has 0 or 1 replicas, not {}",
            set.value
        )));
    }
    if spec.health.is_some()
        && let Some(at) = at
    {
        ctx.error(
            at,
            &format!("{field}.kind"),
            "a job is not health-checked (it ends): use a recipe without `health:`",
        );
    }
    if spec.has_auto_ports()
        && let Some(at) = at
    {
        ctx.error(
            at,
            &format!("{field}.kind"),
            "a job serves nothing, so it takes no `auto` port: set `ports: []` or fixed ports",
        );
    }
    let target = service.target.as_ref().and_then(|t| {
        let parts: Vec<&str> = t.value.split('/').collect();
        let address = match parts.as_slice() {
            [name] => ServiceAddr::new(stack, *name),
            [stack, name] => ServiceAddr::new(*stack, *name),
            _ => ServiceAddr::new("", ""),
        };
        if check_name(&address.stack).is_err() || check_name(&address.service).is_err() {
            ctx.error(
                t.referenced,
                &format!("{field}.target"),
                format!(
                    "{:?} is not SERVICE or STACK/SERVICE, e.g. api or web/api",
                    t.value
                ),
            );
            return None;
        }
        origins.insert(
            "target".to_owned(),
            ctx.origin(t.referenced, &format!("{field}.target")),
        );
        Some(address)
    });
    let retries = match &service.retries {
        None => 0,
        Some(r) => ctx
            .int_in(r, &format!("{field}.retries"), 0, 100)
            .unwrap_or(0),
    };
    Some(JobSpec {
        target,
        target_hash: None,
        retries,
    })
}

/// Checks every job's `target:` against the loaded services (it exists, is not the job, is
/// no job, declares a port) and puts the target's spec hash into the job's hash.
pub(super) fn link_job_targets(desired: &mut Desired, errors: &mut Vec<SpecError>) {
    let hashes: BTreeMap<ServiceAddr, (SpecHash, bool, bool)> = desired
        .services
        .iter()
        .map(|(a, s)| {
            (
                a.clone(),
                (s.hash.clone(), s.job.is_some(), s.spec.ports.is_empty()),
            )
        })
        .collect();
    for (addr, service) in desired.services.iter_mut() {
        let Some(job) = service.job.as_mut() else {
            continue;
        };
        if let Some(target) = &job.target {
            let at = service.origins.get("target");
            let problem = match hashes.get(target) {
                _ if target == addr => Some("a job cannot target itself".to_owned()),
                None => Some(format!("no service {} in the repo", target.reference())),
                Some((_, true, _)) => Some(format!(
                    "{} is a job; a target is a service that serves",
                    target.reference()
                )),
                Some((_, _, true)) => Some(format!(
                    "{} declares no ports, so there is no address to aim at",
                    target.reference()
                )),
                Some((hash, _, _)) => {
                    job.target_hash = Some(hash.clone());
                    None
                }
            };
            if let (Some(problem), Some(at)) = (problem, at) {
                errors.push(at.error(problem));
            }
        }
        service.hash = job.hash(&service.spec);
    }
}
