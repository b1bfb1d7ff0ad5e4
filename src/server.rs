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

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::sync::oneshot;
use tokio::time::Instant;
use tracing::Instrument;

use crate::agent::bridge::{AgentAudio, AgentIn, AgentLink};
use crate::audio::{AudioFrame, FRAME_MS, FRAME_SAMPLES};
use crate::call::session::{AgentOut, CallSession, CarrierOut, Lifecycle, Output, SessionConfig};
use crate::carrier::twilio::{signature, stream};
use crate::detect::amd::LlmVerdict;
use crate::detect::llm::LlmVerifier;
use crate::engine::{CallFact, Engine};

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

async fn recv_agent(agent: &mut Option<AgentLink>) -> Result<AgentIn, String> {
    match agent {
        Some(link) => link.recv().await.map_err(|e| e.to_string()),
        None => std::future::pending().await,
    }
}

async fn wait_verdict(pending: &mut Option<oneshot::Receiver<LlmVerdict>>) -> LlmVerdict {
    match pending {
        Some(rx) => rx.await.unwrap_or(LlmVerdict::Failed),
        None => std::future::pending().await,
    }
}

async fn wait_connect(
    pending: &mut Option<oneshot::Receiver<Result<AgentLink, String>>>,
) -> Result<AgentLink, String> {
    match pending {
        Some(rx) => rx
            .await
            .unwrap_or_else(|_| Err("agent connect task vanished".into())),
        None => std::future::pending().await,
    }
}

struct Driver {
    session: Option<CallSession>,
    agent: Option<AgentLink>,
    connecting: Option<oneshot::Receiver<Result<AgentLink, String>>>,
    /// the LLM verifier's answer, while AMD waits for one
    verifying: Option<oneshot::Receiver<LlmVerdict>>,
    /// callee audio that arrived while the agent was connecting
    backlog: VecDeque<AudioFrame>,
    stream_sid: String,
    call_sid: String,
    inbound: Vec<u8>,
    media_ms: u64,
    out: String,
    epoch: Instant,
    /// The attempt this stream belongs to, for campaign calls.
    call_queue_id: Option<String>,
    agent_url: String,
    agent_audio: AgentAudio,
}

impl Driver {
    fn now(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }
}

async fn run_stream(mut carrier: WebSocket, st: Arc<AppState>) {
    let mut d = Driver {
        session: None,
        agent: None,
        connecting: None,
        verifying: None,
        backlog: VecDeque::with_capacity(25),
        stream_sid: String::new(),
        call_sid: String::new(),
        inbound: Vec::with_capacity(2 * FRAME_SAMPLES),
        media_ms: 0,
        out: String::with_capacity(512),
        epoch: Instant::now(),
        call_queue_id: None,
        agent_url: st.cfg.agent_url.clone(),
        agent_audio: st.cfg.agent_audio,
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
            res = recv_agent(&mut d.agent) => {
                let now = d.now();
                on_agent(&mut d, res, now);
            }
            res = wait_connect(&mut d.connecting) => {
                d.connecting = None;
                let now = d.now();
                match res {
                    Ok(link) => {
                        d.agent = Some(link);
                        while let Some(f) = d.backlog.pop_front() {
                            if let Some(a) = d.agent.as_mut() && a.send_media(&f).await.is_err() { break; }
                        }
                    }
                    Err(reason) => {
                        tracing::warn!(%reason, "agent unreachable");
                        if let Some(s) = d.session.as_mut() { s.handle_agent_closed(now, &reason); }
                    }
                }
            }
            verdict = wait_verdict(&mut d.verifying) => {
                d.verifying = None;
                let now = d.now();
                if let Some(s) = d.session.as_mut() { s.handle_llm_verdict(now, verdict); }
            }
            _ = tokio::time::sleep_until(wake) => {
                let now = d.now();
                if let Some(s) = d.session.as_mut() { s.tick(now); }
            }
        }
        flush(&mut d, &st, &mut carrier).await;
        if d.session.as_ref().is_some_and(CallSession::is_ended) {
            break Stop::Done;
        }
    };
    if let Stop::Protocol(reason) = &stop {
        tracing::warn!(%reason, "ending the call: the carrier broke the protocol");
        let now = d.now();
        if let Some(s) = d.session.as_mut() {
            s.handle_agent_closed(now, reason);
            flush(&mut d, &st, &mut carrier).await;
        }
    }
    if let Some(mut a) = d.agent.take() {
        a.stop(&d.call_sid).await;
    }
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
            d.call_sid = start.call_sid.clone();
            let mut cfg = st.cfg.session.clone();
            if let (Some(engine), Some(cq)) =
                (&st.cfg.engine, start.custom_parameters.get("call_queue_id"))
            {
                let Some(setup) = engine.setup(cq) else {
                    return Err(format!("no live call attempt `{cq}`"));
                };
                cfg = setup.session;
                d.agent_url = setup.agent_url;
                d.agent_audio = setup.agent_audio;
                d.call_queue_id = Some(cq.clone());
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

fn on_agent(d: &mut Driver, res: Result<AgentIn, String>, now: u64) {
    let Some(s) = d.session.as_mut() else {
        return;
    };
    match res {
        Ok(AgentIn::Media) => {
            if let Some(a) = d.agent.as_ref() {
                let dropped = s.handle_agent_media(now, a.media());
                if dropped > 0 {
                    tracing::warn!(dropped, "agent audio buffer full");
                }
            }
        }
        Ok(AgentIn::Mark(name)) => s.handle_agent_mark(now, &name),
        Ok(AgentIn::Clear) => s.handle_agent_clear(now),
        Ok(AgentIn::Transcript {
            role,
            text,
            start,
            end,
        }) => s.handle_agent_transcript(&role, &text, start, end),
        Ok(AgentIn::Hangup) => s.handle_agent_hangup(now),
        Ok(AgentIn::Closed) => {
            d.agent = None;
            s.handle_agent_closed(now, "the agent closed the stream");
        }
        Err(reason) => {
            d.agent = None;
            s.handle_agent_closed(now, &reason);
        }
    }
}

/// Carries out everything the session asked for.
async fn flush(d: &mut Driver, st: &AppState, carrier: &mut WebSocket) {
    loop {
        let Some(out) = d.session.as_mut().and_then(CallSession::poll_output) else {
            return;
        };
        match out {
            Output::Carrier(c) => {
                match c {
                    CarrierOut::Media(frame) => {
                        stream::encode_media(&mut d.out, &d.stream_sid, &frame)
                    }
                    CarrierOut::Mark(name) => stream::encode_mark(&mut d.out, &d.stream_sid, &name),
                    CarrierOut::Clear => stream::encode_clear(&mut d.out, &d.stream_sid),
                    // The session ends with it; closing the stream below ends
                    // the <Connect> and with it the call.
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
            Output::Agent(a) => match a {
                AgentOut::Connect { mode, params } => {
                    if let Some(mut old) = d.agent.take() {
                        old.stop(&d.call_sid).await;
                    }
                    d.backlog.clear();
                    let (tx, rx) = oneshot::channel();
                    let url = d.agent_url.clone();
                    let call_sid = d.call_sid.clone();
                    let timeout = st.cfg.agent_connect_timeout;
                    let audio = d.agent_audio;
                    tracing::info!(mode = mode.as_str(), "connecting the agent");
                    tokio::spawn(async move {
                        let r = AgentLink::connect(&url, &call_sid, &params, audio, timeout)
                            .await
                            .map_err(|e| e.to_string());
                        let _ = tx.send(r);
                    });
                    d.connecting = Some(rx);
                }
                AgentOut::Media(frame) => match d.agent.as_mut() {
                    Some(link) => {
                        if let Err(e) = link.send_media(&frame).await {
                            tracing::warn!(error = %e, "agent send failed");
                        }
                    }
                    None => {
                        if d.backlog.len() == d.backlog.capacity() {
                            d.backlog.pop_front();
                        }
                        d.backlog.push_back(frame);
                    }
                },
                AgentOut::Dtmf(digit) => {
                    if let Some(link) = d.agent.as_mut() {
                        let _ = link.send_dtmf(digit).await;
                    }
                }
                AgentOut::Mark(name) => {
                    if let Some(link) = d.agent.as_mut() {
                        let _ = link.send_mark(&name).await;
                    }
                }
                AgentOut::Amd {
                    answered_by,
                    decision_ms,
                } => {
                    if let Some(link) = d.agent.as_mut() {
                        let _ = link.send_amd(answered_by, decision_ms).await;
                    }
                }
                AgentOut::Stop => {
                    if let Some(mut link) = d.agent.take() {
                        link.stop(&d.call_sid).await;
                    }
                    d.connecting = None;
                }
            },
            Output::Lifecycle(l) => {
                let fact = match l {
                    Lifecycle::Ended {
                        end_type, reason, ..
                    } => {
                        tracing::info!(
                            end_type = end_type.as_str(),
                            reason = reason.as_deref().unwrap_or(""),
                            "call ended"
                        );
                        let turns = d
                            .session
                            .as_ref()
                            .and_then(|s| serde_json::to_value(s.turns()).ok())
                            .unwrap_or_else(|| serde_json::Value::Array(Vec::new()));
                        Some(CallFact::Ended {
                            end_type: end_type.as_str().to_string(),
                            turns,
                            reason,
                        })
                    }
                    Lifecycle::AmdDecided(dec) => {
                        tracing::info!(
                            answered_by = dec.outcome.as_str(),
                            at_ms = dec.at_ms,
                            trigger = dec.trigger.as_str(),
                            "AMD"
                        );
                        Some(CallFact::Amd {
                            answered_by: dec.outcome.as_str().to_string(),
                            decision_ms: dec.at_ms,
                        })
                    }
                    Lifecycle::Answered { .. } => Some(CallFact::Answered),
                    other => {
                        tracing::debug!(?other, "lifecycle");
                        None
                    }
                };
                if let (Some(engine), Some(cq), Some(f)) = (&st.cfg.engine, &d.call_queue_id, fact)
                {
                    engine.report(cq, f);
                }
            }
            Output::Verify { wav, deadline_ms } => match st.cfg.llm.clone() {
                // The detector keeps its own deadline on media time; the
                // request gets the same budget from now, and an answer that
                // comes later is ignored by the session.
                Some(llm) => {
                    let budget = Duration::from_millis(deadline_ms.saturating_sub(d.media_ms));
                    let (tx, rx) = oneshot::channel();
                    tracing::info!(
                        budget_ms = budget.as_millis() as u64,
                        "AMD unsure: asking the LLM"
                    );
                    tokio::spawn(
                        async move {
                            let verdict = match llm.verify_async(&wav, budget).await {
                                Ok(p_machine) => LlmVerdict::Answer { p_machine },
                                Err(e) => {
                                    tracing::warn!(error = %e, "LLM verification failed; falling back");
                                    LlmVerdict::Failed
                                }
                            };
                            let _ = tx.send(verdict);
                        }
                        .in_current_span(),
                    );
                    d.verifying = Some(rx);
                }
                None => {
                    tracing::warn!(
                        "AMD asked for LLM verification but no LLM is configured; falling back"
                    );
                    let now = d.now();
                    if let Some(s) = d.session.as_mut() {
                        s.handle_llm_verdict(now, LlmVerdict::Failed);
                    }
                }
            },
        }
    }
}

/// Binds and serves, logging the address.
pub async fn run(cfg: ServerConfig) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(cfg.listen).await?;
    tracing::info!(addr = %listener.local_addr()?, agent = %cfg.agent_url, "dialgate serving /twilio/stream");
    serve(listener, cfg).await
}
