//! The call session: one per answered call, shared by every carrier. It sits
//! between the carrier codec and the agent bridge, runs AMD on the callee's
//! audio, applies the campaign's voicemail rules, paces the agent's audio
//! back to the carrier and reports the call's lifecycle.
//!
//! Sans-IO: `handle_*` methods take inputs with the current time (ms on the
//! driver's monotonic clock), [`CallSession::poll_output`] yields what to do,
//! [`CallSession::poll_timeout`] says when to call [`CallSession::tick`]
//! next. After every input, drain `poll_output` until it returns `None`.
//!
//! ```text
//! carrier ──start/media/dtmf/mark/stop──► CallSession ──media/dtmf/marks/amd──► agent
//!         ◄──paced 20 ms frames, marks,──            ◄──media/mark/clear/────
//!             clear, hang-up                              transcript/hangup
//!                                          └──► Lifecycle: answered, AMD, ended
//! ```
//!
//! The rules:
//!
//! | situation | what the session does |
//! |---|---|
//! | agent start `immediate` | connect the agent at answer, in `conversation` mode |
//! | agent start `after_amd` | connect it when AMD says human (or unknown) |
//! | machine detected, *stop speaking* on | `clear` the carrier's buffered agent audio at once, drop what is queued, mute the agent |
//! | machine, final action *end call* | hang up; the call ends as `voicemail_ended` |
//! | machine, final action *leave message* | wait for `machine_end_*`, then (re)connect the agent in `voicemail` mode with the voicemail script; when it hangs up, the call ends as `voicemail_ended` |
//! | fax or SIT | hang up; ends as `failed` with the reason |
//! | callee hangs up | `user_hangup` |
//! | agent hangs up | `agent_hangup` |
//! | agent unreachable or gone mid-call | hang up; `failed` with the reason |
//! | maximum duration reached | hang up; `timeout` |

use std::collections::{BTreeMap, VecDeque};

use crate::audio::ring::{RingConsumer, RingProducer, ring};
use crate::audio::{AudioFrame, FRAME_MS, FRAME_SAMPLES};
use crate::detect::amd::{Amd, AmdConfig, AmdDecision, AmdError, AmdEvent, AmdOutcome, LlmVerdict};

/// When the agent is connected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AgentStart {
    /// At answer: the agent may speak first; AMD may still stop it.
    Immediate,
    /// Once AMD has decided the callee is a person.
    AfterAmd,
}

/// What to do with a machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MachineAction {
    /// Hang up.
    EndCall,
    /// Wait for the greeting to end, then play the agent's voicemail path.
    LeaveMessage {
        /// The script path the agent runs in voicemail mode.
        voicemail_script: String,
    },
}

/// The agent stream's mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AgentMode {
    /// Talking with a person.
    Conversation,
    /// Leaving a message.
    Voicemail,
}

impl AgentMode {
    /// The `mode` custom parameter.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Conversation => "conversation",
            Self::Voicemail => "voicemail",
        }
    }
}

/// How the conversation ended (the seed's `conversation_end_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndType {
    /// The agent hung up.
    AgentHangup,
    /// The callee hung up.
    UserHangup,
    /// A machine answered and the call ended with it (message left, or
    /// ended at once).
    VoicemailEnded,
    /// The maximum call duration was reached.
    Timeout,
    /// Fax, SIT, or the agent could not be reached or dropped.
    Failed,
}

impl EndType {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::AgentHangup => "agent_hangup",
            Self::UserHangup => "user_hangup",
            Self::VoicemailEnded => "voicemail_ended",
            Self::Timeout => "timeout",
            Self::Failed => "failed",
        }
    }
}

/// A campaign's call settings, as the session needs them.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// When to connect the agent.
    pub agent_start: AgentStart,
    /// Clear the agent's audio the moment a machine is detected.
    pub stop_speaking: bool,
    /// What to do with a machine.
    pub machine_action: MachineAction,
    /// Hang up after this long (ms since answer).
    pub max_duration_ms: u64,
    /// AMD settings; `None` disables AMD (everyone is treated as a person).
    pub amd: Option<AmdConfig>,
    /// Custom parameters for the agent's `start` (call_queue_id, script,
    /// variables, to/from …); `mode` and `answered_by` are added.
    pub agent_params: BTreeMap<String, String>,
    /// How far ahead of real time paced frames are sent (Twilio buffers;
    /// 60–160 ms avoids both gaps and a long `clear`).
    pub lead_ms: u64,
    /// Agent audio the session buffers at most, ms.
    pub max_buffer_ms: u64,
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self {
            agent_start: AgentStart::AfterAmd,
            stop_speaking: true,
            machine_action: MachineAction::EndCall,
            max_duration_ms: 30 * 60 * 1000,
            amd: Some(AmdConfig::default()),
            agent_params: BTreeMap::new(),
            lead_ms: 80,
            max_buffer_ms: 10_000,
        }
    }
}

/// To the carrier.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CarrierOut {
    /// One 20 ms frame of μ-law (inline: the paced path does not allocate).
    Media([u8; FRAME_SAMPLES]),
    /// Echo this name back once the audio before it has played.
    Mark(String),
    /// Drop buffered audio.
    Clear,
    /// Send this DTMF digit to the callee (the agent pressed it: IVRs).
    Dtmf(char),
    /// End the call.
    Hangup,
}

/// To the agent.
// Audio stays inline: boxing it would allocate once per 20 ms frame, and
// the output queue is sized once, so the size difference costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum AgentOut {
    /// Open the agent stream with these `start.customParameters`.
    Connect {
        /// The mode.
        mode: AgentMode,
        /// Parameters, `mode` and `answered_by` included.
        params: BTreeMap<String, String>,
    },
    /// The callee's audio.
    Media(AudioFrame),
    /// A digit the callee pressed.
    Dtmf(char),
    /// A mark of the agent's has played.
    Mark(String),
    /// The AMD decision (extension event).
    Amd {
        /// The outcome.
        answered_by: AmdOutcome,
        /// When, ms since answer.
        decision_ms: u64,
    },
    /// Close the agent stream (`stop`).
    Stop,
}

/// Facts for the lifecycle (events, the call queue).
#[derive(Debug, Clone, PartialEq)]
pub enum Lifecycle {
    /// The call was answered and audio flows.
    Answered {
        /// Driver time.
        at: u64,
    },
    /// AMD decided.
    AmdDecided(AmdDecision),
    /// The agent stream was asked to open.
    AgentConnecting(AgentMode),
    /// The call ended.
    Ended {
        /// How.
        end_type: EndType,
        /// Driver time.
        at: u64,
        /// Why, in words, when it failed.
        reason: Option<String>,
    },
}

/// Everything the session asks its driver to do.
#[allow(clippy::large_enum_variant)] // inline audio, as for AgentOut
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// Send to the carrier.
    Carrier(CarrierOut),
    /// Send to the agent.
    Agent(AgentOut),
    /// Record a lifecycle fact.
    Lifecycle(Lifecycle),
    /// Ask the LLM verifier; answer with [`CallSession::handle_llm_verdict`].
    Verify {
        /// The greeting as a WAV file.
        wav: Vec<u8>,
        /// Media time the answer is due by.
        deadline_ms: u64,
    },
}

/// One conversation turn, from the agent's transcript events.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Turn {
    /// `agent` or `user`.
    pub role: String,
    /// What was said.
    pub text: String,
    /// Seconds from the stream start, when the agent said.
    pub start: Option<f64>,
    /// Seconds from the stream start.
    pub end: Option<f64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Ringing,
    Live,
    Ended,
}

/// Errors the session reports.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SessionError {
    /// AMD could not start or run.
    #[error(transparent)]
    Amd(#[from] AmdError),
}

/// One call.
pub struct CallSession {
    cfg: SessionConfig,
    phase: Phase,
    answered_at: u64,
    amd: Option<Amd>,
    decision: Option<AmdDecision>,
    agent: Option<AgentMode>,
    agent_muted: bool,
    out: VecDeque<Output>,
    /// agent audio waiting to be paced out, μ-law
    tx: RingProducer<u8>,
    rx: RingConsumer<u8>,
    /// agent marks with the byte position (in the agent's audio) they follow
    pending_marks: VecDeque<(u64, String)>,
    /// marks sent to the carrier, waiting for its echo
    sent_marks: VecDeque<String>,
    bytes_in: u64,
    bytes_out: u64,
    next_due: Option<u64>,
    turns: Vec<Turn>,
    inbound_frames: u64,
    end_type: Option<EndType>,
}

impl std::fmt::Debug for CallSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallSession")
            .field("phase", &self.phase)
            .field("agent", &self.agent)
            .field("decision", &self.decision.map(|d| d.outcome))
            .finish()
    }
}

impl CallSession {
    /// A session for a call about to be answered.
    pub fn new(cfg: SessionConfig) -> Result<Self, SessionError> {
        let amd = match cfg.amd {
            Some(a) => Some(Amd::new(a)?),
            None => None,
        };
        let (tx, rx) = ring::<u8>((cfg.max_buffer_ms * 8) as usize);
        Ok(Self {
            cfg,
            phase: Phase::Ringing,
            answered_at: 0,
            amd,
            decision: None,
            agent: None,
            agent_muted: false,
            out: VecDeque::with_capacity(16),
            tx,
            rx,
            pending_marks: VecDeque::new(),
            sent_marks: VecDeque::new(),
            bytes_in: 0,
            bytes_out: 0,
            next_due: None,
            turns: Vec::new(),
            inbound_frames: 0,
            end_type: None,
        })
    }

    /// The next thing to do, if any.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.out.pop_front()
    }

    /// When [`tick`](Self::tick) must next be called, if anything is due.
    pub fn poll_timeout(&self) -> Option<u64> {
        if self.phase != Phase::Live {
            return None;
        }
        let deadline = self.answered_at + self.cfg.max_duration_ms;
        let pace = match self.next_due {
            Some(due) if self.rx.len() >= FRAME_SAMPLES => {
                Some(due.saturating_sub(self.cfg.lead_ms))
            }
            _ => None,
        };
        Some(pace.map_or(deadline, |p| p.min(deadline)))
    }

    /// The conversation's turns so far.
    pub fn turns(&self) -> &[Turn] {
        &self.turns
    }

    /// The first AMD decision, once made.
    pub fn decision(&self) -> Option<AmdDecision> {
        self.decision
    }

    /// How the call ended, once it has.
    pub fn end_type(&self) -> Option<EndType> {
        self.end_type
    }

    /// True once the call has ended.
    pub fn is_ended(&self) -> bool {
        self.phase == Phase::Ended
    }

    fn connect_agent(&mut self, mode: AgentMode) {
        let mut params = self.cfg.agent_params.clone();
        params.insert("mode".into(), mode.as_str().into());
        if let Some(d) = self.decision {
            params.insert("answered_by".into(), d.outcome.as_str().into());
        }
        if mode == AgentMode::Voicemail
            && let MachineAction::LeaveMessage { voicemail_script } = &self.cfg.machine_action
        {
            params.insert("script".into(), voicemail_script.clone());
        }
        self.agent = Some(mode);
        self.agent_muted = false;
        self.out
            .push_back(Output::Lifecycle(Lifecycle::AgentConnecting(mode)));
        self.out
            .push_back(Output::Agent(AgentOut::Connect { mode, params }));
    }

    fn end(&mut self, now: u64, end_type: EndType, reason: Option<String>, hang_up: bool) {
        if self.phase == Phase::Ended {
            return;
        }
        self.settle_amd();
        if hang_up {
            self.out.push_back(Output::Carrier(CarrierOut::Hangup));
        }
        if self.agent.take().is_some() {
            self.out.push_back(Output::Agent(AgentOut::Stop));
        }
        self.phase = Phase::Ended;
        self.end_type = Some(end_type);
        self.out.push_back(Output::Lifecycle(Lifecycle::Ended {
            end_type,
            at: now,
            reason,
        }));
    }

    /// The carrier's stream started: the call is answered.
    pub fn handle_carrier_start(&mut self, now: u64) {
        if self.phase != Phase::Ringing {
            return;
        }
        self.phase = Phase::Live;
        self.answered_at = now;
        self.out
            .push_back(Output::Lifecycle(Lifecycle::Answered { at: now }));
        if self.cfg.agent_start == AgentStart::Immediate || self.amd.is_none() {
            self.connect_agent(AgentMode::Conversation);
        }
    }

    /// 20 ms of the callee's audio (media time since answer in the frame).
    pub fn handle_carrier_media(
        &mut self,
        now: u64,
        frame: &AudioFrame,
    ) -> Result<(), SessionError> {
        if self.phase != Phase::Live {
            return Ok(());
        }
        self.inbound_frames += 1;
        if let Some(amd) = self.amd.as_mut() {
            amd.push_frame(frame)?;
            self.drain_amd(now);
        }
        if self.phase == Phase::Live && self.agent.is_some() && !self.agent_muted {
            self.out.push_back(Output::Agent(AgentOut::Media(*frame)));
        }
        self.tick(now);
        Ok(())
    }

    /// The call is ending with AMD undecided (a hang-up, the maximum
    /// duration, a callee who never paused): the detector settles on what it
    /// heard, so the call still reports who answered. Recorded only: no agent
    /// is connected and nothing is hung up on account of it.
    fn settle_amd(&mut self) {
        let Some(amd) = self.amd.as_mut() else {
            return;
        };
        if self.phase != Phase::Live || amd.is_done() {
            return;
        }
        amd.finish();
        while let Some(ev) = amd.poll_event() {
            if let AmdEvent::Decision(d) = ev {
                self.decision.get_or_insert(d);
                self.out
                    .push_back(Output::Lifecycle(Lifecycle::AmdDecided(d)));
            }
        }
    }

    fn drain_amd(&mut self, now: u64) {
        while let Some(ev) = self.amd.as_mut().and_then(Amd::poll_event) {
            match ev {
                AmdEvent::Decision(d) => self.on_decision(now, d),
                AmdEvent::Verify {
                    wav, deadline_ms, ..
                } => {
                    self.out.push_back(Output::Verify { wav, deadline_ms });
                }
            }
        }
    }

    fn on_decision(&mut self, now: u64, d: AmdDecision) {
        if self.phase != Phase::Live {
            return;
        }
        // The first decision is the call's answer; machine_end_* follow it.
        if self.decision.is_none() {
            self.decision = Some(d);
        }
        self.out
            .push_back(Output::Lifecycle(Lifecycle::AmdDecided(d)));
        if self.agent.is_some() {
            self.out.push_back(Output::Agent(AgentOut::Amd {
                answered_by: d.outcome,
                decision_ms: d.at_ms,
            }));
        }
        match d.outcome {
            AmdOutcome::Human | AmdOutcome::Unknown => {
                if self.agent.is_none() {
                    self.connect_agent(AgentMode::Conversation);
                }
            }
            AmdOutcome::Fax | AmdOutcome::Sit => {
                self.end(
                    now,
                    EndType::Failed,
                    Some(format!("{} answered", d.outcome)),
                    true,
                );
            }
            AmdOutcome::MachineStart => {
                if self.cfg.stop_speaking {
                    self.silence_agent();
                }
                if self.cfg.machine_action == MachineAction::EndCall {
                    self.end(now, EndType::VoicemailEnded, None, true);
                }
            }
            AmdOutcome::MachineEndBeep
            | AmdOutcome::MachineEndSilence
            | AmdOutcome::MachineEndOther => match self.cfg.machine_action {
                MachineAction::EndCall => self.end(now, EndType::VoicemailEnded, None, true),
                MachineAction::LeaveMessage { .. } => {
                    if self.agent == Some(AgentMode::Conversation) {
                        self.out.push_back(Output::Agent(AgentOut::Stop));
                        self.agent = None;
                    }
                    self.silence_agent();
                    self.connect_agent(AgentMode::Voicemail);
                }
            },
        }
    }

    /// Stops the agent being heard: clear the carrier, drop what is queued.
    fn silence_agent(&mut self) {
        self.agent_muted = true;
        let dropped = self.rx.clear();
        self.bytes_out += dropped as u64;
        self.pending_marks.clear();
        self.next_due = None;
        self.out.push_back(Output::Carrier(CarrierOut::Clear));
    }

    /// A digit from the callee.
    pub fn handle_carrier_dtmf(&mut self, _now: u64, digit: char) {
        if self.phase == Phase::Live && self.agent.is_some() {
            self.out.push_back(Output::Agent(AgentOut::Dtmf(digit)));
        }
    }

    /// The carrier echoed a mark: the audio before it has played.
    pub fn handle_carrier_mark(&mut self, _now: u64, name: &str) {
        if let Some(pos) = self.sent_marks.iter().position(|m| m == name) {
            self.sent_marks.remove(pos);
            if self.agent.is_some() {
                self.out
                    .push_back(Output::Agent(AgentOut::Mark(name.to_string())));
            }
        }
    }

    /// The carrier's stream stopped: the callee hung up (or the carrier
    /// ended the call).
    pub fn handle_carrier_stop(&mut self, now: u64) {
        self.settle_amd();
        let end_type = if self.agent == Some(AgentMode::Voicemail)
            || self.decision.is_some_and(|d| d.outcome.is_machine())
        {
            EndType::VoicemailEnded
        } else {
            EndType::UserHangup
        };
        self.end(now, end_type, None, false);
    }

    /// Agent audio (μ-law 8 kHz, any length). Returns the bytes dropped
    /// because the buffer was full (the agent sends faster than real time
    /// for longer than `max_buffer_ms`).
    pub fn handle_agent_media(&mut self, now: u64, ulaw: &[u8]) -> usize {
        if self.phase != Phase::Live || self.agent.is_none() || self.agent_muted {
            return 0;
        }
        let written = self.tx.push_slice(ulaw);
        self.bytes_in += written as u64;
        // The play clock: the next frame plays right after what the carrier
        // still has buffered, or now if that has run out.
        self.next_due = Some(self.next_due.map_or(now, |due| due.max(now)));
        self.tick(now);
        ulaw.len() - written
    }

    /// The agent placed a mark after the audio it sent so far.
    pub fn handle_agent_mark(&mut self, now: u64, name: &str) {
        if self.agent.is_none() {
            return;
        }
        self.pending_marks
            .push_back((self.bytes_in, name.to_string()));
        self.tick(now);
    }

    /// The agent asked to drop its buffered audio (barge-in).
    pub fn handle_agent_clear(&mut self, _now: u64) {
        if self.agent.is_none() {
            return;
        }
        let dropped = self.rx.clear();
        self.bytes_out += dropped as u64;
        self.next_due = None;
        self.out.push_back(Output::Carrier(CarrierOut::Clear));
        // As Twilio does: marks not yet played come back at once.
        let pending: Vec<String> = self.pending_marks.drain(..).map(|(_, n)| n).collect();
        for name in pending.into_iter().chain(self.sent_marks.drain(..)) {
            self.out.push_back(Output::Agent(AgentOut::Mark(name)));
        }
    }

    /// A transcript line from the agent.
    pub fn handle_agent_transcript(
        &mut self,
        role: &str,
        text: &str,
        start: Option<f64>,
        end: Option<f64>,
    ) {
        self.turns.push(Turn {
            role: role.to_string(),
            text: text.to_string(),
            start,
            end,
        });
    }

    /// The agent pressed a digit (to get through an IVR): sent to the
    /// callee while the agent has the call.
    pub fn handle_agent_dtmf(&mut self, _now: u64, digit: char) {
        if self.phase == Phase::Live && self.agent.is_some() && !self.agent_muted {
            self.out.push_back(Output::Carrier(CarrierOut::Dtmf(digit)));
        }
    }

    /// The agent hung up.
    pub fn handle_agent_hangup(&mut self, now: u64) {
        let end_type = if self.agent == Some(AgentMode::Voicemail) {
            EndType::VoicemailEnded
        } else {
            EndType::AgentHangup
        };
        self.end(now, end_type, None, true);
    }

    /// The agent stream closed or could not be opened.
    pub fn handle_agent_closed(&mut self, now: u64, reason: &str) {
        if self.phase != Phase::Live || self.agent.is_none() {
            return;
        }
        self.agent = None;
        self.end(
            now,
            EndType::Failed,
            Some(format!("agent stream: {reason}")),
            true,
        );
    }

    /// The LLM verifier answered (or failed).
    pub fn handle_llm_verdict(&mut self, now: u64, verdict: LlmVerdict) {
        if let Some(amd) = self.amd.as_mut() {
            amd.llm_verdict(verdict);
            self.drain_amd(now);
        }
    }

    /// Time passed: pace agent audio, enforce the maximum duration.
    pub fn tick(&mut self, now: u64) {
        if self.phase != Phase::Live {
            return;
        }
        if now >= self.answered_at + self.cfg.max_duration_ms {
            self.end(now, EndType::Timeout, None, true);
            return;
        }
        while let Some(due) = self.next_due {
            if due > now + self.cfg.lead_ms {
                break;
            }
            let mut frame = [0u8; FRAME_SAMPLES];
            if !self.rx.pop_exact(&mut frame) {
                // Ran dry: keep the clock; more audio continues from `due`.
                break;
            }
            self.bytes_out += FRAME_SAMPLES as u64;
            self.out
                .push_back(Output::Carrier(CarrierOut::Media(frame)));
            // Never schedule in the past: a late driver does not burst.
            self.next_due =
                Some(due.max(now.saturating_sub(self.cfg.lead_ms)) + u64::from(FRAME_MS));
            self.flush_marks();
        }
        self.flush_marks();
    }

    /// Marks whose audio has all been sent go to the carrier.
    fn flush_marks(&mut self) {
        while let Some((pos, _)) = self.pending_marks.front() {
            // A tail shorter than a frame is never sent; don't wait for it.
            let tail = self.bytes_in - self.bytes_out < FRAME_SAMPLES as u64;
            if *pos > self.bytes_out && !tail {
                break;
            }
            if let Some((_, name)) = self.pending_marks.pop_front() {
                self.sent_marks.push_back(name.clone());
                self.out.push_back(Output::Carrier(CarrierOut::Mark(name)));
            }
        }
    }
}
