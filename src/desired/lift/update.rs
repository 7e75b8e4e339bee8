//! `update:`, `restart:` and `renew_before:`: rolling updates, restarts after failure, and the
//! renewal of time-limited replicas.

use super::*;

/// Validates a `restart:` block: durations from 1s to 1d, `max_attempts` `none` or 0 to
/// 10000. Whether `max_backoff` is at least `backoff` is checked once the layers are merged.
pub(super) fn lift_restart(
    ctx: &mut Ctx,
    field: &str,
    restart: &Spanned<raw::Restart>,
) -> RestartDraft {
    let r = &restart.value;
    let seconds = |ctx: &mut Ctx, v: &Option<Spanned<String>>, name: &str| {
        let v = v.as_ref()?;
        let field = format!("{field}.{name}");
        match crate::desired::parse_duration(&v.value) {
            Ok(d) if (1..=86_400).contains(&d.as_secs()) => Some(Set {
                value: d.as_secs(),
                origin: ctx.origin(v.referenced, &field),
            }),
            Ok(d) => {
                ctx.error(
                    v.referenced,
                    &field,
                    format!("must be between 1s and 1d, got {}s", d.as_secs()),
                );
                None
            }
            Err(message) => {
                ctx.error(v.referenced, &field, message);
                None
            }
        }
    };
    let backoff = seconds(ctx, &r.backoff, "backoff");
    let max_backoff = seconds(ctx, &r.max_backoff, "max_backoff");
    let max_attempts = r.max_attempts.as_ref().and_then(|v| {
        let field = format!("{field}.max_attempts");
        let value = match &v.value {
            raw::Attempts::Unlimited => None,
            raw::Attempts::Count(raw::Int::Not(what)) => {
                ctx.error(
                    v.referenced,
                    &field,
                    format!("must be an integer or `none`, got {what}"),
                );
                return None;
            }
            raw::Attempts::Count(raw::Int::Value(n)) if (0..=10_000).contains(n) => {
                Some(u32::try_from(*n).expect("within 0..=10000"))
            }
            raw::Attempts::Count(raw::Int::Value(n)) => {
                ctx.error(
                    v.referenced,
                    &field,
                    format!("must be between 0 and 10000 (or `none`), got {n}"),
                );
                return None;
            }
        };
        Some(Set {
            value,
            origin: ctx.origin(v.referenced, &field),
        })
    });
    RestartDraft {
        backoff,
        max_backoff,
        max_attempts,
    }
}

/// A `restart:` layer as validated: each field optional, so a stack overrides field by field.
#[derive(Default)]
pub(super) struct RestartDraft {
    pub(super) backoff: Option<Set<u64>>,
    pub(super) max_backoff: Option<Set<u64>>,
    pub(super) max_attempts: Option<Set<Option<u32>>>,
}

impl RestartDraft {
    /// Lays `over` (a stack service's) over `base` (the recipe's) and fills in the defaults;
    /// an error when the effective `max_backoff` is shorter than `backoff`.
    pub(super) fn merge(
        over: RestartDraft,
        base: &RestartDraft,
    ) -> Result<RestartPolicy, SpecError> {
        let defaults = RestartPolicy::default();
        let backoff = over.backoff.or_else(|| base.backoff.clone());
        let max_backoff = over.max_backoff.or_else(|| base.max_backoff.clone());
        let max_attempts = over.max_attempts.or_else(|| base.max_attempts.clone());
        let policy = RestartPolicy {
            backoff: backoff.as_ref().map_or(defaults.backoff, |s| s.value),
            max_backoff: max_backoff
                .as_ref()
                .map_or(defaults.max_backoff, |s| s.value),
            max_attempts: max_attempts.map_or(defaults.max_attempts, |s| s.value),
        };
        if policy.max_backoff < policy.backoff {
            let at = max_backoff.or(backoff).expect("a default pair is in order");
            return Err(at.origin.error(format!(
                "max_backoff ({}s) must be at least backoff ({}s)",
                policy.max_backoff, policy.backoff
            )));
        }
        Ok(policy)
    }
}

/// Validates a duration setting in `min..=max` seconds, recording an error otherwise.
pub(super) fn seconds_in(
    ctx: &mut Ctx,
    v: Option<&Spanned<String>>,
    field: &str,
    min: u64,
    max: u64,
) -> Option<Set<u64>> {
    let v = v?;
    match crate::desired::parse_duration(&v.value) {
        Ok(d) if (min..=max).contains(&d.as_secs()) => Some(Set {
            value: d.as_secs(),
            origin: ctx.origin(v.referenced, field),
        }),
        Ok(d) => {
            ctx.error(
                v.referenced,
                field,
                format!("must be between {min}s and {max}s, got {}s", d.as_secs()),
            );
            None
        }
        Err(message) => {
            ctx.error(v.referenced, field, message);
            None
        }
    }
}

/// The longest `timeout`, `queue_timeout` and `renew_before`: a week.
pub(super) const MAX_UPDATE_SECONDS: u64 = 7 * 86_400;

/// Validates an `update:` block and a `renew_before:` line (`prefix` is `services.NAME.` in a
/// stack, empty in a recipe). Whether `max_surge` and `max_unavailable` are not both 0 and
/// `renew_before` is shorter than the time limit is checked once the layers are merged.
pub(super) fn lift_update(
    ctx: &mut Ctx,
    prefix: &str,
    update: Option<&Spanned<raw::Update>>,
    renew_before: Option<&Spanned<String>>,
) -> UpdateDraft {
    let renew_before = renew_before.and_then(|v| {
        let field = format!("{prefix}renew_before");
        if v.value.trim() == "off" {
            return Some(Set {
                value: None,
                origin: ctx.origin(v.referenced, &field),
            });
        }
        seconds_in(ctx, Some(v), &field, 1, MAX_UPDATE_SECONDS).map(|set| Set {
            value: Some(set.value),
            origin: set.origin,
        })
    });
    let Some(update) = update else {
        return UpdateDraft {
            renew_before,
            ..UpdateDraft::default()
        };
    };
    let u = &update.value;
    let field = |name: &str| format!("{prefix}update.{name}");
    let strategy = u.strategy.as_ref().and_then(|v| {
        let at = field("strategy");
        let value = match v.value.as_str() {
            "rolling" => Strategy::Rolling,
            "recreate" => Strategy::Recreate,
            other => {
                ctx.error(
                    v.referenced,
                    &at,
                    format!("{other:?} is neither `rolling` nor `recreate`"),
                );
                return None;
            }
        };
        Some(Set {
            value,
            origin: ctx.origin(v.referenced, &at),
        })
    });
    let count = |ctx: &mut Ctx, v: &Option<Spanned<raw::Int>>, name: &str| {
        let v = v.as_ref()?;
        let at = field(name);
        ctx.int_in(v, &at, 0, MAX_REPLICAS).map(|value| Set {
            value,
            origin: ctx.origin(v.referenced, &at),
        })
    };
    let max_surge = count(ctx, &u.max_surge, "max_surge");
    let max_unavailable = count(ctx, &u.max_unavailable, "max_unavailable");
    let min_healthy_time = seconds_in(
        ctx,
        u.min_healthy_time.as_ref(),
        &field("min_healthy_time"),
        0,
        86_400,
    );
    let timeout = seconds_in(
        ctx,
        u.timeout.as_ref(),
        &field("timeout"),
        1,
        MAX_UPDATE_SECONDS,
    );
    let queue_timeout = seconds_in(
        ctx,
        u.queue_timeout.as_ref(),
        &field("queue_timeout"),
        1,
        MAX_UPDATE_SECONDS,
    );
    let auto_revert = u.auto_revert.as_ref().and_then(|v| {
        let at = field("auto_revert");
        let value = match v.value.as_str() {
            "true" => {
                // Refused rather than accepted and ignored.
                ctx.error(
                    v.referenced,
                    &at,
                    "`auto_revert: true` is not supported yet: a stopped rollout keeps the \
                     replicas not yet replaced and cancels its failed successors, but does not \
                     roll back the ones already swapped in"
                        .to_owned(),
                );
                return None;
            }
            "false" => false,
            other => {
                ctx.error(
                    v.referenced,
                    &at,
                    format!("must be `true` or `false`, got {other:?}"),
                );
                return None;
            }
        };
        Some(Set {
            value,
            origin: ctx.origin(v.referenced, &at),
        })
    });
    UpdateDraft {
        strategy,
        max_surge,
        max_unavailable,
        min_healthy_time,
        timeout,
        queue_timeout,
        auto_revert,
        renew_before,
    }
}

/// An `update:` layer (with `renew_before:`) as validated: each field optional, so a stack
/// overrides field by field.
#[derive(Default)]
pub(super) struct UpdateDraft {
    pub(super) strategy: Option<Set<Strategy>>,
    pub(super) max_surge: Option<Set<u32>>,
    pub(super) max_unavailable: Option<Set<u32>>,
    pub(super) min_healthy_time: Option<Set<u64>>,
    pub(super) timeout: Option<Set<u64>>,
    pub(super) queue_timeout: Option<Set<u64>>,
    pub(super) auto_revert: Option<Set<bool>>,
    pub(super) renew_before: Option<Set<Option<u64>>>,
}

impl UpdateDraft {
    /// Lays `over` (a stack service's) over `base` (the recipe's) and fills in `defaults` (see
    /// [`UpdatePolicy::defaults_for`]); an error when `max_surge` and `max_unavailable` are
    /// both 0 (a rollout could never move) or `renew_before` is not shorter than the time limit
    /// (`time_limit`, minutes).
    pub(super) fn merge(
        over: UpdateDraft,
        base: &UpdateDraft,
        defaults: UpdatePolicy,
        time_limit: Option<u32>,
    ) -> Result<UpdatePolicy, SpecError> {
        fn pick<T: Clone>(over: Option<Set<T>>, base: &Option<Set<T>>) -> Option<Set<T>> {
            over.or_else(|| base.clone())
        }
        // The pair is reported where the stack completed it, if it did, else in the recipe.
        let pair_in_over = over.max_unavailable.clone().or(over.max_surge.clone());
        let strategy = pick(over.strategy, &base.strategy);
        let max_surge = pick(over.max_surge, &base.max_surge);
        let max_unavailable = pick(over.max_unavailable, &base.max_unavailable);
        let renew_before = pick(over.renew_before, &base.renew_before);
        let value =
            |set: &Option<Set<u64>>, default: u64| set.as_ref().map_or(default, |s| s.value);
        let policy = UpdatePolicy {
            strategy: strategy.as_ref().map_or(defaults.strategy, |s| s.value),
            max_surge: max_surge.as_ref().map_or(defaults.max_surge, |s| s.value),
            max_unavailable: max_unavailable
                .as_ref()
                .map_or(defaults.max_unavailable, |s| s.value),
            min_healthy_time: value(
                &pick(over.min_healthy_time, &base.min_healthy_time),
                defaults.min_healthy_time,
            ),
            timeout: value(&pick(over.timeout, &base.timeout), defaults.timeout),
            queue_timeout: value(
                &pick(over.queue_timeout, &base.queue_timeout),
                defaults.queue_timeout,
            ),
            auto_revert: pick(over.auto_revert, &base.auto_revert)
                .map_or(defaults.auto_revert, |s| s.value),
            renew_before: renew_before
                .as_ref()
                .map_or(defaults.renew_before, |s| s.value),
        };
        if policy.max_surge == 0
            && policy.max_unavailable == 0
            && let Some(at) = pair_in_over.or(max_surge).or(max_unavailable)
        {
            return Err(at.origin.error(
                "max_surge and max_unavailable cannot both be 0: a rolling update could \
                 neither add a successor nor remove a replica",
            ));
        }
        if let (Some(renew), Some(minutes), Some(at)) =
            (policy.renew_before, time_limit, renew_before)
            && renew >= u64::from(minutes) * 60
        {
            return Err(at.origin.error(format!(
                "renew_before ({renew}s) must be shorter than the time limit ({minutes}m): \
                 every replica would be renewed as soon as it starts"
            )));
        }
        Ok(policy)
    }
}
