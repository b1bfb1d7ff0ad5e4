//! Delivery of the outbox: each lifecycle event goes to the custom tool its
//! campaign's action names, at least once, in order per call; the
//! post-analysis job runs the campaign's template through an
//! OpenAI-compatible chat-completions API. Off the call path: a slow or
//! dead endpoint holds at most [`DeliveryConfig::max_per_host`] requests
//! and never a call or another host's events.
//!
//! Every request carries `Idempotency-Key: <event id>` (the same on every
//! retry), `X-Dialgate-Event`, and `X-Dialgate-Signature:
//! t=<unix seconds>,v1=<hex HMAC-SHA256(tool secret, "<t>.<body>")>`.
//! Failures back off exponentially with jitter; after `max_attempts` the
//! event is dead-lettered (listed and replayed through the API). A 4xx
//! other than 408/429 is the receiver saying no: dead at once.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hmac::{Hmac, Mac};
use serde_json::{Map, Value, json};
use sha2::Sha256;

use crate::campaign::ActionSpec;
use crate::detect::llm::LlmConfig;
use crate::events::{EventKind, render};
use crate::store::{OutboxRow, Store};

/// Delivery settings.
#[derive(Debug, Clone)]
pub struct DeliveryConfig {
    /// First retry delay.
    pub base_backoff: Duration,
    /// Longest retry delay.
    pub max_backoff: Duration,
    /// Attempts before dead-lettering.
    pub max_attempts: u32,
    /// Per-request time-out.
    pub timeout: Duration,
    /// Requests in flight at once.
    pub max_in_flight: usize,
    /// Requests in flight to one host.
    pub max_per_host: usize,
    /// How often to look for due rows.
    pub poll: Duration,
    /// The chat-completions API for post-call analysis.
    pub llm: Option<LlmConfig>,
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        Self {
            base_backoff: Duration::from_secs(2),
            max_backoff: Duration::from_secs(600),
            max_attempts: 10,
            timeout: Duration::from_secs(10),
            max_in_flight: 64,
            max_per_host: 8,
            poll: Duration::from_millis(200),
            llm: None,
        }
    }
}

/// HMAC-SHA256 over `"<t>.<body>"`.
fn mac(secret: &str, t: i64, body: &[u8]) -> Hmac<Sha256> {
    // HMAC takes keys of any length.
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap_or_else(|_| unreachable!());
    mac.update(t.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

/// The signature header value for `body` at unix time `t`.
pub fn sign(secret: &str, t: i64, body: &[u8]) -> String {
    format!(
        "t={t},v1={}",
        hex::encode(mac(secret, t, body).finalize().into_bytes())
    )
}

/// Checks a signature header (for receivers, and the tests).
pub fn verify(secret: &str, header: &str, body: &[u8]) -> bool {
    let mut t = None;
    let mut v1 = None;
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", x)) => t = x.parse::<i64>().ok(),
            Some(("v1", x)) => v1 = hex::decode(x).ok(),
            _ => {}
        }
    }
    let (Some(t), Some(v1)) = (t, v1) else {
        return false;
    };
    mac(secret, t, body).verify_slice(&v1).is_ok()
}

/// Delay before attempt `n + 1` after `n` failures, with jitter in
/// [50 %, 100 %] so a recovering endpoint is not hit in lock-step.
pub fn backoff(cfg: &DeliveryConfig, failures: u32, jitter: f64) -> Duration {
    let exp = cfg.base_backoff.as_secs_f64() * 2f64.powi(failures.saturating_sub(1).min(30) as i32);
    let capped = exp.min(cfg.max_backoff.as_secs_f64());
    Duration::from_secs_f64(capped * (0.5 + 0.5 * jitter.clamp(0.0, 1.0)))
}

fn jitter() -> f64 {
    (uuid::Uuid::new_v4().as_u128() & 0xFFFF_FFFF) as f64 / u32::MAX as f64
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

enum Outcome {
    Delivered,
    Retry(String),
    Dead(String),
    NoAction,
}

struct Shared {
    store: Store,
    cfg: DeliveryConfig,
    http: reqwest::Client,
    busy: Mutex<HashSet<String>>,
    hosts: Mutex<HashMap<String, usize>>,
    /// A request finished: its slot is free, look again now.
    freed: tokio::sync::Notify,
}

/// Runs delivery until the process ends.
pub async fn run(store: Store, cfg: DeliveryConfig) {
    let http = reqwest::Client::builder()
        .tcp_nodelay(true)
        .timeout(cfg.timeout)
        .connect_timeout(cfg.timeout.min(Duration::from_secs(5)))
        .build()
        .unwrap_or_default();
    let sh = Arc::new(Shared {
        store,
        cfg,
        http,
        busy: Mutex::new(HashSet::new()),
        hosts: Mutex::new(HashMap::new()),
        freed: tokio::sync::Notify::new(),
    });
    loop {
        if let Err(e) = pass(&sh) {
            tracing::error!(error = %e, "event delivery pass failed");
        }
        tokio::select! {
            _ = tokio::time::sleep(sh.cfg.poll) => {}
            _ = sh.freed.notified() => {}
        }
    }
}

fn pass(sh: &Arc<Shared>) -> Result<(), crate::store::StoreError> {
    let busy: HashSet<String> = sh.busy.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let mut room = sh.cfg.max_in_flight.saturating_sub(busy.len());
    // Rows for a host at its limit are passed over, not waited behind: page
    // on until there is no room, no rows, or a bounded scan is done, so a
    // backlog for a dead endpoint never hides other endpoints' events.
    let mut after = 0;
    let mut host_of: HashMap<(String, String), String> = HashMap::new();
    let mut full: Vec<(String, String)> = Vec::new();
    let mut ready = Vec::new();
    while room > 0 {
        let page = sh
            .store
            .due_outbox(now_ms(), after, (room * 4).clamp(32, 500), &full)?;
        let Some(last) = page.last() else { break };
        after = last.seq;
        for row in page {
            if room == 0 {
                break;
            }
            let pair = (row.campaign_id.clone(), row.kind.clone());
            if busy.contains(&row.id) || full.contains(&pair) {
                continue;
            }
            let host = host_of
                .entry(pair.clone())
                .or_insert_with(|| target_host(sh, &row))
                .clone();
            let mut hosts = sh.hosts.lock().unwrap_or_else(|p| p.into_inner());
            let n = hosts.entry(host.clone()).or_default();
            if *n >= sh.cfg.max_per_host {
                // Every pair that goes to this host is full too.
                full.extend(
                    host_of
                        .iter()
                        .filter(|(_, h)| **h == host)
                        .map(|(p, _)| p.clone()),
                );
                full.sort();
                full.dedup();
                continue;
            }
            *n += 1;
            room -= 1;
            ready.push((row, host));
        }
    }
    for (mut row, host) in ready {
        row.payload = match sh.store.outbox_payload(&row.id) {
            Ok(p) => p,
            Err(e) => {
                tracing::error!(error = %e, event = %row.id, "cannot read an event's payload");
                if let Some(n) = sh
                    .hosts
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .get_mut(&host)
                {
                    *n = n.saturating_sub(1);
                }
                continue;
            }
        };
        sh.busy
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(row.id.clone());
        let sh = sh.clone();
        tokio::spawn(async move {
            let outcome = if row.kind == "post_analysis" {
                analyse(&sh, &row).await
            } else {
                deliver(&sh, &row).await
            };
            settle(&sh, &row, outcome);
            sh.busy
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&row.id);
            if let Some(n) = sh
                .hosts
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get_mut(&host)
            {
                *n = n.saturating_sub(1);
            }
        });
    }
    Ok(())
}

/// The host a row will be sent to, for the per-host limit.
fn target_host(sh: &Shared, row: &OutboxRow) -> String {
    if row.kind == "post_analysis" {
        return "llm".into();
    }
    action_for(sh, row)
        .ok()
        .flatten()
        .and_then(|(tool, _)| tool["url"].as_str().map(str::to_string))
        .and_then(|u| reqwest::Url::parse(&u).ok())
        .and_then(|u| {
            u.host_str()
                .map(|h| format!("{h}:{}", u.port_or_known_default().unwrap_or(0)))
        })
        .unwrap_or_default()
}

fn settle(sh: &Shared, row: &OutboxRow, outcome: Outcome) {
    let now = now_ms();
    let attempts = row.attempts + 1;
    let res = match outcome {
        Outcome::Delivered => {
            sh.store
                .outbox_result(&row.id, "delivered", attempts, now, None, now)
        }
        Outcome::NoAction => {
            sh.store
                .outbox_result(&row.id, "no_action", row.attempts, now, None, now)
        }
        Outcome::Dead(e) => {
            tracing::warn!(event = %row.id, kind = %row.kind, error = %e, "dead-lettered");
            if row.kind == "post_analysis" {
                let _ = sh
                    .store
                    .set_analysis(&row.call_queue_id, "failed", None, Some(&e));
            }
            sh.store
                .outbox_result(&row.id, "dead", attempts, now, Some(&e), now)
        }
        Outcome::Retry(e) if attempts >= sh.cfg.max_attempts => {
            tracing::warn!(event = %row.id, kind = %row.kind, error = %e, attempts, "dead-lettered after the last attempt");
            if row.kind == "post_analysis" {
                let _ = sh
                    .store
                    .set_analysis(&row.call_queue_id, "failed", None, Some(&e));
            }
            sh.store
                .outbox_result(&row.id, "dead", attempts, now, Some(&e), now)
        }
        Outcome::Retry(e) => {
            let next = now + backoff(&sh.cfg, attempts, jitter()).as_millis() as i64;
            tracing::info!(event = %row.id, kind = %row.kind, error = %e, attempts, "will retry");
            sh.store
                .outbox_result(&row.id, "pending", attempts, next, Some(&e), now)
        }
    };
    if let Err(e) = res {
        tracing::error!(error = %e, event = %row.id, "cannot record a delivery result");
    }
}

/// The tool and action for an event row, from the campaign as it is now.
fn action_for(sh: &Shared, row: &OutboxRow) -> Result<Option<(Value, ActionSpec)>, String> {
    let camp = sh
        .store
        .campaign(&row.campaign_id)
        .map_err(|e| e.to_string())?
        .ok_or("campaign deleted")?;
    let a = &camp.spec.actions;
    let action = match EventKind::parse(&row.kind) {
        Some(EventKind::InitiationFailure) => &a.call_initiation_failure,
        Some(EventKind::Initiated) => &a.call_initiated,
        Some(EventKind::Declined) => &a.call_declined,
        Some(EventKind::Missed) => &a.call_missed,
        Some(EventKind::Answered) => &a.call_answered,
        Some(EventKind::Ended) => &a.call_ended,
        None => return Ok(None),
    };
    let Some(action) = action else {
        return Ok(None);
    };
    let (tool, secret) = sh
        .store
        .tool(&action.tool_id)
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("tool {} not found", action.tool_id))?;
    let mut tool = tool;
    tool["__secret"] = json!(secret);
    Ok(Some((tool, action.clone())))
}

/// A non-2xx answer. A 4xx other than 408 (timeout) and 429 (rate limit)
/// is the server refusing this request, which it will refuse again: dead
/// at once, with `why`. Anything else may pass on a retry.
fn refused_or_retry(status: reqwest::StatusCode, why: String) -> Outcome {
    let code = status.as_u16();
    if (400..500).contains(&code) && code != 408 && code != 429 {
        Outcome::Dead(why)
    } else {
        Outcome::Retry(why)
    }
}

async fn deliver(sh: &Shared, row: &OutboxRow) -> Outcome {
    let (tool, action) = match action_for(sh, row) {
        Ok(Some(x)) => x,
        Ok(None) => return Outcome::NoAction,
        Err(e) => return Outcome::Dead(e),
    };
    let vars: Map<String, Value> = row.payload.as_object().cloned().unwrap_or_default();
    let body = render(&action.mapping, &vars);
    let body = serde_json::to_vec(&body).unwrap_or_default();
    let url = tool["url"].as_str().unwrap_or_default();
    let method = reqwest::Method::from_bytes(tool["method"].as_str().unwrap_or("POST").as_bytes())
        .unwrap_or(reqwest::Method::POST);
    let t = chrono::Utc::now().timestamp();
    let mut req = sh
        .http
        .request(method, url)
        .header("content-type", "application/json")
        .header("idempotency-key", &row.id)
        .header("x-dialgate-event", &row.kind)
        .header("x-dialgate-event-id", &row.id)
        .header(
            "x-dialgate-signature",
            sign(tool["__secret"].as_str().unwrap_or(""), t, &body),
        );
    if let Some(h) = tool["headers"].as_object() {
        for (k, v) in h {
            if let Some(v) = v.as_str() {
                req = req.header(k.as_str(), v);
            }
        }
    }
    match req.body(body).send().await {
        Ok(r) if r.status().is_success() => Outcome::Delivered,
        Ok(r) => refused_or_retry(
            r.status(),
            format!("HTTP {} from {url}", r.status().as_u16()),
        ),
        Err(e) => Outcome::Retry(format!("{url}: {e}")),
    }
}

/// The seed's seventeen post-analysis context variables from an Ended
/// payload (`call_queue_route_id` is for inbound routes: `null` here).
pub fn analysis_context(ended: &Map<String, Value>) -> Map<String, Value> {
    const KEYS: [&str; 17] = [
        "call_queue_id",
        "call_queue_created_at",
        "call_queue_enqueued_at",
        "call_queue_processing_started_at",
        "call_queue_completed_at",
        "call_queue_status",
        "call_queue_route_id",
        "call_queue_calling_number_id",
        "call_queue_calling_number_provider",
        "call_queue_provider_call_id",
        "call_queue_recipient_number",
        "conversation_id",
        "conversation_start_time",
        "conversation_end_time",
        "conversation_end_type",
        "conversation_turns",
        "conversation_turns_simplified",
    ];
    KEYS.iter()
        .map(|k| (k.to_string(), ended.get(*k).cloned().unwrap_or(Value::Null)))
        .collect()
}

/// Fills `{{name}}` in a prompt (objects as JSON).
pub fn render_prompt(prompt: &str, ctx: &Map<String, Value>) -> String {
    let mut m = std::collections::BTreeMap::new();
    m.insert("p".to_string(), prompt.to_string());
    // A prompt is never a lone `{{x}}` worth keeping typed; render as text.
    match render(&m, ctx).get("p") {
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
        None => String::new(),
    }
}

/// Checks `v` against the small JSON-schema subset templates use: `type`
/// (object, string, number, integer, boolean, array), `required`,
/// `properties`, `enum`, `items`.
pub fn check_schema(schema: &Value, v: &Value, path: &str) -> Result<(), String> {
    if let Some(t) = schema.get("type").and_then(Value::as_str) {
        let ok = match t {
            "object" => v.is_object(),
            "string" => v.is_string(),
            "number" => v.is_number(),
            "integer" => v.is_i64() || v.is_u64(),
            "boolean" => v.is_boolean(),
            "array" => v.is_array(),
            "null" => v.is_null(),
            _ => true,
        };
        if !ok {
            return Err(format!("{path}: expected {t}"));
        }
    }
    if let Some(e) = schema.get("enum").and_then(Value::as_array)
        && !e.contains(v)
    {
        return Err(format!("{path}: not one of {}", Value::Array(e.clone())));
    }
    if let Some(req) = schema.get("required").and_then(Value::as_array) {
        for k in req.iter().filter_map(Value::as_str) {
            if v.get(k).is_none() {
                return Err(format!("{path}.{k}: required"));
            }
        }
    }
    if let (Some(props), Some(obj)) = (
        schema.get("properties").and_then(Value::as_object),
        v.as_object(),
    ) {
        for (k, s) in props {
            if let Some(x) = obj.get(k) {
                check_schema(s, x, &format!("{path}.{k}"))?;
            }
        }
    }
    if let (Some(items), Some(arr)) = (schema.get("items"), v.as_array()) {
        for (i, x) in arr.iter().enumerate() {
            check_schema(items, x, &format!("{path}[{i}]"))?;
        }
    }
    Ok(())
}

async fn analyse(sh: &Shared, row: &OutboxRow) -> Outcome {
    let camp = match sh.store.campaign(&row.campaign_id) {
        Ok(Some(c)) => c,
        Ok(None) => return Outcome::NoAction,
        Err(e) => return Outcome::Retry(e.to_string()),
    };
    let Some(tpl_id) = camp.spec.post_analysis_template.clone() else {
        return Outcome::NoAction;
    };
    let tpl = match sh.store.template(&tpl_id) {
        Ok(Some(t)) => t,
        Ok(None) => return Outcome::Dead(format!("analysis template {tpl_id} not found")),
        Err(e) => return Outcome::Retry(e.to_string()),
    };
    let Some(llm) = &sh.cfg.llm else {
        return Outcome::Dead("no chat-completions API configured (DIALGATE_LLM_BASE_URL)".into());
    };
    let ctx = analysis_context(row.payload.as_object().unwrap_or(&Map::new()));
    let prompt = render_prompt(tpl["prompt"].as_str().unwrap_or(""), &ctx);
    let schema = tpl["output_schema"].clone();
    // (no temperature: reasoning models, the default among them, accept
    // only their own; the schema is what keeps the answer in shape)
    let body = json!({
        "model": llm.model,
        "messages": [
            {"role": "system", "content": "You analyse a finished phone call. Answer with one JSON object that matches the given schema, nothing else."},
            {"role": "user", "content": prompt}
        ],
        "response_format": {"type": "json_schema", "json_schema": {"name": "analysis", "strict": true, "schema": schema}}
    });
    let url = format!("{}/chat/completions", llm.base_url.trim_end_matches('/'));
    let mut req = sh.http.post(&url).json(&body);
    if !llm.api_key.is_empty() {
        req = req.bearer_auth(&llm.api_key);
    }
    let resp = match req.send().await {
        Ok(r) if r.status().is_success() => r,
        Ok(r) => {
            // (the API's reason: a model that does not exist or lacks
            // structured outputs, a bad key)
            let status = r.status();
            let body = r.text().await.unwrap_or_default();
            let why = format!(
                "HTTP {} from {url} (model {}): {}",
                status.as_u16(),
                llm.model,
                body.chars().take(300).collect::<String>()
            );
            return refused_or_retry(status, why);
        }
        Err(e) => return Outcome::Retry(format!("{url}: {e}")),
    };
    let v: Value = match resp.json().await {
        Ok(v) => v,
        Err(e) => return Outcome::Retry(format!("unreadable answer: {e}")),
    };
    let content = v["choices"][0]["message"]["content"].as_str().unwrap_or("");
    let parsed: Value = match serde_json::from_str(content.trim()) {
        Ok(p) => p,
        Err(e) => return Outcome::Retry(format!("the answer is not JSON: {e}")),
    };
    if let Err(e) = check_schema(&schema, &parsed, "$") {
        return Outcome::Retry(format!("the answer does not match the schema: {e}"));
    }
    match sh
        .store
        .set_analysis(&row.call_queue_id, "done", Some(&parsed), None)
    {
        Ok(()) => Outcome::Delivered,
        Err(e) => Outcome::Retry(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_verify_and_detect_tampering() {
        let h = sign("s3cret", 1_700_000_000, b"{\"a\":1}");
        assert!(h.starts_with("t=1700000000,v1="));
        assert!(verify("s3cret", &h, b"{\"a\":1}"));
        assert!(!verify("s3cret", &h, b"{\"a\":2}"));
        assert!(!verify("other", &h, b"{\"a\":1}"));
        assert!(!verify("s3cret", "garbage", b""));
    }

    #[test]
    fn backoff_grows_caps_and_jitters() {
        let cfg = DeliveryConfig {
            base_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(60),
            ..DeliveryConfig::default()
        };
        assert_eq!(backoff(&cfg, 1, 1.0), Duration::from_secs(1));
        assert_eq!(backoff(&cfg, 3, 1.0), Duration::from_secs(4));
        assert_eq!(backoff(&cfg, 20, 1.0), Duration::from_secs(60));
        assert_eq!(backoff(&cfg, 3, 0.0), Duration::from_secs(2));
    }

    #[test]
    fn schema_subset() {
        let s = json!({"type": "object", "required": ["sentiment"], "properties": {
            "sentiment": {"type": "string", "enum": ["positive", "negative"]}, "score": {"type": "number"}}});
        assert!(check_schema(&s, &json!({"sentiment": "positive", "score": 1}), "$").is_ok());
        assert!(
            check_schema(&s, &json!({"score": 1}), "$")
                .unwrap_err()
                .contains("required")
        );
        assert!(check_schema(&s, &json!({"sentiment": "meh"}), "$").is_err());
        assert!(check_schema(&s, &json!([]), "$").is_err());
    }
}
