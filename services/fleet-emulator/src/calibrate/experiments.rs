//! The experiments on the one-region tables: each table's operations in order, the tables in parallel, writing
//! what AWS answered into `Observations` as they go, so a run cut short keeps what it saw.

use std::time::Instant;

use aws_sdk_dynamodb::operation::update_table::builders::UpdateTableFluentBuilder;
use aws_sdk_dynamodb::types::SseSpecification;

use super::infer::Answer;
use super::plan::{self, SWITCHES_PER_TABLE};
use super::resources::{Run, sse_key, sse_managed, sse_owned};
use super::session::{Regional, TableView, answer_of, lock, table_text};
use super::watch::{NO_CHANGE_GRACE, Trace, Watch, watch};

/// How a watched change counts in the observations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Counts {
    /// An SSE-only change of a one-region table: its timings and statuses are the ones the switches describe.
    SseOnly,
    /// Anything else (a global table's changes): recorded in the transcript only.
    Other,
}

/// The answer recorded for a call the run did not send because the table's switches are spent.
fn skipped(why: &str) -> Answer {
    Answer {
        status: 0,
        code: Some("NotSent".to_owned()),
        message: Some(why.to_owned()),
    }
}

impl Run<'_> {
    /// Sends one UpdateTable (no retries) and returns its answer and when it was sent. `switches` names the
    /// regions whose replica of the table the call would switch if AWS accepted it: it is not sent when one of
    /// them has had its `SWITCHES_PER_TABLE`, and an acceptance counts there. (The quota probes pass none: they
    /// are meant to be refused.)
    pub(super) async fn update(
        &self,
        at: &Regional,
        name: &str,
        what: &str,
        call: UpdateTableFluentBuilder,
        switches: &[&str],
    ) -> anyhow::Result<(Answer, Instant)> {
        let spent = switches.iter().find(|region| {
            lock(&self.switches)
                .get(&(region.to_string(), name.to_owned()))
                .is_some_and(|n| *n >= SWITCHES_PER_TABLE)
        });
        if let Some(region) = spent {
            let answer = skipped(&format!(
                "not sent: {name} in {region} has had the {SWITCHES_PER_TABLE} switches AWS allows per 24 h"
            ));
            self.session.record(
                &at.region,
                "UpdateTable",
                format!("{name}: {what}"),
                answer.text(),
            );
            return Ok((answer, Instant::now()));
        }
        self.session
            .step(&format!("UpdateTable {name} in {}: {what}", at.region))?;
        let sent = Instant::now();
        let result = call.send().await;
        let answer = answer_of(&result);
        // Recorded, but never used to time the change: AWS's answer may show it before DescribeTable does.
        let shown = result
            .ok()
            .and_then(|out| out.table_description)
            .map_or_else(String::new, |t| {
                format!(" (answered with {})", table_text(&t))
            });
        self.session.record(
            &at.region,
            "UpdateTable",
            format!("{name}: {what}"),
            format!("{}{shown}", answer.text()),
        );
        if answer.is_ok() {
            let mut counts = lock(&self.switches);
            for region in switches {
                *counts
                    .entry((region.to_string(), name.to_owned()))
                    .or_default() += 1;
            }
        }
        Ok((answer, sent))
    }

    /// Sends a change of a one-region table, without watching it.
    async fn send_sse(
        &self,
        name: &str,
        what: &str,
        sse: SseSpecification,
    ) -> anyhow::Result<(Answer, Instant)> {
        let at = &self.session.main;
        let call = at
            .dynamodb
            .update_table()
            .table_name(name)
            .sse_specification(sse);
        self.update(at, name, what, call, &[at.region.as_str()])
            .await
    }

    /// An SSE change of a one-region table: sent, then watched until settled when accepted.
    async fn change(
        &self,
        name: &str,
        what: &str,
        sse: SseSpecification,
    ) -> anyhow::Result<(Answer, Trace)> {
        let at = &self.session.main;
        let (_, before) = self.session.describe(at, name, "").await;
        let (answer, sent) = self.send_sse(name, what, sse).await?;
        let trace = if answer.is_ok() {
            self.follow(at, name, before.as_ref(), sent, Counts::SseOnly)
                .await
        } else {
            Trace::default()
        };
        Ok((answer, trace))
    }

    /// Watches an accepted change and adds what it showed to the observations.
    pub(super) async fn follow(
        &self,
        at: &Regional,
        name: &str,
        before: Option<&TableView>,
        sent: Instant,
        counts: Counts,
    ) -> Trace {
        let grace = match counts {
            Counts::SseOnly => NO_CHANGE_GRACE,
            Counts::Other => super::watch::REPLICA_NO_CHANGE_GRACE,
        };
        let how = Watch {
            sent,
            every: self.poll,
            grace,
        };
        let trace = watch(self.session, at, name, before, how).await;
        if counts == Counts::SseOnly {
            self.observe(|seen| {
                if let Some(visible) = trace.visible_after {
                    seen.old_key_visible.push(visible);
                }
                seen.table_status_during_change
                    .extend(trace.changing.iter().map(|v| v.status.clone()));
                if let Some(settled) = trace.settled_after {
                    seen.change_seconds.push(settled);
                }
            });
        }
        trace
    }

    /// Every table's experiments, the tables in parallel.
    pub async fn experiments(&self) -> anyhow::Result<()> {
        let (a, b, c, d, e, f) = tokio::join!(
            self.resend_table(),
            self.owned_table(),
            self.managed_table(),
            self.disabled_key_table(),
            self.quota_table(),
            self.global_table(),
        );
        a.and(b).and(c).and(d).and(e).and(f)
    }

    /// a -> b with an identical and a different change sent during it; then b re-sent by ARN, key id and alias.
    async fn resend_table(&self) -> anyhow::Result<()> {
        let name = self.table("resend");
        let at = &self.session.main;
        let (a, b) = (self.key("a")?, self.key("b")?);
        let (_, before) = self.session.describe(at, &name, "").await;
        let (answer, sent) = self
            .send_sse(&name, "a -> b by ARN", sse_key(&b.arn))
            .await?;
        if !answer.is_ok() {
            anyhow::bail!("the first switch of {name} was refused: {}", answer.text());
        }
        let (identical, _) = self
            .send_sse(&name, "b by ARN again, during the change", sse_key(&b.arn))
            .await?;
        let (different, _) = self
            .send_sse(&name, "a by ARN, during the change", sse_key(&a.arn))
            .await?;
        self.observe(|seen| {
            seen.identical_during_change = Some(identical);
            seen.different_during_change = Some(different);
        });
        let trace = self
            .follow(at, &name, before.as_ref(), sent, Counts::SseOnly)
            .await;
        // Re-sends only mean something on a table settled on b (a "different" change AWS accepted would not be).
        let on_b = trace.settled_after.is_some()
            && trace.last.as_ref().and_then(|v| v.key_arn.as_deref()) == Some(b.arn.as_str());
        for (what, reference) in [
            ("b re-sent by ARN", b.arn.clone()),
            ("b re-sent by key id", b.id.clone()),
            ("b re-sent by alias", plan::alias_name(&self.run_id)),
        ] {
            let answer = if on_b {
                self.change(&name, what, sse_key(&reference)).await?.0
            } else {
                skipped("not sent: the table did not settle on key b")
            };
            self.observe(|seen| {
                let slot = match what {
                    "b re-sent by ARN" => &mut seen.resend_by_arn,
                    "b re-sent by key id" => &mut seen.resend_by_key_id,
                    _ => &mut seen.resend_by_alias,
                };
                *slot = Some(answer);
            });
        }
        Ok(())
    }

    /// `{Enabled: false}` on the owned key; owned -> a; a -> owned, watching the status names both ways.
    async fn owned_table(&self) -> anyhow::Result<()> {
        let name = self.table("owned");
        let (answer, _) = self
            .change(&name, "{Enabled: false} on the owned key", sse_owned())
            .await?;
        self.observe(|seen| seen.owned_disabled_on_owned = Some(answer));
        let a = self.key("a")?;
        let (_, trace) = self.change(&name, "owned -> a", sse_key(&a.arn)).await?;
        self.observe(|seen| {
            seen.status_owned_to_kms
                .extend(trace.changing.iter().filter_map(|v| v.sse_status.clone()));
        });
        let (_, trace) = self.change(&name, "a -> owned", sse_owned()).await?;
        self.observe(|seen| {
            seen.status_to_owned.extend(
                trace
                    .changing
                    .iter()
                    .filter_map(|v| Some((v.sse_status.clone()?, v.key_arn.is_some()))),
            );
        });
        Ok(())
    }

    /// The asymmetric key, then `{Enabled: true}` re-sent on the AWS managed key.
    async fn managed_table(&self) -> anyhow::Result<()> {
        let name = self.table("managed");
        let asymmetric = self.key("asymmetric")?;
        let (answer, _) = self
            .change(&name, "the asymmetric key", sse_key(&asymmetric.arn))
            .await?;
        self.observe(|seen| seen.asymmetric_key = Some(answer));
        let (answer, _) = self
            .change(
                &name,
                "{Enabled: true} re-sent on the AWS managed key",
                sse_managed(),
            )
            .await?;
        self.observe(|seen| seen.resend_managed = Some(answer));
        Ok(())
    }

    /// Disables the table's key, switches away from it, and enables it again.
    async fn disabled_key_table(&self) -> anyhow::Result<()> {
        let name = self.table("disabled");
        let disabled = self.key("disabled")?;
        let at = &self.session.main;
        self.session.step("DisableKey disabled")?;
        let result = at.kms.disable_key().key_id(&disabled.id).send().await;
        self.session.recorded_ok(
            &at.region,
            "DisableKey",
            disabled.id.clone(),
            "DisableKey",
            result,
        )?;
        tokio::time::sleep(self.key_settle).await;
        let a = self.key("a")?;
        let outcome = self
            .change(&name, "away from its disabled key, to a", sse_key(&a.arn))
            .await;
        // Enabled again whatever happened, so the table is never left on a disabled key.
        self.session.cleanup_step("EnableKey disabled");
        let result = at.kms.enable_key().key_id(&disabled.id).send().await;
        self.session.record(
            &at.region,
            "EnableKey",
            disabled.id.clone(),
            answer_of(&result).text(),
        );
        let (mut answer, trace) = outcome?;
        let ended = trace.last.as_ref().and_then(|v| v.key_arn.clone());
        if answer.is_ok() && ended.as_deref() != Some(a.arn.as_str()) {
            // Accepted, yet the table did not end on the new key: not the behaviour either setting describes.
            answer = Answer {
                status: answer.status,
                code: Some("AcceptedWithoutEffect".to_owned()),
                message: Some(format!("the table ended on {ended:?}, not on key a")),
            };
        }
        self.observe(|seen| seen.away_from_disabled_key = Some(answer));
        Ok(())
    }

    /// Four switches, then a fifth to a key that does not exist and one to a real key (both meant to be refused:
    /// the only calls of the run that may exceed the quota, to read how AWS refuses).
    async fn quota_table(&self) -> anyhow::Result<()> {
        let name = self.table("quota");
        let (a, b) = (self.key("a")?, self.key("b")?);
        for (n, (what, key)) in [
            ("owned -> a", &a),
            ("a -> b", &b),
            ("b -> a", &a),
            ("a -> b", &b),
        ]
        .into_iter()
        .enumerate()
        {
            let (answer, trace) = self
                .change(
                    &name,
                    &format!("switch {} of 4: {what}", n + 1),
                    sse_key(&key.arn),
                )
                .await?;
            if !answer.is_ok() || trace.settled_after.is_none() {
                anyhow::bail!(
                    "switch {} of {name} did not complete: {}",
                    n + 1,
                    answer.text()
                );
            }
            if n == 0 {
                self.observe(|seen| {
                    seen.status_owned_to_kms
                        .extend(trace.changing.iter().filter_map(|v| v.sse_status.clone()));
                });
            }
        }
        let at = &self.session.main;
        let probe = |what: &'static str, key: String| {
            let call = at
                .dynamodb
                .update_table()
                .table_name(&name)
                .sse_specification(sse_key(&key));
            self.update(at, &name, what, call, &[])
        };
        let (answer, _) = probe(
            "a fifth switch, to a key that does not exist",
            plan::missing_alias_name(&self.run_id),
        )
        .await?;
        self.observe(|seen| seen.quota_with_missing_key = Some(answer));
        let (answer, _) = probe("a fifth switch, to a", a.arn.clone()).await?;
        self.observe(|seen| seen.quota_with_real_key = Some(answer));
        Ok(())
    }
}
