//! The inbound SIP call (UAS), sans-IO: one INVITE server transaction and
//! the dialog it creates. The listener ([`super::inbound`]) hands it the
//! caller's INVITE and every later datagram with the same Call-ID; it
//! gives back datagrams to send and the same [`SipEvent`]s as the outbound
//! [`super::uac::Uac`], so one driver runs calls in both directions.
//!
//! What it does (RFC 3261 over UDP):
//! - 100 Trying at once; 180 Ringing and the 200 OK after the configured
//!   answer delay (0: answer at once, without 180);
//! - the 200 OK is retransmitted on Timer G (T1 doubling to T2) until the
//!   ACK; Timer H (64·T1) without one ends the call;
//! - a retransmitted INVITE gets the last response again;
//! - CANCEL before the answer: 200 to the CANCEL and 487 to the INVITE;
//! - in the dialog: BYE both ways, re-INVITE answered with our SDP as it
//!   stands (hold, session refresh), UPDATE/INFO/OPTIONS 200, others 501;
//! - hang-up before the ACK waits for it (or Timer H) to send the BYE.
//!
//! The 200 OK copies the INVITE's Record-Route set, and in-dialog requests
//! go along it to the caller's Contact.

use std::collections::VecDeque;
use std::net::SocketAddr;

use rsiprtp::sip::{Method, SipMessage, SipRequest, SipResponse};

use super::sdp::LocalSdp;
use super::uac::{Outcome, SipError, SipEvent, T1_MS, T2_MS, TIMER_B_MS, build_err};

/// Timer H (wait for the ACK) and Timer F (BYE): 64·T1, as Timer B.
const TIMER_H_MS: u64 = TIMER_B_MS;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// 100 (and 180) sent; the answer is due at `answer_at`
    Proceeding,
    /// 200 OK sent, waiting for the ACK
    Accepted,
    /// ACKed
    Confirmed,
    /// our BYE sent
    Terminating,
    Done,
}

/// One inbound call.
pub struct Uas {
    state: State,
    invite: SipRequest,
    invite_branch: String,
    call_id: String,
    /// our tag, in the To of every response
    tag: String,
    local: SocketAddr,
    sdp: LocalSdp,
    answer_at: u64,
    /// the last response to the INVITE, sent again on a retransmitted INVITE
    last_response: Vec<u8>,
    retransmit_at: Option<u64>,
    interval: u64,
    give_up_at: Option<u64>,
    /// our BYE, retransmitted on Timer E until answered
    last_request: Vec<u8>,
    cseq: u32,
    remote_target: String,
    route_set: Vec<String>,
    hangup_pending: bool,
    events: VecDeque<SipEvent>,
}

impl std::fmt::Debug for Uas {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Uas")
            .field("call_id", &self.call_id)
            .field("state", &self.state)
            .finish()
    }
}

fn malformed(e: impl std::fmt::Display) -> SipError {
    SipError::Malformed(e.to_string())
}

/// Parses `data` as an INVITE that opens a dialog (no To tag).
pub fn parse_invite(data: &[u8]) -> Result<SipRequest, SipError> {
    match SipMessage::parse(data).map_err(malformed)? {
        SipMessage::Request(r) if r.method() == Method::Invite && r.to_tag().is_none() => {
            // what every response and the dialog need, checked up front
            r.call_id().map_err(malformed)?;
            r.via_branch().map_err(malformed)?;
            r.cseq().map_err(malformed)?;
            r.from_tag().map_err(malformed)?;
            r.to_uri().map_err(malformed)?;
            Ok(r)
        }
        _ => Err(SipError::Malformed("not an initial INVITE".into())),
    }
}

/// A final response refusing `invite` (488 for no common codec, 486, 503
/// when full). The listener sends it statelessly and absorbs the ACK.
pub fn reject(invite: &SipRequest, status: u16, reason: &str) -> Result<Vec<u8>, SipError> {
    let r = SipResponse::builder()
        .status(status, reason)
        .from_request(invite)
        .to_tag(&rsiprtp::sip::generate_tag())
        .build()
        .map_err(build_err("response"))?;
    Ok(r.to_bytes().to_vec())
}

/// `bytes` (a whole SIP message) with `name: value` headers added after
/// its first line: the response builder has no Record-Route.
fn with_headers(bytes: Vec<u8>, name: &str, values: &[String]) -> Vec<u8> {
    if values.is_empty() {
        return bytes;
    }
    let Some(eol) = bytes.windows(2).position(|w| w == b"\r\n") else {
        return bytes;
    };
    let mut out = Vec::with_capacity(bytes.len() + 64 * values.len());
    out.extend_from_slice(&bytes[..eol + 2]);
    for v in values {
        out.extend_from_slice(format!("{name}: {v}\r\n").as_bytes());
    }
    out.extend_from_slice(&bytes[eol + 2..]);
    out
}

impl Uas {
    /// Takes the call `invite` at `now`, to answer with `sdp` after
    /// `answer_after_ms`. `local` is our SIP address (Contact, Via).
    pub fn new(
        invite: SipRequest,
        local: SocketAddr,
        sdp: LocalSdp,
        answer_after_ms: u64,
        now: u64,
    ) -> Result<Self, SipError> {
        let call_id = invite.call_id().map_err(malformed)?;
        let invite_branch = invite.via_branch().map_err(malformed)?;
        let remote_target = invite
            .contact_uri()
            .map(|u| u.to_string())
            .or_else(|| invite.from_uri().ok().map(|u| u.to_string()))
            .ok_or_else(|| SipError::Malformed("INVITE without Contact or From".into()))?;
        let route_set = invite.record_routes();
        let mut uas = Self {
            state: State::Proceeding,
            invite_branch,
            call_id,
            tag: rsiprtp::sip::generate_tag(),
            local,
            sdp,
            answer_at: now + answer_after_ms,
            last_response: Vec::new(),
            retransmit_at: None,
            interval: T1_MS,
            give_up_at: None,
            last_request: Vec::new(),
            cseq: 1,
            remote_target,
            route_set,
            hangup_pending: false,
            events: VecDeque::with_capacity(8),
            invite,
        };
        let trying = uas.respond(100, "Trying")?;
        uas.send(trying);
        if answer_after_ms > 0 {
            let ringing = uas.respond(180, "Ringing")?;
            uas.last_response = ringing.clone();
            uas.send(ringing);
            uas.events.push_back(SipEvent::Progress {
                status: 180,
                sdp: None,
            });
        } else {
            uas.accept(now)?;
        }
        Ok(uas)
    }

    /// The SIP Call-ID.
    pub fn call_id(&self) -> &str {
        &self.call_id
    }

    /// The number called (the request URI's user part), if any.
    pub fn called(&self) -> Option<String> {
        self.invite.uri().user().map(str::to_string)
    }

    /// The caller (the From URI's user part), if any.
    pub fn caller(&self) -> Option<String> {
        self.invite
            .from_uri()
            .ok()
            .and_then(|u| u.user().map(str::to_string))
    }

    /// True once the call is over.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<SipEvent> {
        self.events.pop_front()
    }

    /// When [`Uas::handle_timeout`] wants to run next.
    pub fn poll_timeout(&self) -> Option<u64> {
        let answer = (self.state == State::Proceeding).then_some(self.answer_at);
        [self.retransmit_at, self.give_up_at, answer]
            .into_iter()
            .flatten()
            .min()
    }

    fn send(&mut self, bytes: Vec<u8>) {
        self.events.push_back(SipEvent::Send(bytes));
    }

    fn contact(&self) -> String {
        let user = self.invite.uri().user().unwrap_or("dialgate").to_string();
        format!("sip:{user}@{}:{}", self.local.ip(), self.local.port())
    }

    /// A response to the INVITE (with our tag once past 100).
    fn respond(&self, status: u16, reason: &str) -> Result<Vec<u8>, SipError> {
        let mut b = SipResponse::builder()
            .status(status, reason)
            .from_request(&self.invite);
        if status > 100 {
            b = b.to_tag(&self.tag);
        }
        if status / 100 == 2 {
            b = b
                .contact(&self.contact())
                .body(self.sdp.to_bytes(), "application/sdp");
        }
        let bytes = b
            .build()
            .map_err(build_err("response"))?
            .to_bytes()
            .to_vec();
        // RFC 3261 §12.1.1: a 2xx copies the Record-Route set
        Ok(if status / 100 == 2 {
            with_headers(bytes, "Record-Route", &self.route_set)
        } else {
            bytes
        })
    }

    /// Sends the 200 OK, reliably until the ACK.
    fn accept(&mut self, now: u64) -> Result<(), SipError> {
        let ok = self.respond(200, "OK")?;
        self.last_response = ok.clone();
        self.send(ok);
        self.state = State::Accepted;
        self.interval = T1_MS;
        self.retransmit_at = Some(now + T1_MS);
        self.give_up_at = Some(now + TIMER_H_MS);
        self.events.push_back(SipEvent::Answered {
            sdp: self.invite.body().to_vec(),
        });
        Ok(())
    }

    fn end(&mut self, outcome: Outcome) {
        self.state = State::Done;
        self.retransmit_at = None;
        self.give_up_at = None;
        self.events.push_back(SipEvent::Ended(outcome));
    }

    fn send_bye(&mut self, now: u64) -> Result<(), SipError> {
        self.cseq += 1;
        let to = self.invite.from_uri().map_err(malformed)?.to_string();
        let from = self.invite.to_uri().map_err(malformed)?.to_string();
        let their_tag = self.invite.from_tag().map_err(malformed)?;
        let mut b = SipRequest::builder()
            .method(Method::Bye)
            .uri(&self.remote_target)
            .via(
                &self.local.ip().to_string(),
                self.local.port(),
                "UDP",
                &rsiprtp::sip::generate_branch(),
            )
            .from(&from, &self.tag)
            .to(&to)
            .to_tag(&their_tag)
            .call_id(&self.call_id)
            .cseq(self.cseq)
            .max_forwards(70);
        if !self.route_set.is_empty() {
            b = b.route(&self.route_set);
        }
        let bye = b.build().map_err(build_err("BYE"))?.to_bytes().to_vec();
        self.state = State::Terminating;
        self.last_request = bye.clone();
        self.interval = T1_MS;
        self.retransmit_at = Some(now + T1_MS);
        self.give_up_at = Some(now + TIMER_H_MS);
        self.send(bye);
        Ok(())
    }

    /// Hang up: BYE once the call is confirmed (after the ACK if it has
    /// not come yet); before the answer, 480.
    pub fn hangup(&mut self, now: u64) -> Result<(), SipError> {
        match self.state {
            State::Proceeding => {
                let r = self.respond(480, "Temporarily Unavailable")?;
                self.send(r);
                self.end(Outcome::Failed {
                    status: 480,
                    reason: "hung up before the answer".into(),
                });
                Ok(())
            }
            State::Accepted => {
                self.hangup_pending = true;
                Ok(())
            }
            State::Confirmed => self.send_bye(now),
            State::Terminating | State::Done => Ok(()),
        }
    }

    /// Time passed.
    pub fn handle_timeout(&mut self, now: u64) -> Result<(), SipError> {
        if self.give_up_at.is_some_and(|t| now >= t) {
            match self.state {
                State::Accepted => {
                    // Timer H: no ACK. The dialog exists for the caller if
                    // only the ACK was lost: end it with a BYE we do not
                    // wait for.
                    self.send_bye(now)?;
                    self.end(Outcome::Failed {
                        status: 408,
                        reason: "no ACK for our 200 OK".into(),
                    });
                }
                _ => self.end(Outcome::Completed),
            }
            return Ok(());
        }
        if self.state == State::Proceeding && now >= self.answer_at {
            return self.accept(now);
        }
        if let Some(at) = self.retransmit_at
            && now >= at
        {
            let bytes = if self.state == State::Accepted {
                self.last_response.clone()
            } else {
                self.last_request.clone()
            };
            self.send(bytes);
            self.interval = (self.interval * 2).min(T2_MS);
            self.retransmit_at = Some(now + self.interval);
        }
        Ok(())
    }

    /// A datagram of this call from the caller.
    pub fn handle_datagram(&mut self, now: u64, data: &[u8]) -> Result<(), SipError> {
        let msg = SipMessage::parse(data).map_err(malformed)?;
        match msg {
            SipMessage::Request(r) => {
                if r.call_id().ok().as_deref() != Some(self.call_id.as_str()) {
                    return Err(SipError::Malformed("a message for another call".into()));
                }
                self.on_request(now, &r)
            }
            SipMessage::Response(r) => {
                if r.call_id().ok().as_deref() != Some(self.call_id.as_str()) {
                    return Err(SipError::Malformed("a message for another call".into()));
                }
                let method = r.cseq_method().map_err(malformed)?;
                if method == Method::Bye
                    && self.state == State::Terminating
                    && r.status_code() >= 200
                {
                    self.end(Outcome::Completed);
                }
                Ok(())
            }
        }
    }

    fn on_request(&mut self, now: u64, req: &SipRequest) -> Result<(), SipError> {
        let reply = |status: u16, reason: &str| -> Result<Vec<u8>, SipError> {
            Ok(SipResponse::builder()
                .status(status, reason)
                .from_request(req)
                .build()
                .map_err(build_err("response"))?
                .to_bytes()
                .to_vec())
        };
        let method = req.method();
        let retransmission = req.via_branch().ok().as_deref() == Some(self.invite_branch.as_str());
        match method {
            Method::Invite if retransmission => {
                if matches!(self.state, State::Proceeding | State::Accepted) {
                    let last = self.last_response.clone();
                    if !last.is_empty() {
                        self.send(last);
                    }
                }
            }
            Method::Ack => {
                if self.state == State::Accepted {
                    self.state = State::Confirmed;
                    self.retransmit_at = None;
                    self.give_up_at = None;
                    if self.hangup_pending {
                        self.send_bye(now)?;
                    }
                }
            }
            Method::Cancel => {
                let ok = reply(200, "OK")?;
                self.send(ok);
                if self.state == State::Proceeding {
                    let terminated = self.respond(487, "Request Terminated")?;
                    self.send(terminated);
                    self.end(Outcome::NoAnswer);
                }
            }
            Method::Bye => {
                if matches!(self.state, State::Proceeding) {
                    let r = reply(481, "Call/Transaction Does Not Exist")?;
                    self.send(r);
                } else {
                    let r = reply(200, "OK")?;
                    self.send(r);
                    if self.state != State::Done {
                        self.end(Outcome::Completed);
                    }
                }
            }
            // A re-INVITE: hold, resume or session refresh.
            Method::Invite if self.state == State::Confirmed => {
                let body = self.sdp.reanswer(req.body());
                let r = SipResponse::builder()
                    .status(200, "OK")
                    .from_request(req)
                    .contact(&self.contact())
                    .body(body, "application/sdp")
                    .build()
                    .map_err(build_err("response"))?;
                self.send(r.to_bytes().to_vec());
                self.events.push_back(SipEvent::Reoffered {
                    sdp: req.body().to_vec(),
                    sending: self.sdp.sending(),
                });
            }
            Method::Invite => {
                let r = reply(491, "Request Pending")?;
                self.send(r);
            }
            Method::Options | Method::Update | Method::Info => {
                let r = reply(200, "OK")?;
                self.send(r);
            }
            _ => {
                let r = reply(501, "Not Implemented")?;
                self.send(r);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OFFER: &str = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
                         m=audio 6000 RTP/AVP 8 0 101\r\na=rtpmap:101 telephone-event/8000\r\n";

    fn invite(branch: &str) -> Vec<u8> {
        format!(
            "INVITE sip:+15550001111@127.0.0.1:5080 SIP/2.0\r\n\
             Via: SIP/2.0/UDP 127.0.0.1:5061;branch={branch}\r\n\
             Record-Route: <sip:proxy.example;lr>\r\n\
             From: <sip:+15552223333@127.0.0.1>;tag=caller1\r\n\
             To: <sip:+15550001111@127.0.0.1>\r\n\
             Call-ID: inbound-1@test\r\n\
             CSeq: 1 INVITE\r\n\
             Contact: <sip:caller@127.0.0.1:5061>\r\n\
             Max-Forwards: 70\r\n\
             Content-Type: application/sdp\r\n\
             Content-Length: {}\r\n\r\n{OFFER}",
            OFFER.len()
        )
        .into_bytes()
    }

    fn request(method: &str, to_tag: Option<&str>, cseq: u32, branch: &str) -> Vec<u8> {
        let to = match to_tag {
            Some(t) => format!("<sip:+15550001111@127.0.0.1>;tag={t}"),
            None => "<sip:+15550001111@127.0.0.1>".into(),
        };
        format!(
            "{method} sip:+15550001111@127.0.0.1:5080 SIP/2.0\r\n\
             Via: SIP/2.0/UDP 127.0.0.1:5061;branch={branch}\r\n\
             From: <sip:+15552223333@127.0.0.1>;tag=caller1\r\n\
             To: {to}\r\n\
             Call-ID: inbound-1@test\r\n\
             CSeq: {cseq} {method}\r\n\
             Max-Forwards: 70\r\n\
             Content-Length: 0\r\n\r\n"
        )
        .into_bytes()
    }

    fn uas(answer_after_ms: u64) -> Uas {
        let inv = parse_invite(&invite("z9hG4bKinv1")).unwrap();
        Uas::new(
            inv,
            "127.0.0.1:5080".parse().unwrap(),
            LocalSdp::offer("127.0.0.1".parse().unwrap(), 4000),
            answer_after_ms,
            0,
        )
        .unwrap()
    }

    /// The events so far: datagrams as their first lines, others as names.
    fn drain(u: &mut Uas) -> Vec<String> {
        let mut out = Vec::new();
        while let Some(e) = u.poll_event() {
            out.push(match e {
                SipEvent::Send(b) => {
                    let s = String::from_utf8(b).unwrap();
                    s.lines().next().unwrap().to_string()
                }
                SipEvent::Progress { status, .. } => format!("progress {status}"),
                SipEvent::Answered { .. } => "answered".into(),
                SipEvent::Reoffered { sending, .. } => format!("reoffered sending={sending}"),
                SipEvent::Ended(o) => format!("ended {}", o.as_status()),
            });
        }
        out
    }

    fn tag_of(u: &Uas) -> String {
        u.tag.clone()
    }

    #[test]
    fn answers_at_once_and_retransmits_the_200_until_the_ack() {
        let mut u = uas(0);
        assert_eq!(
            drain(&mut u),
            ["SIP/2.0 100 Trying", "SIP/2.0 200 OK", "answered"]
        );
        // Timer G: 500, 1000 (doubling)
        u.handle_timeout(500).unwrap();
        assert_eq!(drain(&mut u), ["SIP/2.0 200 OK"]);
        assert_eq!(u.poll_timeout(), Some(1500));
        // a retransmitted INVITE gets the 200 again
        u.handle_datagram(600, &invite("z9hG4bKinv1")).unwrap();
        assert_eq!(drain(&mut u), ["SIP/2.0 200 OK"]);
        let tag = tag_of(&u);
        u.handle_datagram(700, &request("ACK", Some(&tag), 1, "z9hG4bKack"))
            .unwrap();
        assert!(drain(&mut u).is_empty());
        assert_eq!(u.poll_timeout(), None, "no more retransmissions");
    }

    #[test]
    fn the_200_carries_our_sdp_contact_and_the_record_route_set() {
        let mut u = uas(0);
        let ok = u
            .poll_event()
            .into_iter()
            .chain(std::iter::from_fn(|| u.poll_event()))
            .find_map(|e| match e {
                SipEvent::Send(b) if b.starts_with(b"SIP/2.0 200") => Some(b),
                _ => None,
            })
            .unwrap();
        let ok = String::from_utf8(ok).unwrap();
        assert!(ok.contains("Record-Route: <sip:proxy.example;lr>"), "{ok}");
        assert!(ok.contains("sip:+15550001111@127.0.0.1:5080"), "{ok}");
        assert!(ok.contains(";tag="), "{ok}");
        assert!(ok.contains("m=audio 4000 RTP/AVP"), "{ok}");
        // and it parses back
        assert!(SipMessage::parse(ok.as_bytes()).is_ok());
    }

    #[test]
    fn the_caller_hangs_up_with_bye() {
        let mut u = uas(0);
        drain(&mut u);
        let tag = tag_of(&u);
        u.handle_datagram(10, &request("ACK", Some(&tag), 1, "z9hG4bKa"))
            .unwrap();
        u.handle_datagram(5000, &request("BYE", Some(&tag), 2, "z9hG4bKb"))
            .unwrap();
        assert_eq!(drain(&mut u), ["SIP/2.0 200 OK", "ended completed"]);
        assert!(u.is_done());
    }

    #[test]
    fn we_hang_up_with_bye_through_the_route_set() {
        let mut u = uas(0);
        drain(&mut u);
        // before the ACK the BYE waits for it
        u.hangup(100).unwrap();
        assert!(drain(&mut u).is_empty());
        let tag = tag_of(&u);
        u.handle_datagram(200, &request("ACK", Some(&tag), 1, "z9hG4bKa"))
            .unwrap();
        let bye = match u.poll_event() {
            Some(SipEvent::Send(b)) => String::from_utf8(b).unwrap(),
            other => panic!("{other:?}"),
        };
        assert!(
            bye.starts_with("BYE sip:caller@127.0.0.1:5061 SIP/2.0"),
            "{bye}"
        );
        assert!(bye.contains("Route: <sip:proxy.example;lr>"), "{bye}");
        assert!(bye.contains("tag=caller1"), "{bye}");
        assert!(bye.contains(&format!("tag={tag}")), "{bye}");
        // its 200 ends the call
        let ok = format!(
            "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 127.0.0.1:5080;branch=z9hG4bKx\r\n\
             From: <sip:+15550001111@127.0.0.1>;tag={tag}\r\n\
             To: <sip:+15552223333@127.0.0.1>;tag=caller1\r\n\
             Call-ID: inbound-1@test\r\nCSeq: 2 BYE\r\nContent-Length: 0\r\n\r\n"
        );
        u.handle_datagram(300, ok.as_bytes()).unwrap();
        assert_eq!(drain(&mut u), ["ended completed"]);
    }

    #[test]
    fn a_cancel_before_the_answer_gets_200_and_487() {
        let mut u = uas(3000);
        assert_eq!(
            drain(&mut u),
            ["SIP/2.0 100 Trying", "SIP/2.0 180 Ringing", "progress 180"]
        );
        assert_eq!(u.poll_timeout(), Some(3000));
        // a retransmitted INVITE gets the 180 again
        u.handle_datagram(500, &invite("z9hG4bKinv1")).unwrap();
        assert_eq!(drain(&mut u), ["SIP/2.0 180 Ringing"]);
        u.handle_datagram(1000, &request("CANCEL", None, 1, "z9hG4bKinv1"))
            .unwrap();
        assert_eq!(
            drain(&mut u),
            [
                "SIP/2.0 200 OK",
                "SIP/2.0 487 Request Terminated",
                "ended no-answer"
            ]
        );
        assert!(u.is_done());
    }

    #[test]
    fn the_answer_comes_after_the_delay() {
        let mut u = uas(2000);
        drain(&mut u);
        u.handle_timeout(1999).unwrap();
        assert!(drain(&mut u).is_empty());
        u.handle_timeout(2000).unwrap();
        assert_eq!(drain(&mut u), ["SIP/2.0 200 OK", "answered"]);
    }

    #[test]
    fn no_ack_ends_the_call_at_timer_h() {
        let mut u = uas(0);
        drain(&mut u);
        let mut t = 0;
        while !u.is_done() {
            t = u.poll_timeout().unwrap();
            u.handle_timeout(t).unwrap();
        }
        assert_eq!(t, TIMER_H_MS);
        let ev = drain(&mut u);
        assert!(
            ev.iter().filter(|e| *e == "SIP/2.0 200 OK").count() >= 6,
            "{ev:?}"
        );
        assert!(ev.iter().any(|e| e.starts_with("BYE ")), "{ev:?}");
        assert_eq!(ev.last().unwrap(), "ended failed");
    }

    #[test]
    fn in_dialog_requests_are_answered() {
        let mut u = uas(0);
        drain(&mut u);
        let tag = tag_of(&u);
        u.handle_datagram(10, &request("ACK", Some(&tag), 1, "z9hG4bKa"))
            .unwrap();
        u.handle_datagram(20, &request("OPTIONS", Some(&tag), 2, "z9hG4bKo"))
            .unwrap();
        u.handle_datagram(30, &request("INVITE", Some(&tag), 3, "z9hG4bKre"))
            .unwrap();
        u.handle_datagram(40, &request("SUBSCRIBE", Some(&tag), 4, "z9hG4bKs"))
            .unwrap();
        assert_eq!(
            drain(&mut u),
            [
                "SIP/2.0 200 OK",
                "SIP/2.0 200 OK",
                "reoffered sending=true",
                "SIP/2.0 501 Not Implemented"
            ]
        );
        assert!(!u.is_done());
    }

    #[test]
    fn a_hold_is_answered_recvonly_and_stops_our_audio() {
        let mut u = uas(0);
        drain(&mut u);
        let tag = tag_of(&u);
        u.handle_datagram(10, &request("ACK", Some(&tag), 1, "z9hG4bKa"))
            .unwrap();
        let hold = OFFER.to_string() + "a=sendonly\r\n";
        let reinvite = String::from_utf8(request("INVITE", Some(&tag), 2, "z9hG4bKh"))
            .unwrap()
            .replace(
                "Content-Length: 0\r\n\r\n",
                &format!(
                    "Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{hold}",
                    hold.len()
                ),
            );
        u.handle_datagram(20, reinvite.as_bytes()).unwrap();
        let ok = match u.poll_event() {
            Some(SipEvent::Send(b)) => String::from_utf8(b).unwrap(),
            other => panic!("{other:?}"),
        };
        assert!(ok.starts_with("SIP/2.0 200 OK"), "{ok}");
        assert!(ok.contains("a=recvonly"), "{ok}");
        assert!(matches!(
            u.poll_event(),
            Some(SipEvent::Reoffered { sending: false, .. })
        ));
        // resumed
        let resume = reinvite.replace("a=sendonly", "a=sendrecv");
        u.handle_datagram(30, resume.as_bytes()).unwrap();
        let ev = drain(&mut u);
        assert_eq!(ev, ["SIP/2.0 200 OK", "reoffered sending=true"]);
    }

    #[test]
    fn bad_input_is_an_error_not_a_panic() {
        let mut u = uas(0);
        drain(&mut u);
        for bad in [
            &b""[..],
            b"\xff\xfe\x00",
            b"INVITE\r\n\r\n",
            b"SIP/2.0 200 OK\r\n\r\n",
        ] {
            assert!(u.handle_datagram(1, bad).is_err());
        }
        let mut other = request("BYE", Some("x"), 2, "z9hG4bKb");
        let s = String::from_utf8(other.clone()).unwrap();
        other = s.replace("inbound-1@test", "someone-else").into_bytes();
        assert!(u.handle_datagram(1, &other).is_err());
        assert!(!u.is_done());
        // only initial INVITEs open calls
        assert!(parse_invite(&request("BYE", None, 1, "z9hG4bKb")).is_err());
        assert!(parse_invite(&request("INVITE", Some("t"), 1, "z9hG4bKb")).is_err());
        assert!(parse_invite(b"garbage").is_err());
    }

    #[test]
    fn a_refusal_is_a_final_response_with_a_tag() {
        let inv = parse_invite(&invite("z9hG4bKinv1")).unwrap();
        let r = String::from_utf8(reject(&inv, 488, "Not Acceptable Here").unwrap()).unwrap();
        assert!(r.starts_with("SIP/2.0 488 Not Acceptable Here"), "{r}");
        assert!(r.contains(";tag="), "{r}");
        assert!(r.contains("CSeq: 1 INVITE"), "{r}");
    }
}
