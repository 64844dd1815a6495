//! Waking the daemon when work arrives, without stealing messages from the pass.
//!
//! Design: a watcher task long-polls a queue (ReceiveMessage with WaitTimeSeconds up to 20)
//! while this daemon is leader, and *keeps* what it receives in a [`Prefetched`] queue, the
//! very queue the pass reads through: the pass's next `receive` returns the held messages
//! first, then reads SQS as usual. So a message is received once, by the process that
//! handles it, and deleted by the pass with the receipt the watcher got.
//!
//! Why not receive and hand the message back with ChangeMessageVisibility(0)? Every receive
//! adds to the message's receive count, and the queues dead-letter a message after 5
//! (`maxReceiveCount` in the infra template): a peek per wake-up would spend those receives
//! on looking, not on handling. Holding the receipt costs nothing, as long as the pass runs
//! well within the visibility timeout (60 s): the watcher wakes the loop, which runs a pass
//! after the batch window (hundreds of milliseconds), and the watcher does not poll again
//! until the pass has taken what it holds. If the daemon stops leading, it forgets what it
//! holds; those messages come back after the visibility timeout, as after a crash.
//!
//! SQS calls: an idle leader makes one ReceiveMessage per queue per 20 s (≈ 8,640 a day,
//! whatever the load), and a busy one a long-poll per wake-up, which carries up to 10
//! messages the pass would otherwise have received itself. The pass's own receives are
//! unchanged, so DESIGN §7's ≤ 0.2 ReceiveMessage per job holds for the pass, plus at most
//! one long-poll per batch window per queue.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::Notify;

use crate::ports::{Message, Queue, QueueError};

/// SQS's longest long-poll.
pub const MAX_WAIT: Duration = Duration::from_secs(20);

/// A queue whose receives return the messages a watcher already holds, first.
pub struct Prefetched {
    inner: Arc<dyn Queue>,
    held: Mutex<VecDeque<Message>>,
}

impl std::fmt::Debug for Prefetched {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Prefetched")
            .field("holding", &self.holding())
            .finish_non_exhaustive()
    }
}

impl Prefetched {
    pub fn new(inner: Arc<dyn Queue>) -> Self {
        Self {
            inner,
            held: Mutex::new(VecDeque::new()),
        }
    }

    fn held(&self) -> MutexGuard<'_, VecDeque<Message>> {
        // A queue of messages stays valid whatever panicked while holding it.
        self.held.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// How many received messages wait for the pass.
    pub fn holding(&self) -> usize {
        self.held().len()
    }

    /// Long-polls once (up to `wait`) and keeps what arrives; returns how many did.
    pub async fn watch(&self, wait: Duration) -> Result<usize, QueueError> {
        let got = self.inner.receive(10, wait.min(MAX_WAIT)).await?;
        let n = got.len();
        self.held().extend(got);
        Ok(n)
    }

    /// Drops the held messages (this process stopped leading); they come back to the queue
    /// after their visibility timeout.
    pub fn forget(&self) -> usize {
        let mut held = self.held();
        let n = held.len();
        held.clear();
        n
    }
}

#[async_trait]
impl Queue for Prefetched {
    async fn receive(&self, max: u32, wait: Duration) -> Result<Vec<Message>, QueueError> {
        {
            let mut held = self.held();
            if !held.is_empty() {
                let take = (max as usize).clamp(1, 10).min(held.len());
                return Ok(held.drain(..take).collect());
            }
        }
        self.inner.receive(max, wait).await
    }

    async fn delete(&self, receipts: &[String]) -> Result<Vec<String>, QueueError> {
        self.inner.delete(receipts).await
    }

    async fn send(&self, body: &str, attributes: &[(&str, &str)]) -> Result<String, QueueError> {
        self.inner.send(body, attributes).await
    }

    async fn depth(&self) -> Result<u64, QueueError> {
        self.inner.depth().await
    }

    /// Messages held here for the pass count as in flight, as SQS counts them.
    async fn in_flight(&self) -> Result<u64, QueueError> {
        self.inner.in_flight().await
    }
}

/// Runs a watcher until the process ends: while `leader` is set and nothing is held, it
/// long-polls `queue` and, when messages arrive, wakes the loop through `wake`.
pub async fn watch(queue: Arc<Prefetched>, leader: Arc<AtomicBool>, wake: Arc<Notify>) {
    loop {
        if !leader.load(Ordering::Acquire) || queue.holding() > 0 {
            // Standby, or the pass has not taken the last arrivals yet.
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        }
        match queue.watch(MAX_WAIT).await {
            Ok(0) => {}
            Ok(_) => wake.notify_one(),
            Err(e) => {
                tracing::warn!(error = %e, "Long-poll failed; retrying in a second.");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fakes::FakeQueue;

    #[tokio::test]
    async fn the_pass_gets_what_the_watcher_holds_and_deletes_it() {
        let fake = Arc::new(FakeQueue::new());
        for i in 0..3 {
            fake.send(&format!("m{i}"), &[]).await.expect("send");
        }
        let q = Prefetched::new(fake.clone());
        assert_eq!(q.watch(Duration::ZERO).await.expect("watch"), 3);
        assert_eq!(fake.depth().await.expect("depth"), 0, "held, not visible");
        let got = q.receive(2, Duration::ZERO).await.expect("receive");
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].receive_count, 1, "received once, by the watcher");
        let rest = q.receive(10, Duration::ZERO).await.expect("receive");
        assert_eq!(rest.len(), 1);
        let receipts: Vec<String> = got.iter().chain(&rest).map(|m| m.receipt.clone()).collect();
        assert!(q.delete(&receipts).await.expect("delete").is_empty());
        fake.expire_receipts();
        assert_eq!(fake.depth().await.expect("depth"), 0, "deleted for good");
    }

    #[tokio::test]
    async fn forgotten_messages_come_back_after_the_visibility_timeout() {
        let fake = Arc::new(FakeQueue::new());
        fake.send("m", &[]).await.expect("send");
        let q = Prefetched::new(fake.clone());
        q.watch(Duration::ZERO).await.expect("watch");
        assert_eq!(q.forget(), 1);
        assert!(q
            .receive(10, Duration::ZERO)
            .await
            .expect("receive")
            .is_empty());
        fake.expire_receipts();
        assert_eq!(
            q.receive(10, Duration::ZERO).await.expect("receive").len(),
            1
        );
    }

    #[tokio::test]
    async fn a_watcher_wakes_the_loop_only_while_leader() {
        let fake = Arc::new(FakeQueue::new());
        let q = Arc::new(Prefetched::new(fake.clone()));
        let leader = Arc::new(AtomicBool::new(false));
        let wake = Arc::new(Notify::new());
        let task = tokio::spawn(watch(q.clone(), leader.clone(), wake.clone()));
        fake.send("m", &[]).await.expect("send");
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(q.holding(), 0, "a standby does not receive");
        leader.store(true, Ordering::Release);
        tokio::time::timeout(Duration::from_secs(5), wake.notified())
            .await
            .expect("woken");
        assert_eq!(q.holding(), 1);
        task.abort();
    }
}
