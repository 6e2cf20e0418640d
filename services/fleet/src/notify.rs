//! Publishing notifications to SNS topics with the hub's own credentials (not an assumed member role): the topics
//! belong to the platform team that runs tablecrypt.

use aws_config::Region;
use aws_sdk_sns::types::MessageAttributeValue;

use crate::clients::Fleet;

/// SNS subjects are at most 100 characters.
const MAX_SUBJECT_CHARS: usize = 100;

impl Fleet {
    /// Publishes `message` with `subject` to `topic_arn` in the topic's region, with a string message attribute
    /// `event` (for subscription filter policies). Errors carry AWS's code and message, never a credential.
    pub async fn publish_sns(
        &self,
        topic_arn: &str,
        subject: &str,
        event: &str,
        message: &str,
    ) -> Result<(), String> {
        let region = topic_arn
            .split(':')
            .nth(3)
            .filter(|r| !r.is_empty())
            .ok_or_else(|| format!("{topic_arn} is not an SNS topic ARN"))?;
        // One attempt: the notifier retries with its own back-off and bounds each attempt by its lease; the SDK's
        // retries would go on beyond both.
        let config = aws_sdk_sns::config::Builder::from(self.base())
            .region(Region::new(region.to_owned()))
            .retry_config(aws_config::retry::RetryConfig::disabled())
            .build();
        let client = aws_sdk_sns::Client::from_conf(config);
        let subject: String = subject
            .chars()
            .filter(|c| !c.is_control())
            .take(MAX_SUBJECT_CHARS)
            .collect();
        let attribute = MessageAttributeValue::builder()
            .data_type("String")
            .string_value(event)
            .build()
            .map_err(|e| e.to_string())?;
        client
            .publish()
            .topic_arn(topic_arn)
            .subject(subject)
            .message(message)
            .message_attributes("event", attribute)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| {
                let e = aws_sdk_sns::error::DisplayErrorContext(e);
                format!("SNS Publish to {topic_arn} failed: {e}")
            })
    }
}
