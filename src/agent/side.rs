//! The half of a call's driver that does not depend on the carrier: the
//! agent link (connected in its own task so a slow agent never stalls the
//! carrier, with callee audio kept meanwhile), the LLM verifier's request,
//! and the facts reported to the campaign engine. The Twilio stream
//! (`server.rs`) and the SIP call (`carrier/sip/call.rs`) each own one
//! beside their carrier socket; the [`CallSession`] decides, this only
//! carries out. A driver (it spawns and holds sockets), so it lives here
//! rather than beside the sans-IO session in `src/call`.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::oneshot;
use tracing::Instrument;

use crate::agent::bridge::{AgentAudio, AgentIn, AgentLink};
use crate::audio::AudioFrame;
use crate::call::session::{AgentOut, CallSession, CarrierOut, Lifecycle, Output};
use crate::detect::amd::LlmVerdict;
use crate::detect::llm::LlmVerifier;
use crate::engine::{CallFact, Engine};

/// Something happened on the agent's side.
#[derive(Debug)]
pub enum AgentEvent {
    /// A message from the agent, or why the link failed.
    Msg(Result<AgentIn, String>),
    /// The connection attempt finished (boxed: a link is large, and this
    /// happens once a call).
    Connected(Result<Box<AgentLink>, String>),
    /// The LLM verifier answered (or failed).
    Verdict(LlmVerdict),
}

/// The agent side of one call.
pub struct AgentSide {
    agent: Option<AgentLink>,
    connecting: Option<oneshot::Receiver<Result<AgentLink, String>>>,
    verifying: Option<oneshot::Receiver<LlmVerdict>>,
    /// callee audio that arrived while the agent was connecting (500 ms)
    backlog: VecDeque<AudioFrame>,
    /// The call's id toward the agent (`callSid`).
    pub call_sid: String,
    /// Where the agent is.
    pub agent_url: String,
    /// What audio it speaks.
    pub agent_audio: AgentAudio,
    /// The campaign attempt, when the call has one.
    pub call_queue_id: Option<String>,
    connect_timeout: Duration,
    llm: Option<Arc<LlmVerifier>>,
    engine: Option<Arc<Engine>>,
}

impl std::fmt::Debug for AgentSide {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentSide")
            .field("call_sid", &self.call_sid)
            .field("connected", &self.agent.is_some())
            .finish()
    }
}

impl AgentSide {
    /// An agent side with no agent connected yet.
    pub fn new(
        agent_url: String,
        agent_audio: AgentAudio,
        connect_timeout: Duration,
        llm: Option<Arc<LlmVerifier>>,
        engine: Option<Arc<Engine>>,
    ) -> Self {
        Self {
            agent: None,
            connecting: None,
            verifying: None,
            backlog: VecDeque::with_capacity(25),
            call_sid: String::new(),
            agent_url,
            agent_audio,
            call_queue_id: None,
            connect_timeout,
            llm,
            engine,
        }
    }

    /// The next agent-side event; pending forever when nothing is under way
    /// (so it can sit in a `select!` beside the carrier).
    pub async fn next(&mut self) -> AgentEvent {
        let agent = &mut self.agent;
        let connecting = &mut self.connecting;
        let verifying = &mut self.verifying;
        tokio::select! {
            res = async {
                match agent {
                    Some(link) => link.recv().await.map_err(|e| e.to_string()),
                    None => std::future::pending().await,
                }
            } => AgentEvent::Msg(res),
            res = async {
                match connecting {
                    Some(rx) => rx.await.unwrap_or_else(|_| Err("agent connect task vanished".into())),
                    None => std::future::pending().await,
                }
            } => {
                *connecting = None;
                AgentEvent::Connected(res.map(Box::new))
            }
            v = async {
                match verifying {
                    Some(rx) => rx.await.unwrap_or(LlmVerdict::Failed),
                    None => std::future::pending().await,
                }
            } => {
                *verifying = None;
                AgentEvent::Verdict(v)
            }
        }
    }

    /// Hands an agent-side event to the session.
    pub async fn apply(&mut self, s: &mut CallSession, ev: AgentEvent, now: u64) {
        match ev {
            AgentEvent::Msg(res) => self.on_message(s, res, now),
            AgentEvent::Connected(Ok(link)) => {
                self.agent = Some(*link);
                while let Some(f) = self.backlog.pop_front() {
                    if let Some(a) = self.agent.as_mut()
                        && a.send_media(&f).await.is_err()
                    {
                        break;
                    }
                }
            }
            AgentEvent::Connected(Err(reason)) => {
                tracing::warn!(%reason, "agent unreachable");
                s.handle_agent_closed(now, &reason);
            }
            AgentEvent::Verdict(v) => s.handle_llm_verdict(now, v),
        }
    }

    fn on_message(&mut self, s: &mut CallSession, res: Result<AgentIn, String>, now: u64) {
        match res {
            Ok(AgentIn::Media) => {
                if let Some(a) = self.agent.as_ref() {
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
            Ok(AgentIn::Dtmf(digit)) => s.handle_agent_dtmf(now, digit),
            Ok(AgentIn::Closed) => {
                self.agent = None;
                s.handle_agent_closed(now, "the agent closed the stream");
            }
            Err(reason) => {
                self.agent = None;
                s.handle_agent_closed(now, &reason);
            }
        }
    }

    /// Carries out one session output that is not the carrier's; returns
    /// the carrier's for the caller. `media_ms` is the media time received
    /// so far (the LLM's budget is measured on it).
    pub async fn perform(
        &mut self,
        s: &mut CallSession,
        out: Output,
        media_ms: u64,
        now: u64,
    ) -> Option<CarrierOut> {
        match out {
            Output::Carrier(c) => return Some(c),
            Output::Agent(a) => self.agent_out(a).await,
            Output::Lifecycle(l) => self.lifecycle(s, l),
            Output::Verify { wav, deadline_ms } => match self.llm.clone() {
                // The detector keeps its own deadline on media time; the
                // request gets the same budget from now, and an answer that
                // comes later is ignored by the session.
                Some(llm) => {
                    let budget = Duration::from_millis(deadline_ms.saturating_sub(media_ms));
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
                    self.verifying = Some(rx);
                }
                None => {
                    tracing::warn!(
                        "AMD asked for LLM verification but no LLM is configured; falling back"
                    );
                    s.handle_llm_verdict(now, LlmVerdict::Failed);
                }
            },
        }
        None
    }

    async fn agent_out(&mut self, a: AgentOut) {
        match a {
            AgentOut::Connect { mode, params } => {
                if let Some(mut old) = self.agent.take() {
                    old.stop(&self.call_sid).await;
                }
                self.backlog.clear();
                let (tx, rx) = oneshot::channel();
                let url = self.agent_url.clone();
                let call_sid = self.call_sid.clone();
                let timeout = self.connect_timeout;
                let audio = self.agent_audio;
                tracing::info!(mode = mode.as_str(), "connecting the agent");
                tokio::spawn(
                    async move {
                        let r = AgentLink::connect(&url, &call_sid, &params, audio, timeout)
                            .await
                            .map_err(|e| e.to_string());
                        let _ = tx.send(r);
                    }
                    .in_current_span(),
                );
                self.connecting = Some(rx);
            }
            AgentOut::Media(frame) => match self.agent.as_mut() {
                Some(link) => {
                    if let Err(e) = link.send_media(&frame).await {
                        tracing::warn!(error = %e, "agent send failed");
                    }
                }
                None => {
                    if self.backlog.len() == self.backlog.capacity() {
                        self.backlog.pop_front();
                    }
                    self.backlog.push_back(frame);
                }
            },
            AgentOut::Dtmf(digit) => {
                if let Some(link) = self.agent.as_mut() {
                    let _ = link.send_dtmf(digit).await;
                }
            }
            AgentOut::Mark(name) => {
                if let Some(link) = self.agent.as_mut() {
                    let _ = link.send_mark(&name).await;
                }
            }
            AgentOut::Amd {
                answered_by,
                decision_ms,
            } => {
                if let Some(link) = self.agent.as_mut() {
                    let _ = link.send_amd(answered_by, decision_ms).await;
                }
            }
            AgentOut::Stop => self.stop().await,
        }
    }

    fn lifecycle(&mut self, s: &CallSession, l: Lifecycle) {
        let fact = match l {
            Lifecycle::Ended {
                end_type, reason, ..
            } => {
                tracing::info!(
                    end_type = end_type.as_str(),
                    reason = reason.as_deref().unwrap_or(""),
                    "call ended"
                );
                let turns = serde_json::to_value(s.turns())
                    .unwrap_or_else(|_| serde_json::Value::Array(Vec::new()));
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
        if let (Some(engine), Some(cq), Some(f)) = (&self.engine, &self.call_queue_id, fact) {
            engine.report(cq, f);
        }
    }

    /// Stops the agent stream, if any (`stop`, then close).
    pub async fn stop(&mut self) {
        if let Some(mut link) = self.agent.take() {
            link.stop(&self.call_sid).await;
        }
        self.connecting = None;
    }
}
