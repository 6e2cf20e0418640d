//! Removing what a calibration run created, from its manifest: tables deleted (a global table's replica first),
//! the alias deleted, keys scheduled for deletion. Touches only resources named by the manifest that carry the
//! run's marks (a table's name and tag, a key's description), and can be run again on a half-cleaned manifest.

use std::time::{Duration, Instant};

use super::manifest::{Kind, Manifest, ManifestFile, Resource};
use super::plan::{self, KEY_DELETION_DAYS, RUN_TAG};
use super::session::{Regional, Session, answer_of};

/// How long cleanup waits, in all, for tables to leave UPDATING before giving up (a change takes 20-25 s on
/// AWS, a replica's removal minutes).
pub const CLEANUP_LIMIT: Duration = Duration::from_secs(30 * 60);

/// What cleanup did.
#[derive(Debug, Default)]
pub struct Summary {
    pub removed: Vec<String>,
    /// Resources it could not remove, with why.
    pub left: Vec<String>,
}

impl Summary {
    pub fn text(&self) -> String {
        let mut out = format!("{} removed", self.removed.len());
        if !self.left.is_empty() {
            out.push_str(&format!(
                "; NOT removed ({}):\n  {}",
                self.left.len(),
                self.left.join("\n  ")
            ));
        }
        out
    }
}

struct Cleaner<'a> {
    session: &'a Session,
    manifest: &'a ManifestFile,
    run_id: String,
    poll: Duration,
    deadline: Instant,
    summary: Summary,
}

fn regional<'s>(session: &'s Session, region: &str) -> Option<&'s Regional> {
    [&session.main, &session.replica]
        .into_iter()
        .find(|r| r.region == region)
}

/// Removes everything `manifest` records that is not removed yet.
pub async fn cleanup(session: &Session, manifest: &ManifestFile, poll: Duration) -> Summary {
    let snapshot = manifest.snapshot();
    let mut cleaner = Cleaner {
        session,
        manifest,
        run_id: snapshot.run_id.clone(),
        poll,
        deadline: Instant::now() + CLEANUP_LIMIT,
        summary: Summary::default(),
    };
    cleaner.tables(&snapshot).await;
    for kind in [Kind::Alias, Kind::Key] {
        for (index, resource) in snapshot.resources.iter().enumerate() {
            if resource.kind != kind || resource.removed {
                continue;
            }
            let Some(at) = regional(session, &resource.region) else {
                cleaner.left(resource, "its region is not one of this run's");
                continue;
            };
            let removed = match kind {
                Kind::Alias => cleaner.alias(at, resource).await,
                _ => cleaner.key(at, resource).await,
            };
            cleaner.done(index, resource, removed);
        }
    }
    if cleaner.summary.left.is_empty() {
        let _ = manifest.mark_cleaned_up();
    }
    cleaner.summary
}

impl Cleaner<'_> {
    fn left(&mut self, resource: &Resource, why: &str) {
        self.summary.left.push(format!(
            "{:?} {} in {}: {why}",
            resource.kind, resource.name, resource.region
        ));
    }

    fn done(&mut self, index: usize, resource: &Resource, outcome: Result<(), String>) {
        match outcome {
            Ok(()) => {
                let _ = self.manifest.update(index, |r| r.removed = true);
                self.summary.removed.push(format!(
                    "{:?} {} in {}",
                    resource.kind, resource.name, resource.region
                ));
            }
            Err(why) => self.left(resource, &why),
        }
    }

    /// Replicas first (from the table's other region), then the tables.
    async fn tables(&mut self, manifest: &Manifest) {
        let tables: Vec<(usize, Resource)> = manifest
            .resources
            .iter()
            .enumerate()
            .filter(|(_, r)| r.kind == Kind::Table && !r.removed)
            .map(|(i, r)| (i, r.clone()))
            .collect();
        // A replica is the table's second entry (same name, the replica region).
        for (index, resource) in &tables {
            let is_replica = resource.region == manifest.replica_region
                && tables
                    .iter()
                    .any(|(_, r)| r.name == resource.name && r.region == manifest.region);
            if !is_replica {
                continue;
            }
            let outcome = self.replica(manifest, resource).await;
            self.done(*index, resource, outcome);
        }
        for (index, resource) in &tables {
            if self.manifest.snapshot().resources[*index].removed {
                continue;
            }
            let Some(at) = regional(self.session, &resource.region) else {
                self.left(resource, "its region is not one of this run's");
                continue;
            };
            let outcome = self.table(at, &resource.name).await;
            self.done(*index, resource, outcome);
        }
    }

    /// Whether the table is this run's: its name is, and it carries the run's tag (or no tags: a replica).
    async fn ours(&self, at: &Regional, name: &str, arn: &str) -> Result<(), String> {
        if !name.starts_with(&plan::table_name(&self.run_id, "")) {
            return Err("its name is not this run's".to_owned());
        }
        let result = at
            .dynamodb
            .list_tags_of_resource()
            .resource_arn(arn)
            .send()
            .await;
        self.session.record(
            &at.region,
            "ListTagsOfResource",
            name.to_owned(),
            answer_of(&result).text(),
        );
        let tags = result.map_err(|e| format!("its tags cannot be read: {e}"))?;
        let run = tags
            .tags()
            .iter()
            .find(|t| t.key() == RUN_TAG)
            .map(|t| t.value());
        match run {
            Some(run) if run == self.run_id => Ok(()),
            None if tags.tags().is_empty() => Ok(()),
            _ => Err(format!(
                "it does not carry the tag {RUN_TAG}={}",
                self.run_id
            )),
        }
    }

    /// Removes the replica through the table's main region (ReplicaUpdates Delete); gone already is done.
    async fn replica(&mut self, manifest: &Manifest, resource: &Resource) -> Result<(), String> {
        let main = regional(self.session, &manifest.region).ok_or("no main region")?;
        loop {
            let result = main
                .dynamodb
                .describe_table()
                .table_name(&resource.name)
                .send()
                .await;
            let answer = answer_of(&result);
            let table = match result {
                Ok(out) => out.table,
                Err(_) if answer.code.as_deref() == Some("ResourceNotFoundException") => None,
                Err(_) => return Err(format!("DescribeTable: {}", answer.text())),
            };
            let Some(table) = table else {
                // Without the main table the replica stands alone: `tables` deletes it as a table.
                return self
                    .table(
                        regional(self.session, &resource.region).ok_or("no replica region")?,
                        &resource.name,
                    )
                    .await;
            };
            let has_replica = table
                .replicas()
                .iter()
                .any(|r| r.region_name() == Some(resource.region.as_str()));
            if !has_replica {
                // Gone from the group; if it still exists alone, delete it.
                return self
                    .table(
                        regional(self.session, &resource.region).ok_or("no replica region")?,
                        &resource.name,
                    )
                    .await;
            }
            self.ours(main, &resource.name, table.table_arn().unwrap_or_default())
                .await?;
            self.session.step(&format!(
                "UpdateTable {} in {}: ReplicaUpdates Delete {}",
                resource.name, main.region, resource.region
            ));
            let result = main
                .dynamodb
                .update_table()
                .table_name(&resource.name)
                .replica_updates(
                    aws_sdk_dynamodb::types::ReplicationGroupUpdate::builder()
                        .delete(
                            aws_sdk_dynamodb::types::DeleteReplicationGroupMemberAction::builder()
                                .region_name(&resource.region)
                                .build()
                                .map_err(|e| e.to_string())?,
                        )
                        .build(),
                )
                .send()
                .await;
            let answer = answer_of(&result);
            self.session.record(
                &main.region,
                "UpdateTable",
                format!(
                    "{}: ReplicaUpdates Delete {}",
                    resource.name, resource.region
                ),
                answer.text(),
            );
            if !answer.is_ok() && answer.code.as_deref() != Some("ResourceInUseException") {
                return Err(format!("removing the replica: {}", answer.text()));
            }
            self.wait().await?;
        }
    }

    /// Deletes one table, waiting while it is being updated; gone already is done.
    async fn table(&mut self, at: &Regional, name: &str) -> Result<(), String> {
        loop {
            let result = at.dynamodb.describe_table().table_name(name).send().await;
            let answer = answer_of(&result);
            let table = match result {
                Ok(out) => out.table.ok_or("DescribeTable answered without a table")?,
                Err(_) if answer.code.as_deref() == Some("ResourceNotFoundException") => {
                    return Ok(());
                }
                Err(_) => return Err(format!("DescribeTable: {}", answer.text())),
            };
            if table.table_status().map(|s| s.as_str()) == Some("DELETING") {
                return Ok(());
            }
            self.ours(at, name, table.table_arn().unwrap_or_default())
                .await?;
            self.session
                .step(&format!("DeleteTable {name} in {}", at.region));
            let result = at.dynamodb.delete_table().table_name(name).send().await;
            let answer = answer_of(&result);
            self.session
                .record(&at.region, "DeleteTable", name.to_owned(), answer.text());
            match answer.code.as_deref() {
                None | Some("ResourceNotFoundException") => return Ok(()),
                // Being updated (or its replica being removed): wait and try again.
                Some("ResourceInUseException") => self.wait().await?,
                _ => return Err(format!("DeleteTable: {}", answer.text())),
            }
        }
    }

    async fn wait(&self) -> Result<(), String> {
        if Instant::now() >= self.deadline {
            return Err(format!(
                "still in use after {} minutes",
                CLEANUP_LIMIT.as_secs() / 60
            ));
        }
        tokio::time::sleep(self.poll.max(Duration::from_millis(200))).await;
        Ok(())
    }

    async fn alias(&mut self, at: &Regional, resource: &Resource) -> Result<(), String> {
        if !resource
            .name
            .starts_with(&format!("alias/{}{}", plan::TABLE_PREFIX, self.run_id))
        {
            return Err("its name is not this run's".to_owned());
        }
        self.session.step(&format!("DeleteAlias {}", resource.name));
        let result = at
            .kms
            .delete_alias()
            .alias_name(&resource.name)
            .send()
            .await;
        let answer = answer_of(&result);
        self.session.record(
            &at.region,
            "DeleteAlias",
            resource.name.clone(),
            answer.text(),
        );
        match answer.code.as_deref() {
            None | Some("NotFoundException") => Ok(()),
            _ => Err(format!("DeleteAlias: {}", answer.text())),
        }
    }

    /// Schedules the key's deletion; a key whose id was never recorded is found by its description.
    async fn key(&mut self, at: &Regional, resource: &Resource) -> Result<(), String> {
        let id = match &resource.id {
            Some(id) => Some(id.clone()),
            None => self.find_key(at, &resource.name).await?,
        };
        let Some(id) = id else {
            // CreateKey never got through.
            return Ok(());
        };
        let result = at.kms.describe_key().key_id(&id).send().await;
        let answer = answer_of(&result);
        self.session
            .record(&at.region, "DescribeKey", id.clone(), answer.text());
        let metadata = match result {
            Ok(out) => out
                .key_metadata
                .ok_or("DescribeKey answered without metadata")?,
            Err(_) if answer.code.as_deref() == Some("NotFoundException") => return Ok(()),
            Err(_) => return Err(format!("DescribeKey: {}", answer.text())),
        };
        if metadata.description() != Some(resource.name.as_str()) {
            return Err(format!(
                "its description is not {:?}: not this run's key",
                resource.name
            ));
        }
        if metadata.key_state().map(|s| s.as_str()) == Some("PendingDeletion") {
            return Ok(());
        }
        self.session.step(&format!(
            "ScheduleKeyDeletion {id} ({KEY_DELETION_DAYS} days)"
        ));
        let result = at
            .kms
            .schedule_key_deletion()
            .key_id(&id)
            .pending_window_in_days(KEY_DELETION_DAYS)
            .send()
            .await;
        let answer = answer_of(&result);
        self.session
            .record(&at.region, "ScheduleKeyDeletion", id, answer.text());
        if answer.is_ok() {
            Ok(())
        } else {
            Err(format!("ScheduleKeyDeletion: {}", answer.text()))
        }
    }

    /// The key with exactly this description, among the region's keys.
    async fn find_key(&self, at: &Regional, description: &str) -> Result<Option<String>, String> {
        let mut marker: Option<String> = None;
        loop {
            let result = at.kms.list_keys().set_marker(marker.clone()).send().await;
            let answer = answer_of(&result);
            self.session
                .record(&at.region, "ListKeys", String::new(), answer.text());
            let page = result.map_err(|_| format!("ListKeys: {}", answer.text()))?;
            for key in page.keys() {
                let Some(id) = key.key_id() else { continue };
                let described = at.kms.describe_key().key_id(id).send().await;
                if let Ok(out) = described
                    && let Some(metadata) = out.key_metadata
                    && metadata.description() == Some(description)
                {
                    return Ok(Some(id.to_owned()));
                }
            }
            marker = page.next_marker().map(str::to_owned);
            if !page.truncated() || marker.is_none() {
                return Ok(None);
            }
        }
    }
}
