//! The admin API under `/_emulator/`: load or reset the fleet, change settings, inject faults, advance the clock,
//! read counters and the request log. JSON in and out, except fleet files (YAML).

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::faults::FaultRule;
use crate::fleet_file::{FleetSpec, Settings};
use crate::request_log;
use crate::server::Shared;
use crate::world::tables::duration_from_secs;

type AppState = State<Arc<Shared>>;

pub fn router() -> Router<Arc<Shared>> {
    Router::new()
        .route("/health", get(|| async { "ok" }))
        .route("/fleet", get(fleet_summary).put(load_fleet))
        .route("/reset", post(reset))
        .route("/settings", get(get_settings).put(put_settings))
        .route("/clock", get(clock))
        .route("/clock/advance", post(advance_clock))
        .route(
            "/faults",
            get(list_faults).post(add_fault).delete(clear_faults),
        )
        .route("/faults/{id}", delete(remove_fault))
        .route("/counters", get(counters))
        .route(
            "/tables/{account_id}/{region}/{table}",
            axum::routing::put(put_table),
        )
        .route("/requests", get(requests).delete(clear_requests))
        .route("/sns/messages", get(sns_messages))
}

fn bad_request(message: String) -> Response {
    (StatusCode::BAD_REQUEST, Json(json!({"error": message}))).into_response()
}

/// What the admin API may set on one table.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TablePatch {
    /// `ARCHIVING`, `ARCHIVED`, or null to restore.
    archival: Option<String>,
}

/// Sets a table's archival state (what AWS does to a table inaccessible for 7 days), so the engine's handling of
/// archived tables can be tested.
async fn put_table(
    State(shared): AppState,
    Path((account_id, region, table)): Path<(String, String, String)>,
    Json(patch): Json<TablePatch>,
) -> Response {
    if let Some(state) = &patch.archival
        && !matches!(state.as_str(), "ARCHIVING" | "ARCHIVED")
    {
        return bad_request(format!(
            "archival must be ARCHIVING, ARCHIVED or null, not {state}"
        ));
    }
    let account = shared.world.account(&account_id);
    let mut account = crate::world::lock(&account);
    let Some(found) = account
        .regions
        .get_mut(&region)
        .and_then(|r| r.tables.get_mut(&table))
    else {
        return (
            StatusCode::NOT_FOUND,
            Json(json!({"error": format!("no table {table} in {account_id}/{region}")})),
        )
            .into_response();
    };
    found.archival = patch.archival;
    Json(json!({"archival": found.archival})).into_response()
}

async fn fleet_summary(State(shared): AppState) -> Json<Value> {
    Json(shared.world.summary())
}

/// Replaces the fleet with the YAML in the body; faults, log and clock are kept.
async fn load_fleet(State(shared): AppState, body: String) -> Response {
    let spec = match FleetSpec::from_yaml(&body) {
        Ok(spec) => spec,
        Err(e) => return bad_request(format!("{e:#}")),
    };
    if let Err(e) = shared.world.load(&spec) {
        return bad_request(format!("{e:#}"));
    }
    *shared
        .fleet
        .write()
        .unwrap_or_else(std::sync::PoisonError::into_inner) = spec;
    Json(shared.world.summary()).into_response()
}

/// Back to the fleet as last loaded, with no faults and an empty log.
async fn reset(State(shared): AppState) -> Response {
    let spec = shared
        .fleet
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    if let Err(e) = shared.world.load(&spec) {
        return bad_request(format!("{e:#}"));
    }
    shared.faults.clear();
    shared.log.clear();
    shared.topics.clear();
    Json(shared.world.summary()).into_response()
}

async fn get_settings(State(shared): AppState) -> Json<Settings> {
    Json(shared.world.settings())
}

async fn put_settings(State(shared): AppState, Json(settings): Json<Settings>) -> Json<Settings> {
    shared.world.set_settings(settings);
    Json(shared.world.settings())
}

async fn clock(State(shared): AppState) -> Json<Value> {
    Json(json!({
        "now": shared.world.clock.now().to_rfc3339(),
        "offset_seconds": shared.world.clock.offset().num_milliseconds() as f64 / 1000.0,
    }))
}

#[derive(Deserialize)]
struct Advance {
    seconds: f64,
}

async fn advance_clock(State(shared): AppState, Json(advance): Json<Advance>) -> Response {
    if !(advance.seconds.is_finite() && advance.seconds >= 0.0) {
        return bad_request("seconds must be a non-negative number".to_owned());
    }
    shared
        .world
        .clock
        .advance(duration_from_secs(advance.seconds));
    clock(State(shared)).await.into_response()
}

async fn list_faults(State(shared): AppState) -> Json<Value> {
    let faults: Vec<Value> = shared
        .faults
        .list()
        .into_iter()
        .map(|(id, rule)| json!({"id": id, "rule": rule}))
        .collect();
    Json(json!({"faults": faults}))
}

async fn add_fault(State(shared): AppState, Json(rule): Json<FaultRule>) -> Json<Value> {
    Json(json!({"id": shared.faults.add(rule)}))
}

async fn clear_faults(State(shared): AppState) -> StatusCode {
    shared.faults.clear();
    StatusCode::NO_CONTENT
}

async fn remove_fault(State(shared): AppState, Path(id): Path<u64>) -> StatusCode {
    if shared.faults.remove(id) {
        StatusCode::NO_CONTENT
    } else {
        StatusCode::NOT_FOUND
    }
}

async fn counters(State(shared): AppState) -> Json<Value> {
    Json(json!(shared.log.counters()))
}

async fn requests(State(shared): AppState, Query(query): Query<request_log::Query>) -> Json<Value> {
    Json(json!({"requests": shared.log.query(&query)}))
}

/// What subscribers of the emulator's SNS topics would have received, oldest first.
async fn sns_messages(State(shared): AppState) -> Json<Value> {
    Json(json!({"messages": shared.topics.published()}))
}

async fn clear_requests(State(shared): AppState) -> StatusCode {
    shared.log.clear();
    StatusCode::NO_CONTENT
}
