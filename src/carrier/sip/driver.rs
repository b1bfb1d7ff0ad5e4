//! The thin driver of one outbound SIP call: a UDP socket, a monotonic
//! clock, and the [`Uac`] in between. No call logic lives here.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::time::Instant;

use super::uac::{Dial, Outcome, SipError, TrunkConfig, Uac, UacEvent};

/// What happened to a call.
#[derive(Debug, Clone, PartialEq)]
pub struct CallReport {
    /// How it ended.
    pub outcome: Outcome,
    /// Provisional statuses seen (180, 183…).
    pub progress: Vec<u16>,
    /// The SDP answer, if answered.
    pub answer: Option<Vec<u8>>,
    /// Malformed datagrams ignored.
    pub malformed: usize,
}

/// Errors of the driver.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DriverError {
    /// The socket failed.
    #[error("SIP socket: {0}")]
    Io(#[from] std::io::Error),
    /// The call could not be built.
    #[error(transparent)]
    Sip(#[from] SipError),
}

/// Places one call to `to` through the trunk at `trunk`; once answered,
/// hangs up (BYE) after `hold`. The trunk ends it first if it sends BYE.
pub async fn call(
    cfg: TrunkConfig,
    trunk: SocketAddr,
    to: &str,
    from: &str,
    ring_timeout: Duration,
    hold: Duration,
) -> Result<CallReport, DriverError> {
    let socket = UdpSocket::bind(SocketAddr::new(local_ip_for(trunk).await?, 0)).await?;
    let local = socket.local_addr()?;
    let epoch = Instant::now();
    let now = || epoch.elapsed().as_millis() as u64;
    let mut uac = Uac::new(
        cfg,
        Dial {
            to: to.to_string(),
            from: from.to_string(),
            local,
            rtp_port: local.port().wrapping_add(2).max(1024),
            ring_timeout_ms: ring_timeout.as_millis() as u64,
        },
        now(),
    )?;
    let span = tracing::info_span!("sip_call", call_id = uac.call_id());
    let _g = span.enter();
    let mut report = CallReport {
        outcome: Outcome::Completed,
        progress: Vec::new(),
        answer: None,
        malformed: 0,
    };
    let mut hangup_at: Option<u64> = None;
    let mut buf = vec![0u8; 65_535];
    loop {
        while let Some(ev) = uac.poll_event() {
            match ev {
                UacEvent::Send(bytes) => {
                    socket.send_to(&bytes, trunk).await?;
                }
                UacEvent::Progress { status, .. } => report.progress.push(status),
                UacEvent::Answered { sdp } => {
                    report.answer = Some(sdp);
                    hangup_at = Some(now() + hold.as_millis() as u64);
                }
                UacEvent::Ended(o) => {
                    tracing::info!(outcome = o.as_status(), "SIP call ended");
                    report.outcome = o;
                }
            }
        }
        if uac.is_done() {
            return Ok(report);
        }
        let wake = [uac.poll_timeout(), hangup_at].into_iter().flatten().min();
        let sleep = wake.map_or(Duration::from_secs(3600), |t| {
            Duration::from_millis(t.saturating_sub(now()))
        });
        tokio::select! {
            r = socket.recv_from(&mut buf) => {
                let (n, src) = r?;
                if src.ip() != trunk.ip() {
                    tracing::warn!(%src, "SIP datagram from an unexpected source ignored");
                    continue;
                }
                if let Err(e) = uac.handle_datagram(now(), &buf[..n]) {
                    report.malformed += 1;
                    tracing::warn!(error = %e, "SIP datagram ignored");
                }
            }
            _ = tokio::time::sleep(sleep) => {
                let t = now();
                if hangup_at.is_some_and(|h| t >= h) {
                    hangup_at = None;
                    uac.hangup(t)?;
                }
                uac.handle_timeout(t)?;
            }
        }
    }
}

/// Our address toward `trunk` (what Via, Contact and SDP must carry): the
/// source address the kernel's route picks, learnt by connecting a UDP
/// socket (which sends nothing).
pub(crate) async fn local_ip_for(trunk: SocketAddr) -> std::io::Result<std::net::IpAddr> {
    let any: SocketAddr = if trunk.is_ipv4() {
        "0.0.0.0:0".parse().expect("literal")
    } else {
        "[::]:0".parse().expect("literal")
    };
    let probe = UdpSocket::bind(any).await?;
    probe.connect(trunk).await?;
    Ok(probe.local_addr()?.ip())
}
