//! Shared data natively: one process-wide store for every worker thread of this Envoy, with
//! the compare-and-swap contract of [`Host::shared_get`]/[`Host::shared_set`] (the one
//! budgets, rate limits, circuit breakers and tenant labels are written against), kept
//! under locks instead of proxy-wasm's shared-data hostcalls.
//!
//! Semantics (the same as `host::mock`): every key has a version that each write bumps
//! (never 0); a write with `cas: Some(v)` succeeds only if the key is still at version `v`,
//! and `Some(0)` only if the key does not exist yet: unlike proxy-wasm, where a CAS write
//! of a missing key inserts unconditionally, two workers creating the same key cannot lose
//! an update here. `cas: None` writes unconditionally.
//!
//! Keys are spread over [`SHARDS`] mutexes by hash, so workers touching different budgets
//! do not wait on each other. A lock is held only to copy a value out or in; a panic while
//! holding one cannot happen (no user code runs under it), and a poisoned lock is used as
//! is (the map itself is always consistent).
//!
//! [`Host::shared_get`]: crate::host::Host::shared_get
//! [`Host::shared_set`]: crate::host::Host::shared_set

use crate::host::{Host, SharedError};
use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, OnceLock};

/// Lock shards.
pub const SHARDS: usize = 16;

type Map = HashMap<String, (Vec<u8>, u32)>;

/// A process-wide key-value store with versioned compare-and-swap writes.
pub struct Store {
    shards: Vec<Mutex<Map>>,
}

impl Default for Store {
    fn default() -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::new(Map::new())).collect(),
        }
    }
}

impl Store {
    /// The store of this process (all workers, all filter configurations).
    pub fn global() -> &'static Store {
        static STORE: OnceLock<Store> = OnceLock::new();
        STORE.get_or_init(Store::default)
    }

    fn shard(&self, key: &str) -> Option<MutexGuard<'_, Map>> {
        let i = crate::support::hash::fnv1a64(key.as_bytes()) as usize % SHARDS;
        let m = self.shards.get(i)?;
        Some(m.lock().unwrap_or_else(|poisoned| poisoned.into_inner()))
    }

    /// The value of `key` and its version.
    pub fn get(&self, key: &str) -> (Option<Vec<u8>>, Option<u32>) {
        match self.shard(key).as_ref().and_then(|m| m.get(key)) {
            Some((v, version)) => (Some(v.clone()), Some(*version)),
            None => (None, None),
        }
    }

    /// Writes `value`; with `cas`, only if `key` is still at that version (0: absent).
    pub fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), SharedError> {
        let mut m = self.shard(key).ok_or(SharedError::Failed)?;
        let current = m.get(key).map_or(0, |(_, v)| *v);
        if cas.is_some_and(|expected| expected != current) {
            return Err(SharedError::CasMismatch);
        }
        let next = current.checked_add(1).unwrap_or(1);
        match m.get_mut(key) {
            Some(slot) => {
                slot.0.clear();
                slot.0.extend_from_slice(value);
                slot.1 = next;
            }
            None => {
                m.insert(key.to_string(), (value.to_vec(), next));
            }
        }
        Ok(())
    }
}

/// A [`Host`] with shared data in a [`Store`] and nothing else: creating the shared-data
/// keys at configuration time (no stream exists then), and the tests.
pub struct SharedOnly<'a>(pub &'a Store);

impl Default for SharedOnly<'static> {
    fn default() -> Self {
        Self(Store::global())
    }
}

impl Host for SharedOnly<'_> {
    fn request_header(&self, _: &str) -> Option<String> {
        None
    }
    fn request_headers(&self) -> Vec<(String, String)> {
        Vec::new()
    }
    fn set_request_header(&mut self, _: &str, _: Option<&str>) {}
    fn clear_request_trailers(&mut self) {}
    fn add_request_header(&mut self, _: &str, _: &str) {}
    fn response_header(&self, _: &str) -> Option<String> {
        None
    }
    fn response_headers(&self) -> Vec<(String, String)> {
        Vec::new()
    }
    fn set_response_header(&mut self, _: &str, _: Option<&str>) {}
    fn add_response_header(&mut self, _: &str, _: &str) {}
    fn request_body(&self, _: usize) -> Option<Vec<u8>> {
        None
    }
    fn set_request_body(&mut self, _: &[u8]) {}
    fn response_body(&self, _: usize) -> Option<Vec<u8>> {
        None
    }
    fn set_response_body(&mut self, _: &[u8]) {}
    fn send_reply(&mut self, _: u32, _: &[(&str, &str)], _: &[u8]) {}
    fn now_unix(&self) -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
    }
    fn shared_get(&self, key: &str) -> (Option<Vec<u8>>, Option<u32>) {
        self.0.get(key)
    }
    fn shared_set(&mut self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), SharedError> {
        self.0.set(key, value, cas)
    }
    fn set_property(&mut self, _: &str, _: &[u8]) {}
    fn property(&self, _: &[&str]) -> Option<Vec<u8>> {
        None
    }
    fn counter_add(&mut self, _: &str, _: u64) {}
    fn histogram_record(&mut self, _: &str, _: u64) {}
    fn log_warn(&self, _: &str) {}
    fn dispatch(&mut self, _: &str, _: &[(&str, &str)], _: &[u8], _: u64) -> Option<u32> {
        None
    }
    fn callout_headers(&self) -> Vec<(String, String)> {
        Vec::new()
    }
    fn callout_body(&self, _: usize) -> Option<Vec<u8>> {
        None
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use crate::host::shared_update;

    #[test]
    fn versions_guard_every_write() {
        let s = Store::default();
        assert_eq!(s.get("k"), (None, None));
        // Some(0): only while absent.
        s.set("k", b"a", Some(0)).unwrap();
        assert_eq!(s.set("k", b"b", Some(0)), Err(SharedError::CasMismatch));
        let (v, version) = s.get("k");
        assert_eq!(v.as_deref(), Some(&b"a"[..]));
        s.set("k", b"c", version).unwrap();
        assert_eq!(s.set("k", b"d", version), Err(SharedError::CasMismatch));
        s.set("k", b"e", None).unwrap();
        assert_eq!(s.get("k").0.as_deref(), Some(&b"e"[..]));
        assert_eq!(s.get("k").1, Some(3));
    }

    /// Budgets counted by four threads at once (each a worker of one Envoy), through the
    /// same code the pipeline uses (`cost::store`): not one update lost. The counter keys
    /// are created on the fly too (no configure-time key), which proxy-wasm could not
    /// make exact.
    #[test]
    fn workers_on_threads_never_lose_an_update() {
        let store = Store::default();
        let threads: u64 = 4;
        let per_thread: u64 = 500;
        std::thread::scope(|scope| {
            for _ in 0..threads {
                let store = &store;
                scope.spawn(move || {
                    let mut w = SharedOnly(store);
                    for i in 0..per_thread {
                        crate::cost::store::add(&mut w, "q|tenant|minute", (0, 60), 10, 3);
                        // A key each thread creates: first writers race on a missing key.
                        let key = format!("fresh:{}", i % 7);
                        shared_update(&mut w, &key, |cur| {
                            let n: u64 = cur
                                .and_then(|c| std::str::from_utf8(c).ok()?.parse().ok())
                                .unwrap_or(0);
                            Some((n + 1).to_string().into_bytes())
                        });
                    }
                });
            }
        });
        let w = SharedOnly(&store);
        assert_eq!(
            crate::cost::store::used(&w, "q|tenant|minute", 0),
            3 * threads * per_thread
        );
        let fresh: u64 = (0..7)
            .map(|i| {
                let v = store.get(&format!("fresh:{i}")).0.unwrap();
                std::str::from_utf8(&v).unwrap().parse::<u64>().unwrap()
            })
            .sum();
        assert_eq!(fresh, threads * per_thread);
    }
}
