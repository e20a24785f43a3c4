//! MCP sessions bound to their caller, in Envoy shared data: a session the gateway gives
//! out (its own MCP servers), or one an upstream gave out through a relay endpoint, may be
//! used only by the caller who opened it. Another caller presenting it, or an id the
//! gateway never saw, gets the answer a server gives an unknown session (404, `-32001`):
//! nothing tells it the session exists.
//!
//! Layout: [`SHARDS`] keys created at configure time (as `governance::ratelimit` does, so
//! that every request-path write is a real compare-and-swap), each holding fixed-size
//! records (session hash u64, caller hash u64, opened at, Unix seconds u64). Only hashes
//! are stored, never an id or a credential. A shard keeps at most [`PER_SHARD`] sessions
//! younger than [`MAX_AGE_S`]: the oldest go first.

use crate::host::{shared_update, Host};
use crate::support::encoding::hex_lower;
use crate::support::hash::fnv1a64;
use crate::support::sha256::sha256;

/// Shards of the session table.
pub const SHARDS: u64 = 16;
/// Sessions kept per shard.
pub const PER_SHARD: usize = 2048;
/// A session is forgotten a day after it was opened.
pub const MAX_AGE_S: u64 = 86_400;
const RECORD: usize = 24;
const PREFIX: &str = "tollgate:mcp:sessions:";
/// The session header (lowercase).
pub const HEADER: &str = "mcp-session-id";

/// Whether a presented session may be used by a caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    /// Opened by this caller.
    Own,
    /// Unknown, expired, or another caller's: the same answer for all three.
    Unknown,
}

/// Creates the shard keys (configure time, before traffic).
pub fn init_shared<H: Host + ?Sized>(h: &mut H) {
    for i in 0..SHARDS {
        let key = format!("{PREFIX}{i}");
        if h.shared_get(&key).0.is_none() {
            let _ = h.shared_set(&key, &[], None);
        }
    }
}

/// A new session id: 32 hex digits from the request's unique id (Envoy's UUID), the
/// caller and the time, hashed.
pub fn new_id(request_id: &[u8], caller: &str, now_ms: u64) -> String {
    let mut seed = request_id.to_vec();
    seed.extend_from_slice(caller.as_bytes());
    seed.extend_from_slice(&now_ms.to_le_bytes());
    let digest = sha256(&seed);
    hex_lower(digest.get(..16).unwrap_or(&digest))
}

fn shard(session: u64) -> String {
    format!("{PREFIX}{}", session % SHARDS)
}

fn records(v: Option<&[u8]>) -> Vec<(u64, u64, u64)> {
    v.unwrap_or_default()
        .chunks_exact(RECORD)
        .map(|c| {
            let n = |i: usize| {
                let mut b = [0u8; 8];
                b.copy_from_slice(c.get(i..i + 8).unwrap_or(&[0; 8]));
                u64::from_le_bytes(b)
            };
            (n(0), n(8), n(16))
        })
        .collect()
}

/// Records that `session` belongs to `caller` (an empty caller: an anonymous one).
pub fn bind<H: Host + ?Sized>(h: &mut H, session: &str, caller: &str, now: u64) {
    bind_capped(h, session, caller, now, PER_SHARD);
}

fn bind_capped<H: Host + ?Sized>(h: &mut H, session: &str, caller: &str, now: u64, cap: usize) {
    let (s, c) = (fnv1a64(session.as_bytes()), fnv1a64(caller.as_bytes()));
    shared_update(h, &shard(s), |v| {
        let mut list: Vec<(u64, u64, u64)> = records(v)
            .into_iter()
            .filter(|(id, _, at)| *id != s && now.saturating_sub(*at) < MAX_AGE_S)
            .collect();
        list.push((s, c, now));
        let skip = list.len().saturating_sub(cap);
        let mut out = Vec::with_capacity(list.len().saturating_sub(skip) * RECORD);
        for (id, who, at) in list.into_iter().skip(skip) {
            out.extend_from_slice(&id.to_le_bytes());
            out.extend_from_slice(&who.to_le_bytes());
            out.extend_from_slice(&at.to_le_bytes());
        }
        Some(out)
    });
}

/// Whether `caller` may use `session`.
pub fn check<H: Host + ?Sized>(h: &H, session: &str, caller: &str, now: u64) -> Standing {
    let (s, c) = (fnv1a64(session.as_bytes()), fnv1a64(caller.as_bytes()));
    let (v, _) = h.shared_get(&shard(s));
    let own = records(v.as_deref())
        .iter()
        .any(|(id, who, at)| *id == s && *who == c && now.saturating_sub(*at) < MAX_AGE_S);
    if own {
        Standing::Own
    } else {
        Standing::Unknown
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use crate::host::mock::MockHost;

    #[test]
    fn a_session_serves_only_the_caller_who_opened_it() {
        let mut h = MockHost::default();
        init_shared(&mut h);
        let id = new_id(b"req-1", "alice", 1);
        assert_eq!(id.len(), 32);
        assert_ne!(id, new_id(b"req-2", "alice", 1));
        bind(&mut h, &id, "alice", 100);
        // Another worker of the same Envoy sees it.
        let other = h.clone();
        assert_eq!(check(&other, &id, "alice", 101), Standing::Own);
        assert_eq!(check(&h, &id, "mallory", 101), Standing::Unknown);
        assert_eq!(check(&h, "0123", "alice", 101), Standing::Unknown);
        assert_eq!(
            check(&h, &id, "alice", 100 + MAX_AGE_S),
            Standing::Unknown,
            "expired"
        );
        let stored = h.shared.borrow().clone();
        assert!(stored
            .values()
            .all(|(v, _)| !v.windows(5).any(|w| w == b"alice")));
    }

    #[test]
    fn a_shard_holds_a_bounded_number_of_sessions() {
        let mut h = MockHost::default();
        init_shared(&mut h);
        let first = "s-0".to_string();
        bind(&mut h, &first, "a", 10);
        for i in 1..(8 * SHARDS * 4) {
            bind_capped(&mut h, &format!("s-{i}"), "a", 10 + i / 100, 8);
        }
        let biggest = h
            .shared
            .borrow()
            .values()
            .map(|(v, _)| v.len())
            .max()
            .unwrap();
        assert_eq!(biggest, 8 * RECORD);
        assert_eq!(
            check(&h, &first, "a", 20),
            Standing::Unknown,
            "the oldest went first"
        );
    }
}
