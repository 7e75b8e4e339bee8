//! `depends_on:`: names resolved to services, conditions, and cycles refused.

use super::*;

/// Lifts a service's `depends_on:` list, checking each entry on its own: `SERVICE` (in
/// `stack`) or `STACK/SERVICE`, and a condition of `started` or `ready` (the default). Each
/// entry's origin is recorded as `depends_on[i]`; whether the service exists and whether the
/// dependencies form a cycle is checked once every stack is loaded ([`check_depends_on`]).
pub(super) fn lift_depends_on(
    ctx: &mut Ctx,
    stack: &str,
    field: &str,
    raw: Option<&Spanned<Vec<Spanned<raw::DependsOn>>>>,
    origins: &mut BTreeMap<String, Origin>,
) -> Vec<Dependency> {
    let mut list: Vec<Dependency> = Vec::new();
    for (i, entry) in raw
        .map(|r| r.value.as_slice())
        .unwrap_or_default()
        .iter()
        .enumerate()
    {
        let entry_field = format!("{field}.depends_on[{i}]");
        let (service, condition) = match &entry.value {
            raw::DependsOn::Service { service, condition } => (service, condition),
            raw::DependsOn::Not(what) => {
                ctx.error(
                    entry.referenced,
                    &entry_field,
                    format!(
                        "{what} is not a dependency: write SERVICE, STACK/SERVICE or \
                         {{service: .., condition: started|ready}}"
                    ),
                );
                continue;
            }
        };
        let parts: Vec<&str> = service.split('/').collect();
        let address = match parts.as_slice() {
            [name] => ServiceAddr::new(stack, *name),
            [stack, name] => ServiceAddr::new(*stack, *name),
            _ => ServiceAddr::new("", ""),
        };
        if check_name(&address.stack).is_err() || check_name(&address.service).is_err() {
            ctx.error(
                entry.referenced,
                &entry_field,
                format!("{service:?} is not SERVICE or STACK/SERVICE, e.g. db or cache/redis"),
            );
            continue;
        }
        let condition = match condition.as_deref().map(Condition::parse) {
            None => Condition::Ready,
            Some(Ok(condition)) => condition,
            Some(Err(problem)) => {
                ctx.error(
                    entry.referenced,
                    &format!("{entry_field}.condition"),
                    problem,
                );
                continue;
            }
        };
        if list.iter().any(|d| d.service == address) {
            ctx.error(
                entry.referenced,
                &entry_field,
                format!("{} is listed twice", address.reference()),
            );
            continue;
        }
        origins.insert(
            format!("depends_on[{}]", list.len()),
            ctx.origin(entry.referenced, &entry_field),
        );
        list.push(Dependency {
            service: address,
            condition,
        });
    }
    list
}

/// Checks every `depends_on:` entry against the loaded services: the service exists and is
/// not the depending one, and no chain of dependencies leads back to where it started.
pub(super) fn check_depends_on(desired: &Desired, errors: &mut Vec<SpecError>) {
    let mut broken = false;
    for (addr, service) in &desired.services {
        for (i, dependency) in service.depends_on.iter().enumerate() {
            let at = service.origin(&format!("depends_on[{i}]"));
            let problem = if &dependency.service == addr {
                "a service cannot depend on itself".to_owned()
            } else if !desired.services.contains_key(&dependency.service) {
                format!("no service {} in the repo", dependency.service.reference())
            } else {
                continue;
            };
            broken = true;
            errors.push(at.error(problem));
        }
    }
    if broken {
        return;
    }
    if let Err(cycle) = desired.dependency_order() {
        // Reported at the entry of the cycle's first service that names the next one.
        let first = desired.services.get(cycle[0]).expect("a loaded service");
        let i = first
            .depends_on
            .iter()
            .position(|d| &d.service == cycle[1])
            .unwrap_or(0);
        let names: Vec<String> = cycle.iter().map(|a| a.reference()).collect();
        errors.push(first.origin(&format!("depends_on[{i}]")).error(format!(
            "dependency cycle: {}; no service of a cycle could ever start",
            names.join(" -> ")
        )));
    }
}
