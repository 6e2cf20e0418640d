//! The calibration run's resources and experiments: create the keys and tables of `plan`, then run each table's
//! operations (the tables in parallel, each table's in order), writing what AWS answered into `Observations` as
//! it goes, so a run cut short keeps what it saw.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use aws_sdk_dynamodb::error::ProvideErrorMetadata;
use aws_sdk_dynamodb::operation::update_table::builders::UpdateTableFluentBuilder;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ReplicationGroupUpdate,
    ScalarAttributeType, SseSpecification, SseType, StreamSpecification, StreamViewType, Tag,
    UpdateReplicationGroupMemberAction,
};

use super::infer::{Answer, Observations, ReplicaAfterManaged};
use super::manifest::{Kind, ManifestFile};
use super::plan::{self, KEYS, Place, RUN_TAG, Start, TABLES};
use super::session::{Regional, Session, TableView, answer_of};
use super::watch::{Trace, watch};

/// A key the run created.
#[derive(Debug, Clone)]
pub struct CreatedKey {
    pub id: String,
    pub arn: String,
}

/// Everything the experiments share.
pub struct Run<'a> {
    pub session: &'a Session,
    pub manifest: &'a ManifestFile,
    pub run_id: String,
    /// How often DescribeTable is polled through a change.
    pub poll: Duration,
    /// How long after DisableKey before DynamoDB is asked to use the table (KMS key state changes propagate).
    pub key_settle: Duration,
    pub deadline: Instant,
    pub seen: Mutex<Observations>,
    keys: Mutex<HashMap<&'static str, CreatedKey>>,
}

fn sse_key(reference: &str) -> SseSpecification {
    SseSpecification::builder()
        .enabled(true)
        .sse_type(SseType::Kms)
        .kms_master_key_id(reference)
        .build()
}

fn sse_managed() -> SseSpecification {
    SseSpecification::builder()
        .enabled(true)
        .sse_type(SseType::Kms)
        .build()
}

fn sse_owned() -> SseSpecification {
    SseSpecification::builder().enabled(false).build()
}

/// How a watched change counts in the observations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Counts {
    /// An SSE-only change of a one-region table: its timings and statuses are the ones the switches describe.
    SseOnly,
    /// Anything else (a global table's changes): recorded in the transcript only.
    Other,
}

impl<'a> Run<'a> {
    pub fn new(
        session: &'a Session,
        manifest: &'a ManifestFile,
        run_id: &str,
        poll: Duration,
        key_settle: Duration,
        deadline: Instant,
    ) -> Self {
        Self {
            session,
            manifest,
            run_id: run_id.to_owned(),
            poll,
            key_settle,
            deadline,
            seen: Mutex::new(Observations::default()),
            keys: Mutex::new(HashMap::new()),
        }
    }

    pub fn observations(&self) -> Observations {
        self.seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    fn observe(&self, change: impl FnOnce(&mut Observations)) {
        change(
            &mut self
                .seen
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
    }

    fn regional(&self, place: Place) -> &Regional {
        match place {
            Place::Main => &self.session.main,
            Place::Replica => &self.session.replica,
        }
    }

    fn key(&self, label: &str) -> anyhow::Result<CreatedKey> {
        self.keys
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(label)
            .cloned()
            .with_context(|| format!("key {label} was not created"))
    }

    fn table(&self, label: &str) -> String {
        plan::table_name(&self.run_id, label)
    }

    /// Creates the keys, the alias and the tables, each recorded in the manifest before it is created.
    pub async fn create_resources(&self) -> anyhow::Result<()> {
        for key in &KEYS {
            let at = self.regional(key.place);
            let description = plan::key_description(&self.run_id, key.label);
            let index = self.manifest.intend(Kind::Key, &at.region, &description)?;
            self.session.step(&format!(
                "CreateKey {} ({}) in {}",
                key.label, key.spec, at.region
            ));
            let mut create = at
                .kms
                .create_key()
                .description(&description)
                .key_spec(key.spec.into())
                .tags(
                    aws_sdk_kms::types::Tag::builder()
                        .tag_key(RUN_TAG)
                        .tag_value(&self.run_id)
                        .build()?,
                );
            if key.spec != "SYMMETRIC_DEFAULT" {
                create = create.key_usage(aws_sdk_kms::types::KeyUsageType::EncryptDecrypt);
            }
            let result = create.send().await;
            let answer = answer_of(&result);
            self.session
                .record(&at.region, "CreateKey", description.clone(), answer.text());
            let metadata = result
                .map_err(|e| anyhow::anyhow!("CreateKey {}: {}", key.label, DisplayAnswer(&e)))?
                .key_metadata
                .context("CreateKey answered without KeyMetadata")?;
            let created = CreatedKey {
                id: metadata.key_id,
                arn: metadata.arn.unwrap_or_default(),
            };
            self.manifest.created(index, Some(created.id.clone()))?;
            self.keys
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .insert(key.label, created);
        }
        let alias = plan::alias_name(&self.run_id);
        let at = &self.session.main;
        let index = self.manifest.intend(Kind::Alias, &at.region, &alias)?;
        self.session.step(&format!("CreateAlias {alias}"));
        let result = at
            .kms
            .create_alias()
            .alias_name(&alias)
            .target_key_id(self.key("b")?.id)
            .send()
            .await;
        self.session.record(
            &at.region,
            "CreateAlias",
            alias.clone(),
            answer_of(&result).text(),
        );
        result.map_err(|e| anyhow::anyhow!("CreateAlias {alias}: {}", DisplayAnswer(&e)))?;
        self.manifest.created(index, None)?;

        for table in &TABLES {
            let name = self.table(table.label);
            let index = self.manifest.intend(Kind::Table, &at.region, &name)?;
            let sse = match table.start {
                Start::Owned => sse_owned(),
                Start::Managed => sse_managed(),
                Start::Key(label) => sse_key(&self.key(label)?.arn),
            };
            self.session
                .step(&format!("CreateTable {name} in {}", at.region));
            let mut create = at
                .dynamodb
                .create_table()
                .table_name(&name)
                .billing_mode(BillingMode::PayPerRequest)
                .attribute_definitions(
                    AttributeDefinition::builder()
                        .attribute_name("pk")
                        .attribute_type(ScalarAttributeType::S)
                        .build()?,
                )
                .key_schema(
                    KeySchemaElement::builder()
                        .attribute_name("pk")
                        .key_type(KeyType::Hash)
                        .build()?,
                )
                .sse_specification(sse)
                .tags(Tag::builder().key(RUN_TAG).value(&self.run_id).build()?);
            if table.global {
                // A 2019.11.21 replica needs the table's stream with both images.
                create = create.stream_specification(
                    StreamSpecification::builder()
                        .stream_enabled(true)
                        .stream_view_type(StreamViewType::NewAndOldImages)
                        .build()?,
                );
            }
            let result = create.send().await;
            self.session.record(
                &at.region,
                "CreateTable",
                name.clone(),
                answer_of(&result).text(),
            );
            result.map_err(|e| anyhow::anyhow!("CreateTable {name}: {}", DisplayAnswer(&e)))?;
            self.manifest.created(index, None)?;
        }
        for table in &TABLES {
            self.until_active(at, &self.table(table.label)).await?;
        }
        if let Some(global) = TABLES.iter().find(|t| t.global) {
            self.add_replica(&self.table(global.label)).await?;
        }
        Ok(())
    }

    /// Adds the global table's replica (on key `replica-a`) and waits for both to be ACTIVE.
    async fn add_replica(&self, name: &str) -> anyhow::Result<()> {
        let replica = &self.session.replica;
        let index = self.manifest.intend(Kind::Table, &replica.region, name)?;
        let key = self.key("replica-a")?;
        let create = ReplicationGroupUpdate::builder()
            .create(
                aws_sdk_dynamodb::types::CreateReplicationGroupMemberAction::builder()
                    .region_name(&replica.region)
                    .kms_master_key_id(&key.arn)
                    .build()?,
            )
            .build();
        let (answer, _, _) = self
            .update(
                &self.session.main,
                name,
                &format!("ReplicaUpdates Create {} on replica-a", replica.region),
                self.session
                    .main
                    .dynamodb
                    .update_table()
                    .table_name(name)
                    .replica_updates(create),
            )
            .await;
        if !answer.is_ok() {
            anyhow::bail!("adding the replica of {name} failed: {}", answer.text());
        }
        self.manifest.created(index, None)?;
        self.until_active(replica, name).await?;
        self.until_active(&self.session.main, name).await
    }

    /// Polls until the table is ACTIVE with its encryption settled (a new table or replica).
    async fn until_active(&self, at: &Regional, name: &str) -> anyhow::Result<()> {
        loop {
            if let Some(view) = self.describe(at, name).await
                && view.settled()
            {
                return Ok(());
            }
            if Instant::now() >= self.deadline {
                anyhow::bail!("{name} in {} was not ACTIVE before the deadline", at.region);
            }
            tokio::time::sleep(self.poll).await;
        }
    }

    async fn describe(&self, at: &Regional, name: &str) -> Option<TableView> {
        let result = at.dynamodb.describe_table().table_name(name).send().await;
        let answer = answer_of(&result);
        let view = result
            .ok()
            .and_then(|out| out.table.map(|t| TableView::of(&t)));
        self.session.record(
            &at.region,
            "DescribeTable",
            name.to_owned(),
            view.as_ref().map_or_else(|| answer.text(), TableView::text),
        );
        view
    }

    /// Sends one UpdateTable (no retries): its answer, the table as the answer showed it, and when it was sent.
    async fn update(
        &self,
        at: &Regional,
        name: &str,
        what: &str,
        call: UpdateTableFluentBuilder,
    ) -> (Answer, Option<TableView>, Instant) {
        self.session
            .step(&format!("UpdateTable {name} in {}: {what}", at.region));
        let sent = Instant::now();
        let result = call.send().await;
        let answer = answer_of(&result);
        let view = result
            .ok()
            .and_then(|out| out.table_description.map(|t| TableView::of(&t)));
        let shown = view
            .as_ref()
            .map_or_else(String::new, |v| format!(" ({})", v.text()));
        self.session.record(
            &at.region,
            "UpdateTable",
            format!("{name}: {what}"),
            format!("{}{shown}", answer.text()),
        );
        (answer, view, sent)
    }

    /// Sends a change of a one-region table to a key, without watching it.
    async fn send_sse(
        &self,
        name: &str,
        what: &str,
        key: &str,
    ) -> (Answer, Option<TableView>, Instant) {
        let at = &self.session.main;
        let call = at
            .dynamodb
            .update_table()
            .table_name(name)
            .sse_specification(sse_key(key));
        self.update(at, name, what, call).await
    }

    /// An SSE change of a one-region table: sent, then watched until settled when accepted.
    async fn change(&self, name: &str, what: &str, sse: SseSpecification) -> (Answer, Trace) {
        let at = &self.session.main;
        let before = self.describe(at, name).await.unwrap_or_default();
        let call = at
            .dynamodb
            .update_table()
            .table_name(name)
            .sse_specification(sse);
        let (answer, view, sent) = self.update(at, name, what, call).await;
        let trace = if answer.is_ok() {
            self.follow(at, name, &before, view.as_ref(), sent, Counts::SseOnly)
                .await
        } else {
            Trace::default()
        };
        (answer, trace)
    }

    /// Watches an accepted change and adds what it showed to the observations.
    async fn follow(
        &self,
        at: &Regional,
        name: &str,
        before: &TableView,
        answered: Option<&TableView>,
        sent: Instant,
        counts: Counts,
    ) -> Trace {
        let trace = watch(
            self.session,
            at,
            name,
            before,
            answered,
            sent,
            self.poll,
            self.deadline,
        )
        .await;
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
        let before = self.describe(at, &name).await.unwrap_or_default();
        let (answer, view, sent) = self.send_sse(&name, "a -> b by ARN", &b.arn).await;
        if !answer.is_ok() {
            anyhow::bail!("the first switch of {name} was refused: {}", answer.text());
        }
        let (identical, _, _) = self
            .send_sse(&name, "b by ARN again, during the change", &b.arn)
            .await;
        let (different, _, _) = self
            .send_sse(&name, "a by ARN, during the change", &a.arn)
            .await;
        self.observe(|seen| {
            seen.identical_during_change = Some(identical);
            seen.different_during_change = Some(different);
        });
        self.follow(at, &name, &before, view.as_ref(), sent, Counts::SseOnly)
            .await;
        for (what, reference) in [
            ("b re-sent by ARN", b.arn.clone()),
            ("b re-sent by key id", b.id.clone()),
            ("b re-sent by alias", plan::alias_name(&self.run_id)),
        ] {
            let (answer, _) = self.change(&name, what, sse_key(&reference)).await;
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
            .await;
        self.observe(|seen| seen.owned_disabled_on_owned = Some(answer));
        let a = self.key("a")?;
        let (_, trace) = self.change(&name, "owned -> a", sse_key(&a.arn)).await;
        self.observe(|seen| {
            seen.status_owned_to_kms
                .extend(trace.changing.iter().filter_map(|v| v.sse_status.clone()));
        });
        let (_, trace) = self.change(&name, "a -> owned", sse_owned()).await;
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
            .await;
        self.observe(|seen| seen.asymmetric_key = Some(answer));
        let (answer, _) = self
            .change(
                &name,
                "{Enabled: true} re-sent on the AWS managed key",
                sse_managed(),
            )
            .await;
        self.observe(|seen| seen.resend_managed = Some(answer));
        Ok(())
    }

    /// Disables the table's key, switches away from it, and enables it again.
    async fn disabled_key_table(&self) -> anyhow::Result<()> {
        let name = self.table("disabled");
        let disabled = self.key("disabled")?;
        let at = &self.session.main;
        self.session.step("DisableKey disabled");
        let result = at.kms.disable_key().key_id(&disabled.id).send().await;
        self.session.record(
            &at.region,
            "DisableKey",
            disabled.id.clone(),
            answer_of(&result).text(),
        );
        result.map_err(|e| anyhow::anyhow!("DisableKey: {}", DisplayAnswer(&e)))?;
        tokio::time::sleep(self.key_settle).await;
        let a = self.key("a")?;
        let (answer, _) = self
            .change(&name, "away from its disabled key, to a", sse_key(&a.arn))
            .await;
        self.observe(|seen| seen.away_from_disabled_key = Some(answer));
        self.session.step("EnableKey disabled");
        let result = at.kms.enable_key().key_id(&disabled.id).send().await;
        self.session.record(
            &at.region,
            "EnableKey",
            disabled.id.clone(),
            answer_of(&result).text(),
        );
        Ok(())
    }

    /// Four switches, then a fifth to a key that does not exist and one to a real key.
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
                .await;
            if !answer.is_ok() {
                anyhow::bail!("switch {} of {name} was refused: {}", n + 1, answer.text());
            }
            if n == 0 {
                self.observe(|seen| {
                    seen.status_owned_to_kms
                        .extend(trace.changing.iter().filter_map(|v| v.sse_status.clone()));
                });
            }
        }
        let missing = plan::missing_alias_name(&self.run_id);
        let (answer, _) = self
            .change(
                &name,
                "a fifth switch, to a key that does not exist",
                sse_key(&missing),
            )
            .await;
        self.observe(|seen| seen.quota_with_missing_key = Some(answer));
        let (answer, _) = self
            .change(&name, "a fifth switch, to a", sse_key(&a.arn))
            .await;
        self.observe(|seen| seen.quota_with_real_key = Some(answer));
        Ok(())
    }

    /// SSE + ReplicaUpdates in one call; the replica's key both ways; AWS managed set on one replica.
    async fn global_table(&self) -> anyhow::Result<()> {
        let name = self.table("global");
        let (main, replica) = (&self.session.main, &self.session.replica);
        let (b, replica_a, replica_b) = (
            self.key("b")?,
            self.key("replica-a")?,
            self.key("replica-b")?,
        );
        let replica_key = |key: &str| {
            ReplicationGroupUpdate::builder()
                .update(
                    UpdateReplicationGroupMemberAction::builder()
                        .region_name(&replica.region)
                        .kms_master_key_id(key)
                        .build()
                        .expect("region name is set"),
                )
                .build()
        };
        let call = main
            .dynamodb
            .update_table()
            .table_name(&name)
            .sse_specification(sse_key(&b.arn))
            .replica_updates(replica_key(&replica_b.arn));
        let answer = self
            .global_change(
                &name,
                main,
                "b here and replica-b on the replica, in one call",
                call,
                Both,
            )
            .await;
        self.observe(|seen| seen.sse_with_replica_updates = Some(answer));

        // The replica's key, by ReplicaUpdates sent here, then by SSESpecification sent in its region.
        let other = |view: Option<TableView>| {
            if view.and_then(|v| v.key_arn) == Some(replica_b.arn.clone()) {
                replica_a.arn.clone()
            } else {
                replica_b.arn.clone()
            }
        };
        let target = other(self.describe(replica, &name).await);
        let call = main
            .dynamodb
            .update_table()
            .table_name(&name)
            .replica_updates(replica_key(&target));
        let answer = self
            .global_change(
                &name,
                main,
                "the replica's key, by ReplicaUpdates",
                call,
                ReplicaOnly,
            )
            .await;
        self.observe(|seen| seen.replica_key_by_replica_updates = Some(answer));
        let target = other(self.describe(replica, &name).await);
        let call = replica
            .dynamodb
            .update_table()
            .table_name(&name)
            .sse_specification(sse_key(&target));
        let answer = self
            .global_change(
                &name,
                replica,
                "the replica's key, by SSESpecification in its region",
                call,
                ReplicaOnly,
            )
            .await;
        self.observe(|seen| seen.replica_key_by_sse_in_its_region = Some(answer));

        let call = main
            .dynamodb
            .update_table()
            .table_name(&name)
            .sse_specification(sse_managed());
        let answer = self
            .global_change(
                &name,
                main,
                "AWS managed, set on this replica only",
                call,
                Both,
            )
            .await;
        let after = if answer.is_ok() {
            self.describe(replica, &name).await
        } else {
            None
        };
        let mut replica_after = None;
        if let Some(key) = after.and_then(|v| v.key_arn) {
            let result = replica.kms.describe_key().key_id(&key).send().await;
            self.session.record(
                &replica.region,
                "DescribeKey",
                key.clone(),
                answer_of(&result).text(),
            );
            let manager = result
                .ok()
                .and_then(|out| out.key_metadata)
                .and_then(|m| m.key_manager);
            replica_after = Some(
                if manager == Some(aws_sdk_kms::types::KeyManagerType::Aws) {
                    ReplicaAfterManaged::Managed
                } else {
                    ReplicaAfterManaged::Unchanged
                },
            );
        } else if answer.is_ok() {
            replica_after = Some(ReplicaAfterManaged::Unchanged);
        }
        self.observe(|seen| {
            seen.managed_on_global = Some(answer);
            seen.replica_after_managed = replica_after;
        });
        Ok(())
    }

    /// One change of the global table, sent in `to`, watched where it may show when accepted.
    async fn global_change(
        &self,
        name: &str,
        to: &Regional,
        what: &str,
        call: UpdateTableFluentBuilder,
        shows: Shows,
    ) -> Answer {
        let (main, replica) = (&self.session.main, &self.session.replica);
        let before_main = self.describe(main, name).await.unwrap_or_default();
        let before_replica = self.describe(replica, name).await.unwrap_or_default();
        let (answer, view, sent) = self.update(to, name, what, call).await;
        if answer.is_ok() {
            let (answered_main, answered_replica) = if to.region == main.region {
                (view.as_ref(), None)
            } else {
                (None, view.as_ref())
            };
            let watch_main = async {
                if shows == Both {
                    self.follow(main, name, &before_main, answered_main, sent, Counts::Other)
                        .await;
                }
            };
            tokio::join!(
                watch_main,
                self.follow(
                    replica,
                    name,
                    &before_replica,
                    answered_replica,
                    sent,
                    Counts::Other
                ),
            );
        }
        answer
    }
}

/// Which replicas of the global table a change may show on (a replica that never changes would be watched for
/// `watch::NO_CHANGE_GRACE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shows {
    Both,
    ReplicaOnly,
}
use Shows::{Both, ReplicaOnly};

/// An SDK error as one line: AWS's code and message when it sent them.
pub struct DisplayAnswer<'e, E>(pub &'e E);

impl<E, R> std::fmt::Display for DisplayAnswer<'_, aws_sdk_dynamodb::error::SdkError<E, R>>
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.0.code(), self.0.message()) {
            (Some(code), message) => write!(f, "{code}: {}", message.unwrap_or_default()),
            _ => write!(
                f,
                "{}",
                aws_sdk_dynamodb::error::DisplayErrorContext(self.0)
            ),
        }
    }
}
