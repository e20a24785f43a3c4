//! The panic guard of every stream hook: a panic must never unwind into Envoy (C++), and a
//! stream whose hook panicked must not reach the upstream half-checked. Built with
//! `panic = "unwind"` (profile `native`), [`run`] catches it; the stream is then marked
//! failed, answered by [`Guarded::fail`] (a 500), and its later hooks do nothing but return
//! their failure status.

use std::panic::{catch_unwind, AssertUnwindSafe};

/// A stream the guard protects.
pub trait Guarded {
    /// Whether a hook of this stream panicked.
    fn failed(&mut self) -> &mut bool;
    /// Answers the client after a panic.
    fn fail(&mut self);
}

/// Runs a hook's `body` unless the stream already failed; `on_fail` is the hook's status
/// then, and after a panic.
pub fn run<S: Guarded, T>(s: &mut S, on_fail: T, body: impl FnOnce(&mut S) -> T) -> T {
    if *s.failed() {
        return on_fail;
    }
    match catch_unwind(AssertUnwindSafe(|| body(&mut *s))) {
        Ok(t) => t,
        Err(_) => {
            *s.failed() = true;
            // Even the answer may not unwind into Envoy.
            let _ = catch_unwind(AssertUnwindSafe(|| s.fail()));
            on_fail
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Stream {
        failed: bool,
        answers: u32,
        hooks_run: u32,
        fail_panics: bool,
    }

    impl Guarded for Stream {
        fn failed(&mut self) -> &mut bool {
            &mut self.failed
        }
        fn fail(&mut self) {
            self.answers += 1;
            if self.fail_panics {
                panic!("the answer failed too");
            }
        }
    }

    #[test]
    fn a_panicking_hook_fails_the_stream_once_and_later_hooks_stop() {
        let mut s = Stream::default();
        assert_eq!(
            run(&mut s, 1, |s| {
                s.hooks_run += 1;
                0
            }),
            0
        );
        let status = run(&mut s, 1, |s| -> u32 {
            s.hooks_run += 1;
            let v: Vec<u32> = Vec::new();
            v[3] // an index out of bounds: the kind of bug the guard is for
        });
        assert_eq!(status, 1);
        assert!(s.failed);
        assert_eq!(s.answers, 1);
        // Later hooks: not run, failure status, no second answer.
        assert_eq!(
            run(&mut s, 7, |s| {
                s.hooks_run += 1;
                0
            }),
            7
        );
        assert_eq!((s.hooks_run, s.answers), (2, 1));
    }

    #[test]
    fn a_panic_while_answering_is_contained_too() {
        let mut s = Stream {
            fail_panics: true,
            ..Stream::default()
        };
        assert_eq!(run(&mut s, 9, |_| -> u32 { panic!("hook") }), 9);
        assert!(s.failed);
        assert_eq!(s.answers, 1);
    }
}
