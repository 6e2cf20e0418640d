//! Delivers change-request notifications (approval needed, paused, failed, succeeded) to webhooks: routes each
//! new event of the outbox to the sinks whose events and account selector match, then posts under a lease with
//! retries, and audits each delivery's end. Every replica runs one; the outbox's row locks share the work.

use std::sync::Arc;
use std::time::Duration;

use futures::future::join_all;
use tablecrypt_core::error_chain::error_chain as describe;
use tablecrypt_core::notify::{BodyFormat, Notice, Route, retry_after};
use tablecrypt_fleet::Fleet;
use tablecrypt_store::{DueDelivery, NewAuditEvent, Store};
use tokio_util::sync::CancellationToken;

/// Events routed, and deliveries attempted, per pass: one pass stays a short transaction and a burst of events
/// (a fleet of requests finishing together) is spread over a few passes.
const BATCH: i64 = 32;
/// How long a claimed delivery is this replica's beyond the HTTP timeout, before another may try it.
const LEASE_MARGIN: Duration = Duration::from_secs(20);
/// The caller recorded in the audit log for deliveries: the server itself, not a person.
const AUDIT_CALLER: &str = "tablecrypt:notifier";
/// Tells a receiver which event a body is about, so a repeat (delivery is at least once) can be dropped.
const EVENT_ID_HEADER: &str = "x-tablecrypt-event-id";
/// How long finished notifications are kept (then deleted), and how long a delivery to a sink no longer in the
/// configuration waits before it is given up: a month covers any investigation of "were we told?".
const RETENTION: Duration = Duration::from_secs(30 * 24 * 3600);
/// How often old notifications are pruned.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);

/// One configured destination.
#[derive(Clone)]
pub struct Sink {
    pub route: Route,
    target: Target,
}

#[derive(Clone)]
enum Target {
    /// The webhook's URL is often a secret in itself (Slack's is), so it is never logged or audited.
    Webhook {
        url: reqwest::Url,
        format: BodyFormat,
    },
    /// Published with the hub's credentials; the message is tablecrypt's JSON body.
    Sns { topic_arn: String },
}

impl Sink {
    /// A sink publishing to the SNS topic `topic_arn` (`arn:<partition>:sns:<region>:<account>:<name>`).
    pub fn sns(route: Route, topic_arn: &str) -> Result<Self, String> {
        let parts: Vec<&str> = topic_arn.split(':').collect();
        let valid = matches!(
            parts.as_slice(),
            ["arn", partition, "sns", region, account, name]
                if partition.starts_with("aws")
                    && !region.is_empty()
                    && account.len() == 12
                    && account.bytes().all(|b| b.is_ascii_digit())
                    && (1..=256).contains(&name.len())
        );
        if !valid {
            return Err(format!(
                "{topic_arn:?} is not an SNS topic ARN (arn:aws:sns:REGION:ACCOUNT:NAME)"
            ));
        }
        Ok(Self {
            route,
            target: Target::Sns {
                topic_arn: topic_arn.to_owned(),
            },
        })
    }

    /// A sink posting to `url`: https, or http to a loopback address only (a local relay or a test).
    pub fn new(route: Route, url: &str, format: BodyFormat) -> Result<Self, String> {
        // The URL is not echoed back: it may be the secret.
        let url = reqwest::Url::parse(url).map_err(|e| format!("url is not a URL ({e})"))?;
        let loopback = url
            .host_str()
            .is_some_and(tablecrypt_core::loopback::is_loopback_host);
        match url.scheme() {
            "https" => {}
            "http" if loopback => {}
            "http" => return Err("url must be https (http only to a loopback address)".into()),
            other => return Err(format!("url's scheme {other:?} is not https")),
        }
        Ok(Self {
            route,
            target: Target::Webhook { url, format },
        })
    }
}

impl std::fmt::Debug for Sink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut f = f.debug_struct("Sink");
        f.field("route", &self.route);
        match &self.target {
            Target::Webhook { format, .. } => f.field("url", &"[redacted]").field("format", format),
            Target::Sns { topic_arn } => f.field("sns_topic_arn", topic_arn),
        };
        f.finish()
    }
}

/// How notifications are delivered; from the server's configuration.
#[derive(Debug, Clone)]
pub struct NotifierSettings {
    pub sinks: Vec<Sink>,
    /// How often the outbox is read when the last pass found nothing.
    pub interval: Duration,
    /// The longest one POST may take.
    pub timeout: Duration,
    /// The wait after the first failed attempt, doubled per failure up to `retry_max`.
    pub retry_initial: Duration,
    pub retry_max: Duration,
    /// Attempts before a delivery is given up (and the giving up audited).
    pub max_attempts: u32,
}

pub struct Notifier {
    store: Store,
    /// SNS publishes go through the hub's AWS configuration.
    fleet: Arc<Fleet>,
    settings: NotifierSettings,
    http: reqwest::Client,
}

impl Notifier {
    pub fn new(
        store: Store,
        fleet: Arc<Fleet>,
        settings: NotifierSettings,
    ) -> Result<Self, reqwest::Error> {
        let http = reqwest::Client::builder()
            .timeout(settings.timeout)
            .connect_timeout(settings.timeout.min(Duration::from_secs(5)))
            // A webhook that redirects is misconfigured; following it would post the request's details wherever
            // the redirect points.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("tablecrypt/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Self {
            store,
            fleet,
            settings,
            http,
        })
    }

    /// Routes and delivers until `shutdown`. A delivery under way when it fires is finished or left to its
    /// lease (another replica tries it again).
    pub async fn run(self, shutdown: CancellationToken) {
        tracing::info!(sinks = self.settings.sinks.len(), "notifier started");
        let mut pruned_at: Option<std::time::Instant> = None;
        loop {
            if pruned_at.is_none_or(|at| at.elapsed() >= PRUNE_EVERY) {
                pruned_at = Some(std::time::Instant::now());
                match self
                    .store
                    .notifications
                    .prune(RETENTION, &self.sink_names())
                    .await
                {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(events = n, "old notifications deleted"),
                    Err(error) => tracing::warn!(%error, "pruning old notifications failed"),
                }
            }
            let busy = tokio::select! {
                busy = self.pass() => busy,
                () = shutdown.cancelled() => break,
            };
            if busy {
                continue;
            }
            tokio::select! {
                () = tokio::time::sleep(self.settings.interval) => {}
                () = shutdown.cancelled() => break,
            }
        }
        tracing::info!("notifier stopped");
    }

    fn sink_names(&self) -> Vec<String> {
        self.settings
            .sinks
            .iter()
            .map(|s| s.route.sink.clone())
            .collect()
    }

    /// One pass: route new events, deliver what is due. True when there was work (look again at once).
    /// A replica with no sinks routes nothing: another replica's configuration (a rollout adding sinks) decides
    /// who hears of each event. Every replica should carry the same `[[notifications]]`.
    async fn pass(&self) -> bool {
        let sinks = self.sink_names();
        if sinks.is_empty() {
            return false;
        }
        let routed = match self
            .store
            .notifications
            .route_new(BATCH, |event| {
                self.settings
                    .sinks
                    .iter()
                    .filter(|s| s.route.wants(event.event, &event.accounts))
                    .map(|s| s.route.sink.clone())
                    .collect()
            })
            .await
        {
            Ok(n) => n,
            Err(error) => {
                tracing::warn!(%error, "routing notifications failed; retrying");
                0
            }
        };
        let due = match self
            .store
            .notifications
            .claim_due(BATCH, self.settings.timeout + LEASE_MARGIN, &sinks)
            .await
        {
            Ok(due) => due,
            Err(error) => {
                tracing::warn!(%error, "reading due notifications failed; retrying");
                Vec::new()
            }
        };
        let attempted = due.len();
        join_all(due.into_iter().map(|d| self.deliver(d))).await;
        routed as i64 == BATCH || attempted as i64 == BATCH
    }

    async fn deliver(&self, delivery: DueDelivery) {
        let Some(sink) = self
            .settings
            .sinks
            .iter()
            .find(|s| s.route.sink == delivery.sink)
        else {
            return;
        };
        // Bounded here as well as in each client: a hung attempt must neither outlive its lease (another replica
        // would deliver it again meanwhile) nor hold up the rest of the pass.
        let outcome =
            match tokio::time::timeout(self.settings.timeout, self.post(sink, &delivery)).await {
                Ok(outcome) => outcome,
                Err(_) => Err(format!(
                    "no answer within {:?} (notification_timeout)",
                    self.settings.timeout
                )),
            };
        let notice = &delivery.notice;
        let recorded = match &outcome {
            Ok(()) => {
                tracing::info!(
                    sink = %sink.route.sink,
                    event = notice.event.as_str(),
                    change_request_id = %notice.change_request_id,
                    attempts = delivery.attempts,
                    "notification delivered"
                );
                self.store
                    .notifications
                    .delivered(delivery.event_id, &delivery.sink, delivery.attempts)
                    .await
            }
            Err(error) => {
                let attempts = u32::try_from(delivery.attempts).unwrap_or(u32::MAX);
                let retry = (attempts < self.settings.max_attempts).then(|| {
                    retry_after(
                        attempts,
                        self.settings.retry_initial,
                        self.settings.retry_max,
                    )
                });
                tracing::warn!(
                    sink = %sink.route.sink,
                    event = notice.event.as_str(),
                    change_request_id = %notice.change_request_id,
                    attempts,
                    retry_in = ?retry,
                    %error,
                    "notification not delivered"
                );
                self.store
                    .notifications
                    .failed(
                        delivery.event_id,
                        &delivery.sink,
                        delivery.attempts,
                        error,
                        retry,
                    )
                    .await
            }
        };
        match recorded {
            Ok(true) => {}
            // This attempt's lease ran out and another attempt took over: it records (and audits) the outcome.
            Ok(false) => {
                tracing::info!(sink = %sink.route.sink, attempts = delivery.attempts, "a notification attempt outlived its claim; not recorded");
                return;
            }
            Err(error) => {
                // The lease runs out and another pass tries again: at least once, never lost.
                tracing::warn!(%error, sink = %sink.route.sink, "recording a notification attempt failed");
                return;
            }
        }
        let given_up = outcome.is_err()
            && u32::try_from(delivery.attempts).unwrap_or(u32::MAX) >= self.settings.max_attempts;
        if outcome.is_ok() || given_up {
            self.audit(&delivery, outcome.as_ref().err()).await;
        }
    }

    /// Posts the body (any 2xx is delivered), or publishes it to SNS.
    async fn post(&self, sink: &Sink, delivery: &DueDelivery) -> Result<(), String> {
        let notice = &delivery.notice;
        let (url, format) = match &sink.target {
            Target::Webhook { url, format } => (url, *format),
            Target::Sns { topic_arn } => {
                let subject = format!(
                    "tablecrypt: change request {} {}",
                    notice.change_request_id,
                    notice.event.as_str().replace('_', " ")
                );
                return self
                    .fleet
                    .publish_sns(
                        topic_arn,
                        &subject,
                        notice.event.as_str(),
                        &body(notice, BodyFormat::Json).to_string(),
                    )
                    .await;
            }
        };
        let response = self
            .http
            .post(url.clone())
            .header(EVENT_ID_HEADER, delivery.event_id.to_string())
            .json(&body(notice, format))
            .send()
            .await
            // Without the URL: reqwest's message names it, and the URL may be the secret.
            .map_err(|e| describe(&e.without_url()))?;
        let status = response.status();
        if status.is_success() {
            Ok(())
        } else {
            Err(format!("the endpoint answered HTTP {status}"))
        }
    }

    async fn audit(&self, delivery: &DueDelivery, error: Option<&String>) {
        let notice = &delivery.notice;
        let event = NewAuditEvent {
            caller: AUDIT_CALLER.to_owned(),
            authenticated_by: "server".to_owned(),
            method: format!("notify/{}", delivery.sink),
            target: notice.change_request_id.clone(),
            outcome: if error.is_none() { "OK" } else { "UNAVAILABLE" }.to_owned(),
            message: match error {
                None => format!(
                    "{} notification delivered after {} attempt(s)",
                    notice.event.as_str(),
                    delivery.attempts
                ),
                Some(error) => format!(
                    "{} notification given up after {} attempts: {error}",
                    notice.event.as_str(),
                    delivery.attempts
                ),
            },
            peer: None,
            call_count: 1,
            first_time: None,
        };
        if let Err(error) = self.store.audit.record(&event).await {
            tracing::warn!(%error, "auditing a notification failed");
        }
    }
}

/// The body a sink receives.
pub fn body(notice: &Notice, format: BodyFormat) -> serde_json::Value {
    match format {
        BodyFormat::Slack => serde_json::json!({ "text": notice.summary() }),
        BodyFormat::Json => serde_json::json!({
            "event": notice.event.as_str(),
            "change_request_id": notice.change_request_id,
            "state": notice.state.as_str(),
            "reason": notice.reason,
            "description": notice.description,
            "created_by": notice.created_by,
            "target": notice.target,
            "accounts": notice.accounts,
            "items": {
                "total": notice.items_total,
                "succeeded": notice.items_succeeded,
                "failed": notice.items_failed,
            },
            "event_time": notice.event_time,
            "summary": notice.summary(),
        }),
    }
}
