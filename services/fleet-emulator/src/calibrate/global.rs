//! The experiments on the global table: SSE and ReplicaUpdates in one call, the replica's key both ways, and AWS
//! managed encryption set on one replica.

use aws_sdk_dynamodb::operation::update_table::builders::UpdateTableFluentBuilder;
use aws_sdk_dynamodb::types::{ReplicationGroupUpdate, UpdateReplicationGroupMemberAction};

use super::experiments::Counts;
use super::infer::{Answer, ReplicaAfterManaged};
use super::resources::{Run, sse_key, sse_managed};
use super::session::{Regional, answer_of};

/// Which replicas of the global table a change may show on (and so may switch).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shows {
    Both,
    ReplicaOnly,
}

impl Run<'_> {
    /// SSE + ReplicaUpdates in one call; the replica's key both ways; AWS managed set on one replica.
    pub(super) async fn global_table(&self) -> anyhow::Result<()> {
        let name = self.table("global");
        let (main, replica) = (&self.session.main, &self.session.replica);
        let (b, replica_a, replica_b) = (
            self.key("b")?,
            self.key("replica-a")?,
            self.key("replica-b")?,
        );
        let replica_key = |key: &str| -> anyhow::Result<ReplicationGroupUpdate> {
            Ok(ReplicationGroupUpdate::builder()
                .update(
                    UpdateReplicationGroupMemberAction::builder()
                        .region_name(&replica.region)
                        .kms_master_key_id(key)
                        .build()?,
                )
                .build())
        };
        let call = main
            .dynamodb
            .update_table()
            .table_name(&name)
            .sse_specification(sse_key(&b.arn))
            .replica_updates(replica_key(&replica_b.arn)?);
        let what = "b here and replica-b on the replica, in one call";
        let answer = self
            .global_change(&name, main, what, call, Shows::Both)
            .await?;
        self.observe(|seen| seen.sse_with_replica_updates = Some(answer));

        // The replica's key, by ReplicaUpdates sent here, then by SSESpecification sent in its region: each time
        // to the replica key it is not on.
        let other = |key: Option<String>| {
            if key == Some(replica_b.arn.clone()) {
                replica_a.arn.clone()
            } else {
                replica_b.arn.clone()
            }
        };
        let (_, view) = self.session.describe(replica, &name, "").await;
        let call = main
            .dynamodb
            .update_table()
            .table_name(&name)
            .replica_updates(replica_key(&other(view.and_then(|v| v.key_arn)))?);
        let what = "the replica's key, by ReplicaUpdates";
        let answer = self
            .global_change(&name, main, what, call, Shows::ReplicaOnly)
            .await?;
        self.observe(|seen| seen.replica_key_by_replica_updates = Some(answer));
        let (_, view) = self.session.describe(replica, &name, "").await;
        let call = replica
            .dynamodb
            .update_table()
            .table_name(&name)
            .sse_specification(sse_key(&other(view.and_then(|v| v.key_arn))));
        let what = "the replica's key, by SSESpecification in its region";
        let answer = self
            .global_change(&name, replica, what, call, Shows::ReplicaOnly)
            .await?;
        self.observe(|seen| seen.replica_key_by_sse_in_its_region = Some(answer));

        let call = main
            .dynamodb
            .update_table()
            .table_name(&name)
            .sse_specification(sse_managed());
        let what = "AWS managed, set on this replica only";
        let answer = self
            .global_change(&name, main, what, call, Shows::Both)
            .await?;
        let replica_after = if answer.is_ok() {
            Some(self.replica_key_manager(replica, &name).await)
        } else {
            None
        };
        self.observe(|seen| {
            seen.managed_on_global = Some(answer);
            seen.replica_after_managed = replica_after;
        });
        Ok(())
    }

    /// Whether the replica is on its region's AWS managed key.
    async fn replica_key_manager(&self, replica: &Regional, name: &str) -> ReplicaAfterManaged {
        let (_, view) = self.session.describe(replica, name, "").await;
        let Some(key) = view.and_then(|v| v.key_arn) else {
            return ReplicaAfterManaged::Unchanged;
        };
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
        if manager == Some(aws_sdk_kms::types::KeyManagerType::Aws) {
            ReplicaAfterManaged::Managed
        } else {
            ReplicaAfterManaged::Unchanged
        }
    }

    /// One change of the global table, sent in `to`, watched where it may show when accepted.
    async fn global_change(
        &self,
        name: &str,
        to: &Regional,
        what: &str,
        call: UpdateTableFluentBuilder,
        shows: Shows,
    ) -> anyhow::Result<Answer> {
        let (main, replica) = (&self.session.main, &self.session.replica);
        let (_, before_main) = self.session.describe(main, name, "").await;
        let (_, before_replica) = self.session.describe(replica, name, "").await;
        let switches: &[&str] = match shows {
            Shows::Both => &[main.region.as_str(), replica.region.as_str()],
            Shows::ReplicaOnly => &[replica.region.as_str()],
        };
        let (answer, sent) = self.update(to, name, what, call, switches).await?;
        if answer.is_ok() {
            let watch_main = async {
                if shows == Shows::Both {
                    self.follow(main, name, before_main.as_ref(), sent, Counts::Other)
                        .await;
                }
            };
            tokio::join!(
                watch_main,
                self.follow(replica, name, before_replica.as_ref(), sent, Counts::Other),
            );
        }
        Ok(answer)
    }
}
