//! The HTTP API (`/v1/…`, bearer API keys), the carrier's status-callback
//! endpoint (`/twilio/status`, signed), `/metrics` and `/openapi.json`.
//! Handlers parse and validate input, then call the store or the engine:
//! the rules live in [`crate::campaign`], [`crate::store`] and
//! [`crate::dialer`]. A CSV upload streams: rows are read from the request
//! body as it arrives and written in batches, so memory does not grow with
//! the file.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use chrono::{DateTime, Utc};
use futures_util::TryStreamExt;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::campaign::{CampaignSpec, CampaignState, FieldError, errors_line, phone};
use crate::carrier::twilio::signature;
use crate::engine::Engine;
use crate::store::{CallRow, CallStatus, NewCall, Store, StoreError};

/// Counters for `/metrics`.
#[derive(Default)]
pub struct Metrics {
    api_requests: AtomicU64,
    api_unauthorized: AtomicU64,
    calls_enqueued: AtomicU64,
    calls_rejected: AtomicU64,
    status_callbacks: AtomicU64,
    status_callbacks_refused: AtomicU64,
}

/// What the API needs.
pub struct ApiState {
    /// The engine (and through it the store).
    pub engine: Arc<Engine>,
    /// Carrier auth tokens status callbacks may be signed with; empty
    /// disables the check (the sim in a demo).
    pub carrier_tokens: Vec<String>,
    /// The public base URL (as the carrier sees it), to check signatures.
    pub public_url: String,
    /// Counters.
    pub metrics: Metrics,
}

impl ApiState {
    fn store(&self) -> &Store {
        self.engine.store()
    }
}

/// An API error: status, a code and field errors.
struct ApiError(StatusCode, Value);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, axum::Json(self.1)).into_response()
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(what) => not_found(&what),
            e => {
                tracing::error!(error = %e, "store error");
                ApiError(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    json!({"error": "internal", "message": "the database failed; see the server log"}),
                )
            }
        }
    }
}

fn not_found(what: &str) -> ApiError {
    ApiError(
        StatusCode::NOT_FOUND,
        json!({"error": "not_found", "message": format!("{what} not found")}),
    )
}

fn invalid(errors: Vec<FieldError>) -> ApiError {
    ApiError(
        StatusCode::UNPROCESSABLE_ENTITY,
        json!({"error": "validation_failed", "errors": errors}),
    )
}

fn bad_json(e: impl std::fmt::Display) -> ApiError {
    invalid(vec![FieldError {
        field: "body".into(),
        message: e.to_string(),
    }])
}

fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}

fn rfc3339(ms: Option<i64>) -> Value {
    ms.and_then(DateTime::<Utc>::from_timestamp_millis)
        .map_or(Value::Null, |t| {
            Value::String(t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        })
}

/// The public view of an attempt.
pub fn call_json(c: &CallRow) -> Value {
    json!({
        "call_queue_id": c.id,
        "first_attempt_id": c.root_id,
        "attempt": c.attempt,
        "retry_of": c.retry_of,
        "campaign_id": c.campaign_id,
        "status": c.status.as_str(),
        "recipient_number": c.to_number,
        "calling_number_id": c.caller_number_id,
        "calling_number": c.caller_number,
        "calling_number_provider": c.provider,
        "provider_call_id": c.provider_call_id,
        "dynamic_variables": c.variables,
        "metadata": c.metadata,
        "created_at": rfc3339(Some(c.created_at)),
        "enqueued_at": rfc3339(c.enqueued_at),
        "processing_started_at": rfc3339(c.processing_started_at),
        "completed_at": rfc3339(c.completed_at),
        "scheduled_for_date_time": rfc3339(c.scheduled_for),
        "next_attempt_at": rfc3339(Some(c.next_attempt_at)),
        "expires_at": rfc3339(c.expires_at),
        "initiation_error": c.initiation_error,
        "answered_by": c.answered_by,
        "amd_decision_ms": c.amd_decision_ms,
        "conversation": {
            "conversation_id": c.conversation_id,
            "start_time": rfc3339(c.conversation_start),
            "end_time": rfc3339(c.conversation_end),
            "end_type": c.end_type,
            "turns": c.turns.clone().unwrap_or(Value::Array(vec![])),
        },
    })
}

fn campaign_json(c: &crate::store::CampaignRow) -> Value {
    json!({
        "id": c.id,
        "state": c.state.as_str(),
        "created_at": rfc3339(Some(c.created_at)),
        "updated_at": rfc3339(Some(c.updated_at)),
        "config": c.spec,
    })
}

/// The full router: API, status callbacks, metrics and OpenAPI. Merge it
/// with [`crate::server::router`] for the media endpoints.
pub fn router(state: Arc<ApiState>) -> Router {
    let v1 = Router::new()
        .route("/v1/campaigns", post(create_campaign).get(list_campaigns))
        .route("/v1/campaigns/{id}", get(get_campaign).put(update_campaign))
        .route("/v1/campaigns/{id}/pause", post(pause))
        .route("/v1/campaigns/{id}/resume", post(resume))
        .route("/v1/campaigns/{id}/cancel", post(cancel))
        .route(
            "/v1/campaigns/{id}/uploads",
            post(upload).layer(DefaultBodyLimit::disable()),
        )
        .route("/v1/campaigns/{id}/stats", get(stats))
        .route("/v1/calls", post(create_call).get(list_calls))
        .route("/v1/calls/{id}", get(get_call))
        .route("/v1/tools", post(create_tool).get(list_tools))
        .route("/v1/analysis-templates", post(create_template))
        .route("/v1/events", get(list_events))
        .route("/v1/events/{id}/replay", post(replay_event))
        .route_layer(middleware::from_fn_with_state(state.clone(), auth));
    Router::new()
        .merge(v1)
        .route("/twilio/status", post(status_callback))
        .route("/metrics", get(metrics))
        .route("/openapi.json", get(|| async { axum::Json(openapi()) }))
        .with_state(state)
}

async fn auth(State(st): State<Arc<ApiState>>, req: Request, next: Next) -> Response {
    st.metrics.api_requests.fetch_add(1, Ordering::Relaxed);
    let key = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let ok = match key {
        Some(k) => st.store().check_api_key(k).unwrap_or(false),
        None => false,
    };
    if !ok {
        st.metrics.api_unauthorized.fetch_add(1, Ordering::Relaxed);
        return ApiError(
            StatusCode::UNAUTHORIZED,
            json!({"error": "unauthorized", "message": "send `Authorization: Bearer <api key>` (create one with `dialgate apikey create`)"}),
        )
        .into_response();
    }
    next.run(req).await
}

fn parse_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(bad_json)
}

async fn create_campaign(
    State(st): State<Arc<ApiState>>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let mut spec: CampaignSpec = parse_body(&body)?;
    spec.validate().map_err(invalid)?;
    check_references(st.store(), &spec).map_err(invalid)?;
    let id = st.store().insert_campaign(&spec, now_ms())?;
    let row = st
        .store()
        .campaign(&id)?
        .ok_or_else(|| not_found("campaign"))?;
    Ok((StatusCode::CREATED, axum::Json(campaign_json(&row))).into_response())
}

async fn list_campaigns(State(st): State<Arc<ApiState>>) -> Result<Response, ApiError> {
    let list: Vec<Value> = st.store().campaigns()?.iter().map(campaign_json).collect();
    Ok(axum::Json(json!({"campaigns": list})).into_response())
}

async fn get_campaign(
    State(st): State<Arc<ApiState>>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let row = st
        .store()
        .campaign(&id)?
        .ok_or_else(|| not_found("campaign"))?;
    Ok(axum::Json(campaign_json(&row)).into_response())
}

async fn update_campaign(
    State(st): State<Arc<ApiState>>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let mut spec: CampaignSpec = parse_body(&body)?;
    spec.validate().map_err(invalid)?;
    check_references(st.store(), &spec).map_err(invalid)?;
    st.store().update_campaign(&id, &spec, now_ms())?;
    st.engine.wake();
    get_campaign(State(st), Path(id)).await
}

async fn set_state(
    st: Arc<ApiState>,
    id: String,
    state: CampaignState,
) -> Result<Response, ApiError> {
    let canceled = st.store().set_campaign_state(&id, state, now_ms())?;
    st.engine.wake();
    let row = st
        .store()
        .campaign(&id)?
        .ok_or_else(|| not_found("campaign"))?;
    let mut v = campaign_json(&row);
    v["canceled_attempts"] = json!(canceled.len());
    Ok(axum::Json(v).into_response())
}

async fn pause(
    State(st): State<Arc<ApiState>>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    set_state(st, id, CampaignState::Paused).await
}
async fn resume(
    State(st): State<Arc<ApiState>>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    set_state(st, id, CampaignState::Active).await
}
async fn cancel(
    State(st): State<Arc<ApiState>>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    set_state(st, id, CampaignState::Canceled).await
}

async fn stats(
    State(st): State<Arc<ApiState>>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let row = st
        .store()
        .campaign(&id)?
        .ok_or_else(|| not_found("campaign"))?;
    let (by_status, by_amd) = st.store().stats(&id)?;
    let s: Map<String, Value> = by_status.into_iter().map(|(k, v)| (k, json!(v))).collect();
    let a: Map<String, Value> = by_amd.into_iter().map(|(k, v)| (k, json!(v))).collect();
    Ok(axum::Json(json!({"campaign_id": id, "state": row.state.as_str(), "by_status": s, "by_answered_by": a})).into_response())
}

/// `POST /v1/calls`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CallRequest {
    campaign_id: String,
    to: String,
    #[serde(default, alias = "dynamic_variables")]
    variables: Map<String, Value>,
    #[serde(default)]
    metadata: Map<String, Value>,
    #[serde(default)]
    scheduled_for: Option<DateTime<Utc>>,
    #[serde(default)]
    expires_at: Option<DateTime<Utc>>,
    #[serde(default)]
    idempotency_key: Option<String>,
}

/// Checks one call against its campaign: the same rules for the API and
/// for every CSV row.
#[allow(clippy::too_many_arguments)]
pub fn prepare_call(
    spec: &CampaignSpec,
    campaign_id: &str,
    to: &str,
    variables: &Map<String, Value>,
    metadata: &Map<String, Value>,
    scheduled_for: Option<i64>,
    expires_at: Option<i64>,
    idempotency_key: Option<String>,
) -> Result<NewCall, Vec<FieldError>> {
    let mut errs = Vec::new();
    let to = match phone::normalize(to, spec.default_region.as_deref()) {
        Ok(n) => Some(n),
        Err(e) => {
            errs.push(FieldError {
                field: "to".into(),
                message: e.to_string(),
            });
            None
        }
    };
    let inputs = spec.check_inputs(variables, metadata);
    if let Err(e) = &inputs {
        errs.extend(e.iter().cloned());
    }
    if let (Some(s), Some(e)) = (scheduled_for, expires_at)
        && e <= s
    {
        errs.push(FieldError {
            field: "expires_at".into(),
            message: "must be after scheduled_for".into(),
        });
    }
    match (to, inputs) {
        (Some(to), Ok((variables, metadata))) if errs.is_empty() => Ok(NewCall {
            campaign_id: campaign_id.to_string(),
            suppressed: spec.do_not_call.contains(&to),
            to_number: to,
            variables,
            metadata,
            scheduled_for,
            expires_at,
            idempotency_key,
        }),
        _ => Err(errs),
    }
}

async fn create_call(
    State(st): State<Arc<ApiState>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let req: CallRequest = parse_body(&body)?;
    let camp = st.store().campaign(&req.campaign_id)?.ok_or_else(|| {
        invalid(vec![FieldError {
            field: "campaign_id".into(),
            message: "no such campaign".into(),
        }])
    })?;
    if camp.state == CampaignState::Canceled {
        return Err(ApiError(
            StatusCode::CONFLICT,
            json!({"error": "campaign_canceled", "message": "the campaign is canceled"}),
        ));
    }
    let key = req.idempotency_key.clone().or_else(|| {
        headers
            .get("idempotency-key")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    });
    let new = prepare_call(
        &camp.spec,
        &camp.id,
        &req.to,
        &req.variables,
        &req.metadata,
        req.scheduled_for.map(|t| t.timestamp_millis()),
        req.expires_at.map(|t| t.timestamp_millis()),
        key,
    )
    .map_err(|e| {
        st.metrics.calls_rejected.fetch_add(1, Ordering::Relaxed);
        invalid(e)
    })?;
    let (row, created) = st.store().insert_call(&new, now_ms())?;
    if created {
        st.metrics.calls_enqueued.fetch_add(1, Ordering::Relaxed);
        st.engine.wake();
    }
    let code = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((code, axum::Json(json!({"call_queue_id": row.id, "status": row.status.as_str(), "call": call_json(&row)}))).into_response())
}

async fn get_call(
    State(st): State<Arc<ApiState>>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let row = st.store().call(&id)?.ok_or_else(|| not_found("call"))?;
    let attempts: Vec<Value> = st
        .store()
        .attempts(&row.root_id)?
        .iter()
        .map(|a| json!({"call_queue_id": a.id, "attempt": a.attempt, "status": a.status.as_str()}))
        .collect();
    let mut v = call_json(&row);
    v["attempts"] = Value::Array(attempts);
    let (status, result, error) = st.store().analysis(&id)?;
    v["analysis"] = json!({"status": status, "result": result, "error": error});
    let events: Vec<Value> = st
        .store()
        .outbox(None, Some(&id), 100)?
        .iter()
        .map(|e| json!({"id": e.id, "kind": e.kind, "state": e.state, "attempts": e.attempts, "last_error": e.last_error}))
        .collect();
    v["events"] = Value::Array(events);
    Ok(axum::Json(v).into_response())
}

#[derive(Deserialize)]
struct ListQuery {
    campaign_id: Option<String>,
    status: Option<String>,
    after: Option<String>,
    limit: Option<usize>,
}

async fn list_calls(
    State(st): State<Arc<ApiState>>,
    Query(q): Query<ListQuery>,
) -> Result<Response, ApiError> {
    let status = match q.status.as_deref() {
        Some(s) => Some(CallStatus::parse(s).ok_or_else(|| {
            invalid(vec![FieldError {
                field: "status".into(),
                message: format!("unknown status `{s}`"),
            }])
        })?),
        None => None,
    };
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    let rows = st
        .store()
        .calls(q.campaign_id.as_deref(), status, q.after.as_deref(), limit)?;
    let next = (rows.len() == limit)
        .then(|| rows.last().map(|r| r.id.clone()))
        .flatten();
    let calls: Vec<Value> = rows.iter().map(call_json).collect();
    Ok(axum::Json(json!({"calls": calls, "next_after": next})).into_response())
}

/// Checks what a campaign refers to: each action's tool exists, its
/// mapping fills the tool's input schema (known fields, required ones
/// present) from variables the event has; the analysis template exists.
fn check_references(store: &Store, spec: &CampaignSpec) -> Result<(), Vec<FieldError>> {
    use crate::events::{EventKind, template_vars};
    let mut errs = Vec::new();
    let a = &spec.actions;
    for (kind, action) in [
        (EventKind::InitiationFailure, &a.call_initiation_failure),
        (EventKind::Initiated, &a.call_initiated),
        (EventKind::Declined, &a.call_declined),
        (EventKind::Missed, &a.call_missed),
        (EventKind::Answered, &a.call_answered),
        (EventKind::Ended, &a.call_ended),
    ] {
        let Some(action) = action else { continue };
        let f = format!("actions.{}", kind.as_str());
        let tool = match store.tool(&action.tool_id) {
            Ok(Some((t, _))) => t,
            Ok(None) => {
                errs.push(FieldError {
                    field: format!("{f}.tool_id"),
                    message: "no such tool".into(),
                });
                continue;
            }
            Err(e) => {
                errs.push(FieldError {
                    field: format!("{f}.tool_id"),
                    message: e.to_string(),
                });
                continue;
            }
        };
        let vars = kind.variables();
        let schema = &tool["input_schema"];
        let props = schema.get("properties").and_then(Value::as_object);
        if action.mapping.is_empty() {
            // The whole event is sent: the schema's required fields must be
            // among the event's variables.
            for r in schema
                .get("required")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
            {
                if !vars.contains(&r) {
                    errs.push(FieldError {
                        field: format!("{f}.mapping"),
                        message: format!(
                            "the tool requires `{r}`, which {} does not have; map it",
                            kind.title()
                        ),
                    });
                }
            }
        }
        for (field, tpl) in &action.mapping {
            if let Some(p) = props
                && !p.contains_key(field)
            {
                errs.push(FieldError {
                    field: format!("{f}.mapping.{field}"),
                    message: "not in the tool's input schema".into(),
                });
            }
            for v in template_vars(tpl) {
                if !vars.contains(&v.as_str()) {
                    errs.push(FieldError {
                        field: format!("{f}.mapping.{field}"),
                        message: format!("{} has no variable `{v}`", kind.title()),
                    });
                }
            }
        }
        if !action.mapping.is_empty() {
            for r in schema
                .get("required")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
            {
                if !action.mapping.contains_key(r) {
                    errs.push(FieldError {
                        field: format!("{f}.mapping"),
                        message: format!("the tool requires `{r}`"),
                    });
                }
            }
        }
    }
    if let Some(t) = &spec.post_analysis_template
        && !matches!(store.template(t), Ok(Some(_)))
    {
        errs.push(FieldError {
            field: "post_analysis_template".into(),
            message: "no such analysis template".into(),
        });
    }
    if errs.is_empty() { Ok(()) } else { Err(errs) }
}

async fn create_tool(
    State(st): State<Arc<ApiState>>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let v: Value = parse_body(&body)?;
    let mut errs = Vec::new();
    let name = v["name"].as_str().unwrap_or("").trim().to_string();
    if name.is_empty() {
        errs.push(FieldError {
            field: "name".into(),
            message: "required".into(),
        });
    }
    let method = v["method"].as_str().unwrap_or("POST").to_ascii_uppercase();
    if !matches!(method.as_str(), "POST" | "PUT" | "PATCH") {
        errs.push(FieldError {
            field: "method".into(),
            message: "must be POST, PUT or PATCH".into(),
        });
    }
    let url = v["url"].as_str().unwrap_or("");
    if !matches!(
        reqwest::Url::parse(url)
            .map(|u| u.scheme().to_string())
            .as_deref(),
        Ok("http" | "https")
    ) {
        errs.push(FieldError {
            field: "url".into(),
            message: "must be an http(s) URL".into(),
        });
    }
    if !v["headers"].is_null()
        && !v["headers"]
            .as_object()
            .is_some_and(|h| h.values().all(Value::is_string))
    {
        errs.push(FieldError {
            field: "headers".into(),
            message: "must be an object of strings".into(),
        });
    }
    let schema = v
        .get("input_schema")
        .cloned()
        .unwrap_or(json!({"type": "object"}));
    if !schema.is_object() || schema.get("type").is_some_and(|t| t != "object") {
        errs.push(FieldError {
            field: "input_schema".into(),
            message: "must be a JSON schema of type object".into(),
        });
    }
    if !errs.is_empty() {
        return Err(invalid(errs));
    }
    let spec = json!({"name": name, "method": method, "url": url, "headers": v["headers"].as_object().cloned().unwrap_or_default(), "input_schema": schema});
    let secret = format!("whsec_{}", uuid::Uuid::new_v4().simple());
    let id = st.store().insert_tool(&name, &spec, &secret, now_ms())?;
    let mut out = spec;
    out["id"] = json!(id);
    // The signing secret is shown here once; receivers verify with it.
    out["secret"] = json!(secret);
    Ok((StatusCode::CREATED, axum::Json(out)).into_response())
}

async fn list_tools(State(st): State<Arc<ApiState>>) -> Result<Response, ApiError> {
    let tools: Vec<Value> = st
        .store()
        .tools()?
        .into_iter()
        .map(|(id, mut t)| {
            t["id"] = json!(id);
            t
        })
        .collect();
    Ok(axum::Json(json!({"tools": tools})).into_response())
}

async fn create_template(
    State(st): State<Arc<ApiState>>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let v: Value = parse_body(&body)?;
    let mut errs = Vec::new();
    let name = v["name"].as_str().unwrap_or("").trim().to_string();
    if name.is_empty() {
        errs.push(FieldError {
            field: "name".into(),
            message: "required".into(),
        });
    }
    let prompt = v["prompt"].as_str().unwrap_or("");
    if prompt.trim().is_empty() {
        errs.push(FieldError {
            field: "prompt".into(),
            message: "required".into(),
        });
    }
    let known = crate::events::delivery::analysis_context(&Map::new());
    for var in crate::events::template_vars(prompt) {
        if !known.contains_key(&var) {
            errs.push(FieldError {
                field: "prompt".into(),
                message: format!("unknown variable `{{{{{var}}}}}`"),
            });
        }
    }
    let schema = v["output_schema"].clone();
    if schema.get("type").and_then(Value::as_str) != Some("object") {
        errs.push(FieldError {
            field: "output_schema".into(),
            message: "must be a JSON schema of type object".into(),
        });
    }
    if !errs.is_empty() {
        return Err(invalid(errs));
    }
    let spec = json!({"name": name, "prompt": prompt, "output_schema": schema});
    let id = st.store().insert_template(&name, &spec, now_ms())?;
    let mut out = spec;
    out["id"] = json!(id);
    Ok((StatusCode::CREATED, axum::Json(out)).into_response())
}

#[derive(Deserialize)]
struct EventsQuery {
    state: Option<String>,
    call_queue_id: Option<String>,
    limit: Option<usize>,
}

async fn list_events(
    State(st): State<Arc<ApiState>>,
    Query(q): Query<EventsQuery>,
) -> Result<Response, ApiError> {
    let rows = st.store().outbox(
        q.state.as_deref(),
        q.call_queue_id.as_deref(),
        q.limit.unwrap_or(100).clamp(1, 1000),
    )?;
    Ok(axum::Json(json!({"events": rows})).into_response())
}

async fn replay_event(
    State(st): State<Arc<ApiState>>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    if st.store().replay(&id, now_ms())? {
        Ok(axum::Json(json!({"id": id, "state": "pending"})).into_response())
    } else {
        Err(ApiError(
            StatusCode::CONFLICT,
            json!({"error": "not_dead", "message": "only dead-lettered events can be replayed"}),
        ))
    }
}

/// Most rejected rows listed in one upload's answer (the count is exact).
const MAX_REJECTED_LISTED: usize = 10_000;
/// Rows written per transaction.
const BATCH: usize = 1_000;

/// Result of a CSV import.
#[derive(Debug, Default, serde::Serialize)]
pub struct UploadReport {
    /// Rows queued.
    pub accepted: u64,
    /// Rows refused (exact count).
    pub rejected_count: u64,
    /// Refused rows: `row` is the line in the file (the header is line 1).
    pub rejected: Vec<Value>,
    /// Columns the campaign does not know (ignored).
    pub ignored_columns: Vec<String>,
}

/// Imports CSV from any reader, streaming: validated rows are written in
/// batches of `BATCH` (1,000 rows), each a transaction.
pub fn import_csv<R: std::io::Read>(
    store: &Store,
    campaign_id: &str,
    spec: &CampaignSpec,
    reader: R,
) -> Result<UploadReport, String> {
    let mut rdr = csv::ReaderBuilder::new()
        .flexible(false)
        .trim(csv::Trim::All)
        .from_reader(reader);
    let headers = rdr
        .headers()
        .map_err(|e| format!("cannot read the CSV header: {e}"))?
        .clone();
    let col = |name: &str| headers.iter().position(|h| h == name);
    let Some(to_col) = col("to_number").or_else(|| col("to")) else {
        return Err("the CSV needs a `to_number` column".into());
    };
    let var_cols: Vec<(String, usize)> = spec
        .variables
        .iter()
        .filter_map(|v| col(&v.name).map(|i| (v.name.clone(), i)))
        .collect();
    let meta_cols: Vec<(String, usize)> = spec
        .metadata
        .iter()
        .filter_map(|v| col(&v.name).map(|i| (v.name.clone(), i)))
        .collect();
    let dyn_col = col("dynamic_variables");
    let meta_json_col = col("metadata");
    let sched_col = col("scheduled_for");
    let exp_col = col("expires_at");
    let known: Vec<usize> = [Some(to_col), dyn_col, meta_json_col, sched_col, exp_col]
        .into_iter()
        .flatten()
        .chain(var_cols.iter().map(|c| c.1))
        .chain(meta_cols.iter().map(|c| c.1))
        .collect();
    let mut report = UploadReport {
        ignored_columns: headers
            .iter()
            .enumerate()
            .filter(|(i, _)| !known.contains(i))
            .map(|(_, h)| h.to_string())
            .collect(),
        ..UploadReport::default()
    };
    let mut batch = Vec::with_capacity(BATCH);
    let mut record = csv::StringRecord::new();
    loop {
        let line = rdr.position().line() + 1;
        match rdr.read_record(&mut record) {
            Ok(false) => break,
            Ok(true) => {}
            Err(e) => {
                // A malformed row (wrong field count, bad UTF-8) is that
                // row's problem, not the file's.
                let row = e.position().map_or(line, |p| p.line());
                reject(
                    &mut report,
                    row,
                    vec![FieldError {
                        field: "row".into(),
                        message: e.to_string(),
                    }],
                );
                if matches!(e.kind(), csv::ErrorKind::Io(_)) {
                    return Err(format!("reading the upload failed at line {row}: {e}"));
                }
                continue;
            }
        }
        let row = record.position().map_or(line, |p| p.line());
        let mut errs = Vec::new();
        let mut vars = Map::new();
        let mut meta = Map::new();
        for (c, target, name) in [
            (dyn_col, &mut vars, "dynamic_variables"),
            (meta_json_col, &mut meta, "metadata"),
        ] {
            if let Some(i) = c {
                let cell = record.get(i).unwrap_or("");
                if !cell.is_empty() {
                    match serde_json::from_str::<Value>(cell) {
                        Ok(Value::Object(m)) => target.extend(m),
                        _ => errs.push(FieldError {
                            field: name.into(),
                            message: "must be a JSON object".into(),
                        }),
                    }
                }
            }
        }
        for (name, i) in &var_cols {
            vars.insert(
                name.clone(),
                Value::String(record.get(*i).unwrap_or("").to_string()),
            );
        }
        for (name, i) in &meta_cols {
            meta.insert(
                name.clone(),
                Value::String(record.get(*i).unwrap_or("").to_string()),
            );
        }
        let mut time = |c: Option<usize>, field: &str| -> Option<i64> {
            let cell = record.get(c?)?;
            if cell.is_empty() {
                return None;
            }
            match DateTime::parse_from_rfc3339(cell) {
                Ok(t) => Some(t.timestamp_millis()),
                Err(_) => {
                    errs.push(FieldError {
                        field: field.into(),
                        message: format!("`{cell}` is not an RFC 3339 time"),
                    });
                    None
                }
            }
        };
        let sched = time(sched_col, "scheduled_for");
        let exp = time(exp_col, "expires_at");
        let to = record.get(to_col).unwrap_or("");
        match prepare_call(spec, campaign_id, to, &vars, &meta, sched, exp, None) {
            Ok(c) if errs.is_empty() => batch.push(c),
            Ok(_) => reject(&mut report, row, errs),
            Err(e) => {
                errs.extend(e);
                reject(&mut report, row, errs);
            }
        }
        if batch.len() == BATCH {
            store
                .insert_calls(&batch, now_ms())
                .map_err(|e| e.to_string())?;
            report.accepted += batch.len() as u64;
            batch.clear();
        }
    }
    if !batch.is_empty() {
        store
            .insert_calls(&batch, now_ms())
            .map_err(|e| e.to_string())?;
        report.accepted += batch.len() as u64;
    }
    Ok(report)
}

fn reject(report: &mut UploadReport, row: u64, errors: Vec<FieldError>) {
    report.rejected_count += 1;
    if report.rejected.len() < MAX_REJECTED_LISTED {
        report
            .rejected
            .push(json!({"row": row, "reason": errors_line(&errors), "errors": errors}));
    }
}

async fn upload(
    State(st): State<Arc<ApiState>>,
    Path(id): Path<String>,
    body: Body,
) -> Result<Response, ApiError> {
    let camp = st
        .store()
        .campaign(&id)?
        .ok_or_else(|| not_found("campaign"))?;
    if camp.state == CampaignState::Canceled {
        return Err(ApiError(
            StatusCode::CONFLICT,
            json!({"error": "campaign_canceled"}),
        ));
    }
    let stream = body.into_data_stream().map_err(std::io::Error::other);
    let reader = tokio_util::io::SyncIoBridge::new(tokio_util::io::StreamReader::new(stream));
    let store = st.store().clone();
    let res = tokio::task::spawn_blocking(move || import_csv(&store, &camp.id, &camp.spec, reader))
        .await
        .map_err(|e| {
            ApiError(
                StatusCode::INTERNAL_SERVER_ERROR,
                json!({"error": e.to_string()}),
            )
        })?;
    match res {
        Ok(r) => {
            st.metrics
                .calls_enqueued
                .fetch_add(r.accepted, Ordering::Relaxed);
            st.metrics
                .calls_rejected
                .fetch_add(r.rejected_count, Ordering::Relaxed);
            st.engine.wake();
            Ok(axum::Json(r).into_response())
        }
        Err(m) => Err(ApiError(
            StatusCode::BAD_REQUEST,
            json!({"error": "bad_csv", "message": m}),
        )),
    }
}

#[derive(Deserialize)]
struct StatusQuery {
    cq: Option<String>,
}

async fn status_callback(
    State(st): State<Arc<ApiState>>,
    Query(q): Query<StatusQuery>,
    headers: HeaderMap,
    uri: axum::http::Uri,
    body: axum::body::Bytes,
) -> Response {
    st.metrics.status_callbacks.fetch_add(1, Ordering::Relaxed);
    let Ok(form) = serde_urlencoded::from_bytes::<Vec<(String, String)>>(&body) else {
        return (StatusCode::BAD_REQUEST, "not a form body").into_response();
    };
    if !st.carrier_tokens.is_empty() {
        let url = format!(
            "{}{}",
            st.public_url.trim_end_matches('/'),
            uri.path_and_query()
                .map_or("/twilio/status", |p| p.as_str())
        );
        let pairs: Vec<(&str, &str)> = form.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let sig = headers
            .get("x-twilio-signature")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if !st
            .carrier_tokens
            .iter()
            .any(|t| signature::verify(t, &url, &pairs, sig))
        {
            st.metrics
                .status_callbacks_refused
                .fetch_add(1, Ordering::Relaxed);
            tracing::warn!("refused a status callback with a bad X-Twilio-Signature");
            return (StatusCode::FORBIDDEN, "bad signature").into_response();
        }
    }
    let get: HashMap<&str, &str> = form.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let (Some(sid), Some(status)) = (get.get("CallSid"), get.get("CallStatus")) else {
        return (
            StatusCode::BAD_REQUEST,
            "CallSid and CallStatus are required",
        )
            .into_response();
    };
    let sip = get.get("SipResponseCode").and_then(|c| c.parse().ok());
    let id = match q.cq {
        Some(id) => id,
        None => match st.store().call_by_provider_id(sid) {
            Ok(Some(c)) => c.id,
            _ => return (StatusCode::NOT_FOUND, "unknown call").into_response(),
        },
    };
    match st.engine.on_status(&id, sid, status, sip) {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(StoreError::NotFound(_)) => (StatusCode::NOT_FOUND, "unknown call").into_response(),
        // 5xx: the carrier retries.
        Err(e) => {
            tracing::error!(error = %e, "cannot apply a status callback");
            StatusCode::SERVICE_UNAVAILABLE.into_response()
        }
    }
}

async fn metrics(State(st): State<Arc<ApiState>>) -> Response {
    let m = &st.metrics;
    let mut out = String::new();
    let counters: [(&str, &str, &AtomicU64); 6] = [
        (
            "dialgate_api_requests_total",
            "Authenticated API requests.",
            &m.api_requests,
        ),
        (
            "dialgate_api_unauthorized_total",
            "API requests refused for a missing or bad key.",
            &m.api_unauthorized,
        ),
        (
            "dialgate_calls_enqueued_total",
            "Calls queued through the API or CSV.",
            &m.calls_enqueued,
        ),
        (
            "dialgate_calls_rejected_total",
            "Calls or CSV rows refused by validation.",
            &m.calls_rejected,
        ),
        (
            "dialgate_status_callbacks_total",
            "Carrier status callbacks received.",
            &m.status_callbacks,
        ),
        (
            "dialgate_status_callbacks_refused_total",
            "Status callbacks with a bad signature.",
            &m.status_callbacks_refused,
        ),
    ];
    for (name, help, v) in counters {
        let v = v.load(Ordering::Relaxed);
        out.push_str(&format!(
            "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}\n"
        ));
    }
    out.push_str("# HELP dialgate_calls Call attempts by status.\n# TYPE dialgate_calls gauge\n");
    if let Ok(counts) = st.store().status_counts() {
        for (s, n) in counts {
            out.push_str(&format!("dialgate_calls{{status=\"{s}\"}} {n}\n"));
        }
    }
    ([("content-type", "text/plain; version=0.0.4")], out).into_response()
}

/// The OpenAPI document.
pub fn openapi() -> Value {
    let ok = |d: &str| json!({"description": d});
    let err = json!({"description": "validation failed: {error, errors:[{field, message}]}"});
    json!({
        "openapi": "3.1.0",
        "info": {"title": "dialgate", "version": env!("CARGO_PKG_VERSION"),
                 "description": "Outbound call campaigns for AI voice agents."},
        "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
        "security": [{"bearer": []}],
        "paths": {
            "/v1/campaigns": {
                "post": {"summary": "Create a campaign", "requestBody": {"content": {"application/json": {}}},
                          "responses": {"201": ok("the campaign"), "422": err}},
                "get": {"summary": "List campaigns", "responses": {"200": ok("campaigns")}}
            },
            "/v1/campaigns/{id}": {
                "get": {"summary": "A campaign", "responses": {"200": ok("the campaign"), "404": ok("not found")}},
                "put": {"summary": "Replace a campaign's configuration (applies to attempts not yet dialled)",
                         "responses": {"200": ok("the campaign"), "422": err}}
            },
            "/v1/campaigns/{id}/pause": {"post": {"summary": "Stop new dials", "responses": {"200": ok("the campaign")}}},
            "/v1/campaigns/{id}/resume": {"post": {"summary": "Resume dialling", "responses": {"200": ok("the campaign")}}},
            "/v1/campaigns/{id}/cancel": {"post": {"summary": "Cancel; queued attempts are canceled", "responses": {"200": ok("the campaign")}}},
            "/v1/campaigns/{id}/uploads": {"post": {"summary": "Bulk launch from CSV (to_number + one column per variable/metadata key)",
                "requestBody": {"content": {"text/csv": {}}},
                "responses": {"200": ok("{accepted, rejected_count, rejected:[{row, reason, errors}], ignored_columns}"), "400": ok("not a CSV")}}},
            "/v1/campaigns/{id}/stats": {"get": {"summary": "Counts by status and AMD outcome", "responses": {"200": ok("stats")}}},
            "/v1/calls": {
                "post": {"summary": "Launch one call", "parameters": [{"name": "Idempotency-Key", "in": "header", "required": false}],
                          "responses": {"201": ok("{call_queue_id, status}"), "200": ok("idempotent replay"), "422": err}},
                "get": {"summary": "List calls", "parameters": [
                    {"name": "campaign_id", "in": "query"}, {"name": "status", "in": "query"},
                    {"name": "after", "in": "query"}, {"name": "limit", "in": "query"}],
                    "responses": {"200": ok("{calls, next_after}")}}
            },
            "/v1/calls/{id}": {"get": {"summary": "One attempt with status, timestamps, AMD and conversation", "responses": {"200": ok("the call")}}},
            "/twilio/status": {"post": {"summary": "Carrier status callback (X-Twilio-Signature)", "security": [], "responses": {"204": ok("applied")}}},
            "/twilio/stream": {"get": {"summary": "Twilio Media Streams WebSocket", "security": []}},
            "/metrics": {"get": {"summary": "Prometheus metrics", "security": []}},
            "/healthz": {"get": {"summary": "Liveness", "security": []}}
        }
    })
}
