//! Requests that outlive their stream ([`super::Host::send_detached`]): a charge to the fleet
//! limits service after an answer, which must not be lost when the stream ends (Envoy cancels
//! a stream's own callouts when it is destroyed). A host keeps an [`Outbox`] in a context that
//! lives as long as the configuration, sends what is due from there, and hands each answer
//! back here: a delivered call is done, a failed one is sent again after a pause (100 ms,
//! doubling), up to [`MAX_ATTEMPTS`] times, then counted as lost. Retrying is safe: every
//! call carries its operation id, which the service applies once.
//!
//! Bounded: at most [`MAX_QUEUED`] calls wait; more are dropped (and counted) rather than
//! let memory grow while the service is down.

/// A request to send later, from the long-lived context.
#[derive(Debug, Clone, PartialEq)]
pub struct Detached {
    pub cluster: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub timeout_ms: u64,
}

/// Attempts per call (the first and the retries).
pub const MAX_ATTEMPTS: u32 = 5;
/// Calls waiting at most (queued and in flight).
pub const MAX_QUEUED: usize = 10_000;
/// First pause before a retry.
pub const RETRY_MS: u64 = 100;

/// A call waiting to be sent or answered.
#[derive(Debug, Clone)]
struct Entry {
    call: Detached,
    /// Attempts made so far.
    attempts: u32,
    /// When it may be sent (ms).
    due_ms: u64,
}

/// The calls of one long-lived context.
#[derive(Debug, Default)]
pub struct Outbox {
    queued: Vec<Entry>,
    in_flight: Vec<(u64, Entry)>,
}

impl Outbox {
    /// Queues a call, due now. False (the call is lost) when the outbox is full.
    pub fn push(&mut self, call: Detached, now_ms: u64) -> bool {
        if self.queued.len() + self.in_flight.len() >= MAX_QUEUED {
            return false;
        }
        self.queued.push(Entry {
            call,
            attempts: 0,
            due_ms: now_ms,
        });
        true
    }

    /// Whether a call is waiting to be sent (now or later).
    pub fn has_queued(&self) -> bool {
        !self.queued.is_empty()
    }

    /// Sends every due call with `send` (which returns the callout's token, or None when the
    /// host refused it). Returns the calls given up.
    pub fn send_due(&mut self, now_ms: u64, send: &mut dyn FnMut(&Detached) -> Option<u64>) -> u64 {
        let (due, later): (Vec<Entry>, Vec<Entry>) = std::mem::take(&mut self.queued)
            .into_iter()
            .partition(|e| e.due_ms <= now_ms);
        self.queued = later;
        let mut lost = 0;
        for mut e in due {
            e.attempts += 1;
            match send(&e.call) {
                Some(token) => self.in_flight.push((token, e)),
                None => lost += self.again(e, now_ms),
            }
        }
        lost
    }

    /// A callout answered: `delivered` or not (failed calls are sent again later). Returns 1
    /// when the call is given up, else 0. An unknown token is ignored.
    pub fn answered(&mut self, token: u64, delivered: bool, now_ms: u64) -> u64 {
        let Some(i) = self.in_flight.iter().position(|(t, _)| *t == token) else {
            return 0;
        };
        let (_, e) = self.in_flight.swap_remove(i);
        if delivered {
            return 0;
        }
        self.again(e, now_ms)
    }

    /// Queues a failed call again, or gives it up.
    fn again(&mut self, mut e: Entry, now_ms: u64) -> u64 {
        if e.attempts >= MAX_ATTEMPTS {
            return 1;
        }
        let pause = RETRY_MS << e.attempts.saturating_sub(1).min(10);
        e.due_ms = now_ms.saturating_add(pause);
        self.queued.push(e);
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(n: u8) -> Detached {
        Detached {
            cluster: "c".into(),
            headers: vec![],
            body: vec![n],
            timeout_ms: 100,
        }
    }

    #[test]
    fn sends_retries_with_backoff_then_gives_up() {
        let mut o = Outbox::default();
        assert!(o.push(call(1), 1_000));
        let sent = std::cell::RefCell::new(Vec::new());
        let mut next = 10u64;
        let mut send = |d: &Detached| {
            sent.borrow_mut().push(d.body[0]);
            next += 1;
            Some(next)
        };
        assert_eq!(o.send_due(1_000, &mut send), 0);
        assert_eq!(o.answered(11, false, 1_000), 0);
        // Not due before its pause.
        assert_eq!(o.send_due(1_099, &mut send), 0);
        assert_eq!(o.send_due(1_100, &mut send), 0);
        assert_eq!(o.answered(12, false, 1_100), 0);
        assert_eq!(o.send_due(1_299, &mut send), 0);
        assert_eq!(o.send_due(1_300, &mut send), 0);
        assert_eq!(o.answered(13, false, 1_300), 0);
        assert_eq!(o.send_due(1_700, &mut send), 0);
        assert_eq!(o.answered(14, false, 1_700), 0);
        assert_eq!(o.send_due(2_500, &mut send), 0);
        // The fifth failure gives up.
        assert_eq!(o.answered(15, false, 2_500), 1);
        assert!(!o.has_queued());
        assert_eq!(*sent.borrow(), [1, 1, 1, 1, 1]);
        // Delivered: done; unknown tokens change nothing.
        assert!(o.push(call(2), 3_000));
        assert_eq!(o.send_due(3_000, &mut send), 0);
        assert_eq!(o.answered(99, false, 3_000), 0);
        assert_eq!(o.answered(16, true, 3_000), 0);
        assert!(!o.has_queued() && o.in_flight.is_empty());
    }

    #[test]
    fn a_refused_send_is_retried_and_the_outbox_is_bounded() {
        let mut o = Outbox::default();
        o.push(call(1), 0);
        let mut refuse = |_: &Detached| None;
        for t in [0, 100, 300, 700] {
            assert_eq!(o.send_due(t, &mut refuse), 0);
        }
        assert_eq!(o.send_due(1_500, &mut refuse), 1);
        for i in 0..MAX_QUEUED {
            assert!(o.push(call(i as u8), 0));
        }
        assert!(!o.push(call(0), 0));
    }
}
