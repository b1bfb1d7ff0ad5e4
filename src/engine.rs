//! The dialer's driver and the call-state engine: the tokio side of
//! [`crate::dialer::Dialer`]. It owns the loop (a tick every few hundred ms,
//! or sooner when woken), the store and the carrier clients; every decision
//! comes from the dialer core or the store's legal transitions. It also
//! applies what comes back: status callbacks from the carrier, and the call
//! facts the media gateway reports (answer, AMD, end). At start it
//! reconciles attempts a crash left in flight, by asking the carrier what
//! became of them. Clocks and timers live here, never in the core.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use serde_json::Value;
use tokio::sync::{Notify, mpsc};

use crate::call::session::SessionConfig;
use crate::campaign::{CallerNumber, CampaignSpec, CampaignState, phone};
use tracing::Instrument;

use crate::carrier::twilio::rest::{CreateFailure, Dial, RestError, TwilioClient, map_status};
use crate::dialer::{Dialer, Verdict, retry_at, unplaced_retry_at};
use crate::store::{CallRow, CallStatus, Patch, Store, StoreError};

/// What the driver needs.
#[derive(Clone)]
pub struct EngineConfig {
    /// Base URL the carrier reaches the gateway at (`http://…` or
    /// `https://…`); the stream URL is its `ws`/`wss` twin.
    pub public_url: String,
    /// Carrier clients by name (`twilio`, `sim`).
    pub carriers: HashMap<String, TwilioClient>,
    /// The SIP trunk (carrier `sip`), if configured.
    pub sip: Option<SipTrunk>,
    /// How often to look for due attempts.
    pub tick: Duration,
    /// The first wait before a contact whose call the carrier did not place
    /// is tried again (see [`crate::dialer::unplaced_retry_at`]).
    pub carrier_backoff: Duration,
}

/// How long an attempt for a trunk that is down waits before the dialer
/// looks at it again, ms.
const SIP_DOWN_HOLD_MS: i64 = 5_000;

/// A SIP trunk calls are placed through.
#[derive(Debug, Clone)]
pub struct SipTrunk {
    /// Host, credentials, from domain.
    pub trunk: crate::carrier::sip::uac::TrunkConfig,
    /// Where to send to.
    pub addr: std::net::SocketAddr,
    /// The LLM verifier for campaigns that ask for it.
    pub llm: Option<Arc<crate::detect::llm::LlmVerifier>>,
    /// Ping the trunk with OPTIONS this often (None: never).
    pub options_interval: Option<Duration>,
    /// Whether the trunk answers its OPTIONS; true until pings say
    /// otherwise (and always, without pings). While false, the dialer
    /// holds calls for the trunk.
    pub up: Arc<std::sync::atomic::AtomicBool>,
}

/// A fact about a live call, reported by the media gateway.
#[derive(Debug, Clone)]
pub enum CallFact {
    /// The callee's phone rings (a SIP 180/183; Twilio says so by callback).
    Ringing,
    /// Audio flows.
    Answered,
    /// An AMD decision (`machine_start` then `machine_end_*` may both come).
    Amd {
        /// Outcome name.
        answered_by: String,
        /// ms after answer.
        decision_ms: u64,
    },
    /// The conversation ended.
    Ended {
        /// `agent_hangup`, `user_hangup`, `voicemail_ended`, `timeout`, `failed`.
        end_type: String,
        /// Turns (JSON array).
        turns: Value,
        /// Why, when it failed.
        reason: Option<String>,
    },
}

/// What the gateway needs to run one campaign call.
pub struct CallSetup {
    /// Session settings from the campaign.
    pub session: SessionConfig,
    /// The campaign's agent.
    pub agent_url: String,
    /// The audio format it speaks.
    pub agent_audio: crate::agent::bridge::AgentAudio,
}

/// The dialer and call-state engine.
pub struct Engine {
    store: Store,
    cfg: EngineConfig,
    dialer: Mutex<Dialer>,
    wake: Notify,
    facts: mpsc::UnboundedSender<(String, CallFact)>,
    /// Answered calls the carrier says are over, awaiting the stream's end.
    late: Mutex<Vec<(String, i64)>>,
}

/// How long the media stream has to report a call's end after the carrier.
const STREAM_END_GRACE_MS: i64 = 10_000;

/// After a create request without a clear answer, when to ask the carrier
/// whether it placed the call (its list can lag the create by a moment).
const UNKNOWN_CREATE_CHECKS_MS: [u64; 3] = [2_000, 10_000, 30_000];

/// What asking the carrier about an unacknowledged attempt found.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Settled {
    /// The carrier has the call: this sid, now the attempt's.
    Adopted(String),
    /// The carrier has no such call: ended as not dialled, requeued.
    NotDialled,
    /// The carrier could not be asked; nothing changed.
    Unknown,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("public_url", &self.cfg.public_url)
            .finish_non_exhaustive()
    }
}

fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}

impl Engine {
    /// An engine and the receiver of call facts, to hand to [`Engine::run`].
    pub fn new(
        store: Store,
        cfg: EngineConfig,
    ) -> (Arc<Self>, mpsc::UnboundedReceiver<(String, CallFact)>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (
            Arc::new(Self {
                store,
                cfg,
                dialer: Mutex::new(Dialer::new()),
                wake: Notify::new(),
                facts: tx,
                late: Mutex::new(Vec::new()),
            }),
            rx,
        )
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Look for due attempts now (after an enqueue, a resume …).
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Reports a call fact (never blocks: the media task calls it).
    pub fn report(&self, call_queue_id: &str, fact: CallFact) {
        let _ = self.facts.send((call_queue_id.to_string(), fact));
    }

    /// Reconciles, then dials until the process ends.
    pub async fn run(self: Arc<Self>, mut facts: mpsc::UnboundedReceiver<(String, CallFact)>) {
        if let Err(e) = self.reconcile().await {
            tracing::error!(error = %e, "reconciliation failed; in-flight attempts stay as they are");
        }
        let me = self.clone();
        tokio::spawn(async move {
            while let Some((id, fact)) = facts.recv().await {
                if let Err(e) = me.apply_fact(&id, fact) {
                    tracing::error!(error = %e, call_queue_id = %id, "cannot record a call fact");
                }
            }
        });
        loop {
            match self.tick() {
                Ok(jobs) => {
                    for (call, spec, number) in jobs {
                        tokio::spawn(self.clone().dial(call, spec, number));
                    }
                }
                Err(e) => tracing::error!(error = %e, "dialer tick failed"),
            }
            tokio::select! {
                _ = tokio::time::sleep(self.cfg.tick) => {}
                _ = self.wake.notified() => {}
            }
        }
    }

    /// One pass over due attempts: decisions from the core, claims in the
    /// store. Returns the claimed attempts to dial.
    #[allow(clippy::type_complexity)]
    fn tick(&self) -> Result<Vec<(CallRow, CampaignSpec, CallerNumber)>, StoreError> {
        let now = Utc::now();
        let now_ms = now.timestamp_millis();
        let overdue: Vec<String> = {
            let mut late = self.late.lock().unwrap_or_else(|p| p.into_inner());
            let (due, keep): (Vec<_>, Vec<_>) = late.drain(..).partition(|(_, at)| *at <= now_ms);
            *late = keep;
            due.into_iter().map(|(id, _)| id).collect()
        };
        for id in overdue {
            if self
                .store
                .call(&id)?
                .is_some_and(|c| c.status == CallStatus::Answered)
            {
                tracing::warn!(call_queue_id = %id, "the carrier ended the call but its stream never reported the end");
                self.store.set_conversation_end(
                    &id,
                    "user_hangup",
                    now_ms,
                    &Value::Array(Vec::new()),
                )?;
                let p = Patch {
                    initiation_error: Some(
                        "the carrier ended the call; the media stream did not report it".into(),
                    ),
                    ..Patch::default()
                };
                self.store
                    .end_attempt(&id, CallStatus::Completed, now_ms, &p, None)?;
            }
        }
        let in_flight = self.store.in_flight()?;
        let mut d = self.dialer.lock().unwrap_or_else(|p| p.into_inner());
        d.begin_tick(
            in_flight
                .iter()
                .map(|c| (c.campaign_id.as_str(), c.caller_number_id.as_deref())),
        );
        let mut jobs = Vec::new();
        for camp in self.store.campaigns()? {
            if camp.state != CampaignState::Active {
                continue;
            }
            let room = camp
                .spec
                .limits
                .max_concurrency
                .saturating_sub(d.in_flight(&camp.id)) as usize;
            // Rows the window defers are moved out of the way, so look a
            // little past the free capacity.
            for call in self.store.due_in(&camp.id, now_ms, room + 50)? {
                if call.status == CallStatus::Scheduled {
                    self.store.transition(
                        &call.id,
                        CallStatus::Queued,
                        now_ms,
                        &Patch::default(),
                    )?;
                }
                match d.decide(now, &camp.id, &camp.spec, &call.to_number, call.expires_at) {
                    Verdict::Dial(number) if number.carrier == "sip" && !self.sip_up() => {
                        // The trunk does not answer: hold the attempt, do not
                        // spend it on a dial that would only time out.
                        d.release(&camp.id, &number.id);
                        self.store.defer(&call.id, now_ms + SIP_DOWN_HOLD_MS)?;
                    }
                    Verdict::Dial(number) => {
                        if self.store.claim(
                            &call.id,
                            now_ms,
                            &number.id,
                            &number.number,
                            &number.carrier,
                        )? {
                            jobs.push((call, camp.spec.clone(), number));
                        } else {
                            d.release(&camp.id, &number.id);
                        }
                    }
                    Verdict::Defer(at) => self.store.defer(&call.id, at)?,
                    Verdict::Wait => {}
                    Verdict::Expire => {
                        self.store.end_attempt(
                            &call.id,
                            CallStatus::Expired,
                            now_ms,
                            &Patch::default(),
                            None,
                        )?;
                    }
                    Verdict::Suppress => {
                        let p = Patch {
                            initiation_error: Some("do_not_call".into()),
                            ..Patch::default()
                        };
                        self.store.end_attempt(
                            &call.id,
                            CallStatus::Suppressed,
                            now_ms,
                            &p,
                            None,
                        )?;
                    }
                }
            }
        }
        Ok(jobs)
    }

    /// False while the SIP trunk's keep-alive says it is down.
    fn sip_up(&self) -> bool {
        self.cfg
            .sip
            .as_ref()
            .is_none_or(|t| t.up.load(std::sync::atomic::Ordering::Relaxed))
    }

    fn stream_url(&self) -> String {
        let base = self.cfg.public_url.trim_end_matches('/');
        let ws = if let Some(rest) = base.strip_prefix("https://") {
            format!("wss://{rest}")
        } else if let Some(rest) = base.strip_prefix("http://") {
            format!("ws://{rest}")
        } else {
            base.to_string()
        };
        format!("{ws}/twilio/stream")
    }

    async fn dial(self: Arc<Self>, call: CallRow, spec: CampaignSpec, number: CallerNumber) {
        let span = tracing::info_span!("dial", call_queue_id = %call.id, to = %phone::redact(&call.to_number));
        // (instrumented, not entered: an entered span's guard held across
        // an await would tag other tasks' logs with this call)
        if number.carrier == "sip" {
            self.dial_sip(call, spec, number).instrument(span).await
        } else {
            self.dial_twilio(call, spec, number).instrument(span).await
        }
    }

    async fn dial_twilio(&self, call: CallRow, spec: CampaignSpec, number: CallerNumber) {
        let Some(client) = self.cfg.carriers.get(&number.carrier) else {
            self.fail(
                &call,
                format!(
                    "provider_error: no `{}` carrier is configured",
                    number.carrier
                ),
            );
            return;
        };
        let mut params = BTreeMap::new();
        params.insert("call_queue_id".to_string(), call.id.clone());
        let callback = format!(
            "{}/twilio/status?cq={}",
            self.cfg.public_url.trim_end_matches('/'),
            call.id
        );
        let stream_url = self.stream_url();
        let d = Dial {
            to: &call.to_number,
            from: &number.number,
            stream_url: &stream_url,
            parameters: &params,
            status_callback: &callback,
            timeout_s: spec.limits.ring_timeout_seconds,
            time_limit_s: spec.limits.max_duration_seconds + 60,
        };
        match client.create_call(&d).await {
            Ok(info) => {
                let p = Patch {
                    provider_call_id: Some(info.sid.clone()),
                    ..Patch::default()
                };
                // A fast carrier's `initiated` callback may have done it.
                match self
                    .store
                    .transition(&call.id, CallStatus::Initiated, now_ms(), &p)
                {
                    Ok(_) => tracing::info!(sid = %info.sid, "dialled"),
                    Err(e) => tracing::error!(error = %e, "cannot record the carrier's call id"),
                }
            }
            Err(e) => self.create_failed(&call, client, e).await,
        }
        self.wake();
    }

    /// The carrier did not take the call cleanly. What follows depends on
    /// whether it may have placed it anyway:
    /// - not placed (no connection, "not now"): the attempt ends as not
    ///   dialled and the contact is queued again after a back-off, so an
    ///   outage does not lose it;
    /// - perhaps placed (the request left, no clear answer came back):
    ///   dialling again could ring the person twice, and failing the
    ///   attempt would leave a live call nobody follows. The carrier is
    ///   asked, as after a crash; its status callbacks may also settle it
    ///   first;
    /// - refused: final.
    async fn create_failed(&self, call: &CallRow, client: &TwilioClient, e: RestError) {
        match e.create_failure() {
            CreateFailure::Refused => {
                tracing::warn!(error = %e, "carrier refused the call");
                self.fail(call, format!("provider_error: {e}"));
            }
            CreateFailure::NotPlaced => {
                let first = i64::try_from(self.cfg.carrier_backoff.as_millis()).unwrap_or(i64::MAX);
                let requeue = unplaced_retry_at(first, call.attempt, now_ms());
                tracing::warn!(error = %e, requeue_at = ?requeue, "the carrier did not place the call");
                self.fail_then(
                    call,
                    format!("provider_unavailable: {e} (not dialled)"),
                    requeue,
                );
            }
            CreateFailure::Unknown => {
                tracing::warn!(error = %e, "no clear answer from the carrier; asking it whether it placed the call");
                for wait_ms in UNKNOWN_CREATE_CHECKS_MS {
                    tokio::time::sleep(Duration::from_millis(wait_ms)).await;
                    // (a status callback may have settled it meanwhile)
                    let Some(fresh) = self.still_processing(&call.id) else {
                        return;
                    };
                    match self.settle_unacknowledged(&fresh, client).await {
                        Ok(Settled::Unknown) => {}
                        Ok(_) => return,
                        Err(e) => {
                            tracing::error!(error = %e, "cannot record what the carrier said");
                            return;
                        }
                    }
                }
                // Still unknown: never ring twice. The attempt ends without
                // a retry, and says why.
                if self.still_processing(&call.id).is_none() {
                    return;
                }
                self.fail(
                    call,
                    format!("provider_error: the carrier never said whether it placed the call ({e}); not retried"),
                );
            }
        }
    }

    /// A call through the SIP trunk. The task that places it also carries
    /// its media (the same call session as a Twilio stream, reporting the
    /// same facts); the SIP outcome of an unanswered call is applied here
    /// like a Twilio status, retries included.
    async fn dial_sip(self: Arc<Self>, call: CallRow, spec: CampaignSpec, number: CallerNumber) {
        let Some(trunk) = self.cfg.sip.clone() else {
            self.fail(&call, "provider_error: no SIP trunk is configured".into());
            return;
        };
        let Some(setup) = self.setup(&call.id) else {
            return;
        };
        // Initiated before the INVITE leaves: after a crash an attempt in
        // `initiated` on the SIP trunk is never dialled again.
        if let Err(e) =
            self.store
                .transition(&call.id, CallStatus::Initiated, now_ms(), &Patch::default())
        {
            tracing::error!(error = %e, "cannot mark the SIP attempt initiated");
            return;
        }
        let cfg = crate::carrier::sip::call::SipCallConfig {
            trunk: trunk.trunk,
            trunk_addr: trunk.addr,
            ring_timeout: Duration::from_secs(u64::from(spec.limits.ring_timeout_seconds)),
            session: setup.session,
            agent_url: setup.agent_url,
            agent_audio: setup.agent_audio,
            agent_connect_timeout: Duration::from_secs(5),
            llm: trunk.llm,
            engine: Some((self.clone(), call.id.clone())),
        };
        let report = crate::carrier::sip::call::run(cfg, &call.to_number, &number.number).await;
        let now = now_ms();
        let Ok(Some(row)) = self.store.call(&call.id) else {
            return;
        };
        use crate::carrier::sip::uac::Outcome;
        let (status, sip) = match report {
            Ok(r) => match r.outcome {
                // answered: the session's own end fact completes it
                Outcome::Completed if r.media.is_some() => {
                    self.wake();
                    return;
                }
                Outcome::Completed => (CallStatus::Failed, None),
                Outcome::Busy => (CallStatus::Busy, None),
                Outcome::Declined => (CallStatus::Declined, None),
                Outcome::NoAnswer => (CallStatus::Missed, None),
                Outcome::Failed { status, reason } => {
                    tracing::warn!(%reason, "SIP call failed");
                    (CallStatus::Failed, Some(status))
                }
            },
            Err(e) => {
                tracing::error!(error = %e, "SIP call could not run");
                (CallStatus::Failed, None)
            }
        };
        if let Err(e) = self.apply(&row, status, sip, now) {
            tracing::error!(error = %e, "cannot record the SIP outcome");
        }
        self.wake();
    }

    /// Ends the attempt as failed, saying why; no retry of its own.
    fn fail(&self, call: &CallRow, why: String) {
        self.fail_then(call, why, None);
    }

    /// Ends the attempt as failed, saying why, and queues the contact's
    /// next attempt at `requeue_at` if given (errors are logged).
    fn fail_then(&self, call: &CallRow, why: String, requeue_at: Option<i64>) {
        if let Err(e) = self.end_failed(&call.id, why, now_ms(), requeue_at) {
            tracing::error!(error = %e, "cannot record an initiation failure");
        }
    }

    fn end_failed(
        &self,
        id: &str,
        why: String,
        now: i64,
        requeue_at: Option<i64>,
    ) -> Result<(), StoreError> {
        let p = Patch {
            initiation_error: Some(why),
            ..Patch::default()
        };
        self.store
            .end_attempt(id, CallStatus::Failed, now, &p, requeue_at)
            .map(drop)
    }

    /// The attempt, if it is still `processing` (and can be read).
    fn still_processing(&self, id: &str) -> Option<CallRow> {
        match self.store.call(id) {
            Ok(c) => c.filter(|c| c.status == CallStatus::Processing),
            Err(e) => {
                tracing::error!(error = %e, call_queue_id = %id, "cannot read the attempt");
                None
            }
        }
    }

    /// Applies a carrier status callback (`CallStatus` and friends) to the
    /// attempt `call_queue_id`. Unknown statuses are ignored; stale ones
    /// change nothing (the transitions are legal-only).
    pub fn on_status(
        &self,
        call_queue_id: &str,
        sid: &str,
        status: &str,
        sip: Option<u16>,
    ) -> Result<(), StoreError> {
        let Some(call) = self.store.call(call_queue_id)? else {
            return Err(StoreError::NotFound(format!("call {call_queue_id}")));
        };
        if call.provider_call_id.as_deref().is_some_and(|s| s != sid) {
            tracing::warn!(%sid, "status callback for another carrier call; ignored");
            return Ok(());
        }
        let now = now_ms();
        let p = Patch {
            provider_call_id: Some(sid.to_string()),
            ..Patch::default()
        };
        if call.status == CallStatus::Processing {
            self.store
                .transition(&call.id, CallStatus::Initiated, now, &p)?;
        }
        let answered = call.status == CallStatus::Answered || call.conversation_start.is_some();
        let Some(to) = map_status(status, sip, answered) else {
            tracing::info!(%status, "ignoring an unknown CallStatus");
            return Ok(());
        };
        self.apply(&call, to, sip, now)?;
        self.wake();
        Ok(())
    }

    fn apply(
        &self,
        call: &CallRow,
        to: CallStatus,
        sip: Option<u16>,
        now: i64,
    ) -> Result<(), StoreError> {
        match to {
            CallStatus::Initiated => {}
            // The carrier's `completed` often beats the media stream's own
            // report of the end (with its end type and turns): let the
            // stream finish the attempt, and only if it does not within
            // the grace period, finish it here.
            CallStatus::Completed
                if call.conversation_start.is_some() && call.conversation_end.is_none() =>
            {
                self.late
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push((call.id.clone(), now + STREAM_END_GRACE_MS));
            }
            CallStatus::Ringing | CallStatus::Answered => {
                self.store
                    .transition(&call.id, to, now, &Patch::default())?;
            }
            t => {
                let spec = self.store.campaign(&call.campaign_id)?.map(|c| c.spec);
                let retry = spec.and_then(|s| retry_at(&s.retry, t, call.attempt, now));
                let p = Patch {
                    initiation_error: match t {
                        CallStatus::Failed => Some(match sip {
                            Some(code) => format!("provider_error: SIP {code}"),
                            None => "provider_error".into(),
                        }),
                        CallStatus::Busy => Some("busy".into()),
                        CallStatus::Declined => Some("declined".into()),
                        CallStatus::Missed => Some("no_answer".into()),
                        _ => None,
                    },
                    ..Patch::default()
                };
                if let Some(Some(next)) = self.store.end_attempt(&call.id, t, now, &p, retry)? {
                    tracing::info!(status = t.as_str(), retry = %next, "attempt ended; retry queued");
                }
            }
        }
        Ok(())
    }

    fn apply_fact(&self, id: &str, fact: CallFact) -> Result<(), StoreError> {
        let now = now_ms();
        match fact {
            CallFact::Ringing => {
                self.store
                    .transition(id, CallStatus::Ringing, now, &Patch::default())?;
            }
            CallFact::Answered => {
                self.store
                    .set_conversation_start(id, &uuid::Uuid::new_v4().to_string(), now)?;
                if !self
                    .store
                    .transition(id, CallStatus::Answered, now, &Patch::default())?
                {
                    // Still `processing`: the media came before the carrier's
                    // answer reached us.
                    self.store
                        .transition(id, CallStatus::Initiated, now, &Patch::default())?;
                    self.store
                        .transition(id, CallStatus::Answered, now, &Patch::default())?;
                }
            }
            CallFact::Amd {
                answered_by,
                decision_ms,
            } => self
                .store
                .set_amd(id, &answered_by, decision_ms as i64, now)?,
            CallFact::Ended {
                end_type,
                turns,
                reason,
            } => {
                self.store
                    .set_conversation_end(id, &end_type, now, &turns)?;
                // The conversation is over: the attempt is complete even if
                // the carrier's `completed` callback never arrives.
                let p = Patch {
                    initiation_error: reason,
                    ..Patch::default()
                };
                self.store
                    .end_attempt(id, CallStatus::Completed, now, &p, None)?;
                self.wake();
            }
        }
        Ok(())
    }

    /// What the gateway needs for a stream whose `call_queue_id` is `id`;
    /// `None` for an unknown attempt or one that is already over.
    pub fn setup(&self, id: &str) -> Option<CallSetup> {
        let call = self.store.call(id).ok()??;
        if call.status.is_terminal() {
            return None;
        }
        let camp = self.store.campaign(&call.campaign_id).ok()??;
        let spec = camp.spec;
        let mut params = BTreeMap::new();
        params.insert("call_queue_id".into(), call.id.clone());
        params.insert("campaign_id".into(), call.campaign_id.clone());
        params.insert("script".into(), spec.agent.script.clone());
        params.insert(
            "variables".into(),
            Value::Object(call.variables.clone()).to_string(),
        );
        params.insert(
            "metadata".into(),
            Value::Object(call.metadata.clone()).to_string(),
        );
        for (k, v) in &call.variables {
            let s = match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            params.insert(k.clone(), s);
        }
        if spec.agent.inject_numbers {
            params.insert("to_number".into(), call.to_number.clone());
            params.insert(
                "from_number".into(),
                call.caller_number.clone().unwrap_or_default(),
            );
        }
        Some(CallSetup {
            session: spec.session_config(params),
            agent_url: spec.agent.url.clone(),
            agent_audio: spec.agent.audio,
        })
    }

    /// An attempt left `processing` whose create request may have reached
    /// the carrier (a crash, or an answer that never came back): the
    /// carrier's list of calls to that number from that caller ID says. A
    /// call created after the claim that no other attempt owns is this
    /// one's, and is adopted; none means it was never dialled, so the
    /// attempt ends as such and a fresh one is queued (not a second dial).
    /// `Unknown` when the carrier cannot be asked: nothing is guessed.
    async fn settle_unacknowledged(
        &self,
        call: &CallRow,
        client: &TwilioClient,
    ) -> Result<Settled, StoreError> {
        let from = call.caller_number.clone().unwrap_or_default();
        let list = match client.list_calls(&call.to_number, &from).await {
            Ok(list) => list,
            Err(e) => {
                tracing::error!(error = %e, call_queue_id = %call.id, "cannot ask the carrier about an attempt");
                return Ok(Settled::Unknown);
            }
        };
        let now = now_ms();
        let since = call.processing_started_at.unwrap_or(0) - 5_000;
        for c in list {
            let created = c
                .date_created
                .as_deref()
                .and_then(|d| chrono::DateTime::parse_from_rfc2822(d).ok())
                .map(|d| d.timestamp_millis())
                .unwrap_or(0);
            if created < since {
                continue;
            }
            // (a status callback for this very call may have reached the
            // restarted process first and recorded its id on this attempt:
            // then it is already this attempt's, not another's)
            match self.store.call_by_provider_id(&c.sid)? {
                Some(owner) if owner.id == call.id => {
                    tracing::info!(call_queue_id = %call.id, sid = %c.sid, "adopted a call the carrier placed (its status came first)");
                    return Ok(Settled::Adopted(c.sid));
                }
                Some(_) => continue,
                None => {}
            }
            let p = Patch {
                provider_call_id: Some(c.sid.clone()),
                ..Patch::default()
            };
            self.store
                .transition(&call.id, CallStatus::Initiated, now, &p)?;
            tracing::info!(call_queue_id = %call.id, sid = %c.sid, "adopted a call the carrier placed (its answer was lost)");
            return Ok(Settled::Adopted(c.sid));
        }
        self.end_failed(
            &call.id,
            "the carrier has no record of the call (not dialled)".into(),
            now,
            Some(now),
        )?;
        tracing::info!(call_queue_id = %call.id, "never reached the carrier; requeued as a new attempt");
        Ok(Settled::NotDialled)
    }

    /// After a crash: every attempt left holding a line is settled with the
    /// carrier's help. One still `processing` may or may not have reached
    /// the carrier: if the carrier has a call to that number from that
    /// caller ID created after the claim, it is adopted; if not, the
    /// attempt is closed as failed and a fresh attempt queued (it was never
    /// dialled, so this is not a second dial). Attempts the carrier knows
    /// are brought to the carrier's status; a call still up has lost its
    /// media stream with the old process and is hung up.
    pub async fn reconcile(&self) -> Result<(), StoreError> {
        let now = now_ms();
        for call in self.store.in_flight()? {
            if call.provider.as_deref() == Some("sip") {
                // A SIP call's signalling and media lived in the old
                // process: whatever state it reached, it is gone. It may
                // have rung, so it is not dialled again.
                self.fail(
                    &call,
                    "interrupted: dialgate stopped during the SIP call".into(),
                );
                continue;
            }
            let Some(client) = call
                .provider
                .as_ref()
                .and_then(|p| self.cfg.carriers.get(p))
            else {
                self.fail(
                    &call,
                    "provider_error: carrier not configured after restart".into(),
                );
                continue;
            };
            let mut sid = call.provider_call_id.clone();
            if call.status == CallStatus::Processing {
                match self.settle_unacknowledged(&call, client).await? {
                    Settled::Adopted(s) => sid = Some(s),
                    Settled::NotDialled | Settled::Unknown => continue,
                }
            }
            let Some(sid) = sid else { continue };
            let Some(fresh) = self.store.call(&call.id)? else {
                continue;
            };
            match client.fetch_call(&sid).await {
                Ok(info) => {
                    let answered =
                        fresh.status == CallStatus::Answered || fresh.conversation_start.is_some();
                    match map_status(&info.status, None, answered) {
                        Some(CallStatus::Answered) => {
                            // Its media stream died with the old process.
                            let _ = client.hangup(&sid).await;
                            self.store.transition(
                                &call.id,
                                CallStatus::Answered,
                                now,
                                &Patch::default(),
                            )?;
                            self.store.set_conversation_end(
                                &call.id,
                                "failed",
                                now,
                                &Value::Array(vec![]),
                            )?;
                            let p = Patch {
                                initiation_error: Some(
                                    "interrupted: dialgate restarted during the call".into(),
                                ),
                                ..Patch::default()
                            };
                            self.store.end_attempt(
                                &call.id,
                                CallStatus::Completed,
                                now,
                                &p,
                                None,
                            )?;
                        }
                        Some(s) => self.apply(&fresh, s, None, now)?,
                        None => {}
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, call_queue_id = %call.id, "cannot fetch the call from the carrier")
                }
            }
        }
        Ok(())
    }
}
