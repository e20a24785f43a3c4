//! Budget counters in Envoy shared data, exact across the worker threads of one Envoy.
//!
//! proxy-wasm's `set_shared_data` with a CAS token inserts unconditionally when the key
//! does not exist yet, so two workers creating the same new key can lose an update. The
//! counters therefore live in a fixed set of shard keys created once at configure time
//! ([`init`], before traffic); every counter update is a CAS read-modify-write of an
//! existing shard key, which is exact. Each shard holds lines
//! `counter-key \t window-start \t window-end \t used`; lines of ended windows are
//! dropped when their shard is next written.

use crate::host::{shared_update, Host};
use crate::support::hash::fnv1a64;

/// Number of shard keys (spreads CAS contention between tenants).
pub const SHARDS: u64 = 64;

fn shard_key(counter: &str) -> String {
    format!("tollgate:quota:{}", fnv1a64(counter.as_bytes()) % SHARDS)
}

/// Creates the shard keys that do not exist yet (configure time, every worker VM).
pub fn init<H: Host + ?Sized>(h: &mut H) {
    for i in 0..SHARDS {
        let key = format!("tollgate:quota:{i}");
        if h.shared_get(&key).0.is_none() {
            // Unconditional: at configure time every writer writes the same empty value.
            let _ = h.shared_set(&key, b"", None);
        }
    }
    super::held::init(h);
}

/// One counter line.
struct Line<'a> {
    key: &'a str,
    start: u64,
    end: u64,
    used: u64,
}

fn lines(data: &[u8]) -> impl Iterator<Item = Line<'_>> {
    std::str::from_utf8(data)
        .unwrap_or("")
        .lines()
        .filter_map(|l| {
            let mut f = l.split('\t');
            Some(Line {
                key: f.next()?,
                start: f.next()?.parse().ok()?,
                end: f.next()?.parse().ok()?,
                used: f.next()?.parse().ok()?,
            })
        })
}

/// What a counter has used in the window starting at `start`.
pub fn used<H: Host + ?Sized>(h: &H, counter: &str, start: u64) -> u64 {
    let (data, _) = h.shared_get(&shard_key(counter));
    data.as_deref()
        .and_then(|d| {
            lines(d)
                .find(|l| l.key == counter && l.start == start)
                .map(|l| l.used)
        })
        .unwrap_or(0)
}

/// Adds `delta` (may be negative: a reservation given back) to a counter's window and
/// returns the new value. Ended windows of the shard are pruned on the way.
pub fn add<H: Host + ?Sized>(
    h: &mut H,
    counter: &str,
    window: (u64, u64),
    now: u64,
    delta: i64,
) -> u64 {
    let key = shard_key(counter);
    let mut result = 0;
    shared_update(h, &key, |current| {
        let mut out = String::with_capacity(current.map_or(0, <[u8]>::len) + 64);
        let mut found = false;
        for l in lines(current.unwrap_or(b"")) {
            if l.end <= now {
                continue;
            }
            let used = if l.key == counter && l.start == window.0 {
                found = true;
                result = l.used.saturating_add_signed(delta);
                result
            } else {
                l.used
            };
            out.push_str(&format!("{}\t{}\t{}\t{}\n", l.key, l.start, l.end, used));
        }
        if !found {
            result = 0u64.saturating_add_signed(delta);
            out.push_str(&format!(
                "{counter}\t{}\t{}\t{result}\n",
                window.0, window.1
            ));
        }
        Some(out.into_bytes())
    });
    result
}

/// A counter key safe for the line format.
pub fn counter_key(parts: &[&str]) -> String {
    parts
        .iter()
        .map(|p| p.replace(['\t', '\n', '\r', '|'], "_"))
        .collect::<Vec<_>>()
        .join("|")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::mock::MockHost;

    #[test]
    fn counts_per_window_and_prunes_ended_windows() {
        let mut h = MockHost::default();
        init(&mut h);
        assert_eq!(add(&mut h, "q|t1|minute", (60, 120), 61, 10), 10);
        assert_eq!(add(&mut h, "q|t1|minute", (60, 120), 62, 5), 15);
        assert_eq!(add(&mut h, "q|t1|minute", (60, 120), 63, -3), 12);
        assert_eq!(used(&h, "q|t1|minute", 60), 12);
        assert_eq!(used(&h, "q|t2|minute", 60), 0);
        // Next window: fresh count, the old line is dropped.
        assert_eq!(add(&mut h, "q|t1|minute", (120, 180), 121, 4), 4);
        assert_eq!(used(&h, "q|t1|minute", 60), 0);
        assert_eq!(used(&h, "q|t1|minute", 120), 4);
    }

    #[test]
    fn workers_sharing_the_store_never_lose_updates() {
        let mut a = MockHost::default();
        init(&mut a);
        let mut b = a.clone();
        for i in 0..100 {
            let h = if i % 2 == 0 { &mut a } else { &mut b };
            add(h, "k", (0, 1000), 1, 3);
        }
        assert_eq!(used(&a, "k", 0), 300);
    }

    #[test]
    fn keys_are_sanitized() {
        assert_eq!(counter_key(&["q", "a\tb|c", "day"]), "q|a_b_c|day");
    }
}
