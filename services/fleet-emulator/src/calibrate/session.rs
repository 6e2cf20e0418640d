//! The calibration run's view of AWS: SDK clients for the two regions (no SDK retries, so every answer is AWS's
//! own), the transcript of every call and answer, and the numbered steps it prints as it changes things.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use aws_config::BehaviorVersion;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::types::TableDescription;

use tokio_util::sync::CancellationToken;

use super::infer::Answer;

/// How long one call may take before the run records it as unanswered: AWS's control-plane calls answer in
/// well under a second; 30 s is a network that is gone, not a slow answer.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// A lock that a panicking holder did not poison for the rest of the run.
pub fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// DynamoDB and KMS clients for one region.
#[derive(Debug, Clone)]
pub struct Regional {
    pub region: String,
    pub dynamodb: aws_sdk_dynamodb::Client,
    pub kms: aws_sdk_kms::Client,
}

/// How to reach the account.
#[derive(Debug, Clone, Default)]
pub struct Access {
    pub endpoint_url: Option<String>,
    pub role_arn: Option<String>,
    pub external_id: Option<String>,
}

/// One call and its answer, for the report.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Seconds since the run started.
    pub at: f64,
    pub region: String,
    pub operation: String,
    /// The table, key or alias, and what was asked.
    pub request: String,
    pub answer: String,
}

#[derive(Debug)]
pub struct Session {
    pub main: Regional,
    pub replica: Regional,
    pub account_id: String,
    pub started: Instant,
    transcript: Mutex<Vec<Entry>>,
    steps: AtomicU64,
    /// Ctrl-C: no new step starts (a call under way finishes and is recorded, so cleanup knows what exists).
    stop: CancellationToken,
    /// `--max-minutes`: the same, once it passes.
    deadline: Mutex<Option<Instant>>,
}

async fn config(access: &Access, region: &str) -> aws_config::SdkConfig {
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .region(aws_config::Region::new(region.to_owned()))
        .retry_config(RetryConfig::disabled())
        .timeout_config(
            TimeoutConfig::builder()
                .operation_timeout(CALL_TIMEOUT)
                .build(),
        );
    if let Some(url) = &access.endpoint_url {
        loader = loader.endpoint_url(url);
    }
    let base = loader.load().await;
    let Some(role) = &access.role_arn else {
        return base;
    };
    let mut provider = aws_config::sts::AssumeRoleProvider::builder(role)
        .session_name("tablecrypt-calibrate")
        .configure(&base);
    if let Some(id) = &access.external_id {
        provider = provider.external_id(id);
    }
    let provider = provider.build().await;
    base.into_builder()
        .credentials_provider(
            aws_credential_types::provider::SharedCredentialsProvider::new(provider),
        )
        .build()
}

impl Session {
    /// Clients for both regions, and the account they act in (GetCallerIdentity).
    pub async fn connect(
        access: &Access,
        region: &str,
        replica_region: &str,
        stop: CancellationToken,
    ) -> anyhow::Result<Self> {
        let main_config = config(access, region).await;
        let replica_config = config(access, replica_region).await;
        let identity = aws_sdk_sts::Client::new(&main_config)
            .get_caller_identity()
            .send()
            .await
            .map_err(|e| {
                anyhow::anyhow!(
                    "cannot tell which account these credentials act in (sts:GetCallerIdentity): {}",
                    aws_sdk_dynamodb::error::DisplayErrorContext(e)
                )
            })?;
        let account_id = identity
            .account
            .filter(|a| !a.is_empty())
            .ok_or_else(|| anyhow::anyhow!("sts:GetCallerIdentity answered without an account"))?;
        let regional = |config: &aws_config::SdkConfig, region: &str| Regional {
            region: region.to_owned(),
            dynamodb: aws_sdk_dynamodb::Client::new(config),
            kms: aws_sdk_kms::Client::new(config),
        };
        Ok(Self {
            main: regional(&main_config, region),
            replica: regional(&replica_config, replica_region),
            account_id,
            started: Instant::now(),
            transcript: Mutex::new(Vec::new()),
            steps: AtomicU64::new(0),
            stop,
            deadline: Mutex::new(None),
        })
    }

    /// The experiments stop starting steps at `deadline`.
    pub fn set_deadline(&self, deadline: Instant) {
        *lock(&self.deadline) = Some(deadline);
    }

    /// Why no new step may start: Ctrl-C, or `--max-minutes` passed.
    pub fn stopped(&self) -> Option<&'static str> {
        if self.stop.is_cancelled() {
            Some("interrupted")
        } else if lock(&self.deadline).is_some_and(|d| Instant::now() >= d) {
            Some("--max-minutes passed")
        } else {
            None
        }
    }

    /// The region's clients, if it is one of this run's two.
    pub fn regional(&self, region: &str) -> Option<&Regional> {
        [&self.main, &self.replica]
            .into_iter()
            .find(|r| r.region == region)
    }

    /// DescribeTable, recorded: the answer, and the table as it showed it.
    pub async fn describe_table(
        &self,
        at: &Regional,
        name: &str,
        note: &str,
    ) -> (Answer, Option<TableDescription>) {
        let result = at.dynamodb.describe_table().table_name(name).send().await;
        let answer = answer_of(&result);
        let table = result.ok().and_then(|out| out.table);
        self.record(
            &at.region,
            "DescribeTable",
            format!("{name}{note}"),
            table.as_ref().map_or_else(|| answer.text(), table_text),
        );
        (answer, table)
    }

    /// DescribeTable, recorded: the answer, and the table's encryption as it showed it.
    pub async fn describe(
        &self,
        at: &Regional,
        name: &str,
        note: &str,
    ) -> (Answer, Option<TableView>) {
        let (answer, table) = self.describe_table(at, name, note).await;
        (answer, table.as_ref().map(TableView::of))
    }

    pub fn elapsed(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }

    /// Announces a call that changes something: `step N: ...` on stderr, so a reader (or a test that kills the run
    /// at a chosen step) can follow.
    pub fn step(&self, what: &str) -> anyhow::Result<()> {
        if let Some(why) = self.stopped() {
            anyhow::bail!("{why}");
        }
        let n = self.steps.fetch_add(1, Ordering::SeqCst) + 1;
        eprintln!("step {n}: {what}");
        Ok(())
    }

    /// A cleanup step: announced like any other, and never stopped by Ctrl-C or the deadline.
    pub fn cleanup_step(&self, what: &str) {
        let n = self.steps.fetch_add(1, Ordering::SeqCst) + 1;
        eprintln!("step {n}: {what}");
    }

    pub fn record(&self, region: &str, operation: &str, request: String, answer: String) {
        let entry = Entry {
            at: self.elapsed(),
            region: region.to_owned(),
            operation: operation.to_owned(),
            request,
            answer,
        };
        lock(&self.transcript).push(entry);
    }

    /// Records a call that must succeed with its answer, and gives back its output, or an error naming `what`
    /// with the answer AWS sent.
    pub fn recorded_ok<T, E>(
        &self,
        region: &str,
        operation: &str,
        request: String,
        what: &str,
        result: Result<T, SdkError<E, aws_sdk_dynamodb::config::http::HttpResponse>>,
    ) -> anyhow::Result<T>
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
    {
        let answer = answer_of(&result);
        self.record(region, operation, request, answer.text());
        result.map_err(|_| anyhow::anyhow!("{what}: {}", answer.text()))
    }

    pub fn transcript(&self) -> Vec<Entry> {
        lock(&self.transcript).clone()
    }
}

/// The answer of an SDK call: 200, or the HTTP status, error code and message AWS sent.
pub fn answer_of<T, E>(
    result: &Result<T, SdkError<E, aws_sdk_dynamodb::config::http::HttpResponse>>,
) -> Answer
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    match result {
        Ok(_) => Answer::ok(),
        Err(error) => {
            let status = error.raw_response().map_or(0, |r| r.status().as_u16());
            match error.code() {
                Some(code) => Answer {
                    status,
                    code: Some(code.to_owned()),
                    message: error.message().map(str::to_owned),
                },
                None => Answer {
                    status,
                    code: Some(if status == 0 {
                        "NoAnswer".to_owned()
                    } else {
                        "Unknown".to_owned()
                    }),
                    message: Some(aws_sdk_dynamodb::error::DisplayErrorContext(error).to_string()),
                },
            }
        }
    }
}

/// Everything DescribeTable (or UpdateTable's answer) said of a table's encryption, for the report: the view,
/// the SSE type, when the table became inaccessible, and each replica's status and key.
pub fn table_text(table: &TableDescription) -> String {
    let mut out = TableView::of(table).text();
    if let Some(sse) = table.sse_description() {
        if let Some(kind) = sse.sse_type() {
            out.push_str(&format!(", SSEType {}", kind.as_str()));
        }
        if let Some(at) = sse.inaccessible_encryption_date_time() {
            out.push_str(&format!(", inaccessible since {at}"));
        }
    }
    for replica in table.replicas() {
        out.push_str(&format!(
            "; replica {} {} {}",
            replica.region_name().unwrap_or_default(),
            replica
                .replica_status()
                .map_or("(no status)", |s| s.as_str()),
            replica.kms_master_key_id().unwrap_or("(no key)")
        ));
    }
    out
}

/// What DescribeTable (or UpdateTable's answer) shows of a table's encryption.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TableView {
    pub status: String,
    /// `SSEDescription.Status`; `None` without an SSEDescription (the AWS owned key).
    pub sse_status: Option<String>,
    pub key_arn: Option<String>,
}

impl TableView {
    pub fn of(table: &TableDescription) -> Self {
        let sse = table.sse_description();
        Self {
            status: table
                .table_status()
                .map(|s| s.as_str().to_owned())
                .unwrap_or_default(),
            sse_status: sse.and_then(|s| s.status()).map(|s| s.as_str().to_owned()),
            key_arn: sse.and_then(|s| s.kms_master_key_arn()).map(str::to_owned),
        }
    }

    /// Whether no change shows: the table ACTIVE and its encryption ENABLED (or the owned key).
    pub fn settled(&self) -> bool {
        self.status == "ACTIVE" && self.sse_status.as_deref().is_none_or(|s| s == "ENABLED")
    }

    /// Whether an SSE change shows as under way.
    pub fn changing(&self) -> bool {
        self.status == "UPDATING"
            || self
                .sse_status
                .as_deref()
                .is_some_and(|s| matches!(s, "UPDATING" | "ENABLING" | "DISABLING"))
    }

    pub fn text(&self) -> String {
        let mut out = self.status.clone();
        match (&self.sse_status, &self.key_arn) {
            (None, _) => out.push_str(", no SSEDescription"),
            (Some(status), Some(key)) => out.push_str(&format!(", SSE {status} {key}")),
            (Some(status), None) => out.push_str(&format!(", SSE {status} (no key)")),
        }
        out
    }
}
