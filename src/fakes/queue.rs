//! An in-memory SQS queue: messages become invisible when received and come back when their
//! receipt is not deleted before `expire_receipts` (the visibility timeout, made explicit).
//! Like SQS, a short poll (no wait) may miss messages that are there (`miss_short_polls`),
//! and a redrive policy (`redrive_after`) moves a message received too often aside. Like SQS,
//! it stamps each message with its sender (`SenderId`): [`Queue::send`] sends as the queue's
//! default caller (an IAM user), [`FakeQueue::send_as`] as a given identity, such as an
//! instance role's `<role id>:<instance id>`.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;

use crate::ports::{Message, Queue, QueueError};

/// The sender of [`Queue::send`]: an IAM user's id, as SQS stamps it (the scheduler's own
/// moves, a producer's requests).
pub const DEFAULT_SENDER: &str = "AIDAFAKEQUEUECALLER01";

#[derive(Debug, Clone)]
struct Stored {
    id: String,
    body: String,
    attributes: Vec<(String, String)>,
    receive_count: u32,
    sender_id: String,
}

#[derive(Debug, Default)]
struct State {
    visible: VecDeque<Stored>,
    in_flight: Vec<(String, Stored)>,
    next_id: u64,
    receives: u64,
    deletes: u64,
    /// Short polls still to come back empty, as SQS's sampled short polls may.
    short_poll_misses: u32,
    /// `maxReceiveCount` of a redrive policy, and what it moved aside.
    redrive_after: Option<u32>,
    dead_lettered: Vec<Stored>,
}

/// One queue.
#[derive(Debug, Default)]
pub struct FakeQueue {
    state: Mutex<State>,
}

impl FakeQueue {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Makes every received-but-undeleted message visible again, as a visibility timeout would.
    pub fn expire_receipts(&self) {
        let mut s = self.lock();
        let back: Vec<Stored> = s.in_flight.drain(..).map(|(_, m)| m).collect();
        s.visible.extend(back);
    }

    /// Makes the next `n` short polls (receives with no wait) return nothing, whatever is
    /// visible: SQS answers a short poll from a sample of its servers.
    pub fn miss_short_polls(&self, n: u32) {
        self.lock().short_poll_misses = n;
    }

    /// A redrive policy: a message already received `max_receives` times is moved aside (to
    /// [`Self::dead_lettered`]) instead of being delivered again.
    pub fn redrive_after(&self, max_receives: u32) {
        self.lock().redrive_after = Some(max_receives);
    }

    /// Bodies of the messages the redrive policy moved aside.
    pub fn dead_lettered(&self) -> Vec<String> {
        self.lock()
            .dead_lettered
            .iter()
            .map(|m| m.body.clone())
            .collect()
    }

    /// Bodies and attributes of every message not yet deleted (visible or in flight).
    pub fn contents(&self) -> Vec<(String, Vec<(String, String)>)> {
        let s = self.lock();
        s.visible
            .iter()
            .chain(s.in_flight.iter().map(|(_, m)| m))
            .map(|m| (m.body.clone(), m.attributes.clone()))
            .collect()
    }

    /// Sends as `sender_id`, the identity SQS would stamp on the message (for an instance's
    /// role, `<role id>:<instance id>`).
    pub fn send_as(&self, sender_id: &str, body: &str, attributes: &[(&str, &str)]) -> String {
        let mut s = self.lock();
        s.next_id += 1;
        let id = format!("m-{}", s.next_id);
        s.visible.push_back(Stored {
            id: id.clone(),
            body: body.to_owned(),
            attributes: attributes
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            receive_count: 0,
            sender_id: sender_id.to_owned(),
        });
        id
    }

    /// ReceiveMessage and DeleteMessageBatch calls made so far.
    pub fn calls(&self) -> (u64, u64) {
        let s = self.lock();
        (s.receives, s.deletes)
    }
}

#[async_trait]
impl Queue for FakeQueue {
    async fn receive(&self, max: u32, wait: Duration) -> Result<Vec<Message>, QueueError> {
        let mut s = self.lock();
        s.receives += 1;
        if wait.is_zero() && s.short_poll_misses > 0 {
            s.short_poll_misses -= 1;
            return Ok(Vec::new());
        }
        let mut out = Vec::new();
        while out.len() < max.min(10) as usize {
            let Some(mut m) = s.visible.pop_front() else {
                break;
            };
            if s.redrive_after.is_some_and(|n| m.receive_count >= n) {
                s.dead_lettered.push(m);
                continue;
            }
            m.receive_count += 1;
            s.next_id += 1;
            let receipt = format!("r-{}-{}", m.id, s.next_id);
            out.push(Message {
                message_id: m.id.clone(),
                body: m.body.clone(),
                receipt: receipt.clone(),
                receive_count: m.receive_count,
                sender_id: Some(m.sender_id.clone()),
            });
            s.in_flight.push((receipt, m));
        }
        Ok(out)
    }

    async fn delete(&self, receipts: &[String]) -> Result<Vec<String>, QueueError> {
        let mut s = self.lock();
        s.deletes += receipts.len().div_ceil(10) as u64;
        let mut failed = Vec::new();
        for r in receipts {
            match s.in_flight.iter().position(|(rec, _)| rec == r) {
                Some(i) => {
                    s.in_flight.remove(i);
                }
                None => failed.push(r.clone()),
            }
        }
        Ok(failed)
    }

    async fn send(&self, body: &str, attributes: &[(&str, &str)]) -> Result<String, QueueError> {
        Ok(self.send_as(DEFAULT_SENDER, body, attributes))
    }

    async fn depth(&self) -> Result<u64, QueueError> {
        Ok(self.lock().visible.len() as u64)
    }

    async fn in_flight(&self) -> Result<u64, QueueError> {
        Ok(self.lock().in_flight.len() as u64)
    }
}
