//! The outbound SIP call (UAC), sans-IO: one INVITE client transaction and
//! the dialog it creates. Datagrams and `now` (ms) in; datagrams to send,
//! call progress and the final outcome out. It never reads a clock or opens
//! a socket; [`super::call`] does that.
//!
//! Parsing, request building, digest and SDP come from `rsiprtp` (pinned,
//! used only here and in `super`). Its own call manager is not used: we
//! need the INVITE flow to be a plain state machine driven on virtual time,
//! with the dialer's ring timeout, our outcome table and CANCEL/487
//! handling, which is less code written here than adapted there.
//!
//! What it does (RFC 3261 over UDP):
//! - INVITE with an SDP offer (PCMU, PCMA, telephone-event), retransmitted
//!   on Timer A (T1 doubling) until a response; Timer B (64·T1) fails it;
//! - 1xx: ringing, or early media with SDP (183); the ring timeout, counted
//!   from the INVITE, sends CANCEL; a 487 after it is a `no_answer`;
//! - 401/407: ACK, then one retry with `Authorization` /
//!   `Proxy-Authorization` (digest MD5 or SHA-256, qop=auth when offered);
//! - 2xx: ACK (new branch, to the Contact, through the Record-Route set);
//!   a 2xx arriving after our CANCEL is ACKed and then ended with BYE;
//! - other finals: ACK (same branch) and the outcome from
//!   [`outcome_for`] (a `Reason: Q.850;cause=N` header wins);
//! - hang-up: BYE both ways (an incoming BYE gets its 200).

use std::collections::VecDeque;
use std::net::SocketAddr;

use super::sdp::LocalSdp;
use rsiprtp::sip::{
    DigestChallenge, DigestCredentials, DigestResponse, Method, SipMessage, SipRequest, SipResponse,
};

/// RFC 3261 T1, ms.
pub(super) const T1_MS: u64 = 500;
/// Timer B / F / H: 64·T1.
pub(super) const TIMER_B_MS: u64 = 64 * T1_MS;
/// Retransmissions stop doubling at T2 (4 s).
pub(super) const T2_MS: u64 = 4000;

/// Errors from SIP input.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SipError {
    /// Not a SIP message.
    #[error("malformed SIP message: {0}")]
    Malformed(String),
    /// A request we could not build (bad configuration: URI, host).
    #[error("cannot build the {method} request: {reason}")]
    Build {
        method: &'static str,
        reason: String,
    },
}

/// How a call ended, in the dialer's terms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Answered and later hung up.
    Completed,
    /// 486/600 or Q.850 17.
    Busy,
    /// 603 (or 403) or Q.850 21.
    Declined,
    /// 480, 408, 504, our ring timeout, Q.850 18/19/20/31/102.
    NoAnswer,
    /// Anything else, with the SIP status (0 when none) and why.
    Failed { status: u16, reason: String },
}

impl Outcome {
    /// The call-queue status for it (`busy`, `declined`, `no-answer`,
    /// `failed`, `completed`), as for Twilio's statuses.
    pub fn as_status(&self) -> &'static str {
        match self {
            Self::Completed => "completed",
            Self::Busy => "busy",
            Self::Declined => "declined",
            Self::NoAnswer => "no-answer",
            Self::Failed { .. } => "failed",
        }
    }
}

/// The outcome of a final failure response (PROTOCOLS.md's table). A Q.850
/// cause, when the response carries one, wins over the status code.
pub fn outcome_for(status: u16, reason_phrase: &str, q850: Option<u16>) -> Outcome {
    if let Some(cause) = q850 {
        match cause {
            17 => return Outcome::Busy,
            21 => return Outcome::Declined,
            18 | 19 | 20 | 31 | 102 => return Outcome::NoAnswer,
            _ => {}
        }
    }
    match status {
        486 | 600 => Outcome::Busy,
        603 | 403 => Outcome::Declined,
        480 | 408 | 504 | 487 => Outcome::NoAnswer,
        _ => {
            let what = match status {
                404 | 604 | 484 => "invalid number",
                488 => "no common codec",
                503 => "congestion",
                _ => "call failed",
            };
            let cause = q850
                .map(|c| format!(", Q.850 cause {c}"))
                .unwrap_or_default();
            Outcome::Failed {
                status,
                reason: format!("{what}: {status} {reason_phrase}{cause}"),
            }
        }
    }
}

/// The Q.850 cause of a `Reason` header in `raw` (RFC 3326), if any.
pub fn q850_cause(raw: &str) -> Option<u16> {
    raw.lines()
        .take_while(|l| !l.is_empty())
        .filter_map(|l| l.split_once(':'))
        .filter(|(name, _)| name.trim().eq_ignore_ascii_case("reason"))
        .flat_map(|(_, v)| v.split(','))
        .filter(|v| v.trim_start().to_ascii_uppercase().starts_with("Q.850"))
        .find_map(|v| {
            v.split(';')
                .filter_map(|p| p.trim().split_once('='))
                .find(|(k, _)| k.trim().eq_ignore_ascii_case("cause"))
                .and_then(|(_, n)| n.trim().parse().ok())
        })
}

/// The trunk and our side of it.
#[derive(Debug, Clone)]
pub struct TrunkConfig {
    /// The trunk's host (name or IP) used in request URIs.
    pub host: String,
    /// Its port.
    pub port: u16,
    /// Digest credentials, if the trunk asks.
    pub username: Option<String>,
    /// The password.
    pub password: Option<String>,
    /// Domain of our From URI (defaults to the host).
    pub from_domain: Option<String>,
    /// UDP, or TCP (one connection per call; no retransmissions).
    pub transport: Transport,
    /// An outbound proxy (`host:port`) every request goes through: the
    /// driver sends to its address, and the INVITE (with its CANCEL and
    /// ACK) carries a pre-loaded `Route: <sip:proxy;lr>` (RFC 3261 §8.1.2).
    pub outbound_proxy: Option<String>,
}

/// The trunk's transport.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// Datagrams; requests are retransmitted until answered.
    #[default]
    Udp,
    /// A stream (RFC 3261 §18.3): reliable, so never retransmitted.
    Tcp,
}

impl Transport {
    /// As written in a Via header.
    pub fn via(self) -> &'static str {
        match self {
            Self::Udp => "UDP",
            Self::Tcp => "TCP",
        }
    }

    /// The URI parameter that asks for it (`;transport=tcp`), if any.
    fn uri_param(self) -> &'static str {
        match self {
            Self::Udp => "",
            Self::Tcp => ";transport=tcp",
        }
    }
}

impl std::str::FromStr for Transport {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "udp" => Ok(Self::Udp),
            "tcp" => Ok(Self::Tcp),
            other => Err(format!("unknown SIP transport `{other}` (udp or tcp)")),
        }
    }
}

/// One call to place.
#[derive(Debug, Clone)]
pub struct Dial {
    /// Destination user part (E.164, `+` kept).
    pub to: String,
    /// Caller ID user part.
    pub from: String,
    /// Our SIP address (Via, Contact).
    pub local: SocketAddr,
    /// Our RTP port, offered in the SDP.
    pub rtp_port: u16,
    /// Ring time-out from the INVITE, ms.
    pub ring_timeout_ms: u64,
}

/// What a call's signalling did: the same events for an outbound call
/// ([`Uac`]) and an inbound one ([`super::uas::Uas`]), so one driver runs
/// both.
#[derive(Debug, Clone, PartialEq)]
pub enum SipEvent {
    /// Send this datagram to the far end.
    Send(Vec<u8>),
    /// 180/183: the far end is alerting; `sdp` when early media comes.
    Progress { status: u16, sdp: Option<Vec<u8>> },
    /// The call is up, with the far end's SDP: the answer to our offer
    /// (outbound), or the offer we answered (inbound).
    Answered { sdp: Vec<u8> },
    /// A re-INVITE came with `sdp` (hold, resume, moved media, session
    /// refresh) and was answered; `sending` says whether our answer lets
    /// us send RTP.
    Reoffered { sdp: Vec<u8>, sending: bool },
    /// The call is over.
    Ended(Outcome),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// INVITE sent; `provisional` once any 1xx came
    Inviting {
        provisional: bool,
    },
    /// CANCEL sent at the ring timeout
    Cancelling,
    /// 2xx ACKed
    Confirmed,
    /// BYE sent
    Terminating,
    Done,
}

/// One outbound call.
pub struct Uac {
    cfg: TrunkConfig,
    dial: Dial,
    state: State,
    call_id: String,
    from_tag: String,
    to_tag: Option<String>,
    cseq: u32,
    branch: String,
    invite: Vec<u8>,
    sdp: LocalSdp,
    authorized: bool,
    started: u64,
    /// next retransmission of `last_request` and its interval
    retransmit_at: Option<u64>,
    interval: u64,
    /// give-up time of the current transaction
    give_up_at: Option<u64>,
    last_request: Vec<u8>,
    /// the dialog, once confirmed: where in-dialog requests go
    remote_target: String,
    route_set: Vec<String>,
    /// outcome to report when the BYE transaction ends
    pending_outcome: Option<Outcome>,
    events: VecDeque<SipEvent>,
}

impl std::fmt::Debug for Uac {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Uac")
            .field("call_id", &self.call_id)
            .field("state", &self.state)
            .finish()
    }
}

/// A builder error of `rsiprtp` as ours, naming what we were building.
pub(super) fn build_err(method: &'static str) -> impl Fn(rsiprtp::core::Error) -> SipError {
    move |e| SipError::Build {
        method,
        reason: e.to_string(),
    }
}

impl Uac {
    /// Starts the call at `now`: the INVITE is the first event.
    pub fn new(cfg: TrunkConfig, dial: Dial, now: u64) -> Result<Self, SipError> {
        let domain = cfg.from_domain.clone().unwrap_or_else(|| cfg.host.clone());
        let mut uac = Self {
            call_id: rsiprtp::sip::generate_call_id(&domain),
            from_tag: rsiprtp::sip::generate_tag(),
            to_tag: None,
            cseq: 1,
            branch: rsiprtp::sip::generate_branch(),
            invite: Vec::new(),
            sdp: LocalSdp::offer(dial.local.ip(), dial.rtp_port),
            authorized: false,
            started: now,
            retransmit_at: None,
            interval: T1_MS,
            give_up_at: None,
            last_request: Vec::new(),
            remote_target: String::new(),
            route_set: Vec::new(),
            pending_outcome: None,
            events: VecDeque::with_capacity(8),
            state: State::Inviting { provisional: false },
            cfg,
            dial,
        };
        uac.send_invite(now, None)?;
        Ok(uac)
    }

    /// The SIP Call-ID.
    pub fn call_id(&self) -> &str {
        &self.call_id
    }

    /// True once the call is over.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<SipEvent> {
        self.events.pop_front()
    }

    /// When [`Uac::handle_timeout`] wants to run next.
    pub fn poll_timeout(&self) -> Option<u64> {
        let ring = match self.state {
            State::Inviting { .. } => Some(self.started + self.dial.ring_timeout_ms),
            _ => None,
        };
        [self.retransmit_at, self.give_up_at, ring]
            .into_iter()
            .flatten()
            .min()
    }

    fn uri(&self, user: &str) -> String {
        format!(
            "sip:{user}@{}:{}{}",
            self.cfg.host,
            self.cfg.port,
            self.cfg.transport.uri_param()
        )
    }

    fn our_uri(&self) -> String {
        let domain = self
            .cfg
            .from_domain
            .clone()
            .unwrap_or_else(|| self.cfg.host.clone());
        format!("sip:{}@{domain}", self.dial.from)
    }

    fn contact(&self) -> String {
        format!(
            "sip:{}@{}:{}{}",
            self.dial.from,
            self.dial.local.ip(),
            self.dial.local.port(),
            self.cfg.transport.uri_param()
        )
    }

    fn base(
        &self,
        method: Method,
        uri: &str,
        branch: &str,
        cseq: u32,
    ) -> rsiprtp::sip::SipRequestBuilder {
        let mut b = SipRequest::builder()
            .method(method)
            .uri(uri)
            .via(
                &self.dial.local.ip().to_string(),
                self.dial.local.port(),
                self.cfg.transport.via(),
                branch,
            )
            .from(&self.our_uri(), &self.from_tag)
            .to(&self.uri(&self.dial.to))
            .call_id(&self.call_id)
            .cseq(cseq)
            .max_forwards(70);
        if let Some(tag) = &self.to_tag {
            b = b.to_tag(tag);
        }
        b
    }

    /// The pre-loaded route of requests outside the dialog.
    fn proxy_route(&self) -> Vec<String> {
        self.cfg
            .outbound_proxy
            .iter()
            .map(|p| format!("<sip:{p};lr>"))
            .collect()
    }

    fn send(&mut self, bytes: Vec<u8>) {
        self.events.push_back(SipEvent::Send(bytes));
    }

    /// Sends a request reliably: retransmitted on Timer A/E until a response.
    fn send_reliable(&mut self, now: u64, bytes: Vec<u8>) {
        self.last_request = bytes.clone();
        self.interval = T1_MS;
        // a stream delivers or fails; only datagrams are sent again
        self.retransmit_at = (self.cfg.transport == Transport::Udp).then_some(now + T1_MS);
        self.give_up_at = Some(now + TIMER_B_MS);
        self.send(bytes);
    }

    fn send_invite(&mut self, now: u64, auth: Option<(bool, String)>) -> Result<(), SipError> {
        let uri = self.uri(&self.dial.to);
        let mut b = self
            .base(Method::Invite, &uri, &self.branch.clone(), self.cseq)
            .route(&self.proxy_route())
            .contact(&self.contact())
            .header("Allow", "INVITE, ACK, CANCEL, BYE, OPTIONS")
            .body(self.sdp.to_bytes(), "application/sdp");
        if let Some((proxy, value)) = auth {
            b = if proxy {
                b.proxy_authorization(&value)
            } else {
                b.authorization(&value)
            };
        }
        let req = b.build().map_err(build_err("INVITE"))?;
        self.invite = req.to_bytes().to_vec();
        let bytes = self.invite.clone();
        self.send_reliable(now, bytes);
        Ok(())
    }

    /// ACK for a non-2xx final: same branch and CSeq as the INVITE.
    fn ack_failure(&mut self) -> Result<(), SipError> {
        let uri = self.uri(&self.dial.to);
        let ack = self
            .base(Method::Ack, &uri, &self.branch.clone(), self.cseq)
            .route(&self.proxy_route())
            .build()
            .map_err(build_err("ACK"))?;
        self.send(ack.to_bytes().to_vec());
        Ok(())
    }

    /// A request inside the dialog: a new transaction to the remote target
    /// (the 2xx's Contact), along the route set (its Record-Route, reversed).
    fn in_dialog(&self, method: Method, name: &'static str) -> Result<Vec<u8>, SipError> {
        let mut b = self.base(
            method,
            &self.remote_target,
            &rsiprtp::sip::generate_branch(),
            self.cseq,
        );
        if !self.route_set.is_empty() {
            b = b.route(&self.route_set);
        }
        Ok(b.build().map_err(build_err(name))?.to_bytes().to_vec())
    }

    /// ACK for a 2xx (its own transaction, never retransmitted by us).
    fn ack_success(&mut self) -> Result<(), SipError> {
        let ack = self.in_dialog(Method::Ack, "ACK")?;
        self.send(ack);
        Ok(())
    }

    fn send_bye(&mut self, now: u64) -> Result<(), SipError> {
        self.cseq += 1;
        let bye = self.in_dialog(Method::Bye, "BYE")?;
        self.state = State::Terminating;
        self.send_reliable(now, bye);
        Ok(())
    }

    fn send_cancel(&mut self, now: u64) -> Result<(), SipError> {
        // CANCEL matches the INVITE: same branch, CSeq number and headers,
        // no To tag.
        let uri = self.uri(&self.dial.to);
        let saved = self.to_tag.take();
        let cancel = self
            .base(Method::Cancel, &uri, &self.branch.clone(), self.cseq)
            .route(&self.proxy_route())
            .build()
            .map_err(build_err("CANCEL"));
        self.to_tag = saved;
        let cancel = cancel?;
        self.state = State::Cancelling;
        self.send_reliable(now, cancel.to_bytes().to_vec());
        // Timer B of the INVITE still bounds the wait for its 487.
        Ok(())
    }

    fn end(&mut self, outcome: Outcome) {
        self.state = State::Done;
        self.retransmit_at = None;
        self.give_up_at = None;
        self.events.push_back(SipEvent::Ended(outcome));
    }

    /// Hang up: BYE if answered, CANCEL if still ringing.
    pub fn hangup(&mut self, now: u64) -> Result<(), SipError> {
        match self.state {
            State::Confirmed => {
                self.pending_outcome = Some(Outcome::Completed);
                self.send_bye(now)
            }
            State::Inviting { provisional: true } => self.send_cancel(now),
            State::Inviting { provisional: false } => {
                // CANCEL may only follow a provisional response: stop
                // retransmitting and wait for one (or Timer B).
                self.retransmit_at = None;
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// Time passed.
    pub fn handle_timeout(&mut self, now: u64) -> Result<(), SipError> {
        if self.give_up_at.is_some_and(|t| now >= t) {
            match self.state {
                State::Terminating => {
                    let o = self.pending_outcome.take().unwrap_or(Outcome::Completed);
                    self.end(o);
                }
                State::Cancelling => self.end(Outcome::NoAnswer),
                _ => self.end(Outcome::Failed {
                    status: 408,
                    reason: "no response from the trunk (Timer B)".into(),
                }),
            }
            return Ok(());
        }
        if let State::Inviting { provisional } = self.state
            && now >= self.started + self.dial.ring_timeout_ms
        {
            if provisional {
                return self.send_cancel(now);
            }
            self.end(Outcome::NoAnswer);
            return Ok(());
        }
        if let Some(at) = self.retransmit_at
            && now >= at
        {
            let bytes = self.last_request.clone();
            self.send(bytes);
            self.interval = (self.interval * 2).min(T2_MS);
            self.retransmit_at = Some(now + self.interval);
        }
        Ok(())
    }

    /// A datagram from the trunk.
    pub fn handle_datagram(&mut self, now: u64, data: &[u8]) -> Result<(), SipError> {
        let msg = SipMessage::parse(data).map_err(|e| SipError::Malformed(e.to_string()))?;
        let call_id = match &msg {
            SipMessage::Response(r) => r.call_id(),
            SipMessage::Request(r) => r.call_id(),
        };
        if call_id.ok().as_deref() != Some(self.call_id.as_str()) {
            return Err(SipError::Malformed("a message for another call".into()));
        }
        match &msg {
            SipMessage::Response(r) => self.on_response(now, r, data),
            SipMessage::Request(r) => self.on_request(now, r),
        }
    }

    fn on_request(&mut self, _now: u64, req: &SipRequest) -> Result<(), SipError> {
        let reinvite = req.method() == Method::Invite && self.state == State::Confirmed;
        let body = if reinvite {
            self.sdp.reanswer(req.body())
        } else {
            Vec::new()
        };
        let method = req.method();
        let reply = |status: u16, reason: &str| {
            rsiprtp::sip::SipResponse::builder()
                .status(status, reason)
                .from_request(req)
        };
        let response = match method {
            Method::Ack => return Ok(()),
            Method::Bye | Method::Options | Method::Update | Method::Info => reply(200, "OK"),
            // A re-INVITE (session refresh, or the far end putting us on
            // hold): keep the call, answering its direction.
            Method::Invite if reinvite => reply(200, "OK")
                .contact(&self.contact())
                .body(body, "application/sdp"),
            Method::Invite => reply(491, "Request Pending"),
            // Anything else gets a final answer, so it is not retransmitted
            // for 32 s.
            _ => reply(501, "Not Implemented"),
        };
        let response = response.build().map_err(build_err("response"))?;
        self.send(response.to_bytes().to_vec());
        if reinvite {
            self.events.push_back(SipEvent::Reoffered {
                sdp: req.body().to_vec(),
                sending: self.sdp.sending(),
            });
        }
        if method == Method::Bye && self.state == State::Confirmed {
            self.end(Outcome::Completed);
        }
        Ok(())
    }

    fn on_response(&mut self, now: u64, r: &SipResponse, raw: &[u8]) -> Result<(), SipError> {
        let status = r.status_code();
        let method = r
            .cseq_method()
            .map_err(|e| SipError::Malformed(e.to_string()))?;
        let cseq = r.cseq().map_err(|e| SipError::Malformed(e.to_string()))?;
        match (method, self.state) {
            (Method::Invite, State::Inviting { .. } | State::Cancelling) if cseq == self.cseq => {
                self.on_invite_response(now, r, raw)
            }
            // A retransmitted 2xx: our ACK was lost.
            (Method::Invite, State::Confirmed | State::Terminating) if status / 100 == 2 => {
                self.ack_success()
            }
            (Method::Cancel, State::Cancelling) => {
                // The CANCEL transaction is done; the INVITE's 487 follows.
                self.retransmit_at = None;
                self.give_up_at = Some(now + TIMER_B_MS);
                Ok(())
            }
            (Method::Bye, State::Terminating) if status >= 200 => {
                let o = self.pending_outcome.take().unwrap_or(Outcome::Completed);
                self.end(o);
                Ok(())
            }
            _ => Ok(()),
        }
    }

    fn on_invite_response(
        &mut self,
        now: u64,
        r: &SipResponse,
        raw: &[u8],
    ) -> Result<(), SipError> {
        let status = r.status_code();
        if status < 200 {
            // A provisional response stops INVITE retransmissions (Timer A).
            self.retransmit_at = if self.state == State::Cancelling {
                self.retransmit_at
            } else {
                None
            };
            if let State::Inviting { .. } = self.state {
                self.state = State::Inviting { provisional: true };
                if status > 100 {
                    let sdp = (!r.body().is_empty()).then(|| r.body().to_vec());
                    self.events.push_back(SipEvent::Progress { status, sdp });
                }
                // the CANCEL deferred for want of a provisional response
                if now >= self.started + self.dial.ring_timeout_ms {
                    return self.send_cancel(now);
                }
            }
            return Ok(());
        }
        self.to_tag = r.to_tag();
        if status < 300 {
            self.remote_target = r
                .contact_uri()
                .map(|u| u.to_string())
                .unwrap_or_else(|| self.uri(&self.dial.to));
            let mut routes = r.record_routes();
            routes.reverse();
            self.route_set = routes;
            self.retransmit_at = None;
            self.give_up_at = None;
            self.ack_success()?;
            if self.state == State::Cancelling {
                // answered as we gave up: the call exists, so end it.
                self.state = State::Confirmed;
                self.pending_outcome = Some(Outcome::NoAnswer);
                return self.send_bye(now);
            }
            self.state = State::Confirmed;
            self.events.push_back(SipEvent::Answered {
                sdp: r.body().to_vec(),
            });
            return Ok(());
        }
        self.ack_failure()?;
        self.retransmit_at = None;
        if (status == 401 || status == 407) && !self.authorized && self.state != State::Cancelling {
            let challenge = if status == 401 {
                r.www_authenticate()
            } else {
                r.proxy_authenticate()
            };
            if let (Some(ch), Some(user), Some(pass)) =
                (challenge, &self.cfg.username, &self.cfg.password)
            {
                let ch = DigestChallenge::parse(&ch)
                    .map_err(|e| SipError::Malformed(format!("bad digest challenge: {e}")))?;
                let uri = self.uri(&self.dial.to);
                let resp = DigestResponse::from_challenge(
                    &ch,
                    &DigestCredentials::new(user.clone(), pass.clone()),
                    "INVITE",
                    &uri,
                    None,
                    Some(1),
                )
                .map_err(|e| SipError::Malformed(format!("cannot answer the challenge: {e}")))?;
                self.authorized = true;
                self.cseq += 1;
                self.branch = rsiprtp::sip::generate_branch();
                self.to_tag = None;
                return self.send_invite(now, Some((status == 407, resp.to_header_value())));
            }
        }
        let outcome = if self.state == State::Cancelling && status == 487 {
            Outcome::NoAnswer
        } else if self.authorized && matches!(status, 401 | 403 | 407) {
            // After our credentials, a 403 is not a callee declining.
            Outcome::Failed {
                status,
                reason: format!("the trunk refused our credentials: {status} {}", r.reason()),
            }
        } else {
            let raw = String::from_utf8_lossy(raw);
            outcome_for(status, &r.reason(), q850_cause(&raw))
        };
        self.end(outcome);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uac(ring_ms: u64) -> Uac {
        Uac::new(
            TrunkConfig {
                host: "127.0.0.1".into(),
                port: 5090,
                username: Some("alice".into()),
                password: Some("secret".into()),
                from_domain: None,
                transport: Transport::Udp,
                outbound_proxy: None,
            },
            Dial {
                to: "+15551230001".into(),
                from: "+15550009999".into(),
                local: "127.0.0.1:5070".parse().unwrap(),
                rtp_port: 40000,
                ring_timeout_ms: ring_ms,
            },
            0,
        )
        .unwrap()
    }

    fn sent(u: &mut Uac) -> Vec<String> {
        let mut out = Vec::new();
        while let Some(e) = u.poll_event() {
            if let SipEvent::Send(b) = e {
                out.push(String::from_utf8(b).unwrap());
            }
        }
        out
    }

    /// A response to the last INVITE, as a UAS would write it.
    fn response(invite: &str, status: u16, reason: &str, extra: &str) -> Vec<u8> {
        let header = |name: &str| {
            invite
                .lines()
                .find(|l| {
                    l.to_ascii_lowercase()
                        .starts_with(&format!("{}:", name.to_ascii_lowercase()))
                })
                .unwrap()
                .to_string()
        };
        let to = if status > 100 {
            format!("{};tag=uas1", header("To"))
        } else {
            header("To")
        };
        format!(
            "SIP/2.0 {status} {reason}\r\n{}\r\n{}\r\n{to}\r\n{}\r\n{}\r\n{extra}Content-Length: 0\r\n\r\n",
            header("Via"),
            header("From"),
            header("Call-ID"),
            header("CSeq"),
        )
        .into_bytes()
    }

    #[test]
    fn the_outcome_table() {
        assert_eq!(outcome_for(486, "Busy Here", None), Outcome::Busy);
        assert_eq!(outcome_for(600, "Busy Everywhere", None), Outcome::Busy);
        assert_eq!(outcome_for(603, "Decline", None), Outcome::Declined);
        assert_eq!(
            outcome_for(480, "Temporarily Unavailable", None),
            Outcome::NoAnswer
        );
        assert_eq!(outcome_for(408, "Request Timeout", None), Outcome::NoAnswer);
        assert!(
            matches!(outcome_for(404, "Not Found", None), Outcome::Failed { status: 404, ref reason } if reason.contains("invalid number"))
        );
        assert!(matches!(
            outcome_for(488, "Not Acceptable Here", None),
            Outcome::Failed { status: 488, .. }
        ));
        // the Q.850 cause wins
        assert_eq!(
            outcome_for(503, "Service Unavailable", Some(17)),
            Outcome::Busy
        );
        assert_eq!(outcome_for(480, "x", Some(21)), Outcome::Declined);
        let raw =
            "SIP/2.0 503 x\r\nReason: SIP;cause=503, Q.850;cause=17;text=\"User busy\"\r\n\r\n";
        assert_eq!(q850_cause(raw), Some(17));
        assert_eq!(
            q850_cause("SIP/2.0 486 x\r\nReason: SIP;cause=486\r\n\r\n"),
            None
        );
        assert_eq!(
            q850_cause("SIP/2.0 486 x\r\nReason: Q.850;cause=abc\r\n\r\n"),
            None
        );
    }

    #[test]
    fn busy_is_acked_and_reported() {
        let mut u = uac(30_000);
        let out = sent(&mut u);
        assert!(out[0].starts_with("INVITE sip:+15551230001@127.0.0.1:5090 SIP/2.0"));
        assert!(
            out[0].contains("m=audio 40000 RTP/AVP 0 8 111 101"),
            "{}",
            out[0]
        );
        let invite = out[0].clone();
        u.handle_datagram(10, &response(&invite, 100, "Trying", ""))
            .unwrap();
        u.handle_datagram(20, &response(&invite, 486, "Busy Here", ""))
            .unwrap();
        let mut acks = 0;
        let mut ended = None;
        while let Some(e) = u.poll_event() {
            match e {
                SipEvent::Send(b) => {
                    let s = String::from_utf8(b).unwrap();
                    assert!(s.starts_with("ACK "), "{s}");
                    assert!(s.contains("tag=uas1"));
                    acks += 1;
                }
                SipEvent::Ended(o) => ended = Some(o),
                _ => {}
            }
        }
        assert_eq!(acks, 1);
        assert_eq!(ended, Some(Outcome::Busy));
        assert!(u.is_done());
    }

    #[test]
    fn invite_is_retransmitted_until_a_response_then_times_out() {
        let mut u = uac(60_000);
        assert_eq!(sent(&mut u).len(), 1);
        let mut now = 0;
        let mut n = 0;
        while let Some(t) = u.poll_timeout() {
            now = t;
            u.handle_timeout(now).unwrap();
            n += sent(&mut u).len();
            if u.is_done() {
                break;
            }
        }
        assert!(n >= 6, "{n} retransmissions");
        assert_eq!(now, TIMER_B_MS);
        assert!(u.is_done());
    }

    #[test]
    fn ringing_past_the_timeout_is_cancelled_and_ends_no_answer() {
        let mut u = uac(5000);
        let invite = sent(&mut u).remove(0);
        u.handle_datagram(100, &response(&invite, 180, "Ringing", ""))
            .unwrap();
        assert!(matches!(
            u.poll_event(),
            Some(SipEvent::Progress { status: 180, .. })
        ));
        assert_eq!(u.poll_timeout(), Some(5000));
        u.handle_timeout(5000).unwrap();
        let out = sent(&mut u);
        assert!(out[0].starts_with("CANCEL "), "{out:?}");
        assert!(!out[0].contains("tag=uas1"), "CANCEL has the INVITE's To");
        let cancel_ok = response(&out[0], 200, "OK", "");
        u.handle_datagram(5010, &cancel_ok).unwrap();
        u.handle_datagram(5020, &response(&invite, 487, "Request Terminated", ""))
            .unwrap();
        let mut ended = None;
        while let Some(e) = u.poll_event() {
            if let SipEvent::Ended(o) = e {
                ended = Some(o);
            }
        }
        assert_eq!(ended, Some(Outcome::NoAnswer));
    }

    #[test]
    fn a_401_is_answered_once_with_digest() {
        let mut u = uac(30_000);
        let invite = sent(&mut u).remove(0);
        let challenge = "WWW-Authenticate: Digest realm=\"trunk\", nonce=\"abc123\", qop=\"auth\", algorithm=MD5\r\n";
        u.handle_datagram(10, &response(&invite, 401, "Unauthorized", challenge))
            .unwrap();
        let out = sent(&mut u);
        assert!(out[0].starts_with("ACK "));
        assert!(out[1].starts_with("INVITE "));
        assert!(
            out[1].contains("Authorization: Digest username=\"alice\""),
            "{}",
            out[1]
        );
        assert!(out[1].contains("CSeq: 2 INVITE"));
        // a second challenge is a failure, not a loop
        u.handle_datagram(20, &response(&out[1], 401, "Unauthorized", challenge))
            .unwrap();
        let mut ended = None;
        while let Some(e) = u.poll_event() {
            if let SipEvent::Ended(o) = e {
                ended = Some(o);
            }
        }
        assert!(
            matches!(ended, Some(Outcome::Failed { status: 401, .. })),
            "{ended:?}"
        );
    }

    #[test]
    fn a_407_with_sha_256_is_answered_with_proxy_authorization() {
        use sha2::{Digest, Sha256};
        let hex = |s: String| -> String {
            Sha256::digest(s.as_bytes())
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect()
        };
        let mut u = uac(30_000);
        let invite = sent(&mut u).remove(0);
        let challenge = "Proxy-Authenticate: Digest realm=\"proxy\", nonce=\"n0nce\", qop=\"auth\", algorithm=SHA-256\r\n";
        u.handle_datagram(
            10,
            &response(&invite, 407, "Proxy Authentication Required", challenge),
        )
        .unwrap();
        let out = sent(&mut u);
        assert!(out[0].starts_with("ACK "));
        let auth = out[1]
            .lines()
            .find_map(|l| l.strip_prefix("Proxy-Authorization: Digest "))
            .unwrap_or_else(|| panic!("{}", out[1]));
        let param = |name: &str| -> String {
            auth.split(',')
                .map(str::trim)
                .find_map(|kv| kv.strip_prefix(&format!("{name}=")))
                .unwrap_or_else(|| panic!("no {name} in {auth}"))
                .trim_matches('"')
                .to_string()
        };
        assert_eq!(param("algorithm"), "SHA-256");
        assert_eq!(param("qop"), "auth");
        // RFC 7616 §3.4.1, computed here, not by the crate that wrote it
        let ha1 = hex("alice:proxy:secret".into());
        let ha2 = hex(format!("INVITE:{}", param("uri")));
        let want = hex(format!(
            "{ha1}:n0nce:{}:{}:auth:{ha2}",
            param("nc"),
            param("cnonce")
        ));
        assert_eq!(param("response"), want);
    }

    #[test]
    fn a_re_invite_keeps_the_call_and_a_bye_ends_it() {
        let mut u = uac(30_000);
        let invite = sent(&mut u).remove(0);
        let ok = String::from_utf8(response(
            &invite,
            200,
            "OK",
            "Contact: <sip:uas@127.0.0.1:5090>\r\n",
        ))
        .unwrap();
        u.handle_datagram(10, ok.as_bytes()).unwrap();
        let out = sent(&mut u);
        assert!(out[0].starts_with("ACK sip:uas@127.0.0.1:5090"), "{out:?}");
        // the far end refreshes the session: From and To swap roles
        let from = invite
            .lines()
            .find(|l| l.starts_with("From:"))
            .unwrap()
            .replace("From:", "To:");
        let call_id = u.call_id().to_string();
        let request = |method: &str, cseq: u32| {
            format!(
                "{method} sip:+15550009999@127.0.0.1:5070 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5090;branch=z9hG4bKfar{cseq}\r\n\
                 From: <sip:+15551230001@127.0.0.1>;tag=uas1\r\n{from}\r\nCall-ID: {}\r\nCSeq: {cseq} {method}\r\nContent-Length: 0\r\n\r\n",
                call_id
            )
        };
        u.handle_datagram(20, request("INVITE", 7).as_bytes())
            .unwrap();
        let out = sent(&mut u);
        assert!(out[0].starts_with("SIP/2.0 200 OK"), "{out:?}");
        assert!(out[0].contains("m=audio 40000"), "answered with our media");
        assert!(!u.is_done());
        u.handle_datagram(30, request("REFER", 8).as_bytes())
            .unwrap();
        assert!(sent(&mut u)[0].starts_with("SIP/2.0 501"));
        u.handle_datagram(40, request("BYE", 9).as_bytes()).unwrap();
        let mut ended = None;
        let mut replies = Vec::new();
        while let Some(e) = u.poll_event() {
            match e {
                SipEvent::Send(b) => replies.push(String::from_utf8(b).unwrap()),
                SipEvent::Ended(o) => ended = Some(o),
                _ => {}
            }
        }
        assert!(replies[0].starts_with("SIP/2.0 200 OK"));
        assert_eq!(ended, Some(Outcome::Completed));
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let mut u = uac(30_000);
        let _ = sent(&mut u);
        for bad in [
            &b""[..],
            b"\x00\x01\x02",
            b"SIP/2.0 200\r\n\r\n",
            b"SIP/2.0 abc OK\r\nCall-ID: x\r\n\r\n",
            b"INVITE\r\n\r\n",
            "SIP/2.0 200 OK\r\nCSeq: 1 INVITE\r\nCall-ID: \u{1F600}\r\nContent-Length: 99999\r\n\r\n".as_bytes(),
        ] {
            assert!(u.handle_datagram(5, bad).is_err(), "{bad:?}");
        }
        assert!(!u.is_done());
    }
}
