//! Watching a request: a snapshot (the request and every item), then each change as it happens, until the request
//! ends, the watcher goes away or the server shuts down.
//!
//! Every watch of one request shares one poll: a task looks at the request every `watch_interval` while anyone
//! watches it and broadcasts what it saw; each watch keeps what it has told its own watcher and sends only what
//! is new to it. A thousand watches of one request cost one look per interval, not a thousand.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use tablecrypt_core::change::{ChangeItem, ChangeRequest, ItemCounts, ItemState};
use tokio::sync::broadcast;
use tokio::sync::broadcast::error::RecvError;
use tokio_stream::Stream;
use uuid::Uuid;

use super::ChangeRequests;
use crate::error::EngineError;

/// Updates a watch may buffer before its sender waits for the watcher to read: a slow client slows its own
/// polls, never the server.
const WATCH_BUFFER: usize = 16;
/// How far before the last look each look starts: a transaction may commit with an earlier timestamp than a
/// look that ran before it committed.
const COMMIT_SKEW: chrono::Duration = chrono::Duration::seconds(5);

/// One message of a watch: the request as it now is, and the items that changed (every item in the first).
#[derive(Debug, Clone)]
pub struct WatchUpdate {
    pub request: ChangeRequest,
    pub counts: ItemCounts,
    pub items: Vec<ChangeItem>,
}

pub type WatchStream = Pin<Box<dyn Stream<Item = Result<WatchUpdate, EngineError>> + Send>>;

/// Looks the shared poll of a request keeps for watches that have not read them yet: 16 intervals (8 s at the
/// default 500 ms) of a watcher slower than the poll, which the watch's own 16-update buffer also allows; a watch
/// further behind reads the request itself once and catches up.
const LOOKS_BUFFERED: usize = 16;

/// What a watch has already told its watcher.
struct Seen {
    items: HashMap<i64, (ItemState, Option<DateTime<Utc>>)>,
    request_update: Option<DateTime<Utc>>,
    counts: Option<ItemCounts>,
}

impl Seen {
    /// The update to send for what a look found: the items newer than what the watcher has, and the request if it
    /// (or its counts) changed; `None` when nothing is new.
    fn news(
        &mut self,
        items: &[ChangeItem],
        request: &ChangeRequest,
        counts: &ItemCounts,
    ) -> Option<WatchUpdate> {
        let changed: Vec<ChangeItem> = items
            .iter()
            .filter(|item| {
                let now = (item.state, item.update_time);
                match self.items.get(&item.item_id) {
                    // The same, or older than what was sent (a resync may read behind a shared look).
                    Some(told) if *told == now || told.1 > item.update_time => false,
                    _ => {
                        self.items.insert(item.item_id, now);
                        true
                    }
                }
            })
            .cloned()
            .collect();
        let request_changed = (request.update_time != self.request_update
            || self.counts.as_ref() != Some(counts))
            && request.update_time >= self.request_update;
        if request_changed {
            self.request_update = request.update_time;
            self.counts = Some(counts.clone());
        }
        (request_changed || !changed.is_empty()).then(|| WatchUpdate {
            request: request.clone(),
            counts: counts.clone(),
            items: changed,
        })
    }
}

/// One look at a request by its shared poll.
#[derive(Debug)]
struct Look {
    /// When the look began: a watch ignores looks that began before its snapshot.
    began: DateTime<Utc>,
    /// Items changed since shortly before the previous look began.
    items: Vec<ChangeItem>,
    request: ChangeRequest,
    counts: ItemCounts,
}

/// A look, or the sign that it failed (each watch then reads for itself, and reports its own error).
type Shared = Arc<Option<Look>>;

/// The shared polls running, by request.
#[derive(Debug, Clone, Default)]
pub(super) struct WatchPolls {
    senders: Arc<Mutex<HashMap<Uuid, broadcast::Sender<Shared>>>>,
}

/// A running poll's place in [`WatchPolls`], given up when the poll ends however it ends.
struct PollEntry {
    polls: WatchPolls,
    id: Uuid,
    sender: broadcast::Sender<Shared>,
}

impl Drop for PollEntry {
    fn drop(&mut self) {
        let mut polls = self.polls.lock();
        if polls
            .get(&self.id)
            .is_some_and(|sender| sender.same_channel(&self.sender))
        {
            polls.remove(&self.id);
        }
    }
}

impl WatchPolls {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, broadcast::Sender<Shared>>> {
        self.senders
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl ChangeRequests {
    pub async fn watch(&self, id: Uuid) -> Result<WatchStream, EngineError> {
        // Subscribed before the snapshot, so no look after it is missed; looks begun before the snapshot was read
        // may hold older counts than it and are ignored (the first look after covers from before the snapshot:
        // each look reads from shortly before the previous one began).
        let mut looks = self.subscribe(id);
        let (request, counts) = self.get(id).await?;
        let items = self.store.change_items.all_of(id).await?;
        let mut fresh_after = Utc::now();
        let mut seen = Seen {
            items: items
                .iter()
                .map(|i| (i.item_id, (i.state, i.update_time)))
                .collect(),
            request_update: request.update_time,
            counts: Some(counts.clone()),
        };
        let done = request.is_terminal();
        let first = WatchUpdate {
            request,
            counts,
            items,
        };
        let this = self.clone();
        let (tx, rx) = tokio::sync::mpsc::channel(WATCH_BUFFER);
        tokio::spawn(async move {
            if tx.send(Ok(first)).await.is_err() || done {
                return;
            }
            // The stream ends (OK) after this, whatever the request's state: the client watches again.
            let ends_at = tokio::time::Instant::now() + this.settings.watch_max_duration;
            loop {
                let update = tokio::select! {
                    look = looks.recv() => match look {
                        Ok(look) => match &*look {
                            Some(look) if look.began < fresh_after => continue,
                            Some(look) => Ok(seen.news(&look.items, &look.request, &look.counts)),
                            // The shared look failed: read for ourselves, and report our own error.
                            None => this.read_all(id, &mut seen, &mut fresh_after).await,
                        },
                        // Too far behind the shared poll: skip the looks still queued (older than what we read
                        // next), read everything once and carry on from there.
                        Err(RecvError::Lagged(_)) => {
                            looks = looks.resubscribe();
                            this.read_all(id, &mut seen, &mut fresh_after).await
                        }
                        // The shared poll stopped (the request ended after a look we ignored, or the server is
                        // shutting down, which the next turn sees): join a new one, and read once.
                        Err(RecvError::Closed) if this.shutdown.is_cancelled() => return,
                        Err(RecvError::Closed) => {
                            looks = this.subscribe(id);
                            this.read_all(id, &mut seen, &mut fresh_after).await
                        }
                    },
                    () = tokio::time::sleep_until(ends_at) => return,
                    () = this.shutdown.cancelled() => return,
                    () = tx.closed() => return,
                };
                match update {
                    Ok(Some(update)) => {
                        let done = update.request.is_terminal();
                        if tx.send(Ok(update)).await.is_err() || done {
                            return;
                        }
                    }
                    Ok(None) => {}
                    Err(error) => {
                        let _ = tx.send(Err(error)).await;
                        return;
                    }
                }
            }
        });
        Ok(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx)))
    }

    /// The request's shared poll, started if none runs.
    fn subscribe(&self, id: Uuid) -> broadcast::Receiver<Shared> {
        let mut polls = self.watch_polls.lock();
        if let Some(sender) = polls.get(&id) {
            return sender.subscribe();
        }
        let (sender, receiver) = broadcast::channel(LOOKS_BUFFERED);
        polls.insert(id, sender.clone());
        drop(polls);
        let this = self.clone();
        tokio::spawn(async move { this.poll_for_watches(id, sender).await });
        receiver
    }

    /// Looks at request `id` every `watch_interval` and broadcasts what changed, until nobody watches it, it ends,
    /// or the server shuts down. A failed look is broadcast as such (each watch reads for itself and ends with its
    /// own error) and the next one starts from where the failed one did.
    async fn poll_for_watches(&self, id: Uuid, sender: broadcast::Sender<Shared>) {
        // Even if this task panics, the request's entry goes, so later watches start a poll of their own.
        let _entry = PollEntry {
            polls: self.watch_polls.clone(),
            id,
            sender: sender.clone(),
        };
        let mut since = Utc::now() - COMMIT_SKEW;
        loop {
            tokio::select! {
                () = tokio::time::sleep(self.settings.watch_interval) => {}
                () = self.shutdown.cancelled() => break,
            }
            {
                // Checked and removed under the lock, so no watch subscribes to a poll that is about to stop.
                let mut polls = self.watch_polls.lock();
                if sender.receiver_count() == 0 {
                    polls.remove(&id);
                    return;
                }
            }
            let began = Utc::now();
            let look = match self.look(id, since).await {
                Ok((items, request, counts)) => {
                    since = began - COMMIT_SKEW;
                    Some(Look {
                        began,
                        items,
                        request,
                        counts,
                    })
                }
                Err(error) => {
                    tracing::debug!(request_id = %id, %error, "a shared watch look failed");
                    None
                }
            };
            let last = look.as_ref().is_some_and(|l| l.request.is_terminal());
            let _ = sender.send(Arc::new(look));
            if last {
                break;
            }
        }
    }

    /// The items changed since `since`, and the request with its counts.
    async fn look(
        &self,
        id: Uuid,
        since: DateTime<Utc>,
    ) -> Result<(Vec<ChangeItem>, ChangeRequest, ItemCounts), EngineError> {
        let items = self.store.change_items.changed_since(id, since).await?;
        let (request, counts) = self.get(id).await?;
        Ok((items, request, counts))
    }

    /// One watch's own full read (after falling behind, or when the shared look failed): what it has not sent.
    /// Looks begun before it ends are older than it (`fresh_after`).
    async fn read_all(
        &self,
        id: Uuid,
        seen: &mut Seen,
        fresh_after: &mut DateTime<Utc>,
    ) -> Result<Option<WatchUpdate>, EngineError> {
        let items = self.store.change_items.all_of(id).await?;
        let (request, counts) = self.get(id).await?;
        *fresh_after = Utc::now();
        Ok(seen.news(&items, &request, &counts))
    }
}
