//! The resources of a calibration run: the keys, the alias and the tables of `plan`, each recorded in the
//! manifest before it is created, and what the experiments share (`Run`).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use anyhow::Context as _;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ReplicationGroupUpdate,
    ScalarAttributeType, SseSpecification, SseType, StreamSpecification, StreamViewType, Tag,
};

use super::infer::Observations;
use super::manifest::{Kind, ManifestFile};
use super::plan::{self, KEYS, Place, RUN_TAG, Start, TABLES};
use super::session::{Regional, Session, lock};

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
    /// How long after DisableKey before DynamoDB is asked to use the table (`--key-settle-seconds`).
    pub key_settle: Duration,
    seen: Mutex<Observations>,
    keys: Mutex<HashMap<&'static str, CreatedKey>>,
    /// Accepted encryption changes per (region, table): never more than AWS's quota, `plan::SWITCHES_PER_TABLE`.
    pub(super) switches: Mutex<HashMap<(String, String), u32>>,
}

pub(super) fn sse_key(reference: &str) -> SseSpecification {
    SseSpecification::builder()
        .enabled(true)
        .sse_type(SseType::Kms)
        .kms_master_key_id(reference)
        .build()
}

pub(super) fn sse_managed() -> SseSpecification {
    SseSpecification::builder()
        .enabled(true)
        .sse_type(SseType::Kms)
        .build()
}

pub(super) fn sse_owned() -> SseSpecification {
    SseSpecification::builder().enabled(false).build()
}

impl<'a> Run<'a> {
    pub fn new(
        session: &'a Session,
        manifest: &'a ManifestFile,
        run_id: &str,
        poll: Duration,
        key_settle: Duration,
    ) -> Self {
        Self {
            session,
            manifest,
            run_id: run_id.to_owned(),
            poll,
            key_settle,
            seen: Mutex::new(Observations::default()),
            keys: Mutex::new(HashMap::new()),
            switches: Mutex::new(HashMap::new()),
        }
    }

    pub fn observations(&self) -> Observations {
        lock(&self.seen).clone()
    }

    pub(super) fn observe(&self, change: impl FnOnce(&mut Observations)) {
        change(&mut lock(&self.seen));
    }

    fn regional(&self, place: Place) -> &Regional {
        match place {
            Place::Main => &self.session.main,
            Place::Replica => &self.session.replica,
        }
    }

    pub(super) fn key(&self, label: &str) -> anyhow::Result<CreatedKey> {
        lock(&self.keys)
            .get(label)
            .cloned()
            .with_context(|| format!("key {label} was not created"))
    }

    pub(super) fn table(&self, label: &str) -> String {
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
            ))?;
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
            let metadata = self
                .session
                .recorded_ok(
                    &at.region,
                    "CreateKey",
                    description.clone(),
                    &format!("CreateKey {}", key.label),
                    create.send().await,
                )?
                .key_metadata
                .context("CreateKey answered without KeyMetadata")?;
            let created = CreatedKey {
                id: metadata.key_id,
                arn: metadata.arn.unwrap_or_default(),
            };
            self.manifest.created(index, Some(created.id.clone()))?;
            lock(&self.keys).insert(key.label, created);
        }
        let alias = plan::alias_name(&self.run_id);
        let at = &self.session.main;
        let index = self.manifest.intend(Kind::Alias, &at.region, &alias)?;
        self.session.step(&format!("CreateAlias {alias}"))?;
        let result = at
            .kms
            .create_alias()
            .alias_name(&alias)
            .target_key_id(self.key("b")?.id)
            .send()
            .await;
        self.session.recorded_ok(
            &at.region,
            "CreateAlias",
            alias.clone(),
            &format!("CreateAlias {alias}"),
            result,
        )?;
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
                .step(&format!("CreateTable {name} in {}", at.region))?;
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
            self.session.recorded_ok(
                &at.region,
                "CreateTable",
                name.clone(),
                &format!("CreateTable {name}"),
                create.send().await,
            )?;
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
        let (answer, _) = self
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
                &[],
            )
            .await?;
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
            if let (_, Some(view)) = self.session.describe(at, name, "").await
                && view.settled()
            {
                return Ok(());
            }
            if let Some(why) = self.session.stopped() {
                anyhow::bail!("{name} in {} was not ACTIVE yet: {why}", at.region);
            }
            tokio::time::sleep(self.poll).await;
        }
    }
}
