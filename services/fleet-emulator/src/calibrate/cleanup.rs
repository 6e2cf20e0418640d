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
/// DynamoDB's DescribeTable and KMS's ListKeys are eventually consistent for seconds after a create: a resource
/// not found is looked for again after this many poll intervals before it counts as never created.
const NOT_FOUND_RECHECK_POLLS: u32 = 10;

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

/// What one attempt at one resource found.
enum Found {
    /// Deleted (or scheduled for deletion) now or before.
    Removed,
    /// Not there: never created, or not visible yet.
    NotFound,
}

struct Cleaner<'a> {
    session: &'a Session,
    manifest: &'a ManifestFile,
    run_id: String,
    replica_region: String,
    poll: Duration,
    deadline: Instant,
}

/// Removes everything `manifest` records that is not removed yet.
pub async fn cleanup(session: &Session, manifest: &ManifestFile, poll: Duration) -> Summary {
    let snapshot = manifest.snapshot();
    let cleaner = Cleaner {
        session,
        manifest,
        run_id: snapshot.run_id.clone(),
        replica_region: snapshot.replica_region.clone(),
        poll,
        deadline: Instant::now() + CLEANUP_LIMIT,
    };
    // Tables (replicas first: a global table's replica is its second entry), then the alias, then the keys.
    let order = |r: &Resource| match r.kind {
        Kind::Table if r.region == snapshot.replica_region => 0,
        Kind::Table => 1,
        Kind::Alias => 2,
        Kind::Key => 3,
    };
    let mut todo: Vec<(usize, Resource)> = snapshot
        .resources
        .iter()
        .cloned()
        .enumerate()
        .filter(|(_, r)| !r.removed)
        .collect();
    todo.sort_by_key(|(i, r)| (order(r), *i));
    let mut summary = Summary::default();
    let mut not_found = Vec::new();
    for (index, resource) in &todo {
        match cleaner.remove(&snapshot, resource).await {
            Ok(Found::Removed) => cleaner.done(&mut summary, *index, resource),
            Ok(Found::NotFound) => not_found.push((*index, resource.clone())),
            Err(why) => summary.left.push(describe(resource, &why)),
        }
    }
    if !not_found.is_empty() {
        tokio::time::sleep(poll * NOT_FOUND_RECHECK_POLLS).await;
        for (index, resource) in &not_found {
            match cleaner.remove(&snapshot, resource).await {
                Ok(_) => cleaner.done(&mut summary, *index, resource),
                Err(why) => summary.left.push(describe(resource, &why)),
            }
        }
    }
    if summary.left.is_empty() {
        let _ = manifest.mark_cleaned_up();
    }
    summary
}

fn describe(resource: &Resource, why: &str) -> String {
    format!(
        "{:?} {} in {}: {why}",
        resource.kind, resource.name, resource.region
    )
}

impl Cleaner<'_> {
    fn done(&self, summary: &mut Summary, index: usize, resource: &Resource) {
        let _ = self.manifest.update(index, |r| r.removed = true);
        summary.removed.push(describe(resource, "removed"));
    }

    async fn remove(&self, manifest: &Manifest, resource: &Resource) -> Result<Found, String> {
        let at = self
            .session
            .regional(&resource.region)
            .ok_or("its region is not one of this run's")?;
        match resource.kind {
            Kind::Table if resource.region == self.replica_region => {
                self.replica(manifest, at, resource).await
            }
            Kind::Table => self.table(at, &resource.name, false).await,
            Kind::Alias => self.alias(at, resource).await,
            Kind::Key => self.key(at, resource).await,
        }
    }

    /// Whether the table is this run's: its name is, and it carries the run's tag (a replica, which DynamoDB
    /// creates without the table's tags, may carry none).
    async fn ours(
        &self,
        at: &Regional,
        name: &str,
        arn: &str,
        replica: bool,
    ) -> Result<(), String> {
        if !name.starts_with(&plan::table_name(&self.run_id, "")) {
            return Err("its name is not this run's".to_owned());
        }
        let result = at
            .dynamodb
            .list_tags_of_resource()
            .resource_arn(arn)
            .send()
            .await;
        let answer = answer_of(&result);
        self.session.record(
            &at.region,
            "ListTagsOfResource",
            name.to_owned(),
            answer.text(),
        );
        let tags = result.map_err(|_| format!("its tags cannot be read: {}", answer.text()))?;
        let run = tags
            .tags()
            .iter()
            .find(|t| t.key() == RUN_TAG)
            .map(|t| t.value());
        match run {
            Some(run) if run == self.run_id => Ok(()),
            None if replica && tags.tags().is_empty() => Ok(()),
            _ => Err(format!(
                "it does not carry the tag {RUN_TAG}={}",
                self.run_id
            )),
        }
    }

    /// Removes the replica through the table's main region (ReplicaUpdates Delete), then any table of that name
    /// left alone in the replica's region.
    async fn replica(
        &self,
        manifest: &Manifest,
        at: &Regional,
        resource: &Resource,
    ) -> Result<Found, String> {
        let main = self
            .session
            .regional(&manifest.region)
            .ok_or("no main region")?;
        loop {
            let (answer, table) = self.session.describe_table(main, &resource.name, "").await;
            if table.is_none() && answer.code.as_deref() != Some("ResourceNotFoundException") {
                return Err(format!("DescribeTable: {}", answer.text()));
            }
            let status = table.as_ref().and_then(|t| {
                t.replicas()
                    .iter()
                    .find(|r| r.region_name() == Some(resource.region.as_str()))
                    .map(|r| {
                        r.replica_status()
                            .map(|s| s.as_str().to_owned())
                            .unwrap_or_default()
                    })
            });
            let Some(status) = status else {
                // Not (or no longer) in the group: a table of that name left alone there is deleted as a table.
                return self.table(at, &resource.name, true).await;
            };
            if matches!(
                status.as_str(),
                "ACTIVE" | "INACCESSIBLE_ENCRYPTION_CREDENTIALS"
            ) {
                let arn = table
                    .as_ref()
                    .and_then(|t| t.table_arn())
                    .unwrap_or_default();
                self.ours(main, &resource.name, arn, false).await?;
                self.session.cleanup_step(&format!(
                    "UpdateTable {} in {}: ReplicaUpdates Delete {}",
                    resource.name, main.region, resource.region
                ));
                let delete = aws_sdk_dynamodb::types::DeleteReplicationGroupMemberAction::builder()
                    .region_name(&resource.region)
                    .build()
                    .map_err(|e| e.to_string())?;
                let result = main
                    .dynamodb
                    .update_table()
                    .table_name(&resource.name)
                    .replica_updates(
                        aws_sdk_dynamodb::types::ReplicationGroupUpdate::builder()
                            .delete(delete)
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
            }
            // CREATING, UPDATING, DELETING, or just asked to go: wait and look again.
            self.wait().await?;
        }
    }

    /// Deletes one table, waiting while it is being updated.
    async fn table(&self, at: &Regional, name: &str, replica: bool) -> Result<Found, String> {
        loop {
            let (answer, table) = self.session.describe_table(at, name, "").await;
            let Some(table) = table else {
                return match answer.code.as_deref() {
                    Some("ResourceNotFoundException") => Ok(Found::NotFound),
                    _ => Err(format!("DescribeTable: {}", answer.text())),
                };
            };
            if table.table_status().map(|s| s.as_str()) == Some("DELETING") {
                return Ok(Found::Removed);
            }
            self.ours(at, name, table.table_arn().unwrap_or_default(), replica)
                .await?;
            self.session
                .cleanup_step(&format!("DeleteTable {name} in {}", at.region));
            let result = at.dynamodb.delete_table().table_name(name).send().await;
            let answer = answer_of(&result);
            self.session
                .record(&at.region, "DeleteTable", name.to_owned(), answer.text());
            match answer.code.as_deref() {
                None => return Ok(Found::Removed),
                Some("ResourceNotFoundException") => return Ok(Found::NotFound),
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
        tokio::time::sleep(self.poll).await;
        Ok(())
    }

    async fn alias(&self, at: &Regional, resource: &Resource) -> Result<Found, String> {
        if !resource
            .name
            .starts_with(&format!("alias/{}{}", plan::TABLE_PREFIX, self.run_id))
        {
            return Err("its name is not this run's".to_owned());
        }
        self.session
            .cleanup_step(&format!("DeleteAlias {}", resource.name));
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
            None => Ok(Found::Removed),
            Some("NotFoundException") => Ok(Found::NotFound),
            _ => Err(format!("DeleteAlias: {}", answer.text())),
        }
    }

    /// Schedules the key's deletion; a key whose id was never recorded is found by its description.
    async fn key(&self, at: &Regional, resource: &Resource) -> Result<Found, String> {
        let id = match &resource.id {
            Some(id) => id.clone(),
            None => match self.find_key(at, &resource.name).await? {
                Some(id) => id,
                None => return Ok(Found::NotFound),
            },
        };
        let result = at.kms.describe_key().key_id(&id).send().await;
        let answer = answer_of(&result);
        self.session
            .record(&at.region, "DescribeKey", id.clone(), answer.text());
        let metadata = match result {
            Ok(out) => out
                .key_metadata
                .ok_or("DescribeKey answered without metadata")?,
            Err(_) if answer.code.as_deref() == Some("NotFoundException") => {
                return Ok(Found::NotFound);
            }
            Err(_) => return Err(format!("DescribeKey: {}", answer.text())),
        };
        if metadata.description() != Some(resource.name.as_str())
            || metadata.key_manager() != Some(&aws_sdk_kms::types::KeyManagerType::Customer)
        {
            return Err(format!(
                "its description is not {:?}: not this run's key",
                resource.name
            ));
        }
        if metadata.key_state().map(|s| s.as_str()) == Some("PendingDeletion") {
            return Ok(Found::Removed);
        }
        self.session.cleanup_step(&format!(
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
            Ok(Found::Removed)
        } else {
            Err(format!("ScheduleKeyDeletion: {}", answer.text()))
        }
    }

    /// The customer managed key with exactly this description, among the region's keys.
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
                let result = at.kms.describe_key().key_id(id).send().await;
                let answer = answer_of(&result);
                self.session
                    .record(&at.region, "DescribeKey", id.to_owned(), answer.text());
                let metadata = match result {
                    Ok(out) => out.key_metadata,
                    // Deleted between the listing and now.
                    Err(_) if answer.code.as_deref() == Some("NotFoundException") => None,
                    Err(_) => return Err(format!("DescribeKey {id}: {}", answer.text())),
                };
                if metadata.is_some_and(|m| m.description() == Some(description)) {
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
