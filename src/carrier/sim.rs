//! The `sim` carrier: a Twilio-compatible simulator. It serves Twilio's REST
//! shape (`Calls.json` create / fetch / list, hang-up by `Status=completed`),
//! sends signed status callbacks, and for answered calls connects back to
//! the stream URL in the TwiML as Twilio would, playing a WAV in real time
//! and recording what it hears (`record_dir`: one WAV per call). Which scenario a destination gets comes from
//! a rules file (longest prefix wins): `human`, `voicemail`, `busy`,
//! `no_answer`, `declined` or `failed`.
//!
//! Every accepted dial is appended (and flushed) to a JSON-lines log, so a
//! test can prove no attempt was dialled twice even across a gateway crash.
//! This is a driver: it uses real clocks and sockets, and no business rules.

use std::collections::HashMap;
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path as UrlPath, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Form, Json, Router};
use base64::Engine as _;
use futures_util::{SinkExt, StreamExt};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::Message;

use crate::audio::wav::WavReader;
use crate::audio::{FRAME_SAMPLES, g711};
use crate::carrier::twilio::{signature, stream};

/// Errors loading the simulator.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// The rules file.
    #[error("sim rules {path}: {reason}")]
    Rules {
        /// Where.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}

/// One rule.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// Destinations starting with this (E.164). Empty matches all.
    #[serde(default)]
    pub prefix: String,
    /// `human`, `voicemail`, `busy`, `no_answer`, `declined`, `failed`.
    pub outcome: String,
    /// Audio the callee plays once answered (human, voicemail).
    #[serde(default)]
    pub wav: Option<PathBuf>,
    /// Ring time before the outcome, ms.
    #[serde(default = "default_ring")]
    pub ring_ms: u64,
    /// After the WAV ends, the callee hangs up this much later (ms); `None`
    /// waits for the gateway (machines never hang up first).
    #[serde(default)]
    pub hangup_after_ms: Option<u64>,
    /// A fault in the carrier's answer to the first create request for
    /// each matching number (later ones are answered normally): the
    /// transient trouble a dialer must survive without losing the contact
    /// or ringing it twice.
    #[serde(default)]
    pub create_fault: Option<CreateFault>,
}

/// See [`Rule::create_fault`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CreateFault {
    /// 503, and no call placed.
    Unavailable,
    /// The call is placed (and rings, with its status callbacks), but the
    /// answer to the create request breaks off mid-body.
    LostAnswer,
}

fn default_ring() -> u64 {
    1000
}

/// The rules file.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rules {
    /// Rules; the longest matching prefix wins.
    pub rules: Vec<Rule>,
}

impl Rules {
    /// Loads and checks a rules file; WAV paths are relative to it.
    pub fn load(path: &Path) -> Result<Self, SimError> {
        let err = |reason: String| SimError::Rules {
            path: path.to_path_buf(),
            reason,
        };
        let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
        let mut rules: Rules = serde_json::from_str(&text).map_err(|e| err(e.to_string()))?;
        let base = path.parent().unwrap_or(Path::new("."));
        for (i, r) in rules.rules.iter_mut().enumerate() {
            if !OUTCOMES.contains(&r.outcome.as_str()) {
                return Err(err(format!(
                    "rules[{i}].outcome `{}` is not one of {OUTCOMES:?}",
                    r.outcome
                )));
            }
            if matches!(r.outcome.as_str(), "human" | "voicemail") {
                let Some(w) = &r.wav else {
                    return Err(err(format!("rules[{i}] needs a wav")));
                };
                let p = if w.is_absolute() {
                    w.clone()
                } else {
                    base.join(w)
                };
                WavReader::open(&p)
                    .map_err(|e| err(format!("rules[{i}].wav {}: {e}", p.display())))?;
                r.wav = Some(p);
            }
        }
        Ok(rules)
    }

    fn find(&self, to: &str) -> Option<&Rule> {
        self.rules
            .iter()
            .filter(|r| to.starts_with(&r.prefix))
            .max_by_key(|r| r.prefix.len())
    }
}

const OUTCOMES: [&str; 6] = [
    "human",
    "voicemail",
    "busy",
    "no_answer",
    "declined",
    "failed",
];

/// What the simulator knows of a call.
#[derive(Debug, Clone, Serialize)]
pub struct SimCall {
    /// `CA…`.
    pub sid: String,
    /// Twilio status.
    pub status: String,
    /// Destination.
    pub to: String,
    /// Caller ID.
    pub from: String,
    /// The `call_queue_id` stream parameter, when given.
    pub call_queue_id: Option<String>,
    /// Scenario.
    pub outcome: String,
    /// 20 ms frames of gateway audio heard.
    pub heard_frames: u64,
    /// Created (RFC 2822, as Twilio).
    pub date_created: String,
    /// Answered (RFC 2822).
    pub start_time: Option<String>,
}

struct Sim {
    account_sid: String,
    auth_token: String,
    rules: Rules,
    calls: Mutex<HashMap<String, (SimCall, watch::Sender<bool>)>>,
    log: Option<Mutex<std::fs::File>>,
    record_dir: Option<PathBuf>,
    http: reqwest::Client,
    seq: std::sync::atomic::AtomicU64,
    /// Numbers whose first create request has had its fault.
    faulted: Mutex<std::collections::HashSet<String>>,
}

/// Simulator settings.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Account SID accepted.
    pub account_sid: String,
    /// Auth token: checks Basic auth and signs callbacks.
    pub auth_token: String,
    /// Scenarios.
    pub rules: Rules,
    /// Dial log (JSON lines).
    pub log: Option<PathBuf>,
    /// Where to write what each answered call heard (`<CallSid>.wav`).
    pub record_dir: Option<PathBuf>,
}

/// The simulator's routes.
pub fn router(cfg: SimConfig) -> std::io::Result<Router> {
    let log = match &cfg.log {
        Some(p) => Some(Mutex::new(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)?,
        )),
        None => None,
    };
    let sim = Arc::new(Sim {
        account_sid: cfg.account_sid,
        auth_token: cfg.auth_token,
        rules: cfg.rules,
        record_dir: cfg.record_dir,
        calls: Mutex::new(HashMap::new()),
        log,
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap_or_default(),
        seq: std::sync::atomic::AtomicU64::new(0),
        faulted: Mutex::new(std::collections::HashSet::new()),
    });
    Ok(Router::new()
        .route(
            "/2010-04-01/Accounts/{acct}/Calls.json",
            post(create).get(list),
        )
        .route(
            "/2010-04-01/Accounts/{acct}/Calls/{sid}",
            get(fetch).post(update),
        )
        .with_state(sim))
}

/// Serves the simulator on `listener`.
pub async fn serve(listener: tokio::net::TcpListener, cfg: SimConfig) -> std::io::Result<()> {
    axum::serve(listener, router(cfg)?).await
}

fn api_error(status: StatusCode, code: i64, message: &str) -> Response {
    (
        status,
        Json(serde_json::json!({"code": code, "message": message, "status": status.as_u16()})),
    )
        .into_response()
}

fn authorized(sim: &Sim, acct: &str, headers: &axum::http::HeaderMap) -> bool {
    if acct != sim.account_sid {
        return false;
    }
    let expected = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD
            .encode(format!("{}:{}", sim.account_sid, sim.auth_token))
    );
    headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == expected)
}

fn rfc2822_now() -> String {
    chrono::Utc::now().to_rfc2822()
}

fn call_json(c: &SimCall) -> serde_json::Value {
    serde_json::json!({
        "sid": c.sid, "status": c.status, "to": c.to, "from": c.from,
        "date_created": c.date_created, "start_time": c.start_time,
        "account_sid": "", "direction": "outbound-api",
    })
}

async fn create(
    State(sim): State<Arc<Sim>>,
    UrlPath(acct): UrlPath<String>,
    headers: axum::http::HeaderMap,
    Form(form): Form<Vec<(String, String)>>,
) -> Response {
    if !authorized(&sim, &acct, &headers) {
        return api_error(StatusCode::UNAUTHORIZED, 20003, "Authenticate");
    }
    let get = |k: &str| form.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    let (Some(to), Some(from)) = (get("To"), get("From")) else {
        return api_error(StatusCode::BAD_REQUEST, 21201, "To and From are required");
    };
    if !to.starts_with('+') || to.len() < 8 {
        return api_error(StatusCode::BAD_REQUEST, 21211, "Invalid 'To' Phone Number");
    }
    let Some(twiml) = get("Twiml") else {
        return api_error(StatusCode::BAD_REQUEST, 21205, "Twiml or Url is required");
    };
    let Some((stream_url, params)) = parse_stream_twiml(&twiml) else {
        return api_error(
            StatusCode::BAD_REQUEST,
            12100,
            "Document parse failure: no <Connect><Stream url>",
        );
    };
    let callback = get("StatusCallback");
    let timeout_s: u64 = get("Timeout").and_then(|t| t.parse().ok()).unwrap_or(60);
    let rule = sim.rules.find(&to).cloned().unwrap_or(Rule {
        prefix: String::new(),
        outcome: "no_answer".into(),
        wav: None,
        ring_ms: 1000,
        hangup_after_ms: None,
        create_fault: None,
    });
    let fault = rule.create_fault.filter(|_| {
        sim.faulted
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(to.clone())
    });
    if fault == Some(CreateFault::Unavailable) {
        return api_error(
            StatusCode::SERVICE_UNAVAILABLE,
            20503,
            "Service Unavailable",
        );
    }
    let n = sim.seq.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let sid = format!(
        "CA{:032x}",
        (uuid::Uuid::new_v4().as_u128() >> 32) << 32 | u128::from(n as u32)
    );
    let call = SimCall {
        sid: sid.clone(),
        status: "queued".into(),
        to: to.clone(),
        from,
        call_queue_id: params.get("call_queue_id").cloned(),
        outcome: rule.outcome.clone(),
        heard_frames: 0,
        date_created: rfc2822_now(),
        start_time: None,
    };
    if let Some(log) = &sim.log {
        let line = serde_json::json!({"sid": sid, "to": call.to, "call_queue_id": call.call_queue_id, "outcome": call.outcome});
        let mut f = log.lock().unwrap_or_else(|p| p.into_inner());
        // one write of the whole line, so a reader never sees half of it
        let _ = f.write_all(format!("{line}\n").as_bytes());
        let _ = f.flush();
    }
    let body = call_json(&call);
    let (tx, rx) = watch::channel(false);
    sim.calls
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(sid.clone(), (call, tx));
    tokio::spawn(run_call(
        sim.clone(),
        sid,
        rule,
        stream_url,
        params,
        callback,
        timeout_s,
        rx,
    ));
    if fault == Some(CreateFault::LostAnswer) {
        // The call exists; its answer is cut off after a few bytes.
        let chunks: [Result<&'static [u8], std::io::Error>; 2] = [
            Ok(b"{\"sid\": "),
            Err(std::io::Error::other("connection lost")),
        ];
        return Response::builder()
            .status(StatusCode::CREATED)
            .header(axum::http::header::CONTENT_TYPE, "application/json")
            .body(axum::body::Body::from_stream(futures_util::stream::iter(
                chunks,
            )))
            .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response());
    }
    (StatusCode::CREATED, Json(body)).into_response()
}

#[derive(Deserialize)]
struct ListQuery {
    #[serde(rename = "To")]
    to: Option<String>,
    #[serde(rename = "From")]
    from: Option<String>,
}

async fn list(
    State(sim): State<Arc<Sim>>,
    UrlPath(acct): UrlPath<String>,
    headers: axum::http::HeaderMap,
    Query(q): Query<ListQuery>,
) -> Response {
    if !authorized(&sim, &acct, &headers) {
        return api_error(StatusCode::UNAUTHORIZED, 20003, "Authenticate");
    }
    let calls = sim.calls.lock().unwrap_or_else(|p| p.into_inner());
    let list: Vec<serde_json::Value> = calls
        .values()
        .filter(|(c, _)| {
            q.to.as_ref().is_none_or(|t| &c.to == t) && q.from.as_ref().is_none_or(|f| &c.from == f)
        })
        .map(|(c, _)| call_json(c))
        .collect();
    Json(serde_json::json!({"calls": list})).into_response()
}

async fn fetch(
    State(sim): State<Arc<Sim>>,
    UrlPath((acct, sid)): UrlPath<(String, String)>,
    headers: axum::http::HeaderMap,
) -> Response {
    if !authorized(&sim, &acct, &headers) {
        return api_error(StatusCode::UNAUTHORIZED, 20003, "Authenticate");
    }
    let sid = sid.trim_end_matches(".json");
    match sim.calls.lock().unwrap_or_else(|p| p.into_inner()).get(sid) {
        Some((c, _)) => Json(call_json(c)).into_response(),
        None => api_error(
            StatusCode::NOT_FOUND,
            20404,
            "The requested resource was not found",
        ),
    }
}

async fn update(
    State(sim): State<Arc<Sim>>,
    UrlPath((acct, sid)): UrlPath<(String, String)>,
    headers: axum::http::HeaderMap,
    Form(form): Form<Vec<(String, String)>>,
) -> Response {
    if !authorized(&sim, &acct, &headers) {
        return api_error(StatusCode::UNAUTHORIZED, 20003, "Authenticate");
    }
    let sid = sid.trim_end_matches(".json");
    let wants_end = form
        .iter()
        .any(|(k, v)| k == "Status" && (v == "completed" || v == "canceled"));
    let calls = sim.calls.lock().unwrap_or_else(|p| p.into_inner());
    match calls.get(sid) {
        Some((c, tx)) => {
            if wants_end {
                let _ = tx.send(true);
            }
            Json(call_json(c)).into_response()
        }
        None => api_error(
            StatusCode::NOT_FOUND,
            20404,
            "The requested resource was not found",
        ),
    }
}

fn set_status(sim: &Sim, sid: &str, status: &str) {
    if let Some((c, _)) = sim
        .calls
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get_mut(sid)
    {
        c.status = status.to_string();
        if status == "in-progress" {
            c.start_time = Some(rfc2822_now());
        }
    }
}

async fn callback(sim: &Sim, url: Option<&str>, sid: &str, status: &str, extra: &[(&str, String)]) {
    set_status(sim, sid, status);
    let Some(url) = url else { return };
    let (to, from) = {
        let calls = sim.calls.lock().unwrap_or_else(|p| p.into_inner());
        calls
            .get(sid)
            .map(|(c, _)| (c.to.clone(), c.from.clone()))
            .unwrap_or_default()
    };
    let seq = sim
        .seq
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        .to_string();
    let mut params: Vec<(&str, String)> = vec![
        ("CallSid", sid.to_string()),
        ("AccountSid", sim.account_sid.clone()),
        ("From", from),
        ("To", to),
        ("CallStatus", status.to_string()),
        ("Direction", "outbound-api".into()),
        ("ApiVersion", "2010-04-01".into()),
        ("CallbackSource", "call-progress-events".into()),
        ("SequenceNumber", seq),
        ("Timestamp", rfc2822_now()),
    ];
    params.extend(extra.iter().cloned());
    let pairs: Vec<(&str, &str)> = params.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let sig = signature::sign(&sim.auth_token, url, &pairs);
    // Twilio retries failed callbacks only when asked; a few quick retries
    // keep a restarting gateway from missing the ending.
    for attempt in 0..20 {
        match sim
            .http
            .post(url)
            .header("X-Twilio-Signature", &sig)
            .form(&pairs)
            .send()
            .await
        {
            Ok(r) if r.status().is_success() => return,
            Ok(r) if r.status().is_client_error() => {
                tracing::warn!(status = %r.status(), %sid, "sim: status callback refused");
                return;
            }
            _ => tokio::time::sleep(Duration::from_millis(250 * (attempt + 1).min(8))).await,
        }
    }
}

#[allow(clippy::too_many_arguments)] // one spawned task's inputs
async fn run_call(
    sim: Arc<Sim>,
    sid: String,
    rule: Rule,
    stream_url: String,
    params: HashMap<String, String>,
    cb: Option<String>,
    timeout_s: u64,
    mut hangup: watch::Receiver<bool>,
) {
    let cb = cb.as_deref();
    callback(&sim, cb, &sid, "initiated", &[]).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    callback(&sim, cb, &sid, "ringing", &[]).await;
    let ring = match rule.outcome.as_str() {
        "no_answer" => Duration::from_secs(timeout_s),
        _ => Duration::from_millis(rule.ring_ms).min(Duration::from_secs(timeout_s)),
    };
    tokio::select! {
        _ = tokio::time::sleep(ring) => {}
        _ = hangup.changed() => {
            callback(&sim, cb, &sid, "canceled", &[("SipResponseCode", "487".into())]).await;
            return;
        }
    }
    match rule.outcome.as_str() {
        "busy" => {
            return callback(&sim, cb, &sid, "busy", &[("SipResponseCode", "486".into())]).await;
        }
        "declined" => {
            return callback(&sim, cb, &sid, "busy", &[("SipResponseCode", "603".into())]).await;
        }
        "failed" => {
            return callback(
                &sim,
                cb,
                &sid,
                "failed",
                &[("SipResponseCode", "404".into())],
            )
            .await;
        }
        "no_answer" => {
            return callback(
                &sim,
                cb,
                &sid,
                "no-answer",
                &[("SipResponseCode", "487".into())],
            )
            .await;
        }
        _ => {}
    }
    callback(&sim, cb, &sid, "in-progress", &[]).await;
    let started = tokio::time::Instant::now();
    let record = sim.record_dir.is_some();
    let (heard, audio) = play(&sid, &rule, &stream_url, &params, &mut hangup, record).await;
    if let Some(dir) = &sim.record_dir {
        // what the callee heard, for a user to listen to
        let pcm: Vec<i16> = audio.iter().map(|&b| g711::ulaw_decode(b)).collect();
        let path = dir.join(format!("{sid}.wav"));
        if let Err(e) = std::fs::write(&path, crate::audio::wav::to_wav_bytes(8000, &pcm)) {
            tracing::warn!(path = %path.display(), error = %e, "sim: cannot write the recording");
        }
    }
    if let Some((c, _)) = sim
        .calls
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get_mut(&sid)
    {
        c.heard_frames = heard;
    }
    let secs = started.elapsed().as_secs().to_string();
    callback(
        &sim,
        cb,
        &sid,
        "completed",
        &[("CallDuration", secs), ("SipResponseCode", "200".into())],
    )
    .await;
}

fn frames_of(path: &Path) -> Vec<[u8; FRAME_SAMPLES]> {
    let mut out = Vec::new();
    let Ok(mut r) = WavReader::open(path) else {
        return out;
    };
    while let Ok(Some(f)) = r.next_frame() {
        let mut u = [0xFFu8; FRAME_SAMPLES];
        g711::ulaw_encode_into(&f.pcm, &mut u);
        out.push(u);
    }
    out
}

/// Plays the callee's side of the stream; returns the frames heard.
async fn play(
    sid: &str,
    rule: &Rule,
    url: &str,
    params: &HashMap<String, String>,
    hangup: &mut watch::Receiver<bool>,
    record: bool,
) -> (u64, Vec<u8>) {
    let frames = rule.wav.as_deref().map(frames_of).unwrap_or_default();
    let Ok((ws, _)) = tokio_tungstenite::connect_async_with_config(
        url,
        Some(crate::agent::bridge::ws_config()),
        true,
    )
    .await
    else {
        tracing::warn!(%sid, "sim: cannot connect to the stream URL");
        return (0, Vec::new());
    };
    let (mut tx, mut rx) = ws.split();
    let stream_sid = format!("MZ{}", &sid[2..]);
    let start = serde_json::json!({"event": "start", "sequenceNumber": "1", "streamSid": stream_sid,
        "start": {"accountSid": "ACsim", "streamSid": stream_sid, "callSid": sid, "tracks": ["inbound"],
                  "customParameters": params,
                  "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}}});
    if tx
        .send(Message::text(
            r#"{"event":"connected","protocol":"Call","version":"1.0.0"}"#,
        ))
        .await
        .is_err()
        || tx.send(Message::text(start.to_string())).await.is_err()
    {
        return (0, Vec::new());
    }
    let silence = [0xFFu8; FRAME_SAMPLES];
    let total =
        (frames.len() as u64).saturating_add(rule.hangup_after_ms.map_or(u64::MAX, |ms| ms / 20));
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    let mut n: u64 = 0;
    let mut heard = 0u64;
    let mut audio: Vec<u8> = Vec::new();
    let mut buf = [0u8; 4096];
    let mut gateway_ended = false;
    loop {
        tokio::select! {
            _ = tick.tick() => {
                if n >= total { break; }
                let f = frames.get(n as usize).unwrap_or(&silence);
                let payload = base64::engine::general_purpose::STANDARD.encode(f);
                let msg = format!(
                    r#"{{"event":"media","sequenceNumber":"{}","media":{{"track":"inbound","chunk":"{}","timestamp":"{}","payload":"{payload}"}},"streamSid":"{stream_sid}"}}"#,
                    n + 2, n + 1, n * 20
                );
                if tx.send(Message::text(msg)).await.is_err() { gateway_ended = true; break; }
                n += 1;
            }
            msg = rx.next() => match msg {
                Some(Ok(Message::Text(t))) => match stream::parse(t.as_str()) {
                    Ok(stream::StreamEvent::Media { payload, .. }) => {
                        heard += 1;
                        if record && let Ok(n) = stream::decode_payload(&payload, &mut buf) {
                            audio.extend_from_slice(&buf[..n]);
                        }
                    }
                    // Twilio returns a mark once the audio before it has
                    // played; the gateway paces in real time, so now is close.
                    Ok(stream::StreamEvent::Mark { name, .. }) => {
                        let m = serde_json::json!({"event": "mark", "sequenceNumber": "0", "streamSid": stream_sid, "mark": {"name": name}});
                        let _ = tx.send(Message::text(m.to_string())).await;
                    }
                    _ => {}
                },
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => { gateway_ended = true; break; }
                _ => {}
            },
            _ = hangup.changed() => { gateway_ended = true; break; }
        }
    }
    if !gateway_ended {
        let stop = serde_json::json!({"event": "stop", "sequenceNumber": (n + 2).to_string(), "streamSid": stream_sid,
            "stop": {"accountSid": "ACsim", "callSid": sid}});
        let _ = tx.send(Message::text(stop.to_string())).await;
    }
    let _ = tx.close().await;
    (heard, audio)
}

/// Extracts the `<Stream url>` and its `<Parameter>`s from TwiML. Enough of
/// XML for TwiML: attributes in double or single quotes, the five entities.
pub fn parse_stream_twiml(twiml: &str) -> Option<(String, HashMap<String, String>)> {
    let s = twiml.find("<Stream")?;
    let tag_end = s + twiml[s..].find('>')?;
    let url = attr(&twiml[s..tag_end], "url")?;
    let mut params = HashMap::new();
    let mut rest = &twiml[tag_end..];
    while let Some(p) = rest.find("<Parameter") {
        let end = p + rest[p..].find('>')?;
        let tag = &rest[p..end];
        if let (Some(k), Some(v)) = (attr(tag, "name"), attr(tag, "value")) {
            params.insert(k, v);
        }
        rest = &rest[end..];
    }
    Some((url, params))
}

fn attr(tag: &str, name: &str) -> Option<String> {
    let mut from = 0;
    while let Some(i) = tag[from..].find(name) {
        let at = from + i;
        let before_ok = at > 0 && tag.as_bytes()[at - 1].is_ascii_whitespace();
        let after = tag[at + name.len()..].trim_start();
        if before_ok && let Some(after) = after.strip_prefix('=') {
            let after = after.trim_start();
            let q = after.chars().next()?;
            if q == '"' || q == '\'' {
                let body = &after[1..];
                let end = body.find(q)?;
                return Some(unescape(&body[..end]));
            }
        }
        from = at + name.len();
    }
    None
}

fn unescape(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&amp;", "&")
}

/// Binds and serves, logging the address.
pub async fn run(addr: SocketAddr, cfg: SimConfig) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(addr = %listener.local_addr()?, "sim carrier listening");
    serve(listener, cfg).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn twiml_round_trip() {
        let mut p = BTreeMap::new();
        p.insert("call_queue_id".to_string(), "cq_1".to_string());
        p.insert("note".to_string(), "a \"b\" & <c>".to_string());
        let t = crate::carrier::twilio::rest::connect_stream_twiml(
            "ws://127.0.0.1:1/twilio/stream?x=1&y=2",
            &p,
        );
        let (url, params) = parse_stream_twiml(&t).unwrap();
        assert_eq!(url, "ws://127.0.0.1:1/twilio/stream?x=1&y=2");
        assert_eq!(params["note"], "a \"b\" & <c>");
        assert_eq!(params["call_queue_id"], "cq_1");
    }

    #[test]
    fn bad_twiml_is_refused() {
        assert!(parse_stream_twiml("<Response><Say>hi</Say></Response>").is_none());
        assert!(parse_stream_twiml("<Stream url=>").is_none());
        assert!(parse_stream_twiml("").is_none());
        assert!(parse_stream_twiml("<Stream urlx=\"a\">").is_none());
    }
}
