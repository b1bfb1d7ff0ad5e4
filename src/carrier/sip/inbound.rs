//! Inbound SIP calls: the gateway's SIP port (`serve --sip-listen`). A
//! caller's INVITE becomes a [`Uas`] and a call task that runs the same
//! driver as outbound calls ([`super::call`]), bridged to the default
//! agent: no AMD (a person dialled us), the agent starts at once, and it
//! is told `direction=inbound`, `from` and `to` in its custom parameters.
//!
//! This task owns the UDP socket. It reads every datagram, and hands each
//! to the call with its Call-ID over a channel; the call tasks send through
//! the same socket. Outside a call it answers OPTIONS (trunks ping with
//! it), refuses an offer with no common codec (488) or a call over the
//! limit (503), answers other strays with 481 and drops what does not
//! parse. None of that touches another call.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rsiprtp::sip::{Method, SipMessage, SipResponse};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::call::{Dialog, RtpPair, SipLink, drive, local_ip_for};
use super::sdp::{LocalSdp, negotiate};
use super::uas::{Uas, parse_invite, reject};
use crate::agent::bridge::AgentAudio;
use crate::agent::side::AgentSide;
use crate::call::session::{AgentStart, SessionConfig};

/// How inbound calls are taken.
#[derive(Debug, Clone)]
pub struct InboundConfig {
    /// The agent every inbound call is bridged to.
    pub agent_url: String,
    /// Its audio format.
    pub agent_audio: AgentAudio,
    /// How long the agent may take to accept.
    pub agent_connect_timeout: Duration,
    /// Maximum call duration and the other session settings; AMD is off
    /// and the agent starts at once, whatever this says.
    pub session: SessionConfig,
    /// Ring this long before answering (0: answer at once).
    pub answer_after: Duration,
    /// Calls at once; more get 503.
    pub max_calls: usize,
}

/// What the listener has done, for tests and metrics.
#[derive(Debug, Default)]
pub struct InboundStats {
    /// Calls taken.
    pub calls: AtomicU64,
    /// Calls that have ended.
    pub ended: AtomicU64,
    /// INVITEs refused (no common codec, over the limit).
    pub refused: AtomicU64,
    /// Datagrams dropped: not SIP, or not for a call.
    pub ignored: AtomicU64,
}

/// Binds `addr` and serves inbound calls in the background.
pub async fn start(
    addr: SocketAddr,
    cfg: InboundConfig,
) -> std::io::Result<(SocketAddr, Arc<InboundStats>)> {
    let sock = UdpSocket::bind(addr).await?;
    let bound = sock.local_addr()?;
    let stats = Arc::new(InboundStats::default());
    tokio::spawn(listen(sock, cfg, stats.clone()));
    tracing::info!(%bound, "SIP: taking inbound calls");
    Ok((bound, stats))
}

/// The listener's state: the socket, and the calls it feeds.
struct Listener {
    sock: Arc<UdpSocket>,
    cfg: InboundConfig,
    stats: Arc<InboundStats>,
    calls: HashMap<String, mpsc::Sender<Vec<u8>>>,
    /// call tasks say here that they have ended
    done_tx: mpsc::UnboundedSender<String>,
}

async fn listen(sock: UdpSocket, cfg: InboundConfig, stats: Arc<InboundStats>) {
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<String>();
    let mut l = Listener {
        sock: Arc::new(sock),
        cfg,
        stats,
        calls: HashMap::new(),
        done_tx,
    };
    let mut buf = vec![0u8; 65_535];
    loop {
        tokio::select! {
            r = l.sock.recv_from(&mut buf) => {
                let (n, src) = match r {
                    Ok(x) => x,
                    Err(e) => {
                        // e.g. an ICMP error reported on the socket: not fatal
                        tracing::debug!(error = %e, "SIP listener read");
                        continue;
                    }
                };
                l.on_datagram(&buf[..n], src).await;
            }
            Some(id) = done_rx.recv() => {
                l.calls.remove(&id);
            }
        }
    }
}

impl Listener {
    async fn on_datagram(&mut self, data: &[u8], src: SocketAddr) {
        let stats = self.stats.clone();
        let msg = match SipMessage::parse(data) {
            Ok(m) => m,
            Err(e) => {
                stats.ignored.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(%src, error = %e, "not SIP: dropped");
                return;
            }
        };
        let call_id = match &msg {
            SipMessage::Request(r) => r.call_id(),
            SipMessage::Response(r) => r.call_id(),
        };
        let Ok(call_id) = call_id else {
            stats.ignored.fetch_add(1, Ordering::Relaxed);
            return;
        };
        if let Some(tx) = self.calls.get(&call_id) {
            // a call that cannot keep up with its signalling loses a datagram,
            // which SIP retransmits; the listener never waits on one call
            if tx.try_send(data.to_vec()).is_err() {
                stats.ignored.fetch_add(1, Ordering::Relaxed);
            }
            return;
        }
        let SipMessage::Request(req) = msg else {
            stats.ignored.fetch_add(1, Ordering::Relaxed);
            return;
        };
        let reply = |status: u16, reason: &str| {
            SipResponse::builder()
                .status(status, reason)
                .from_request(&req)
                .build()
                .map(|r| r.to_bytes().to_vec())
        };
        let response = match req.method() {
            Method::Invite if req.to_tag().is_none() => match self.take_call(data, src).await {
                Ok(()) => return,
                Err(refusal) => Ok(refusal),
            },
            // the ACK of a refusal, or of a call that has ended
            Method::Ack => return,
            Method::Options => reply(200, "OK"),
            _ => reply(481, "Call/Transaction Does Not Exist"),
        };
        match response {
            Ok(bytes) if !bytes.is_empty() => {
                let _ = self.sock.send_to(&bytes, src).await;
            }
            Ok(_) => {}
            Err(e) => {
                stats.ignored.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(%src, error = %e, "cannot answer a stray request");
            }
        }
    }

    /// Starts a call for `data` (an initial INVITE), or returns the refusal
    /// to send (empty: nothing can be sent).
    async fn take_call(&mut self, data: &[u8], src: SocketAddr) -> Result<(), Vec<u8>> {
        let (sock, cfg, stats) = (&self.sock, &self.cfg, &self.stats);
        let invite = match parse_invite(data) {
            Ok(i) => i,
            Err(e) => {
                stats.ignored.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(%src, error = %e, "unusable INVITE dropped");
                return Err(Vec::new());
            }
        };
        let refuse = |status: u16, reason: &str| {
            stats.refused.fetch_add(1, Ordering::Relaxed);
            Err(reject(&invite, status, reason).unwrap_or_default())
        };
        if self.calls.len() >= cfg.max_calls {
            tracing::warn!(%src, calls = self.calls.len(), "inbound call refused: at the limit");
            return refuse(503, "Service Unavailable");
        }
        let neg = match negotiate(invite.body()) {
            Ok(n) => n,
            Err(reason) => {
                tracing::warn!(%src, %reason, "inbound call refused");
                return refuse(488, "Not Acceptable Here");
            }
        };
        let local = match sock.local_addr() {
            Ok(a) if !a.ip().is_unspecified() => a,
            Ok(a) => match local_ip_for(src).await {
                Ok(ip) => SocketAddr::new(ip, a.port()),
                Err(_) => return refuse(500, "Server Internal Error"),
            },
            Err(_) => return refuse(500, "Server Internal Error"),
        };
        let rtp = match RtpPair::bind(local.ip()).await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "no RTP port for an inbound call");
                return refuse(503, "Service Unavailable");
            }
        };
        let rtp_port = rtp.rtp.local_addr().map(|a| a.port()).unwrap_or(0);
        let answer = LocalSdp::answer(local.ip(), rtp_port, &neg);
        let answer_ms = cfg.answer_after.as_millis() as u64;
        let uas = match Uas::new(invite.clone(), local, answer, answer_ms, 0) {
            Ok(u) => u,
            Err(e) => {
                tracing::warn!(%src, error = %e, "inbound call refused");
                return refuse(400, "Bad Request");
            }
        };
        let epoch = Instant::now();
        let call_id = uas.call_id().to_string();
        let mut session = SessionConfig {
            agent_start: AgentStart::Immediate,
            amd: None,
            ..cfg.session.clone()
        };
        session
            .agent_params
            .insert("direction".into(), "inbound".into());
        if let Some(from) = uas.caller() {
            session.agent_params.insert("from".into(), from);
        }
        if let Some(to) = uas.called() {
            session.agent_params.insert("to".into(), to);
        }
        let side = AgentSide::new(
            cfg.agent_url.clone(),
            cfg.agent_audio,
            cfg.agent_connect_timeout,
            None,
            None,
        );
        let (tx, rx) = mpsc::channel(32);
        self.calls.insert(call_id.clone(), tx);
        stats.calls.fetch_add(1, Ordering::Relaxed);
        tracing::info!(%src, from = %crate::campaign::phone::redact(uas.caller().as_deref().unwrap_or("")), "inbound call");
        let link = SipLink::Shared {
            sock: sock.clone(),
            rx,
        };
        let (done_tx, stats) = (self.done_tx.clone(), stats.clone());
        tokio::spawn(async move {
            match drive(Dialog::In(uas), link, src, rtp, epoch, session, side, None).await {
                Ok(r) => tracing::info!(
                    outcome = r.outcome.as_status(),
                    end_type = r.end_type.as_deref().unwrap_or(""),
                    frames_in = r.frames_in,
                    frames_concealed = r.frames_concealed,
                    frames_out = r.frames_out,
                    "inbound call ended"
                ),
                Err(e) => tracing::warn!(error = %e, "inbound call failed"),
            }
            stats.ended.fetch_add(1, Ordering::Relaxed);
            let _ = done_tx.send(call_id);
        });
        Ok(())
    }
}
