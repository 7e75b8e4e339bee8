//! Crash-loop backoff, as pure functions: how long the n-th restart in a row of a failed
//! replica waits, and whether a failure starts the count over.
//!
//! The n-th restart (from 1) waits `min(backoff × 2^(n-1), max_backoff)`, then ± up to 10%
//! jitter so replicas that failed together do not restart together. The jitter is derived from
//! a seed (the service, index and failed job), not a random source, so the plan made before the
//! lock and the plan made under it agree, and a plan is reproducible.

use crate::desired::RestartPolicy;

/// Returns the delay before the `restart`-th restart in a row (1 for the first), in seconds,
/// without jitter: `min(backoff × 2^(restart-1), max_backoff)`.
pub fn base_delay(policy: &RestartPolicy, restart: u32) -> u64 {
    let doublings = restart.saturating_sub(1).min(63);
    policy
        .backoff
        .saturating_mul(1u64 << doublings)
        .min(policy.max_backoff)
}

/// Returns [`base_delay`] with jitter: the base ± up to 10%, picked by `seed`, at least 1 s.
pub fn delay(policy: &RestartPolicy, restart: u32, seed: u64) -> u64 {
    let base = base_delay(policy, restart);
    // A fraction in [-1000, 1000] ten-thousandths: ± 10%.
    let permille = (mix(seed) % 2001) as i128 - 1000;
    let jittered = i128::from(base) + i128::from(base) * permille / 10_000;
    u64::try_from(jittered).unwrap_or(0).max(1)
}

/// Returns which restart in a row a successor of a failed job is: 1 when the failed job was a
/// fresh start or had run for longer than `max_backoff` (it was healthy for a while: the count
/// starts over), else one more than the failed job's own count.
pub fn next_restart(policy: &RestartPolicy, previous: u32, ran_for: Option<i64>) -> u32 {
    match ran_for {
        Some(seconds) if seconds > policy.max_backoff as i64 => 1,
        _ => previous.saturating_add(1),
    }
}

/// Returns whether the policy gives up before the `restart`-th restart.
pub fn gives_up(policy: &RestartPolicy, restart: u32) -> bool {
    policy.max_attempts.is_some_and(|max| restart > max)
}

/// Returns a seed for the jitter of one replica's restart from stable text (service, index,
/// failed job id): FNV-1a.
pub fn seed(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// SplitMix64's finalizer: spreads neighbouring seeds over the whole range.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(backoff: u64, max_backoff: u64, max_attempts: Option<u32>) -> RestartPolicy {
        RestartPolicy {
            backoff,
            max_backoff,
            max_attempts,
        }
    }

    #[test]
    fn the_delay_doubles_per_restart_up_to_the_cap() {
        let p = policy(10, 600, None);
        let delays: Vec<u64> = (1..=8).map(|n| base_delay(&p, n)).collect();
        assert_eq!(delays, [10, 20, 40, 80, 160, 320, 600, 600]);
        assert_eq!(base_delay(&p, u32::MAX), 600, "no overflow");
        assert_eq!(base_delay(&policy(2, 20, None), 4), 16);
        assert_eq!(base_delay(&policy(2, 20, None), 5), 20);
    }

    #[test]
    fn jitter_stays_within_ten_percent_and_varies_with_the_seed() {
        let p = policy(100, 10_000, None);
        let mut seen = std::collections::BTreeSet::new();
        for s in 0..2000u64 {
            let d = delay(&p, 3, seed(&s.to_string()));
            assert!((360..=440).contains(&d), "{d} outside 400 ± 10%");
            seen.insert(d);
        }
        assert!(seen.len() > 50, "jitter barely varies: {seen:?}");
        assert!(seen.iter().any(|&d| d < 380) && seen.iter().any(|&d| d > 420));
        // Deterministic: the same seed gives the same delay.
        assert_eq!(delay(&p, 3, 42), delay(&p, 3, 42));
        // Never zero, even for a 1 s backoff.
        assert!((0..100).all(|s| delay(&policy(1, 1, None), 1, s) >= 1));
    }

    #[test]
    fn a_long_run_before_the_failure_starts_the_count_over() {
        let p = policy(10, 600, None);
        assert_eq!(next_restart(&p, 0, Some(5)), 1);
        assert_eq!(next_restart(&p, 4, Some(5)), 5);
        assert_eq!(next_restart(&p, 4, None), 5);
        assert_eq!(
            next_restart(&p, 4, Some(600)),
            5,
            "exactly the cap is not longer"
        );
        assert_eq!(next_restart(&p, 4, Some(601)), 1);
    }

    #[test]
    fn max_attempts_gives_up_after_that_many_restarts() {
        assert!(!gives_up(&policy(10, 600, None), 1_000_000));
        let three = policy(10, 600, Some(3));
        assert!(!gives_up(&three, 3));
        assert!(gives_up(&three, 4));
        assert!(
            gives_up(&policy(10, 600, Some(0)), 1),
            "0: never restart a failure"
        );
    }
}
