//! Whether a service's jobs can record their readiness: the worst-case marker comment must fit
//! Slurm's limit.

use super::*;

/// The longest address a job records about itself: what `hostname` returns when the node has
/// no IPv4 address (Linux's `HOST_NAME_MAX`); an IPv4 or IPv6 address is shorter.
pub(super) const MAX_RECORDED_ADDR_LEN: usize = 64;

/// Returns the longest comment a job of `service` can carry: its marker with the longest
/// replica index list its replica count allows (at most [`crate::desired::marker::MAX_INDEXES_LEN`]),
/// every crash-loop, rollout and endpoint field at its widest, and the readiness record the job writes
/// once running (`health=ready;ready_at=…;addr=…;ports=…`, every port 5 digits).
pub(super) fn worst_case_comment_len(
    owner: &Owner,
    addr: &ServiceAddr,
    service: &Service,
) -> usize {
    use crate::desired::marker::{
        FailRecord, Health, MAX_INDEXES_LEN, Marker, RestartRecord, SelfReport,
    };
    use crate::job::JobId;
    let all_indexes: usize = (0..service.replicas)
        .map(|i| i.to_string().len() + 1)
        .sum::<usize>()
        .saturating_sub(1);
    let widest_id = JobId {
        array: u64::from(u32::MAX),
        task: Some(u32::MAX),
    };
    let marker = Marker {
        owner: owner.clone(),
        service: addr.clone(),
        spec: service.hash.clone(),
        nonce: "f".repeat(12),
        indexes: "9".repeat(all_indexes.min(MAX_INDEXES_LEN)),
        report: SelfReport {
            health: Some(Health::Ready),
            addr: Some("h".repeat(MAX_RECORDED_ADDR_LEN)),
            ports: vec![65535; service.spec.ports.len()],
            ready_at: Some(99_999_999_999),
        },
        restart: RestartRecord {
            restarts: u32::MAX,
            fail: Some(FailRecord {
                state: "OUT_OF_MEMORY".into(),
                exit: Some(i32::MIN),
                at: 99_999_999_999,
            }),
            not_before: Some(99_999_999_999),
        },
        protect: true,
        pred: Some(widest_id),
        // One 8-digit fingerprint per `endpoint_env` variable (`ep=`).
        endpoints: vec!["f".repeat(8); service.spec.endpoint_env.len()],
    };
    marker.to_string().len()
}

/// Refuses every service whose jobs' comment could outgrow Slurm's limit
/// ([`crate::desired::marker::MAX_COMMENT_LEN`]) once they record their readiness: Slurm would refuse
/// the record, and the replicas would run but never count as ready.
pub(super) fn check_marker_lengths(owner: &Owner, desired: &Desired, errors: &mut Vec<SpecError>) {
    let limit = crate::desired::marker::MAX_COMMENT_LEN;
    for (addr, service) in &desired.services {
        let len = worst_case_comment_len(owner, addr, service);
        if len <= limit {
            continue;
        }
        let setting = if service.spec.ports.is_empty() {
            "recipe"
        } else {
            "ports"
        };
        errors.push(service.origin(setting).error(format!(
            "{addr}'s jobs could need a Slurm comment of {len} characters once they record their \
             readiness (Slurm allows {limit}): the comment holds the owner ({} characters), the \
             stack and service names ({} and {}), {} port(s) of up to 5 digits and the node's \
             address; declare fewer ports, or use a shorter owner, stack or service name (over \
             by {})",
            owner.as_str().len(),
            addr.stack.len(),
            addr.service.len(),
            service.spec.ports.len(),
            len - limit
        )));
    }
}
