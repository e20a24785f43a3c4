//! Charges held for background Responses calls, until the provider reports their usage.
//!
//! A background call (`background: true`) answers `status: queued` with no usage; its tokens
//! are reported later, by the first retrieve that shows it finished. The call's budget is
//! charged the reservation estimate when it is created, and the hold is kept here keyed by
//! the response id: the budget charged (its `reserved` is the amount held), the model (its
//! price) and the backend that stores it. The first retrieve showing the usage [`take`]s the
//! hold — a CAS removal, so exactly one request of one Envoy wins, however many poll — and
//! trues the charge up; later retrieves find nothing and charge nothing.
//!
//! Same discipline as the budget counters ([`super::store`]): a fixed set of shard keys made
//! at configure time, every change a CAS read-modify-write. A shard keeps at most
//! [`PER_SHARD`] holds (the oldest goes first: its estimate stays the charge), each for
//! [`TTL_SECS`].

use super::Charge;
use crate::host::{shared_update, Host};
use crate::support::hash::fnv1a64;
use serde::{Deserialize, Serialize};

/// Number of shard keys.
pub const SHARDS: u64 = 16;
/// Most holds per shard.
pub const PER_SHARD: usize = 256;
/// How long a hold waits for the poll that settles it (then its estimate stays the charge).
pub const TTL_SECS: u64 = 7 * 24 * 3600;

/// One held charge.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Hold {
    /// The budget charged; `reserved` is what it holds for this call.
    pub charge: Option<Charge>,
    /// The provider model (the price of the true-up).
    pub model: String,
    /// The endpoint and backend that created the response.
    pub endpoint: usize,
    pub backend: usize,
    /// Unix seconds after which the hold is dropped.
    pub expires: u64,
}

fn shard_key(id: &str) -> String {
    format!("tollgate:held:{}", fnv1a64(id.as_bytes()) % SHARDS)
}

/// Creates the shard keys that do not exist yet (configure time).
pub fn init<H: Host + ?Sized>(h: &mut H) {
    for i in 0..SHARDS {
        let key = format!("tollgate:held:{i}");
        if h.shared_get(&key).0.is_none() {
            let _ = h.shared_set(&key, b"", None);
        }
    }
}

/// A response id fit for a line (and for a path segment): `[A-Za-z0-9_-]`, 1 to 200 bytes.
pub fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 200
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// The live lines of a shard as `(id, hold)`, in insertion order.
fn holds(data: Option<&[u8]>, now: u64) -> Vec<(String, Hold)> {
    let text = data.and_then(|d| std::str::from_utf8(d).ok()).unwrap_or("");
    text.lines()
        .filter_map(|l| {
            let (id, json) = l.split_once('\t')?;
            let hold: Hold = serde_json::from_str(json).ok()?;
            (hold.expires > now).then(|| (id.to_string(), hold))
        })
        .collect()
}

fn write(list: &[(String, Hold)]) -> Vec<u8> {
    let mut out = String::new();
    for (id, hold) in list {
        if let Ok(json) = serde_json::to_string(hold) {
            out.push_str(id);
            out.push('\t');
            out.push_str(&json);
            out.push('\n');
        }
    }
    out.into_bytes()
}

/// Keeps a hold for response `id` (replacing one of the same id). False when it could not
/// be kept (an id unfit for a key, shared data failing): its estimate stays the charge.
pub fn put<H: Host + ?Sized>(h: &mut H, id: &str, hold: &Hold, now: u64) -> bool {
    if !valid_id(id) {
        return false;
    }
    shared_update(h, &shard_key(id), |current| {
        let mut list = holds(current, now);
        list.retain(|(i, _)| i != id);
        list.push((id.to_string(), hold.clone()));
        let over = list.len().saturating_sub(PER_SHARD);
        list.drain(..over);
        Some(write(&list))
    })
    .is_some()
}

/// The hold of response `id`, left in place.
pub fn get<H: Host + ?Sized>(h: &H, id: &str, now: u64) -> Option<Hold> {
    if !valid_id(id) {
        return None;
    }
    let (data, _) = h.shared_get(&shard_key(id));
    holds(data.as_deref(), now)
        .into_iter()
        .find_map(|(i, hold)| (i == id).then_some(hold))
}

/// Removes and returns the hold of response `id`: of requests taking the same hold at once
/// (any worker of this Envoy), exactly one gets it.
pub fn take<H: Host + ?Sized>(h: &mut H, id: &str, now: u64) -> Option<Hold> {
    if !valid_id(id) {
        return None;
    }
    let mut taken = None;
    let written = shared_update(h, &shard_key(id), |current| {
        taken = None;
        let mut list = holds(current, now);
        let at = list.iter().position(|(i, _)| i == id)?;
        taken = Some(list.remove(at).1);
        Some(write(&list))
    });
    // Not written (nothing to take, or shared data failing): nobody took it here.
    written.and(taken)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::host::mock::MockHost;

    fn hold(expires: u64) -> Hold {
        Hold {
            charge: None,
            model: "gpt-4o-mini".into(),
            endpoint: 0,
            backend: 1,
            expires,
        }
    }

    #[test]
    fn a_hold_is_taken_once() {
        let mut h = MockHost::default();
        init(&mut h);
        assert!(put(&mut h, "resp_1", &hold(100), 10));
        assert_eq!(get(&h, "resp_1", 10).unwrap().backend, 1);
        assert_eq!(take(&mut h, "resp_1", 10), Some(hold(100)));
        assert_eq!(take(&mut h, "resp_1", 10), None);
        assert_eq!(get(&h, "resp_1", 10), None);
    }

    #[test]
    fn expired_and_unfit_ids_hold_nothing() {
        let mut h = MockHost::default();
        init(&mut h);
        assert!(put(&mut h, "resp_2", &hold(100), 10));
        assert_eq!(take(&mut h, "resp_2", 100), None);
        for id in ["", "a\tb", "a\nb", "../x", "a%2Fb", &"x".repeat(201)] {
            assert!(!put(&mut h, id, &hold(100), 10), "{id:?}");
            assert_eq!(take(&mut h, id, 10), None);
        }
    }

    #[test]
    fn a_shard_keeps_the_newest_holds() {
        let mut h = MockHost::default();
        init(&mut h);
        // Ids of one shard.
        let ids: Vec<String> = (0..5000)
            .map(|i| format!("resp_{i}"))
            .filter(|id| shard_key(id) == shard_key("resp_0"))
            .take(PER_SHARD + 1)
            .collect();
        for id in &ids {
            assert!(put(&mut h, id, &hold(100), 10));
        }
        assert_eq!(get(&h, &ids[0], 10), None);
        assert!(get(&h, &ids[PER_SHARD], 10).is_some());
        assert!(get(&h, &ids[1], 10).is_some());
    }
}
