//! Polling DescribeTable through a change, from the accepted call until the table is settled on its new state.
//! Only polls count: UpdateTable's own answer may show the change while DescribeTable still shows the old key.

use std::time::{Duration, Instant};

use super::session::{Regional, Session, TableView};

/// A change that never shows (a same-key re-send AWS accepted but did nothing with) is taken as done after this:
/// AWS showed the old key for 8-9 s; three times that is no longer "the first seconds".
pub const NO_CHANGE_GRACE: Duration = Duration::from_secs(30);
/// A global table's replica changes go through DynamoDB's replication and take minutes: a replica that shows
/// nothing for this long is not changing.
pub const REPLICA_NO_CHANGE_GRACE: Duration = Duration::from_secs(180);
/// Polls in a row without an answer after which the watch gives up: the table or the network is gone.
const MAX_FAILED_POLLS: u32 = 10;

/// What the polls of one change showed.
#[derive(Debug, Clone, Default)]
pub struct Trace {
    /// Seconds from the call until DescribeTable first showed the table different from before it.
    pub visible_after: Option<f64>,
    /// Views of the polls that showed the change under way.
    pub changing: Vec<TableView>,
    /// Seconds from the call until the table was settled on its new state.
    pub settled_after: Option<f64>,
    pub last: Option<TableView>,
}

/// How to watch one change.
#[derive(Debug, Clone, Copy)]
pub struct Watch {
    /// When the accepted call was sent.
    pub sent: Instant,
    pub every: Duration,
    pub grace: Duration,
}

/// Polls `table` in `at` until it has changed and settled, shows no change for `grace`, stops answering, or the
/// run is stopped. `before` is the table as it was before the call (`None`: unknown, so no timing is taken).
pub async fn watch(
    session: &Session,
    at: &Regional,
    table: &str,
    before: Option<&TableView>,
    how: Watch,
) -> Trace {
    let mut trace = Trace::default();
    let mut last_unchanged = 0.0_f64;
    let mut changed = false;
    let mut failed = 0;
    loop {
        if session.stopped().is_some() {
            return trace;
        }
        tokio::time::sleep(how.every).await;
        // AWS evaluated the poll between asking and answering: an unchanged answer bounds the change below by
        // `asked`, a changed one above by `answered`.
        let asked = how.sent.elapsed().as_secs_f64();
        let (_, view) = session
            .describe(at, table, &format!(" (poll, +{asked:.1}s)"))
            .await;
        let answered = how.sent.elapsed().as_secs_f64();
        let Some(view) = view else {
            failed += 1;
            if failed >= MAX_FAILED_POLLS {
                return trace;
            }
            continue;
        };
        failed = 0;
        let differs = before.is_some_and(|b| *b != view);
        if !changed {
            if !differs && !view.changing() {
                last_unchanged = asked;
                if how.sent.elapsed() > how.grace {
                    trace.last = Some(view);
                    return trace;
                }
                continue;
            }
            changed = true;
            if before.is_some() {
                trace.visible_after = Some((last_unchanged + answered) / 2.0);
            }
        }
        let terminal = !matches!(view.status.as_str(), "ACTIVE" | "UPDATING");
        if view.changing() {
            trace.changing.push(view.clone());
        } else if view.settled() && (differs || !trace.changing.is_empty()) {
            // Settled on something new, or back on the same key after showing the change (a re-send); a
            // stale poll showing the table as before is neither.
            trace.settled_after = Some(answered);
            trace.last = Some(view);
            return trace;
        }
        trace.last = Some(view);
        // INACCESSIBLE_ENCRYPTION_CREDENTIALS, ARCHIVED: nothing more will happen here.
        if terminal {
            return trace;
        }
    }
}
