//! Calls that outlive their stream, natively ([`crate::host::Host::send_detached`]): a
//! filter's own callouts are cancelled when Envoy destroys the filter, and the configuration's
//! callouts may only be made on Envoy's main thread (Envoy keeps them in an unsynchronized
//! map). So a worker queues the call in the configuration's [`Outbox`] and commits the
//! configuration's scheduler; Envoy then runs `on_http_filter_config_scheduled` on the main
//! thread, which sends what is due; the answers come back there
//! (`on_http_filter_config_http_callout_done`). A small thread wakes the scheduler while
//! retries wait (the main thread has no timer of its own in this ABI). Calls given up are
//! counted by the next stream that completes (a worker: metrics are per stream here).

use super::abi::{self, ConfigEnvoyPtr, HeaderPair, ModuleBuffer, SchedulerPtr};
use crate::host::outbox::{Detached, Outbox};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How often the waker thread looks for retries that are due.
const WAKE_MS: u64 = 50;

/// Envoy's pointers of one configuration, used under [`Sender::scheduler`]'s lock (the
/// scheduler) or on the main thread only (the configuration).
struct Pointers {
    config: ConfigEnvoyPtr,
    /// None once the configuration is destroyed.
    scheduler: Option<SchedulerPtr>,
}

// SAFETY: the scheduler pointer is used (committed, deleted) only under the mutex that holds
// it, and Envoy's commit may be called from any thread; the configuration pointer is used
// only on the main thread (in the scheduled and callout hooks Envoy calls there).
unsafe impl Send for Pointers {}

/// The detached calls of one filter configuration.
pub struct Sender {
    outbox: Mutex<Outbox>,
    pointers: Mutex<Pointers>,
    /// Calls given up, not counted in a metric yet.
    lost: AtomicU64,
    stop: Arc<AtomicBool>,
    waker: Mutex<Option<std::thread::JoinHandle<()>>>,
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl Sender {
    /// Main thread, configuration time: the scheduler and the waker thread.
    pub fn new(config: ConfigEnvoyPtr) -> Arc<Self> {
        // SAFETY: `config` is the configuration pointer of the hook being run.
        let scheduler =
            unsafe { abi::envoy_dynamic_module_callback_http_filter_config_scheduler_new(config) };
        let sender = Arc::new(Self {
            outbox: Mutex::new(Outbox::default()),
            pointers: Mutex::new(Pointers {
                config,
                scheduler: (!scheduler.is_null()).then_some(scheduler),
            }),
            lost: AtomicU64::new(0),
            stop: Arc::new(AtomicBool::new(false)),
            waker: Mutex::new(None),
        });
        let weak = Arc::downgrade(&sender);
        let stop = Arc::clone(&sender.stop);
        let waker = std::thread::Builder::new()
            .name("tollgate-limits".into())
            .spawn(move || {
                while !stop.load(Ordering::Acquire) {
                    std::thread::sleep(Duration::from_millis(WAKE_MS));
                    match weak.upgrade() {
                        Some(s) if s.has_queued() => s.wake(),
                        Some(_) => {}
                        None => break,
                    }
                }
            })
            .ok();
        if let Ok(mut w) = sender.waker.lock() {
            *w = waker;
        }
        sender
    }

    fn has_queued(&self) -> bool {
        self.outbox.lock().is_ok_and(|o| o.has_queued())
    }

    /// Asks for the scheduled hook on the main thread.
    fn wake(&self) {
        if let Ok(p) = self.pointers.lock() {
            if let Some(s) = p.scheduler {
                // SAFETY: the scheduler lives until `destroy` takes it under this lock.
                unsafe {
                    abi::envoy_dynamic_module_callback_http_filter_config_scheduler_commit(s, 0)
                }
            }
        }
    }

    /// A worker: queues a call and wakes the main thread.
    pub fn push(&self, call: Detached) {
        let queued = self.outbox.lock().is_ok_and(|mut o| o.push(call, now_ms()));
        if !queued {
            self.lost.fetch_add(1, Ordering::Relaxed);
        }
        self.wake();
    }

    /// Main thread (the scheduled hook): sends what is due.
    pub fn send_due(&self) {
        let Ok(p) = self.pointers.lock() else {
            return;
        };
        if p.scheduler.is_none() {
            return;
        }
        let config = p.config;
        drop(p);
        let mut send = |d: &Detached| -> Option<u64> {
            let mut pairs: Vec<HeaderPair> = d
                .headers
                .iter()
                .map(|(k, v)| HeaderPair::of(k, v))
                .collect();
            let mut id = 0u64;
            // SAFETY: main thread, live configuration; Envoy copies every buffer.
            let result = unsafe {
                abi::envoy_dynamic_module_callback_http_filter_config_http_callout(
                    config,
                    &mut id,
                    ModuleBuffer::of(d.cluster.as_bytes()),
                    pairs.as_mut_ptr(),
                    pairs.len(),
                    ModuleBuffer::of(&d.body),
                    d.timeout_ms,
                )
            };
            (result == abi::CALLOUT_INIT_SUCCESS).then_some(id)
        };
        let lost = self
            .outbox
            .lock()
            .map_or(0, |mut o| o.send_due(now_ms(), &mut send));
        self.lost.fetch_add(lost, Ordering::Relaxed);
    }

    /// Main thread: a call answered (`delivered` or not).
    pub fn answered(&self, id: u64, delivered: bool) {
        let lost = self
            .outbox
            .lock()
            .map_or(0, |mut o| o.answered(id, delivered, now_ms()));
        self.lost.fetch_add(lost, Ordering::Relaxed);
    }

    /// Calls given up since the last time (for a worker's metric).
    pub fn take_lost(&self) -> u64 {
        self.lost.swap(0, Ordering::Relaxed)
    }

    /// Main thread, the configuration is destroyed: stops the waker, deletes the scheduler.
    pub fn destroy(&self) {
        self.stop.store(true, Ordering::Release);
        if let Some(w) = self.waker.lock().ok().and_then(|mut w| w.take()) {
            let _ = w.join();
        }
        if let Ok(mut p) = self.pointers.lock() {
            if let Some(s) = p.scheduler.take() {
                // SAFETY: taken under the lock: no commit can follow.
                unsafe { abi::envoy_dynamic_module_callback_http_filter_config_scheduler_delete(s) }
            }
        }
    }
}
