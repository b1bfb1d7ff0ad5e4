//! OPTIONS keep-alive toward the trunk (`serve --sip-options-interval`):
//! is the trunk there? The dialer holds SIP attempts while it is down
//! instead of spending each on 32 s of INVITE retransmissions and a
//! `failed` outcome.
//!
//! [`Keepalive`] is sans-IO: an OPTIONS every interval, retransmitted on
//! T1 doubling, given up after the interval (at most 5 s). Any response,
//! even 404 or 405, means the trunk is reachable (as Asterisk's qualify
//! counts it: a trunk that refuses OPTIONS still answers INVITEs); three
//! unanswered pings in a row mean it is down. Events come only when that
//! changes. [`run`] is its driver: one UDP socket and a timer.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rsiprtp::sip::{Method, SipMessage, SipRequest};

use super::uac::{SipError, T1_MS, T2_MS, TrunkConfig, build_err};

/// Unanswered pings in a row before the trunk is down.
const MISSES_TO_DOWN: u32 = 3;
/// The longest a ping waits for its answer.
const MAX_WAIT_MS: u64 = 5000;

/// What the keep-alive learnt.
#[derive(Debug, Clone, PartialEq)]
pub enum KeepaliveEvent {
    /// Send this datagram to the trunk.
    Send(Vec<u8>),
    /// The trunk answers (first answer, or again after being down).
    Up {
        /// Round trip of the answered ping, ms.
        rtt_ms: u64,
        /// Its status code.
        status: u16,
    },
    /// Three pings in a row went unanswered.
    Down,
}

#[derive(Debug)]
struct Ping {
    call_id: String,
    bytes: Vec<u8>,
    sent_at: u64,
    retransmit_at: u64,
    interval: u64,
    give_up_at: u64,
}

/// The keep-alive of one trunk.
#[derive(Debug)]
pub struct Keepalive {
    cfg: TrunkConfig,
    local: SocketAddr,
    every_ms: u64,
    next_ping: u64,
    cseq: u32,
    ping: Option<Ping>,
    misses: u32,
    up: Option<bool>,
    events: VecDeque<KeepaliveEvent>,
}

impl Keepalive {
    /// Pings from `local` every `every_ms`, the first at `now`.
    pub fn new(cfg: TrunkConfig, local: SocketAddr, every_ms: u64, now: u64) -> Self {
        Self {
            cfg,
            local,
            every_ms: every_ms.max(100),
            next_ping: now,
            cseq: 0,
            ping: None,
            misses: 0,
            up: None,
            events: VecDeque::new(),
        }
    }

    /// Up, down, or not known yet.
    pub fn is_up(&self) -> Option<bool> {
        self.up
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<KeepaliveEvent> {
        self.events.pop_front()
    }

    /// When [`Keepalive::handle_timeout`] wants to run.
    pub fn poll_timeout(&self) -> u64 {
        match &self.ping {
            Some(p) => p.retransmit_at.min(p.give_up_at),
            None => self.next_ping,
        }
    }

    fn options(&mut self) -> Result<(String, Vec<u8>), SipError> {
        self.cseq += 1;
        let domain = self
            .cfg
            .from_domain
            .clone()
            .unwrap_or_else(|| self.cfg.host.clone());
        let call_id = rsiprtp::sip::generate_call_id(&domain);
        let route: Vec<String> = self
            .cfg
            .outbound_proxy
            .iter()
            .map(|p| format!("<sip:{p};lr>"))
            .collect();
        let req = SipRequest::builder()
            .method(Method::Options)
            .uri(&format!("sip:{}:{}", self.cfg.host, self.cfg.port))
            .via(
                &self.local.ip().to_string(),
                self.local.port(),
                "UDP",
                &rsiprtp::sip::generate_branch(),
            )
            .from(
                &format!("sip:keepalive@{domain}"),
                &rsiprtp::sip::generate_tag(),
            )
            .to(&format!("sip:{}:{}", self.cfg.host, self.cfg.port))
            .call_id(&call_id)
            .cseq(self.cseq)
            .max_forwards(70)
            .route(&route)
            .header("Accept", "application/sdp")
            .build()
            .map_err(build_err("OPTIONS"))?;
        Ok((call_id, req.to_bytes().to_vec()))
    }

    /// Time passed.
    pub fn handle_timeout(&mut self, now: u64) -> Result<(), SipError> {
        if let Some(p) = self.ping.as_mut() {
            if now >= p.give_up_at {
                let sent_at = p.sent_at;
                self.ping = None;
                self.misses += 1;
                if self.misses >= MISSES_TO_DOWN && self.up != Some(false) {
                    self.up = Some(false);
                    self.events.push_back(KeepaliveEvent::Down);
                }
                self.next_ping = (sent_at + self.every_ms).max(now);
            } else if now >= p.retransmit_at {
                let bytes = p.bytes.clone();
                p.interval = (p.interval * 2).min(T2_MS);
                p.retransmit_at = now + p.interval;
                self.events.push_back(KeepaliveEvent::Send(bytes));
            }
            return Ok(());
        }
        if now >= self.next_ping {
            let (call_id, bytes) = self.options()?;
            self.events.push_back(KeepaliveEvent::Send(bytes.clone()));
            self.ping = Some(Ping {
                call_id,
                bytes,
                sent_at: now,
                retransmit_at: now + T1_MS,
                interval: T1_MS,
                give_up_at: now + self.every_ms.min(MAX_WAIT_MS),
            });
        }
        Ok(())
    }

    /// A datagram from the trunk.
    pub fn handle_datagram(&mut self, now: u64, data: &[u8]) -> Result<(), SipError> {
        let SipMessage::Response(r) =
            SipMessage::parse(data).map_err(|e| SipError::Malformed(e.to_string()))?
        else {
            return Err(SipError::Malformed(
                "a request on the keep-alive port".into(),
            ));
        };
        let Some(p) = &self.ping else {
            return Ok(()); // a late answer to a ping already given up
        };
        if r.call_id().ok().as_deref() != Some(p.call_id.as_str()) || r.status_code() < 200 {
            return Ok(());
        }
        let rtt_ms = now.saturating_sub(p.sent_at);
        self.next_ping = p.sent_at + self.every_ms;
        self.ping = None;
        self.misses = 0;
        if self.up != Some(true) {
            self.up = Some(true);
            self.events.push_back(KeepaliveEvent::Up {
                rtt_ms,
                status: r.status_code(),
            });
        }
        Ok(())
    }
}

/// Pings the trunk at `addr` every `every` for as long as the process
/// runs, keeping `up` current (it starts true: calls flow until the trunk
/// is known to be down).
pub async fn run(cfg: TrunkConfig, addr: SocketAddr, every: Duration, up: Arc<AtomicBool>) {
    if cfg.transport != super::uac::Transport::Udp {
        tracing::warn!("SIP keep-alive pings over UDP only: not pinging a TCP trunk");
        return;
    }
    let sock = match super::call::local_ip_for(addr).await {
        Ok(ip) => tokio::net::UdpSocket::bind(SocketAddr::new(ip, 0)).await,
        Err(e) => Err(e),
    };
    let sock = match sock {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "SIP keep-alive: no socket; the trunk is assumed up");
            return;
        }
    };
    let Ok(local) = sock.local_addr() else {
        return;
    };
    let epoch = tokio::time::Instant::now();
    let now = || epoch.elapsed().as_millis() as u64;
    let mut k = Keepalive::new(cfg, local, every.as_millis() as u64, now());
    let mut buf = vec![0u8; 65_535];
    loop {
        while let Some(ev) = k.poll_event() {
            match ev {
                KeepaliveEvent::Send(bytes) => {
                    let _ = sock.send_to(&bytes, addr).await;
                }
                KeepaliveEvent::Up { rtt_ms, status } => {
                    tracing::info!(%addr, rtt_ms, status, "SIP trunk answers OPTIONS: up");
                    up.store(true, Ordering::Relaxed);
                }
                KeepaliveEvent::Down => {
                    tracing::warn!(%addr, "SIP trunk does not answer OPTIONS: down; SIP calls are held until it answers");
                    up.store(false, Ordering::Relaxed);
                }
            }
        }
        let wait = Duration::from_millis(k.poll_timeout().saturating_sub(now()));
        tokio::select! {
            r = sock.recv_from(&mut buf) => {
                if let Ok((n, src)) = r
                    && src == addr
                    && let Err(e) = k.handle_datagram(now(), &buf[..n])
                {
                    tracing::debug!(error = %e, "SIP keep-alive: datagram ignored");
                }
            }
            _ = tokio::time::sleep(wait) => {
                if let Err(e) = k.handle_timeout(now()) {
                    tracing::error!(error = %e, "SIP keep-alive stopped");
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keepalive() -> Keepalive {
        Keepalive::new(
            TrunkConfig {
                host: "trunk.example".into(),
                port: 5060,
                username: None,
                password: None,
                from_domain: Some("dialgate.test".into()),
                transport: Default::default(),
                outbound_proxy: None,
            },
            "127.0.0.1:5070".parse().unwrap(),
            2000,
            0,
        )
    }

    fn sent(k: &mut Keepalive) -> Vec<String> {
        let mut out = Vec::new();
        while let Some(e) = k.poll_event() {
            out.push(match e {
                KeepaliveEvent::Send(b) => String::from_utf8(b).unwrap(),
                other => format!("{other:?}"),
            });
        }
        out
    }

    fn answer(options: &str, status: &str) -> Vec<u8> {
        let header = |name: &str| {
            options
                .lines()
                .find(|l| l.starts_with(name))
                .unwrap()
                .to_string()
        };
        format!(
            "SIP/2.0 {status}\r\n{}\r\n{}\r\n{};tag=t\r\n{}\r\n{}\r\nContent-Length: 0\r\n\r\n",
            header("Via:"),
            header("From:"),
            header("To:"),
            header("Call-ID:"),
            header("CSeq:")
        )
        .into_bytes()
    }

    /// Runs timers until `until`, returning what was sent or learnt.
    fn run_until(k: &mut Keepalive, until: u64) -> Vec<String> {
        let mut out = Vec::new();
        loop {
            let t = k.poll_timeout();
            if t > until {
                return out;
            }
            k.handle_timeout(t).unwrap();
            out.extend(sent(k));
        }
    }

    #[test]
    fn any_answer_means_up_and_the_next_ping_follows_the_interval() {
        let mut k = keepalive();
        k.handle_timeout(0).unwrap();
        let s = sent(&mut k);
        assert_eq!(s.len(), 1);
        assert!(
            s[0].starts_with("OPTIONS sip:trunk.example:5060 SIP/2.0"),
            "{}",
            s[0]
        );
        // a trunk that refuses OPTIONS is still there
        k.handle_datagram(40, &answer(&s[0], "405 Method Not Allowed"))
            .unwrap();
        assert_eq!(sent(&mut k), ["Up { rtt_ms: 40, status: 405 }".to_string()]);
        assert_eq!(k.is_up(), Some(true));
        assert_eq!(k.poll_timeout(), 2000);
        // the next answer changes nothing: no event
        k.handle_timeout(2000).unwrap();
        let s = sent(&mut k);
        k.handle_datagram(2010, &answer(&s[0], "200 OK")).unwrap();
        assert!(sent(&mut k).is_empty());
    }

    #[test]
    fn three_unanswered_pings_mean_down_and_an_answer_brings_it_back() {
        let mut k = keepalive();
        let out = run_until(&mut k, 5999);
        // each ping retransmitted on T1 doubling within its 2 s
        let options = out.iter().filter(|s| s.starts_with("OPTIONS")).count();
        assert_eq!(options, 3 * 3, "{out:?}");
        assert!(out.iter().all(|s| s.starts_with("OPTIONS")), "not down yet");
        let out = run_until(&mut k, 6000);
        assert!(out.iter().any(|s| s == "Down"), "{out:?}");
        assert_eq!(k.is_up(), Some(false));
        // still pinging while down; the first answer brings it back
        k.handle_timeout(k.poll_timeout()).unwrap();
        let s = sent(&mut k);
        let t = k.poll_timeout();
        k.handle_datagram(t - 100, &answer(&s[0], "200 OK"))
            .unwrap();
        assert!(sent(&mut k)[0].starts_with("Up"));
        assert_eq!(k.is_up(), Some(true));
    }

    #[test]
    fn stray_and_bad_datagrams_change_nothing() {
        let mut k = keepalive();
        k.handle_timeout(0).unwrap();
        let s = sent(&mut k);
        assert!(k.handle_datagram(1, b"garbage").is_err());
        assert!(k.handle_datagram(1, s[0].as_bytes()).is_err(), "a request");
        let other = String::from_utf8(answer(&s[0], "200 OK"))
            .unwrap()
            .replace("Call-ID: ", "Call-ID: x");
        k.handle_datagram(1, other.as_bytes()).unwrap();
        k.handle_datagram(1, &answer(&s[0], "100 Trying")).unwrap();
        assert_eq!(k.is_up(), None);
        assert!(sent(&mut k).is_empty());
    }
}
