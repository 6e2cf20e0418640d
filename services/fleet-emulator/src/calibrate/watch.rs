//! Polling DescribeTable through a change, from the accepted call until the table is settled again.

use std::time::{Duration, Instant};

use super::session::{Regional, Session, TableView, answer_of};

/// A change that never shows (a same-key re-send AWS accepted but did nothing with) is taken as done after this:
/// AWS showed the old key for 8-9 s; three times that is no longer "the first seconds".
pub const NO_CHANGE_GRACE: Duration = Duration::from_secs(30);

/// What the polls of one change showed.
#[derive(Debug, Clone, Default)]
pub struct Trace {
    /// Seconds from the call until the table first looked different from before it (0: the call's own answer did).
    pub visible_after: Option<f64>,
    /// Views of the polls that showed the change under way.
    pub changing: Vec<TableView>,
    /// Seconds from the call until the table was settled on its new state.
    pub settled_after: Option<f64>,
    pub last: Option<TableView>,
}

/// Polls `table` in `at` every `every` from `sent` (when the accepted call was sent) until it has changed and
/// settled, or shows no change for `NO_CHANGE_GRACE`, or `deadline` passes.
#[allow(clippy::too_many_arguments)]
pub async fn watch(
    session: &Session,
    at: &Regional,
    table: &str,
    before: &TableView,
    answered: Option<&TableView>,
    sent: Instant,
    every: Duration,
    deadline: Instant,
) -> Trace {
    let mut trace = Trace::default();
    let mut last_unchanged = 0.0_f64;
    if let Some(view) = answered
        && view != before
    {
        trace.visible_after = Some(0.0);
        if view.changing() {
            trace.changing.push(view.clone());
        }
    }
    loop {
        if Instant::now() >= deadline {
            return trace;
        }
        tokio::time::sleep(every).await;
        // AWS evaluated the poll between asking and answering: an unchanged answer bounds the change below by
        // `asked`, a changed one above by `answered`.
        let asked = sent.elapsed().as_secs_f64();
        let result = at.dynamodb.describe_table().table_name(table).send().await;
        let answered = sent.elapsed().as_secs_f64();
        let answer = answer_of(&result);
        let view = result
            .ok()
            .and_then(|out| out.table.map(|t| TableView::of(&t)));
        session.record(
            &at.region,
            "DescribeTable",
            format!("{table} (poll, +{asked:.1}s)"),
            view.as_ref().map_or_else(|| answer.text(), TableView::text),
        );
        let Some(view) = view else { continue };
        if trace.visible_after.is_none() {
            if view == *before {
                last_unchanged = asked;
                if sent.elapsed() > NO_CHANGE_GRACE {
                    trace.last = Some(view);
                    return trace;
                }
                continue;
            }
            // Between the last poll that looked unchanged and this one.
            trace.visible_after = Some((last_unchanged + answered) / 2.0);
        }
        if view.changing() {
            trace.changing.push(view.clone());
        } else if view.settled() {
            trace.settled_after = Some(answered);
            trace.last = Some(view);
            return trace;
        }
        trace.last = Some(view);
    }
}
