//! The HTTP endpoint: AWS requests at `/`, the admin API under `/_emulator/`.

use std::net::SocketAddr;
use std::sync::{Arc, RwLock};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::HeaderMap;
use axum::response::Response;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::aws::protocol::{Service, error_for, json_result, query_result};
use crate::aws::{AwsError, dynamodb, kms, organizations, sigv4, sts, tagging};
use crate::faults::Faults;
use crate::fleet_file::FleetSpec;
use crate::request_log::{Record, RequestLog};
use crate::world::{Caller, World};

/// Largest request body accepted (fleet files posted to the admin API can be large).
const MAX_BODY_BYTES: usize = 256 * 1024 * 1024;

/// Everything a request handler reaches.
#[derive(Debug)]
pub struct Shared {
    pub world: World,
    pub faults: Faults,
    pub log: RequestLog,
    /// Messages published to SNS topics.
    pub topics: crate::aws::sns::Topics,
    /// The fleet loaded at start (or last loaded through the admin API), restored by `reset`.
    pub fleet: RwLock<FleetSpec>,
}

/// An emulator, ready to serve.
#[derive(Debug, Clone)]
pub struct Emulator {
    shared: Arc<Shared>,
}

/// An emulator serving on a socket in the background.
pub struct RunningEmulator {
    pub addr: SocketAddr,
    pub emulator: Emulator,
    shutdown: CancellationToken,
    handle: JoinHandle<std::io::Result<()>>,
}

impl RunningEmulator {
    /// `http://127.0.0.1:PORT`, for `endpoint_url`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// One call to the admin API under `/_emulator` (plain HTTP/1.0, JSON body); returns (status, body).
    /// For tests and tools that drive the emulator from Rust: faults, clock, request log.
    pub async fn admin(
        &self,
        method: &str,
        path: &str,
        body: &str,
    ) -> std::io::Result<(u16, String)> {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let mut stream = tokio::net::TcpStream::connect(self.addr).await?;
        let request = format!(
            "{method} /_emulator{path} HTTP/1.0\r\nHost: emulator\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\n\r\n{body}",
            body.len()
        );
        stream.write_all(request.as_bytes()).await?;
        let mut response = String::new();
        stream.read_to_string(&mut response).await?;
        let status = response
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let body = response
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_owned())
            .unwrap_or_default();
        Ok((status, body))
    }

    pub async fn stop(self) -> std::io::Result<()> {
        self.shutdown.cancel();
        self.handle.await.unwrap_or(Ok(()))
    }
}

impl Emulator {
    pub fn new(fleet: FleetSpec) -> anyhow::Result<Self> {
        let world = World::default();
        world.load(&fleet)?;
        Ok(Self {
            shared: Arc::new(Shared {
                world,
                faults: Faults::default(),
                log: RequestLog::default(),
                topics: crate::aws::sns::Topics::default(),
                fleet: RwLock::new(fleet),
            }),
        })
    }

    pub fn shared(&self) -> &Shared {
        &self.shared
    }

    pub fn router(&self) -> Router {
        Router::new()
            .nest("/_emulator", crate::admin::router())
            .fallback(aws_request)
            .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
            .with_state(self.shared.clone())
    }

    /// Serves on `listener` until `shutdown`.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: CancellationToken,
    ) -> std::io::Result<()> {
        axum::serve(listener, self.router())
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await
    }

    /// Starts serving on 127.0.0.1 on a free port.
    pub async fn spawn(fleet: FleetSpec) -> anyhow::Result<RunningEmulator> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let emulator = Self::new(fleet)?;
        let shutdown = CancellationToken::new();
        let handle = tokio::spawn(emulator.clone().serve(listener, shutdown.clone()));
        Ok(RunningEmulator {
            addr,
            emulator,
            shutdown,
            handle,
        })
    }
}

/// What a request asks for, once its protocol is known.
enum Call {
    Json {
        service: Service,
        operation: String,
        input: Value,
    },
    Query {
        /// STS or SNS (awsQuery both).
        service: Service,
        action: String,
        params: Vec<(String, String)>,
    },
}

/// The body of a JSON call, `{}` when empty.
fn json_input(
    service: Service,
    operation: &str,
    body: &Bytes,
) -> Result<Value, (Service, String, AwsError)> {
    if body.is_empty() {
        return Ok(Value::Object(Default::default()));
    }
    serde_json::from_slice(body).map_err(|e| {
        (
            service,
            operation.to_owned(),
            AwsError::new(
                400,
                "SerializationException",
                format!("Malformed JSON: {e}"),
            ),
        )
    })
}

fn parse_call(
    path: &str,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<Call, (Service, String, AwsError)> {
    // Account Management speaks restJson1: the operation is the path.
    if path == "/listRegions" {
        return Ok(Call::Json {
            service: Service::Account,
            operation: "ListRegions".to_owned(),
            input: json_input(Service::Account, "ListRegions", body)?,
        });
    }
    if let Some(target) = headers.get("x-amz-target").and_then(|v| v.to_str().ok()) {
        let (service, operation) = if let Some(op) = target.strip_prefix("DynamoDB_20120810.") {
            (Service::DynamoDb, op)
        } else if let Some(op) = target.strip_prefix("TrentService.") {
            (Service::Kms, op)
        } else if let Some(op) = target.strip_prefix("ResourceGroupsTaggingAPI_20170126.") {
            (Service::Tagging, op)
        } else if let Some(op) = target.strip_prefix("AWSOrganizationsV20161128.") {
            (Service::Organizations, op)
        } else {
            return Err((
                Service::DynamoDb,
                target.to_owned(),
                AwsError::new(
                    400,
                    "UnknownOperationException",
                    format!("Unknown target {target}"),
                ),
            ));
        };
        let input = json_input(service, operation, body)?;
        return Ok(Call::Json {
            service,
            operation: operation.to_owned(),
            input,
        });
    }
    let params: Vec<(String, String)> = form_urlencoded::parse(body).into_owned().collect();
    match params.iter().find(|(k, _)| k == "Action") {
        Some((_, action)) => Ok(Call::Query {
            service: if crate::aws::sns::ACTIONS.contains(&action.as_str()) {
                Service::Sns
            } else {
                Service::Sts
            },
            action: action.clone(),
            params,
        }),
        None => Err((
            Service::Sts,
            "Unknown".to_owned(),
            AwsError::new(400, "MissingAction", "Missing Action"),
        )),
    }
}

async fn aws_request(
    State(shared): State<Arc<Shared>>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    // The log's time is when the call arrived, as AWS counts calls against a rate: not when this busy process got
    // round to answering it (a starved emulator would otherwise log calls sent apart as one burst).
    let received = shared.world.clock.now();
    let call = match parse_call(uri.path(), &headers, &body) {
        Ok(call) => call,
        Err((service, operation, error)) => return error_for(service, &operation, error),
    };
    let (service, operation) = match &call {
        Call::Json {
            service, operation, ..
        } => (*service, operation.clone()),
        Call::Query {
            service, action, ..
        } => (*service, action.clone()),
    };
    let signed = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(sigv4::parse_authorization);
    let Some(signed) = signed else {
        return error_for(
            service,
            &operation,
            AwsError::new(
                400,
                "MissingAuthenticationTokenException",
                "Request is missing Authentication Token",
            ),
        );
    };
    let world = &shared.world;
    let settings = world.settings();
    let table = match &call {
        Call::Json {
            service: Service::DynamoDb,
            input,
            ..
        } => dynamodb::table_of(input),
        _ => None,
    };
    let record = |account_id: &str, outcome: &str| {
        shared.log.record(
            Record {
                time: received,
                account_id,
                region: &signed.region,
                service: service.as_str(),
                operation: &operation,
                table: table.clone(),
                outcome,
            },
            settings.request_log_capacity,
        );
    };
    let caller = match world.authenticate(&signed.access_key_id) {
        Ok(caller) => caller,
        Err(error) => {
            record("unknown", error.code);
            return error_for(service, &operation, error);
        }
    };
    let verdict = shared.faults.check(
        service.as_str(),
        &operation,
        &caller.account_id,
        &signed.region,
    );
    if let Some(delay) = verdict.delay {
        tokio::time::sleep(delay).await;
    }
    if let Some(error) = verdict.error {
        record(&caller.account_id, error.code);
        return error_for(service, &operation, error);
    }
    // Regional services refuse a member session where the account cannot use the region.
    if matches!(
        service,
        Service::DynamoDb | Service::Kms | Service::Tagging | Service::Sns
    ) && let Some(account) = world.existing_account(&caller.account_id)
    {
        let action = format!("{}:{operation}", service.as_str());
        let refused = crate::aws::permissions::require_region(
            &crate::world::lock(&account),
            &caller,
            &action,
            &signed.region,
        );
        if let Err(error) = refused {
            record(&caller.account_id, error.code);
            return error_for(service, &operation, error);
        }
    }
    match call {
        Call::Json { service, input, .. } => {
            type Handler = fn(&World, &Caller, &str, &str, &Value) -> Result<Value, AwsError>;
            let handle: Handler = match service {
                Service::DynamoDb => dynamodb::handle,
                Service::Tagging => tagging::handle,
                Service::Organizations => organizations::handle,
                Service::Account => {
                    |world, caller, _, _, input| organizations::list_regions(world, caller, input)
                }
                // STS and SNS speak awsQuery, never JSON: parse_call gives them a Call::Query.
                Service::Kms | Service::Sts | Service::Sns => kms::handle,
            };
            let result = handle(world, &caller, &signed.region, &operation, &input);
            record(
                &caller.account_id,
                result.as_ref().map_or_else(|e| e.code, |_| "ok"),
            );
            json_result(service, result)
        }
        Call::Query {
            service,
            action,
            params,
        } => {
            let result = match service {
                Service::Sns => crate::aws::sns::handle(
                    &shared.topics,
                    &caller,
                    &signed.region,
                    received,
                    &action,
                    &params,
                ),
                _ => sts::handle(world, &caller, &action, &params),
            };
            record(
                &caller.account_id,
                result.as_ref().map_or_else(|e| e.code, |_| "ok"),
            );
            query_result(service, &action, result)
        }
    }
}
