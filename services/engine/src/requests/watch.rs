//! Watching a request: a snapshot (the request and every item), then each change as it happens, until the request
//! ends, the watcher goes away or the server shuts down.

use std::collections::HashMap;
use std::pin::Pin;

use chrono::{DateTime, Utc};
use tablecrypt_core::change::{ChangeItem, ChangeRequest, ItemCounts, ItemState};
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

/// What a watch has already told its watcher.
struct Seen {
    items: HashMap<i64, (ItemState, Option<DateTime<Utc>>)>,
    request_update: Option<DateTime<Utc>>,
    counts: Option<ItemCounts>,
}

impl ChangeRequests {
    pub async fn watch(&self, id: Uuid) -> Result<WatchStream, EngineError> {
        let (request, counts) = self.get(id).await?;
        let snapshot_time = Utc::now();
        let items = self.store.change_items.all_of(id).await?;
        let mut seen = Seen {
            items: items
                .iter()
                .map(|i| (i.item_id, (i.state, i.update_time)))
                .collect(),
            request_update: request.update_time,
            counts: Some(counts.clone()),
        };
        let mut done = request.is_terminal();
        let first = WatchUpdate {
            request,
            counts,
            items,
        };
        let this = self.clone();
        let (tx, rx) = tokio::sync::mpsc::channel(WATCH_BUFFER);
        tokio::spawn(async move {
            if tx.send(Ok(first)).await.is_err() {
                return;
            }
            let mut since = snapshot_time - COMMIT_SKEW;
            // The stream ends (OK) after this, whatever the request's state: the client watches again.
            let ends_at = tokio::time::Instant::now() + this.settings.watch_max_duration;
            while !done {
                tokio::select! {
                    () = tokio::time::sleep(this.settings.watch_interval) => {}
                    () = tokio::time::sleep_until(ends_at) => return,
                    () = this.shutdown.cancelled() => return,
                    () = tx.closed() => return,
                }
                let checked_at = Utc::now();
                match this.poll_watch(id, since, &mut seen).await {
                    Ok(Some(update)) => {
                        done = update.request.is_terminal();
                        if tx.send(Ok(update)).await.is_err() {
                            return;
                        }
                    }
                    Ok(None) => {}
                    Err(error) => {
                        let _ = tx.send(Err(error)).await;
                        return;
                    }
                }
                since = checked_at - COMMIT_SKEW;
            }
        });
        Ok(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx)))
    }

    /// One look for changes since the last: the items that changed and the request if it (or its counts) did.
    async fn poll_watch(
        &self,
        id: Uuid,
        since: DateTime<Utc>,
        seen: &mut Seen,
    ) -> Result<Option<WatchUpdate>, EngineError> {
        let changed: Vec<ChangeItem> = self
            .store
            .change_items
            .changed_since(id, since)
            .await?
            .into_iter()
            .filter(|item| {
                let now = (item.state, item.update_time);
                seen.items.insert(item.item_id, now) != Some(now)
            })
            .collect();
        let (request, counts) = self.get(id).await?;
        let request_changed =
            request.update_time != seen.request_update || seen.counts.as_ref() != Some(&counts);
        seen.request_update = request.update_time;
        seen.counts = Some(counts.clone());
        if changed.is_empty() && !request_changed {
            return Ok(None);
        }
        Ok(Some(WatchUpdate {
            request,
            counts,
            items: changed,
        }))
    }
}
