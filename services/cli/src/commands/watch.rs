//! Following a change request: WatchChangeRequest drives an overall progress bar with an ETA and one bar per
//! account-region; Ctrl-C detaches (the request keeps running); a dropped stream is reopened. At the end, a
//! summary with the failed tables, and an exit code that says whether every table made it.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use tablecrypt_proto::v1 as pb;
use tokio_stream::StreamExt as _;

use super::{Ctx, change_items};
use crate::error::{CliError, Result};
use crate::json::to_json;
use crate::names;
use crate::output::{print_table, table};

/// Above this many account-regions, one bar counts finished account-regions instead of a bar each.
const MAX_REGION_BARS: usize = 12;
/// How often a dropped watch stream is reopened in a row before giving up.
const RECONNECTS: u32 = 10;

type Group = (String, String);

struct Progress {
    bars: MultiProgress,
    overall: ProgressBar,
    /// One bar per account-region, or None when there are too many (then `regions_done` counts them). Both
    /// None until the first snapshot.
    region_bars: Option<BTreeMap<Group, ProgressBar>>,
    regions_done: Option<ProgressBar>,
    totals: BTreeMap<Group, (u64, u64)>,
    /// Every item's account-region and whether it is finished.
    items: HashMap<i64, (Group, bool)>,
    /// The request as last seen.
    request: pb::ChangeRequest,
    /// Time spent RUNNING while watched, and since when it is running now (paused and queued time do not count
    /// towards the ETA's rate).
    running: Duration,
    running_since: Option<std::time::Instant>,
    /// Tables that finished while watched and RUNNING (those finished before, at planning, or during a pause
    /// say nothing of the rate).
    finished_running: u64,
}

/// Tables that must finish under watch before an ETA is shown: the first ones were already in flight when the
/// watch began, and alone would make the rate look far too fast.
const ETA_MIN_FINISHED: u64 = 3;

/// The ETA from the rate tables finished while watched and RUNNING: none until a few have.
fn eta(running: Duration, finished_while_running: u64, remaining: u64) -> Option<Duration> {
    if finished_while_running < ETA_MIN_FINISHED || remaining == 0 {
        return None;
    }
    Some(running.mul_f64(remaining as f64 / finished_while_running as f64))
}

/// The overall bar's words: the state, every table's state by name (queued, applying, waiting for AWS, ok,
/// failed), and an ETA only while it means something (RUNNING, once a table has finished under watch).
fn progress_message(state: i32, counts: &pb::ItemCounts, eta: Option<Duration>) -> String {
    let mut message = format!(
        "{} · {} queued, {} applying, {} waiting for AWS, {} ok, {} failed",
        names::request_state(state),
        counts.pending + counts.deferred,
        counts.applying,
        counts.waiting,
        counts.succeeded,
        counts.failed
    );
    let running = state == pb::ChangeRequestState::Running as i32;
    match eta {
        Some(eta) if running => {
            message.push_str(&format!(" · ETA {}", indicatif::HumanDuration(eta)));
        }
        _ if state == pb::ChangeRequestState::Paused as i32 => message.push_str(" · ETA: paused"),
        _ => {}
    }
    message
}

fn style(template: &str) -> ProgressStyle {
    ProgressStyle::with_template(template)
        .expect("a valid template")
        .progress_chars("=> ")
}

impl Progress {
    fn new(json: bool) -> Self {
        let target = if json {
            ProgressDrawTarget::hidden()
        } else {
            // Hidden by indicatif itself when stderr is not a terminal.
            ProgressDrawTarget::stderr()
        };
        let bars = MultiProgress::with_draw_target(target);
        // Shown from the first snapshot on, when its length is known.
        let overall = ProgressBar::new(0);
        overall.set_style(style(
            "{prefix:>28} [{bar:40}] {pos}/{len} ({percent}%) {elapsed}  {msg}",
        ));
        overall.set_prefix("all tables");
        Self {
            bars,
            overall,
            region_bars: None,
            regions_done: None,
            totals: BTreeMap::new(),
            items: HashMap::new(),
            request: pb::ChangeRequest::default(),
            running: Duration::ZERO,
            running_since: None,
            finished_running: 0,
        }
    }

    /// The first message of a stream: every item. Rebuilds the bars (a reopened stream starts over).
    fn snapshot(&mut self, items: &[pb::ChangeItem]) {
        self.items.clear();
        self.totals.clear();
        for item in items {
            let group = (item.account_id.clone(), item.region.clone());
            let done = names::item_is_done(item.state);
            let entry = self.totals.entry(group.clone()).or_default();
            entry.0 += 1;
            entry.1 += u64::from(done);
            self.items.insert(item.item_id, (group, done));
        }
        let total: u64 = self.totals.values().map(|t| t.0).sum();
        let done: u64 = self.totals.values().map(|t| t.1).sum();
        self.overall.set_length(total);
        self.overall.set_position(done);
        if self.region_bars.is_some() || self.regions_done.is_some() {
            return;
        }
        self.overall = self.bars.add(self.overall.clone());
        if self.totals.len() <= MAX_REGION_BARS {
            let mut bars = BTreeMap::new();
            for (group, (total, done)) in &self.totals {
                let bar = self.bars.add(ProgressBar::new(*total));
                bar.set_style(style("{prefix:>28} [{bar:40}] {pos}/{len}"));
                bar.set_prefix(format!("{} {}", group.0, group.1));
                bar.set_position(*done);
                bars.insert(group.clone(), bar);
            }
            self.region_bars = Some(bars);
        } else {
            let bar = self.bars.add(ProgressBar::new(self.totals.len() as u64));
            bar.set_style(style("{prefix:>28} [{bar:40}] {pos}/{len}"));
            bar.set_prefix("account-regions finished");
            self.regions_done = Some(bar);
        }
        self.redraw_groups();
    }

    fn item(&mut self, item: &pb::ChangeItem) {
        let group = (item.account_id.clone(), item.region.clone());
        let done = names::item_is_done(item.state);
        let before = self
            .items
            .insert(item.item_id, (group.clone(), done))
            .map(|(_, d)| d);
        let entry = self.totals.entry(group).or_default();
        match before {
            None => {
                entry.0 += 1;
                self.overall.inc_length(1);
            }
            Some(true) if !done => {
                entry.1 = entry.1.saturating_sub(1);
                self.overall
                    .set_position(self.overall.position().saturating_sub(1));
            }
            _ => {}
        }
        if done && before != Some(true) {
            entry.1 += 1;
            self.overall.inc(1);
            if self.running_since.is_some() {
                self.finished_running += 1;
            }
        }
        self.redraw_groups();
        self.show_counts();
    }

    fn redraw_groups(&self) {
        if let Some(bars) = &self.region_bars {
            for (group, bar) in bars {
                if let Some((total, done)) = self.totals.get(group) {
                    bar.set_length(*total);
                    bar.set_position(*done);
                }
            }
        }
        if let Some(bar) = &self.regions_done {
            let finished = self.totals.values().filter(|(t, d)| t == d).count();
            bar.set_position(finished as u64);
        }
    }

    fn request(&mut self, request: &pb::ChangeRequest) {
        let now = std::time::Instant::now();
        if let Some(since) = self.running_since.take() {
            self.running += now - since;
        }
        if request.state == pb::ChangeRequestState::Running as i32 {
            self.running_since = Some(now);
        }
        if request.state != self.request.state {
            // A line that survives the bars (and is all there is when stderr is not a terminal).
            self.bars.suspend(|| eprintln!("{}", status_line(request)));
        }
        self.request = request.clone();
        self.show_counts();
    }

    /// The overall bar's words, from the request's counts as last seen and the rate of this watch.
    fn show_counts(&self) {
        let running = self.running
            + self
                .running_since
                .map_or(Duration::ZERO, |since| since.elapsed());
        let done = self.overall.position();
        let remaining = self.overall.length().unwrap_or(0).saturating_sub(done);
        self.overall.set_message(progress_message(
            self.request.state,
            &self.request.counts.unwrap_or_default(),
            eta(running, self.finished_running, remaining),
        ));
    }

    fn clear(&self) {
        self.bars.clear().ok();
    }
}

fn status_line(request: &pb::ChangeRequest) -> String {
    let counts = request.counts.unwrap_or_default();
    let done =
        counts.succeeded + counts.failed + counts.skipped + counts.blocked + counts.cancelled;
    let mut line = format!(
        "change request {}: {} ({done}/{} tables finished, {} failed)",
        request.change_request_id,
        names::request_state(request.state),
        counts.total,
        counts.failed
    );
    if !request.pause_reason.is_empty() {
        line.push_str(&format!(", paused: {}", request.pause_reason));
    }
    line
}

/// Follows the request until it is terminal and returns it. Ctrl-C detaches with [`CliError::Interrupted`].
pub async fn follow(ctx: &Ctx, id: &str) -> Result<pb::ChangeRequest> {
    let client = ctx.client().await?;
    let mut progress = Progress::new(ctx.out.is_json());
    let interrupted = tokio::signal::ctrl_c();
    tokio::pin!(interrupted);
    let detached = |progress: &Progress| {
        progress.clear();
        CliError::Interrupted(format!(
            "detached from change request {id}; it keeps running. Follow it again with: tablecrypt requests watch {id}"
        ))
    };
    let mut failures = 0;
    loop {
        let mut api = client.streaming();
        let opened = tokio::select! {
            opened = api.watch_change_request(pb::WatchChangeRequestRequest {
                change_request_id: id.to_owned(),
            }) => opened,
            _ = &mut interrupted => return Err(detached(&progress)),
        };
        let mut stream = match opened {
            Ok(response) => response.into_inner(),
            Err(status) if retryable(&status) && failures < RECONNECTS => {
                failures += 1;
                reconnect_pause(&progress, &status).await;
                continue;
            }
            Err(status) => {
                progress.clear();
                return Err(status.into());
            }
        };
        let mut first = true;
        loop {
            let next = tokio::select! {
                next = stream.next() => next,
                _ = &mut interrupted => return Err(detached(&progress)),
            };
            match next {
                Some(Ok(message)) => {
                    failures = 0;
                    if first {
                        progress.snapshot(&message.items);
                        first = false;
                    } else {
                        for item in &message.items {
                            progress.item(item);
                        }
                    }
                    if let Some(request) = &message.change_request {
                        progress.request(request);
                    }
                }
                // The server ends the stream once the request is terminal.
                None if names::request_is_done(progress.request.state) => {
                    progress.clear();
                    return Ok(progress.request);
                }
                None => break,
                Some(Err(status)) if retryable(&status) && failures < RECONNECTS => {
                    failures += 1;
                    reconnect_pause(&progress, &status).await;
                    break;
                }
                Some(Err(status)) => {
                    progress.clear();
                    return Err(status.into());
                }
            }
        }
    }
}

/// A server restarting or a stream cut by a proxy: worth reopening.
fn retryable(status: &tonic::Status) -> bool {
    matches!(
        status.code(),
        tonic::Code::Unavailable
            | tonic::Code::Unknown
            | tonic::Code::Internal
            | tonic::Code::Cancelled
    )
}

async fn reconnect_pause(progress: &Progress, status: &tonic::Status) {
    progress.bars.suspend(|| {
        eprintln!(
            "watch interrupted ({}: {}); reconnecting",
            tablecrypt_proto::code_name(status.code()),
            status.message()
        );
    });
    tokio::time::sleep(Duration::from_secs(1)).await;
}

/// The end of a request: its counts and the failed tables; an error (exit 1) unless it SUCCEEDED.
pub async fn finish(
    ctx: &Ctx,
    request: pb::ChangeRequest,
    plan: Option<serde_json::Value>,
) -> Result<()> {
    let client = ctx.client().await?;
    let id = request.change_request_id.clone();
    // The failed tables, at most 10,000 of them.
    let (failed, _) = change_items(
        client,
        &id,
        vec![pb::ChangeItemState::Failed as i32],
        10_000,
    )
    .await?;
    if ctx.out.is_json() {
        let mut document = serde_json::json!({
            "changeRequest": to_json(&request),
            "failedItems": failed.iter().map(to_json).collect::<Vec<_>>(),
        });
        if let Some(plan) = plan {
            document["plan"] = plan;
        }
        ctx.out.json(&document);
    } else {
        print_summary(&request, &failed);
    }
    if request.state == pb::ChangeRequestState::Succeeded as i32 {
        Ok(())
    } else {
        Err(CliError::Failed(format!(
            "change request {id} ended {} with {} failed tables",
            names::request_state(request.state),
            request.counts.unwrap_or_default().failed
        )))
    }
}

fn print_summary(request: &pb::ChangeRequest, failed: &[pb::ChangeItem]) {
    let counts = request.counts.unwrap_or_default();
    let took = match (&request.start_time, &request.finish_time) {
        (Some(start), Some(end)) => {
            let seconds = (end.seconds - start.seconds).max(0);
            format!(
                " in {}",
                humantime::format_duration(Duration::from_secs(
                    u64::try_from(seconds).unwrap_or(0)
                ))
            )
        }
        _ => String::new(),
    };
    crate::outln!(
        "Change request {} {}{took}: {} changed, {} failed, {} skipped (already compliant), {} blocked, {} cancelled of {}",
        request.change_request_id,
        names::request_state(request.state),
        counts.succeeded,
        counts.failed,
        counts.skipped,
        counts.blocked,
        counts.cancelled,
        counts.total
    );
    if !failed.is_empty() {
        crate::outln!("\nFailed tables:");
        let mut rows = table(&["account", "region", "table", "reason", "attempts", "why"]);
        for item in failed {
            rows.add_row(vec![
                item.account_id.clone(),
                item.region.clone(),
                item.table_name.clone(),
                names::reason(item.reason),
                item.attempts.to_string(),
                item.message.clone(),
            ]);
        }
        print_table(&rows);
    }
    if counts.succeeded > 0 {
        crate::outln!(
            "\nHistory: tablecrypt history --request {0}   Undo: tablecrypt requests rollback {0}",
            request.change_request_id
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(pending: i32, applying: i32, waiting: i32, succeeded: i32) -> pb::ItemCounts {
        pb::ItemCounts {
            pending,
            applying,
            waiting,
            succeeded,
            total: pending + applying + waiting + succeeded,
            ..Default::default()
        }
    }

    #[test]
    fn the_bar_names_every_state_and_shows_an_eta_only_when_it_means_something() {
        let running = pb::ChangeRequestState::Running as i32;
        let paused = pb::ChangeRequestState::Paused as i32;
        // Nothing (or too little) finished yet under watch: no "ETA 0s", no wild guess.
        assert_eq!(eta(Duration::from_secs(30), 0, 100), None);
        assert_eq!(
            eta(Duration::from_secs(30), ETA_MIN_FINISHED - 1, 100),
            None
        );
        let message = progress_message(running, &counts(90, 4, 6, 0), None);
        assert_eq!(
            message,
            "RUNNING · 90 queued, 4 applying, 6 waiting for AWS, 0 ok, 0 failed"
        );
        // 10 finished in 20 s of running: 90 more take 3 minutes.
        let eta = eta(Duration::from_secs(20), 10, 90);
        assert_eq!(eta, Some(Duration::from_secs(180)));
        assert!(progress_message(running, &counts(80, 4, 6, 10), eta).ends_with("ETA 3 minutes"));
        // Paused: the clock does not run for it.
        assert!(progress_message(paused, &counts(80, 0, 0, 10), eta).ends_with("ETA: paused"));
    }
}
