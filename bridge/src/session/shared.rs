//! What the session's two pumps tell each other: the kind of message the
//! client last sent, when it was last heard, and the rendezvous for an
//! empty message, which has no bytes for the target and is answered by the
//! target → client pump instead.
//!
//! The rendezvous has a waker for each side, so it does not depend on how
//! the pumps are scheduled: today both are polled by one `select!` in the
//! session's task, but either could move to a task of its own and nothing
//! would stall (the tests below drive each side from its own task).

use std::future::poll_fn;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::task::AtomicWaker;
use tokio::time::Instant;

use crate::framing::Kind;

/// State the pumps share. Atomics, though both pumps run in one task: the
/// task moves between threads, and a `Cell` would make it `!Send`.
#[derive(Debug)]
pub struct Shared {
    /// Whether the client last sent binary (answers follow its lead).
    binary: AtomicBool,
    /// When the client was last heard, in nanoseconds since `epoch` (fine
    /// enough to tell a pong from the ping it answers).
    heard_ns: AtomicU64,
    epoch: Instant,
    /// The kind (`Kind as u8`) of an empty message from the client that
    /// waits for its empty answer, or `NO_EMPTY`.
    empty: AtomicU8,
    /// The target → client pump, waiting for an empty message to answer.
    answerer: AtomicWaker,
    /// The client → target pump, waiting for its request to be taken up.
    asker: AtomicWaker,
}

/// No empty message waits for its answer.
const NO_EMPTY: u8 = u8::MAX;

impl Shared {
    pub fn new() -> Self {
        Self {
            binary: AtomicBool::new(false),
            heard_ns: AtomicU64::new(0),
            epoch: Instant::now(),
            empty: AtomicU8::new(NO_EMPTY),
            answerer: AtomicWaker::new(),
            asker: AtomicWaker::new(),
        }
    }

    /// The client → target pump's side: has the other pump answer an
    /// empty message of this kind with an empty message, and waits until
    /// it has taken the request up, so that a client sending empty messages
    /// and reading nothing is held like any other.
    ///
    /// An empty message carries no bytes, so the target never sees it and
    /// could not answer it; answered by the bridge, it leaves the bytes the
    /// client reads unchanged, as an echo of nothing should.
    pub async fn ask_empty_answer(&self, kind: Kind) {
        self.empty.store(kind as u8, Ordering::Release);
        self.answerer.wake();
        poll_fn(|cx| {
            // Registered before looking, so a take in between still wakes.
            self.asker.register(cx.waker());
            if self.empty.load(Ordering::Acquire) == NO_EMPTY {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
        .await;
    }

    /// The target → client pump's side: the kind of the empty message
    /// waiting for its answer, which from now on is being answered (its
    /// asker is woken); pending until there is one.
    pub fn poll_take_empty(&self, cx: &mut Context<'_>) -> Poll<Kind> {
        self.answerer.register(cx.waker());
        let kind = match self.empty.swap(NO_EMPTY, Ordering::AcqRel) {
            NO_EMPTY => return Poll::Pending,
            kind if kind == Kind::Binary as u8 => Kind::Binary,
            _ => Kind::Text,
        };
        self.asker.wake();
        Poll::Ready(kind)
    }

    pub fn set_kind(&self, kind: Kind) {
        self.binary.store(kind == Kind::Binary, Ordering::Relaxed);
    }

    pub fn kind(&self) -> Kind {
        if self.binary.load(Ordering::Relaxed) {
            Kind::Binary
        } else {
            Kind::Text
        }
    }

    pub fn heard_from_client(&self) {
        let ns = self.epoch.elapsed().as_nanos() as u64;
        self.heard_ns.store(ns, Ordering::Relaxed);
    }

    pub fn last_heard(&self) -> Instant {
        self.epoch + Duration::from_nanos(self.heard_ns.load(Ordering::Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use std::future::Future;
    use std::pin::pin;
    use std::sync::Arc;
    use std::time::Duration;

    use futures_util::task::noop_waker_ref;
    use tokio::time::timeout;

    use super::*;

    fn kind_for(round: usize) -> Kind {
        if round.is_multiple_of(3) {
            Kind::Binary
        } else {
            Kind::Text
        }
    }

    #[test]
    fn the_asker_waits_until_its_request_is_taken_up() {
        let shared = Shared::new();
        let mut cx = Context::from_waker(noop_waker_ref());
        assert_eq!(shared.poll_take_empty(&mut cx), Poll::Pending);
        let mut asking = pin!(shared.ask_empty_answer(Kind::Binary));
        assert_eq!(asking.as_mut().poll(&mut cx), Poll::Pending);
        assert_eq!(asking.as_mut().poll(&mut cx), Poll::Pending);
        assert_eq!(shared.poll_take_empty(&mut cx), Poll::Ready(Kind::Binary));
        assert_eq!(shared.poll_take_empty(&mut cx), Poll::Pending);
        assert_eq!(asking.as_mut().poll(&mut cx), Poll::Ready(()));
    }

    /// Each side in a task of its own, on two worker threads: every request
    /// is answered once, in order, and neither side waits for a wake-up
    /// that never comes (the timeout would fail the test).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn each_side_can_run_in_a_task_of_its_own() {
        const REQUESTS: usize = 500;
        for _round in 0..20 {
            let shared = Arc::new(Shared::new());
            let answerer = tokio::spawn({
                let shared = Arc::clone(&shared);
                async move {
                    let mut taken = Vec::with_capacity(REQUESTS);
                    while taken.len() < REQUESTS {
                        taken.push(poll_fn(|cx| shared.poll_take_empty(cx)).await);
                    }
                    taken
                }
            });
            let asker = tokio::spawn({
                let shared = Arc::clone(&shared);
                async move {
                    for request in 0..REQUESTS {
                        shared.ask_empty_answer(kind_for(request)).await;
                    }
                }
            });
            let (asked, taken) = timeout(Duration::from_secs(10), async {
                (asker.await, answerer.await)
            })
            .await
            .expect("a side waited for a wake-up that never came");
            asked.expect("the asker panicked");
            let expected: Vec<Kind> = (0..REQUESTS).map(kind_for).collect();
            assert_eq!(taken.expect("the answerer panicked"), expected);
        }
    }
}
