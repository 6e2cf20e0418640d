//! SNS, as far as tablecrypt's notifications use it: `Publish` to a topic of the caller's own account in the
//! region the request is signed for (any topic name exists; a topic of another account is refused as AWS
//! refuses a publish the topic policy does not allow). Published messages are kept for the admin API
//! (`GET /_emulator/sns/messages`), so tests read what a subscriber would have received.

use std::sync::Mutex;

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::error::AwsError;
use super::protocol::xml_escape;
use crate::world::{Caller, lock};

/// The largest message SNS accepts (256 KiB).
const MAX_MESSAGE_BYTES: usize = 262_144;
/// The longest subject SNS accepts.
const MAX_SUBJECT_CHARS: usize = 100;
/// Messages kept (oldest dropped first): enough for any test, bounded for a long-running emulator.
const KEEP: usize = 10_000;

/// One published message.
#[derive(Debug, Clone, Serialize)]
pub struct Published {
    pub time: DateTime<Utc>,
    pub topic_arn: String,
    pub subject: Option<String>,
    pub message: String,
    pub message_id: String,
}

/// The messages published so far.
#[derive(Debug, Default)]
pub struct Topics {
    published: Mutex<Vec<Published>>,
}

impl Topics {
    pub fn published(&self) -> Vec<Published> {
        lock(&self.published).clone()
    }

    pub fn clear(&self) {
        lock(&self.published).clear();
    }
}

/// The actions this module answers.
pub const ACTIONS: [&str; 1] = ["Publish"];

pub fn handle(
    topics: &Topics,
    caller: &Caller,
    region: &str,
    now: DateTime<Utc>,
    action: &str,
    params: &[(String, String)],
) -> Result<String, AwsError> {
    let param = |name: &str| {
        params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    let invalid = |message: String| AwsError::new(400, "InvalidParameter", message);
    if action != "Publish" {
        return Err(AwsError::new(
            400,
            "InvalidAction",
            format!("Unknown action {action}"),
        ));
    }
    let topic_arn = param("TopicArn").ok_or_else(|| {
        invalid(
            "Invalid parameter: TopicArn or TargetArn Reason: no value for required parameter"
                .into(),
        )
    })?;
    let parts: Vec<&str> = topic_arn.split(':').collect();
    let [arn, _partition, "sns", topic_region, account, name] = parts.as_slice() else {
        return Err(invalid(format!(
            "Invalid parameter: TopicArn Reason: {topic_arn} is not a topic ARN"
        )));
    };
    if *arn != "arn" || name.is_empty() {
        return Err(invalid(format!(
            "Invalid parameter: TopicArn Reason: {topic_arn} is not a topic ARN"
        )));
    }
    if *topic_region != region {
        return Err(invalid(format!(
            "Invalid parameter: TopicArn Reason: the topic is in {topic_region}, the request is signed for {region}"
        )));
    }
    if *account != caller.account_id {
        return Err(AwsError::new(
            403,
            "AuthorizationError",
            format!(
                "User: {} is not authorized to perform: SNS:Publish on resource: {topic_arn}",
                caller.arn
            ),
        ));
    }
    let message = param("Message").filter(|m| !m.is_empty()).ok_or_else(|| {
        invalid("Invalid parameter: Message Reason: no value for required parameter".into())
    })?;
    if message.len() > MAX_MESSAGE_BYTES {
        return Err(invalid("Invalid parameter: Message too long".into()));
    }
    let subject = param("Subject");
    if let Some(subject) = &subject
        && (subject.chars().count() > MAX_SUBJECT_CHARS || subject.chars().any(|c| c.is_control()))
    {
        return Err(invalid(
            "Invalid parameter: Subject Reason: must be 1-100 printable characters without line breaks".into(),
        ));
    }
    let message_id = uuid::Uuid::new_v4().to_string();
    let mut published = lock(&topics.published);
    if published.len() >= KEEP {
        published.remove(0);
    }
    published.push(Published {
        time: now,
        topic_arn,
        subject,
        message,
        message_id: message_id.clone(),
    });
    Ok(format!(
        "<MessageId>{}</MessageId>",
        xml_escape(&message_id)
    ))
}
