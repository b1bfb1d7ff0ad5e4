//! `dialgate serve`: the HTTP/WebSocket front of the gateway. Today it has
//! the Twilio Media Streams endpoint (`/twilio/stream`) and `/healthz`.
//!
//! One task per call owns the carrier WebSocket, the agent link and the
//! [`CallSession`]; it only moves inputs in and outputs out. Inside it:
//!
//! - Twilio frames are parsed by the sans-IO codec; μ-law payloads of any
//!   size are re-framed into whole 20 ms frames for the session;
//! - a malformed frame, media before `start`, or bad base64 ends the call
//!   with that reason (logged); unknown events are logged and skipped, since
//!   Twilio adds events over time;
//! - the session's timeouts drive pacing, through a monotonic clock;
//! - the agent is connected in a separate task so a slow agent never stalls
//!   the carrier; audio that arrives meanwhile is kept (up to 500 ms).
//!
//! When a Twilio auth token is configured, the upgrade must carry a valid
//! `X-Twilio-Signature` over the public `wss://…/twilio/stream` URL.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::time::Instant;
use tracing::Instrument;

use crate::agent::bridge::AgentAudio;
use crate::agent::side::AgentSide;
use crate::audio::{AudioFrame, FRAME_MS, FRAME_SAMPLES};
use crate::call::session::{CallSession, CarrierOut, SessionConfig};
use crate::carrier::twilio::{signature, stream};
use crate::detect::llm::LlmVerifier;
use crate::engine::Engine;

/// What the server needs.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Where to listen.
    pub listen: SocketAddr,
    /// The agent a stream is bridged to.
    pub agent_url: String,
    /// The audio format that agent speaks.
    pub agent_audio: AgentAudio,
    /// Twilio auth token: when set, upgrades must be signed.
    pub twilio_auth_token: Option<String>,
    /// The public base URL Twilio connects to (e.g. `wss://gw.example.com`),
    /// needed to check signatures.
    pub public_url: Option<String>,
    /// The call settings used for streams with no campaign.
    pub session: SessionConfig,
    /// How long the agent may take to accept the connection.
    pub agent_connect_timeout: Duration,
    /// The LLM verifier AMD escalates to when unsure (a campaign turns it on
    /// with `llm_verification`); without one, an escalation falls back.
    pub llm: Option<Arc<LlmVerifier>>,
    /// The campaign engine: streams carrying a `call_queue_id` get their
    /// settings and agent from its campaign, and report their facts to it.
    pub engine: Option<Arc<Engine>>,
}

struct AppState {
    cfg: ServerConfig,
}

/// The router (for tests and embedding).
pub fn router(cfg: ServerConfig) -> Router {
    let state = Arc::new(AppState { cfg });
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/twilio/stream", get(twilio_stream))
        .with_state(state)
}

/// Serves until the process ends. Nagle is off: a 20 ms frame must not wait
/// for the next one.
pub async fn serve(listener: tokio::net::TcpListener, cfg: ServerConfig) -> std::io::Result<()> {
    use axum::serve::ListenerExt;
    let listener = listener.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::warn!(error = %e, "cannot disable Nagle");
        }
    });
    axum::serve(listener, router(cfg)).await
}

async fn twilio_stream(
    State(st): State<Arc<AppState>>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    if let Some(token) = &st.cfg.twilio_auth_token {
        let Some(base) = &st.cfg.public_url else {
            tracing::error!(
                "a Twilio auth token is set but no public URL: cannot check signatures"
            );
            return (StatusCode::INTERNAL_SERVER_ERROR, "server misconfigured").into_response();
        };
        let url = format!("{}/twilio/stream", base.trim_end_matches('/'));
        let sig = headers
            .get("x-twilio-signature")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if !signature::verify(token, &url, &[], sig) {
            tracing::warn!("refused a stream with a missing or bad X-Twilio-Signature");
            return (StatusCode::FORBIDDEN, "bad signature").into_response();
        }
    }
    // Frames are under 1 KiB; the default 128 KiB read buffer per socket
    // would dominate the memory of a call.
    ws.max_message_size(stream::MAX_MESSAGE_BYTES)
        .read_buffer_size(4 * 1024)
        .write_buffer_size(8 * 1024)
        .on_upgrade(move |socket| {
            let span = tracing::info_span!("call", call_sid = tracing::field::Empty);
            run_stream(socket, st).instrument(span)
        })
}

/// Why a stream ended, for the log.
enum Stop {
    Done,
    Protocol(String),
}

struct Driver {
    session: Option<CallSession>,
    /// the agent link, the LLM request and the engine reports
    side: AgentSide,
    stream_sid: String,
    inbound: Vec<u8>,
    media_ms: u64,
    out: String,
    epoch: Instant,
}

impl Driver {
    fn now(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }
}

async fn run_stream(mut carrier: WebSocket, st: Arc<AppState>) {
    let mut d = Driver {
        session: None,
        side: AgentSide::new(
            st.cfg.agent_url.clone(),
            st.cfg.agent_audio,
            st.cfg.agent_connect_timeout,
            st.cfg.llm.clone(),
            st.cfg.engine.clone(),
        ),
        stream_sid: String::new(),
        inbound: Vec::with_capacity(2 * FRAME_SAMPLES),
        media_ms: 0,
        out: String::with_capacity(512),
        epoch: Instant::now(),
    };
    let mut payload = vec![0u8; stream::MAX_MESSAGE_BYTES];
    let stop = loop {
        let wake = d
            .session
            .as_ref()
            .and_then(CallSession::poll_timeout)
            .map_or(d.epoch + Duration::from_secs(3600), |ms| {
                d.epoch + Duration::from_millis(ms)
            });
        tokio::select! {
            msg = carrier.recv() => {
                let now = d.now();
                match msg {
                    Some(Ok(Message::Text(text))) => {
                        if let Err(reason) = on_carrier_text(&mut d, &st, text.as_str(), &mut payload, now) {
                            break Stop::Protocol(reason);
                        }
                    }
                    Some(Ok(Message::Close(_))) | None => {
                        match d.session.as_mut() {
                            Some(s) => s.handle_carrier_stop(now),
                            None => break Stop::Done,
                        }
                    }
                    Some(Ok(_)) => {}
                    Some(Err(e)) => {
                        tracing::warn!(error = %e, "carrier WebSocket failed");
                        match d.session.as_mut() {
                            Some(s) => s.handle_carrier_stop(now),
                            None => break Stop::Done,
                        }
                    }
                }
            }
            ev = d.side.next() => {
                let now = d.now();
                if let Some(s) = d.session.as_mut() {
                    d.side.apply(s, ev, now).await;
                }
            }
            _ = tokio::time::sleep_until(wake) => {
                let now = d.now();
                if let Some(s) = d.session.as_mut() { s.tick(now); }
            }
        }
        flush(&mut d, &mut carrier).await;
        if d.session.as_ref().is_some_and(CallSession::is_ended) {
            break Stop::Done;
        }
    };
    if let Stop::Protocol(reason) = &stop {
        tracing::warn!(%reason, "ending the call: the carrier broke the protocol");
        let now = d.now();
        if let Some(s) = d.session.as_mut() {
            s.handle_agent_closed(now, reason);
            flush(&mut d, &mut carrier).await;
        }
    }
    d.side.stop().await;
    let _ = carrier.send(Message::Close(None)).await;
}

/// Handles one text frame from Twilio; an `Err` ends the call.
fn on_carrier_text(
    d: &mut Driver,
    st: &AppState,
    text: &str,
    buf: &mut [u8],
    now: u64,
) -> Result<(), String> {
    let event = match stream::parse(text) {
        Ok(e) => e,
        Err(stream::StreamError::UnknownEvent(name)) => {
            tracing::info!(event = %name, "skipping an unknown Twilio event");
            return Ok(());
        }
        Err(e) => return Err(e.to_string()),
    };
    match event {
        stream::StreamEvent::Connected { .. } => {}
        stream::StreamEvent::Start { start, .. } => {
            if d.session.is_some() {
                return Err("a second `start` on one stream".into());
            }
            if start.media_format.encoding != "audio/x-mulaw"
                || start.media_format.sample_rate != 8000
            {
                return Err(format!(
                    "unsupported media format {} at {} Hz",
                    start.media_format.encoding, start.media_format.sample_rate
                ));
            }
            tracing::Span::current().record("call_sid", start.call_sid.as_str());
            d.stream_sid = start.stream_sid.clone();
            d.side.call_sid = start.call_sid.clone();
            let mut cfg = st.cfg.session.clone();
            if let (Some(engine), Some(cq)) =
                (&st.cfg.engine, start.custom_parameters.get("call_queue_id"))
            {
                let Some(setup) = engine.setup(cq) else {
                    return Err(format!("no live call attempt `{cq}`"));
                };
                cfg = setup.session;
                d.side.agent_url = setup.agent_url;
                d.side.agent_audio = setup.agent_audio;
                d.side.call_queue_id = Some(cq.clone());
            }
            for (k, v) in &start.custom_parameters {
                cfg.agent_params
                    .entry(k.clone())
                    .or_insert_with(|| v.clone());
            }
            let mut s =
                CallSession::new(cfg).map_err(|e| format!("cannot start the call session: {e}"))?;
            s.handle_carrier_start(now);
            d.session = Some(s);
            tracing::info!(stream_sid = %d.stream_sid, "stream started");
        }
        stream::StreamEvent::Media { payload, .. } => {
            let Some(s) = d.session.as_mut() else {
                return Err("media before start".into());
            };
            let n = stream::decode_payload(&payload, buf).map_err(|e| e.to_string())?;
            d.inbound.extend_from_slice(&buf[..n]);
            let mut used = 0;
            while d.inbound.len() - used >= FRAME_SAMPLES {
                let frame =
                    AudioFrame::from_ulaw(&d.inbound[used..used + FRAME_SAMPLES], d.media_ms);
                d.media_ms += u64::from(FRAME_MS);
                used += FRAME_SAMPLES;
                s.handle_carrier_media(now, &frame)
                    .map_err(|e| e.to_string())?;
            }
            d.inbound.drain(..used);
        }
        stream::StreamEvent::Dtmf { digit, .. } => {
            if let Some(s) = d.session.as_mut() {
                s.handle_carrier_dtmf(now, digit);
            }
        }
        stream::StreamEvent::Mark { name, .. } => {
            if let Some(s) = d.session.as_mut() {
                s.handle_carrier_mark(now, &name);
            }
        }
        stream::StreamEvent::Stop { .. } => {
            if let Some(s) = d.session.as_mut() {
                s.handle_carrier_stop(now);
            }
        }
        other => tracing::debug!(?other, "ignoring a frame Twilio does not send"),
    }
    Ok(())
}

/// Carries out everything the session asked for.
async fn flush(d: &mut Driver, carrier: &mut WebSocket) {
    loop {
        let now = d.now();
        let Some(s) = d.session.as_mut() else {
            return;
        };
        let Some(out) = s.poll_output() else {
            return;
        };
        let Some(c) = d.side.perform(s, out, d.media_ms, now).await else {
            continue;
        };
        match c {
            CarrierOut::Media(frame) => stream::encode_media(&mut d.out, &d.stream_sid, &frame),
            CarrierOut::Mark(name) => stream::encode_mark(&mut d.out, &d.stream_sid, &name),
            CarrierOut::Clear => stream::encode_clear(&mut d.out, &d.stream_sid),
            // Media Streams carry no digits toward the callee.
            CarrierOut::Dtmf(digit) => {
                tracing::warn!(%digit, "the agent's DTMF cannot be sent on a Twilio stream");
                continue;
            }
            // The session ends with it; closing the stream after ends the
            // <Connect> and with it the call.
            CarrierOut::Hangup => continue,
        }
        let text = std::mem::replace(&mut d.out, String::with_capacity(512));
        if carrier.send(Message::Text(text.into())).await.is_err() {
            let now = d.now();
            if let Some(s) = d.session.as_mut() {
                s.handle_carrier_stop(now);
            }
        }
    }
}

/// Binds and serves, logging the address.
pub async fn run(cfg: ServerConfig) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(cfg.listen).await?;
    tracing::info!(addr = %listener.local_addr()?, agent = %cfg.agent_url, "dialgate serving /twilio/stream");
    serve(listener, cfg).await
}
