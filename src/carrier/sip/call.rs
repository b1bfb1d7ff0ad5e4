//! One SIP call with its media, driven like a Twilio stream: the [`Uac`]
//! places an outbound call, the [`Uas`] takes an inbound one (from
//! [`super::inbound`]); once answered, RTP from the callee is re-ordered,
//! decoded (PCMU, PCMA or Opus) and fed to the same [`CallSession`] as
//! Twilio's frames (AMD, the agent bridge, the voicemail rules, the
//! lifecycle). Audio that never came, a lost packet or a pause the callee's
//! phone sends nothing in, is filled ([`Playout`] says where and how much,
//! concealment fading to silence), so the session's media time is the
//! sender's. The session's paced 20 ms frames go back as RTP, and
//! the session's paced 20 ms frames go back as RTP. RFC 4733 digits reach
//! the agent. This task owns two UDP sockets and a clock, nothing more.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::time::Instant;

use super::framing::Framer;
use super::rtcp::{RemoteView, Rtcp, ntp_from_unix_micros};
use super::rtp::{
    self, Arrival, DtmfReceiver, DtmfSender, JitterBuffer, JitterEstimator, Latch, Playout,
    RtpHeader, TelephoneEvent, TxTimeline,
};
pub use super::sdp::{Codec, Negotiated, negotiate};
use super::uac::{Dial, Outcome, SipError, SipEvent, Transport, TrunkConfig, Uac};
use super::uas::Uas;
use crate::agent::bridge::AgentAudio;
use crate::agent::side::AgentSide;
use crate::audio::opus::{self, OpusDecoder, OpusEncoder};
use crate::audio::plc::{CONCEALED_SAMPLES, Concealer};
use crate::audio::resample::Resampler;
use crate::audio::{AudioFrame, FRAME_MS, FRAME_SAMPLES, g711};
use crate::call::session::{CallSession, CarrierOut, Lifecycle, Output, SessionConfig};
use crate::detect::amd::AmdDecision;
use crate::detect::llm::LlmVerifier;
use crate::detect::tones::{ToneBank, ToneConfig, ToneEvent};
use crate::engine::Engine;

/// Everything one call needs.
#[derive(Clone)]
pub struct SipCallConfig {
    /// The trunk.
    pub trunk: TrunkConfig,
    /// Its address.
    pub trunk_addr: SocketAddr,
    /// Ring time-out.
    pub ring_timeout: Duration,
    /// The call's settings (AMD, gate, voicemail rules, max duration).
    pub session: SessionConfig,
    /// The agent.
    pub agent_url: String,
    /// Its audio format.
    pub agent_audio: AgentAudio,
    /// How long the agent may take to accept.
    pub agent_connect_timeout: Duration,
    /// The LLM verifier, if any.
    pub llm: Option<Arc<LlmVerifier>>,
    /// The engine to report to, with the attempt's id.
    pub engine: Option<(Arc<Engine>, String)>,
}

/// How the call went.
#[derive(Debug, Clone, PartialEq)]
pub struct SipCallReport {
    /// The SIP outcome.
    pub outcome: Outcome,
    /// Provisional statuses seen.
    pub progress: Vec<u16>,
    /// The negotiated media, if answered.
    pub media: Option<Negotiated>,
    /// RTP voice frames received and handed to the session.
    pub frames_in: u64,
    /// RTP frames sent.
    pub frames_out: u64,
    /// RFC 4733 packets sent (the agent's digits).
    pub events_out: u64,
    /// Frames of silence sent in the agent's pauses.
    pub silence_out: u64,
    /// RTCP reports sent.
    pub rtcp_sent: u64,
    /// What the far end's RTCP said about our stream.
    pub rtcp: RemoteView,
    /// Frames the jitter buffer gave up on.
    pub frames_lost: u64,
    /// 20 ms frames of the callee's audio that never came (lost, or not
    /// sent in a pause) and were filled, so the media clock kept the
    /// sender's time: concealment, fading to silence.
    pub frames_concealed: u64,
    /// Packets that came after their time had been filled (dropped).
    pub frames_late: u64,
    /// Datagrams ignored (malformed, or from a stranger).
    pub ignored: u64,
    /// RFC 3550 interarrival jitter of the callee's RTP at the end, ms.
    pub jitter_ms: f64,
    /// The latest AMD outcome, if decided (`machine_end_*` once the end of
    /// a greeting is found after `machine_start`).
    pub answered_by: Option<String>,
    /// The first AMD decision: what answered, at what media time, on what
    /// evidence.
    pub amd_first: Option<AmdDecision>,
    /// The session's end type, if it ran.
    pub end_type: Option<String>,
}

/// Errors that stop a call outright.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CallError {
    /// A socket failed.
    #[error("SIP call socket: {0}")]
    Io(#[from] std::io::Error),
    /// The call could not be built.
    #[error(transparent)]
    Sip(#[from] SipError),
    /// The session could not start (models).
    #[error("cannot start the call session: {0}")]
    Session(String),
}

/// The Opus side of a call: what we hear is decoded at 48 kHz and
/// resampled to the 8 kHz frames the session runs on; what we send is
/// resampled up and encoded. Every buffer is sized here, once per call.
struct OpusLeg {
    dec: OpusDecoder,
    down: Resampler,
    enc: OpusEncoder,
    up: Resampler,
    /// one packet decoded (up to 120 ms at 48 kHz), after what the last
    /// one left short of a whole 20 ms frame
    pcm48: Vec<i16>,
    /// samples at the start of `pcm48` carried from the last packet (a
    /// 10 ms packet leaves half a frame)
    carried: usize,
    /// frames concealed in the current hole
    hole: u32,
    /// its 20 ms frames at 8 kHz
    frames: Vec<[i16; FRAME_SAMPLES]>,
    n_frames: usize,
    pcm8: [i16; FRAME_SAMPLES],
    up48: Vec<i16>,
}

impl OpusLeg {
    fn new() -> Result<Self, String> {
        let e = |e: &dyn std::fmt::Display| format!("Opus: {e}");
        Ok(Self {
            dec: OpusDecoder::new().map_err(|x| e(&x))?,
            down: Resampler::new(opus::OPUS_RATE, 8000).map_err(|x| e(&x))?,
            // 32 kbit/s: wideband speech, the agent's voice is 8 kHz anyway
            enc: OpusEncoder::new(32_000).map_err(|x| e(&x))?,
            up: Resampler::new(8000, opus::OPUS_RATE).map_err(|x| e(&x))?,
            pcm48: vec![0; opus::OPUS_FRAME * 7],
            carried: 0,
            hole: 0,
            frames: vec![[0; FRAME_SAMPLES]; 6],
            n_frames: 0,
            pcm8: [0; FRAME_SAMPLES],
            up48: vec![0; opus::OPUS_FRAME],
        })
    }

    /// Decodes one packet into 20 ms frames at 8 kHz (`frames[..n]`);
    /// also the 48 kHz samples it carried. Packets of 10 ms (or 2.5, 5)
    /// are gathered into whole frames.
    fn decode(&mut self, payload: &[u8]) -> Result<(usize, u32), String> {
        self.hole = 0;
        let at = self.carried;
        let n = self
            .dec
            .decode(payload, &mut self.pcm48[at..at + opus::OPUS_FRAME * 6])
            .map_err(|e| e.to_string())?;
        self.cut(n)?;
        Ok((self.n_frames, n as u32))
    }

    /// One 20 ms frame at 8 kHz for a packet that never came
    /// (`frames[0]`): the decoder's own concealment for the first 60 ms of
    /// a hole (true), then silence (false), as G.711's [`Concealer`].
    fn conceal(&mut self) -> Result<bool, String> {
        let at = self.carried;
        let frame = &mut self.pcm48[at..at + opus::OPUS_FRAME];
        self.dec.decode(&[], frame).map_err(|e| e.to_string())?;
        self.cut(opus::OPUS_FRAME)?;
        self.hole += 1;
        let fading = self.hole as usize * FRAME_SAMPLES <= CONCEALED_SAMPLES;
        if !fading {
            self.frames[0] = [0; FRAME_SAMPLES];
        }
        Ok(fading)
    }

    /// Cuts the carried samples and `n` new ones into 20 ms frames at
    /// 8 kHz (`frames[..n_frames]`), carrying the rest.
    fn cut(&mut self, n: usize) -> Result<(), String> {
        let total = self.carried + n;
        let whole = total - total % opus::OPUS_FRAME;
        self.n_frames = 0;
        for chunk in self.pcm48[..whole].chunks_exact(opus::OPUS_FRAME) {
            let out = &mut self.frames[self.n_frames];
            self.down.process(chunk, out).map_err(|e| e.to_string())?;
            self.n_frames += 1;
        }
        self.pcm48.copy_within(whole..total, 0);
        self.carried = total - whole;
        Ok(())
    }

    /// Encodes one 20 ms μ-law frame into `out`; the packet's length.
    fn encode(&mut self, ulaw: &[u8], out: &mut [u8]) -> Result<usize, String> {
        g711::ulaw_decode_into(ulaw, &mut self.pcm8);
        self.up
            .process(&self.pcm8, &mut self.up48)
            .map_err(|e| e.to_string())?;
        self.enc.encode(&self.up48, out).map_err(|e| e.to_string())
    }
}

impl Media {
    /// The media of a call whose far end's SDP said `neg`, set up at `now`.
    fn new(neg: Negotiated, peer: SocketAddr, epoch: Instant, now: u64) -> Result<Self, String> {
        let ssrc = epoch.elapsed().as_nanos() as u32 ^ 0x5EED_CA11;
        let opus = match neg.codec {
            Codec::Opus { .. } => Some(Box::new(OpusLeg::new()?)),
            _ => None,
        };
        Ok(Self {
            neg,
            latch: Latch::new(neg.addr, peer.ip()),
            jitter: JitterBuffer::default(),
            opus,
            pending: [0; 4 * FRAME_SAMPLES],
            pending_len: 0,
            playout: Playout::new(8000 * neg.codec.clock_factor(), now),
            plc: Concealer::default(),
            dtmf: DtmfReceiver::default(),
            arrival: JitterEstimator::with_clock(8000 * neg.codec.clock_factor()),
            pt: neg.codec.payload_type(),
            seq: (epoch.elapsed().as_nanos() as u16) | 1,
            ssrc,
            // RFC 3550 §5.1 asks for a random start; the nanoseconds of
            // the set-up time are as good
            ts0: epoch.elapsed().as_nanos() as u32 ^ 0x0BAD_F00D,
            timeline: TxTimeline::new(now),
            resume: false,
            media_ms: 0,
            sending: true,
            dtmf_out: DtmfSender::with_clock(neg.dtmf_clock),
            rtcp: Rtcp::new(ssrc, &format!("dialgate-{ssrc:08x}@{}", peer.ip()), now),
            rtcp_latch: Latch::new(
                SocketAddr::new(neg.addr.ip(), neg.addr.port().wrapping_add(1)),
                peer.ip(),
            ),
            event_ts: 0,
            early_tones: None,
        })
    }

    /// Decodes one payload of the callee's into 20 ms frames
    /// (`frames[..n]`); also the clock ticks it played.
    fn decode(&mut self, payload: &[u8], frames: &mut [Pcm; 6]) -> Result<(usize, u32), String> {
        if let Some(leg) = self.opus.as_mut() {
            let (n, ticks) = leg.decode(payload)?;
            frames[..n].copy_from_slice(&leg.frames[..n]);
            return Ok((n, ticks));
        }
        // G.711 re-framing: at most 60 ms comes in, under 20 ms waits
        let dst = &mut self.pending[self.pending_len..self.pending_len + payload.len()];
        match self.neg.codec {
            Codec::Pcma => g711::alaw_decode_into(payload, dst),
            _ => g711::ulaw_decode_into(payload, dst),
        };
        self.plc.heard(dst);
        self.pending_len += payload.len();
        let mut n = 0;
        while let Some(f) = self.take_frame() {
            frames[n] = f;
            n += 1;
        }
        Ok((n, payload.len() as u32))
    }

    /// Conceals up to 20 ms of the `left` clock ticks still missing; the
    /// frame once one is whole, and what it holds: concealment for the
    /// first 60 ms of a hole, then silence.
    fn conceal(&mut self, left: &mut u32) -> Result<Option<(Pcm, Heard)>, String> {
        let kind = |fading| {
            if fading {
                Heard::Concealed
            } else {
                Heard::Silence
            }
        };
        if let Some(leg) = self.opus.as_mut() {
            // whole frames: a hole of under half a frame is not worth one
            let whole = *left >= opus::OPUS_FRAME as u32 / 2;
            *left = left.saturating_sub(opus::OPUS_FRAME as u32);
            if !whole {
                return Ok(None);
            }
            let fading = leg.conceal()?;
            return Ok(Some((leg.frames[0], kind(fading))));
        }
        let k = (*left as usize).min(FRAME_SAMPLES);
        let fading = self
            .plc
            .conceal(&mut self.pending[self.pending_len..self.pending_len + k]);
        self.pending_len += k;
        *left -= k as u32;
        Ok(self.take_frame().map(|f| (f, kind(fading))))
    }

    /// The oldest whole 20 ms of G.711 audio waiting, if any.
    fn take_frame(&mut self) -> Option<Pcm> {
        if self.pending_len < FRAME_SAMPLES {
            return None;
        }
        let mut f = [0; FRAME_SAMPLES];
        f.copy_from_slice(&self.pending[..FRAME_SAMPLES]);
        self.pending.copy_within(FRAME_SAMPLES..self.pending_len, 0);
        self.pending_len -= FRAME_SAMPLES;
        Some(f)
    }
}

/// 20 ms of 8 kHz audio.
type Pcm = [i16; FRAME_SAMPLES];

struct Media {
    neg: Negotiated,
    latch: Latch,
    /// up to 60 ms of G.711 per packet (ptime 10 to 60), or one Opus packet
    jitter: JitterBuffer<{ opus::MAX_PACKET }>,
    /// the Opus codec, when the call uses it
    opus: Option<Box<OpusLeg>>,
    /// decoded G.711 audio waiting to make whole 20 ms frames
    pending: [i16; 4 * FRAME_SAMPLES],
    pending_len: usize,
    /// the callee's media clock: what is missing, and when a quiet
    /// sender's time runs on
    playout: Playout,
    /// fills G.711's holes (Opus conceals its own)
    plc: Concealer,
    dtmf: DtmfReceiver,
    arrival: JitterEstimator,
    /// payload type, next sequence number and SSRC of what we send (the
    /// timestamp comes from `timeline`)
    pt: u8,
    seq: u16,
    ssrc: u32,
    /// our RTP timestamp at the answer (random, RFC 3550 §5.1)
    ts0: u32,
    timeline: TxTimeline,
    /// the next voice packet starts a talkspurt (after a hold)
    resume: bool,
    media_ms: u64,
    /// false while the far end holds the call (we answered recvonly or
    /// inactive): frames are not sent, but time runs on
    sending: bool,
    /// the agent's digits, as RFC 4733 events
    dtmf_out: DtmfSender,
    rtcp: Rtcp,
    /// where RTCP goes: the RTP address's next port, then its real source
    rtcp_latch: Latch,
    /// RTP timestamp of the event being sent
    event_ts: u32,
    /// before the answer (early media of a 183): the tone bank listens for
    /// special information tones, and nothing else hears it
    early_tones: Option<Box<ToneBank>>,
}

/// The signalling of one call: outbound or inbound, the same events.
#[derive(Debug)]
pub(crate) enum Dialog {
    Out(Uac),
    In(Uas),
}

impl Dialog {
    fn poll_event(&mut self) -> Option<SipEvent> {
        match self {
            Self::Out(d) => d.poll_event(),
            Self::In(d) => d.poll_event(),
        }
    }
    fn poll_timeout(&self) -> Option<u64> {
        match self {
            Self::Out(d) => d.poll_timeout(),
            Self::In(d) => d.poll_timeout(),
        }
    }
    fn handle_timeout(&mut self, now: u64) -> Result<(), SipError> {
        match self {
            Self::Out(d) => d.handle_timeout(now),
            Self::In(d) => d.handle_timeout(now),
        }
    }
    fn handle_datagram(&mut self, now: u64, data: &[u8]) -> Result<(), SipError> {
        match self {
            Self::Out(d) => d.handle_datagram(now, data),
            Self::In(d) => d.handle_datagram(now, data),
        }
    }
    fn hangup(&mut self, now: u64) -> Result<(), SipError> {
        match self {
            Self::Out(d) => d.hangup(now),
            Self::In(d) => d.hangup(now),
        }
    }
    fn is_done(&self) -> bool {
        match self {
            Self::Out(d) => d.is_done(),
            Self::In(d) => d.is_done(),
        }
    }
    fn call_id(&self) -> &str {
        match self {
            Self::Out(d) => d.call_id(),
            Self::In(d) => d.call_id(),
        }
    }
}

/// Where a call's SIP datagrams come from: an outbound call's own socket,
/// or, for an inbound call, the listener's socket with this call's
/// datagrams handed over a channel (the listener demultiplexes by Call-ID).
pub(crate) enum SipLink {
    Own(UdpSocket),
    Shared {
        sock: Arc<UdpSocket>,
        rx: tokio::sync::mpsc::Receiver<Vec<u8>>,
    },
    /// An outbound call's own TCP connection to the trunk.
    Tcp {
        stream: tokio::net::TcpStream,
        framer: Framer,
    },
}

impl SipLink {
    async fn send_to(&mut self, bytes: &[u8], peer: SocketAddr) -> std::io::Result<()> {
        use tokio::io::AsyncWriteExt;
        match self {
            Self::Own(s) => s.send_to(bytes, peer).await.map(drop),
            Self::Shared { sock, .. } => sock.send_to(bytes, peer).await.map(drop),
            Self::Tcp { stream, .. } => stream.write_all(bytes).await,
        }
    }

    /// The next datagram of this call, copied into `buf`, with its source.
    async fn recv(&mut self, buf: &mut [u8]) -> std::io::Result<(usize, Option<SocketAddr>)> {
        match self {
            Self::Own(s) => s.recv_from(buf).await.map(|(n, src)| (n, Some(src))),
            Self::Shared { rx, .. } => match rx.recv().await {
                Some(d) => {
                    let n = d.len().min(buf.len());
                    buf[..n].copy_from_slice(&d[..n]);
                    Ok((n, None))
                }
                None => Err(std::io::Error::other("the SIP listener closed")),
            },
            Self::Tcp { stream, framer } => {
                use tokio::io::AsyncReadExt;
                loop {
                    let next = framer
                        .next_message()
                        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
                    if let Some(m) = next {
                        let n = m.len().min(buf.len());
                        buf[..n].copy_from_slice(&m[..n]);
                        return Ok((n, None));
                    }
                    let n = stream.read(buf).await?;
                    if n == 0 {
                        return Err(std::io::Error::new(
                            std::io::ErrorKind::UnexpectedEof,
                            "the trunk closed the SIP connection",
                        ));
                    }
                    framer.push(&buf[..n]);
                }
            }
        }
    }
}

/// Places the call to `to` from `from` and runs it to its end.
pub async fn run(cfg: SipCallConfig, to: &str, from: &str) -> Result<SipCallReport, CallError> {
    let ip = local_ip_for(cfg.trunk_addr).await?;
    let (sip, local) = match cfg.trunk.transport {
        Transport::Udp => {
            let s = UdpSocket::bind(SocketAddr::new(ip, 0)).await?;
            let local = s.local_addr()?;
            (SipLink::Own(s), local)
        }
        Transport::Tcp => {
            let stream = tokio::time::timeout(
                Duration::from_secs(5),
                tokio::net::TcpStream::connect(cfg.trunk_addr),
            )
            .await
            .map_err(|_| {
                std::io::Error::new(std::io::ErrorKind::TimedOut, "connecting to the trunk")
            })??;
            let _ = stream.set_nodelay(true);
            let local = stream.local_addr()?;
            (
                SipLink::Tcp {
                    stream,
                    framer: Framer::default(),
                },
                local,
            )
        }
    };
    let media_socks = RtpPair::bind(ip).await?;
    let epoch = Instant::now();
    let uac = Uac::new(
        cfg.trunk.clone(),
        Dial {
            to: to.to_string(),
            from: from.to_string(),
            local,
            rtp_port: media_socks.rtp.local_addr()?.port(),
            ring_timeout_ms: cfg.ring_timeout.as_millis() as u64,
        },
        0,
    )?;
    let side = AgentSide::new(
        cfg.agent_url.clone(),
        cfg.agent_audio,
        cfg.agent_connect_timeout,
        cfg.llm.clone(),
        cfg.engine.as_ref().map(|(e, _)| e.clone()),
    );
    drive(
        Dialog::Out(uac),
        sip,
        cfg.trunk_addr,
        media_socks,
        epoch,
        cfg.session,
        side,
        cfg.engine,
    )
    .await
}

/// Runs one call, either direction, to its end: `dialog` was created at
/// time 0 of `epoch`; `peer` is where its SIP goes (and where its RTP may
/// come from); `socks` are the RTP port our SDP names and its RTCP port.
#[allow(clippy::too_many_arguments)] // the call's parts, each used once
pub(crate) async fn drive(
    mut uac: Dialog,
    mut sip: SipLink,
    peer: SocketAddr,
    socks: RtpPair,
    epoch: Instant,
    session_cfg: SessionConfig,
    mut side: AgentSide,
    engine: Option<(Arc<Engine>, String)>,
) -> Result<SipCallReport, CallError> {
    let now = move || epoch.elapsed().as_millis() as u64;
    let RtpPair {
        rtp: rtp_sock,
        rtcp: rtcp_sock,
    } = socks;
    let mut rtcp_buf = [0u8; 1500];
    let span = tracing::info_span!("call", sip_call_id = uac.call_id());
    let _g = span.enter();
    side.call_sid = uac.call_id().to_string();
    side.call_queue_id = engine.as_ref().map(|(_, id)| id.clone());
    let mut report = SipCallReport {
        outcome: Outcome::Completed,
        progress: Vec::new(),
        media: None,
        frames_in: 0,
        frames_out: 0,
        events_out: 0,
        silence_out: 0,
        rtcp_sent: 0,
        rtcp: RemoteView::default(),
        frames_lost: 0,
        frames_concealed: 0,
        frames_late: 0,
        ignored: 0,
        jitter_ms: 0.0,
        answered_by: None,
        amd_first: None,
        end_type: None,
    };
    let mut session: Option<CallSession> = None;
    let mut media: Option<Media> = None;
    let mut sip_buf = vec![0u8; 65_535];
    let mut rtp_in = [0u8; 2048];
    let mut rtp_out = [0u8; 12 + opus::MAX_PACKET];
    let mut hung_up = false;
    // set once we hang up for a reason of our own (an unusable answer, SIT)
    let mut outcome_fixed = false;
    loop {
        // SIP first: an answer creates the session.
        while let Some(ev) = uac.poll_event() {
            match ev {
                SipEvent::Send(bytes) => {
                    sip.send_to(&bytes, peer).await?;
                }
                SipEvent::Progress { status, sdp } => {
                    report.progress.push(status);
                    if let Some((engine, id)) = &engine {
                        engine.report(id, crate::engine::CallFact::Ringing);
                    }
                    // Early media (a 183 with SDP: ringback, or the carrier's
                    // announcement): only the tone bank listens, for SIT.
                    if media.is_none()
                        && let Some(Ok(neg)) = sdp.as_deref().map(negotiate)
                        && let Ok(mut m) = Media::new(neg, peer, epoch, now())
                    {
                        tracing::debug!(codec = ?neg.codec, "early media");
                        m.early_tones = Some(Box::new(ToneBank::new(ToneConfig::default())));
                        media = Some(m);
                    }
                }
                SipEvent::Answered { sdp } => match negotiate(&sdp) {
                    Ok(neg) => {
                        tracing::info!(codec = ?neg.codec, rtp = %neg.addr, "answered");
                        report.media = Some(neg);
                        media = match Media::new(neg, peer, epoch, now()) {
                            Ok(m) => Some(m),
                            Err(reason) => {
                                tracing::error!(%reason, "cannot run the codec: hanging up");
                                report.outcome = Outcome::Failed {
                                    status: 488,
                                    reason,
                                };
                                hung_up = true;
                                outcome_fixed = true;
                                uac.hangup(now())?;
                                continue;
                            }
                        };
                        // RTP is played as it arrives: frames sent ahead
                        // of time would only be jitter to the callee.
                        let session_cfg = SessionConfig {
                            lead_ms: 0,
                            ..session_cfg.clone()
                        };
                        let mut s = CallSession::new(session_cfg)
                            .map_err(|e| CallError::Session(e.to_string()))?;
                        s.handle_carrier_start(now());
                        session = Some(s);
                    }
                    Err(reason) => {
                        tracing::warn!(%reason, "unusable SDP answer: hanging up");
                        report.outcome = Outcome::Failed {
                            status: 488,
                            reason: reason.clone(),
                        };
                        hung_up = true;
                        outcome_fixed = true;
                        uac.hangup(now())?;
                    }
                },
                SipEvent::Reoffered { sdp, sending } => {
                    if let Some(m) = media.as_mut() {
                        tracing::info!(sending, "re-INVITE");
                        if !m.sending && sending {
                            // talkspurt after the hold: marker bit
                            m.resume = true;
                        }
                        m.sending = sending;
                        // the far end may move its media
                        if let Ok(neg) = negotiate(&sdp)
                            && neg.addr != m.neg.addr
                        {
                            m.neg.addr = neg.addr;
                            m.latch = Latch::new(neg.addr, peer.ip());
                        }
                    }
                }
                SipEvent::Ended(o) => {
                    tracing::info!(outcome = o.as_status(), "SIP call ended");
                    // after an unusable answer, or SIT heard on early media,
                    // the failure we found stands
                    if !outcome_fixed {
                        report.outcome = o;
                    }
                    if let Some(s) = session.as_mut() {
                        s.handle_carrier_stop(now());
                    }
                }
            }
        }
        // Then the session's outputs.
        if let Some(s) = session.as_mut() {
            while let Some(out) = s.poll_output() {
                let t = now();
                let media_ms = media.as_ref().map_or(0, |m| m.media_ms);
                // the latest decision: `machine_end_*` follows `machine_start`
                if let Output::Lifecycle(Lifecycle::AmdDecided(d)) = &out {
                    report.answered_by = Some(d.outcome.as_str().to_string());
                    report.amd_first.get_or_insert(*d);
                }
                let Some(c) = side.perform(s, out, media_ms, t).await else {
                    continue;
                };
                match c {
                    CarrierOut::Media(frame) => {
                        if let Some(m) = media.as_mut() {
                            if m.dtmf_out.is_sending() {
                                // the digit's packets stand in for this frame
                                continue;
                            }
                            if send_voice(&rtp_sock, m, &mut rtp_out, t, &frame).await? {
                                report.frames_out += 1;
                            }
                        }
                    }
                    // RTP has no play-out report: a mark is played once the
                    // audio before it is sent.
                    CarrierOut::Mark(name) => s.handle_carrier_mark(t, &name),
                    // Nothing is buffered far away: the session already
                    // dropped what it held.
                    CarrierOut::Clear => {}
                    CarrierOut::Dtmf(digit) => {
                        if let Some(m) = media.as_mut() {
                            if m.neg.dtmf_pt.is_none() {
                                tracing::warn!(%digit, "the far end takes no telephone-event: digit not sent");
                            } else if !m.dtmf_out.push(digit, t) {
                                tracing::warn!(%digit, "not a DTMF digit");
                            }
                        }
                    }
                    CarrierOut::Hangup => {
                        if !hung_up {
                            hung_up = true;
                            uac.hangup(t)?;
                        }
                    }
                }
            }
            // the agent's digits, due every 20 ms while one is sent, and
            // silence whenever a slot passes with nothing else to send
            if let Some(m) = media.as_mut() {
                let t = now();
                while let Some(p) = m.dtmf_out.poll_packet(t) {
                    let (offset, _) = m.timeline.take(t);
                    if p.first {
                        m.event_ts = m.ts0.wrapping_add(offset * m.neg.codec.clock_factor());
                    }
                    let pt = m.neg.dtmf_pt.unwrap_or(101);
                    let ts = m.event_ts;
                    if send_rtp(&rtp_sock, m, &mut rtp_out, pt, p.first, ts, &p.payload).await? {
                        report.events_out += 1;
                    }
                }
                if t >= m.rtcp.poll_timeout() {
                    let n = m.rtcp.report(t, ntp_now(), &mut rtcp_buf);
                    // RTCP is best effort: a far end without an RTCP port
                    // answers with ICMP, which must not end the call
                    if m.sending
                        && n <= rtcp_buf.len()
                        && rtcp_sock
                            .send_to(&rtcp_buf[..n], m.rtcp_latch.target())
                            .await
                            .is_ok()
                    {
                        report.rtcp_sent += 1;
                    }
                }
                if !m.dtmf_out.is_sending() && t >= m.timeline.fill_due() {
                    // μ-law silence, turned into the call's codec on its way
                    let silence = [0xFF; FRAME_SAMPLES];
                    if send_voice(&rtp_sock, m, &mut rtp_out, t, &silence).await? {
                        report.silence_out += 1;
                    }
                }
            }
            if s.is_ended() && !hung_up {
                hung_up = true;
                uac.hangup(now())?;
            }
        }
        if uac.is_done() && uac.poll_event().is_none() {
            break;
        }
        let wake = [
            uac.poll_timeout(),
            session.as_ref().and_then(CallSession::poll_timeout),
            media.as_ref().and_then(|m| m.dtmf_out.poll_timeout()),
            media.as_ref().map(|m| m.timeline.fill_due()),
            media.as_ref().map(|m| m.rtcp.poll_timeout()),
            media
                .as_ref()
                .filter(|m| m.early_tones.is_none())
                .map(|m| m.playout.idle_due()),
        ]
        .into_iter()
        .flatten()
        .min();
        let sleep = wake.map_or(Duration::from_secs(3600), |t| {
            Duration::from_millis(t.saturating_sub(now()))
        });
        tokio::select! {
            r = sip.recv(&mut sip_buf) => {
                let (n, src) = r?;
                if src.is_some_and(|src| src.ip() != peer.ip()) {
                    report.ignored += 1;
                    continue;
                }
                if let Err(e) = uac.handle_datagram(now(), &sip_buf[..n]) {
                    report.ignored += 1;
                    tracing::warn!(error = %e, "SIP datagram ignored");
                }
            }
            r = rtp_sock.recv_from(&mut rtp_in), if media.is_some() => {
                // a reported ICMP error of an earlier send is not the call's end
                let Ok((n, src)) = r else {
                    report.ignored += 1;
                    continue;
                };
                let Some(m) = media.as_mut() else { continue };
                if !m.latch.on_packet(src) {
                    report.ignored += 1;
                    continue;
                }
                m.rtcp_latch.follow(&m.latch);
                let Ok((h, payload)) = rtp::parse(&rtp_in[..n]) else {
                    report.ignored += 1;
                    continue;
                };
                let t = now();
                m.rtcp.on_received(&h, m.arrival.ms(), 8000 * m.neg.codec.clock_factor());
                if Some(h.pt) == m.neg.dtmf_pt {
                    if let Ok(ev) = TelephoneEvent::parse(payload)
                        && let Some(digit) = m.dtmf.push(&h, ev)
                        && let Some(s) = session.as_mut()
                    {
                        s.handle_carrier_dtmf(t, digit);
                    }
                    continue;
                }
                if h.pt != m.neg.codec.payload_type() {
                    report.ignored += 1;
                    continue;
                }
                // G.711 re-framing holds at most 60 ms per packet
                let max = if m.opus.is_some() { opus::MAX_PACKET } else { 3 * FRAME_SAMPLES };
                if payload.len() > max {
                    report.ignored += 1;
                    continue;
                }
                m.arrival.push(epoch.elapsed().as_micros() as u64, h.ts);
                report.jitter_ms = m.arrival.ms();
                m.jitter.push(h.seq, h.ts, payload);
                let mut sit = false;
                let mut packet = [0u8; opus::MAX_PACKET];
                while let Some((ts, bytes)) = m.jitter.pop() {
                    let len = bytes.len();
                    packet[..len].copy_from_slice(bytes);
                    let missing = match m.playout.arrive(ts, t) {
                        Arrival::Late => {
                            report.frames_late += 1;
                            continue;
                        }
                        Arrival::Play { missing } => missing,
                    };
                    // first what never came, then this packet
                    sit |= fill(m, &mut session, &mut report, t, missing);
                    let mut frames = [[0i16; FRAME_SAMPLES]; 6];
                    let (n, ticks) = match m.decode(&packet[..len], &mut frames) {
                        Ok(x) => x,
                        Err(e) => {
                            // its time is filled when the next one comes
                            report.ignored += 1;
                            tracing::debug!(error = %e, "packet not decoded");
                            continue;
                        }
                    };
                    m.playout.played(ts, ticks);
                    for pcm in &frames[..n] {
                        sit |= hear(m, &mut session, &mut report, t, pcm, Heard::Packet);
                    }
                }
                if sit && !hung_up {
                    // a number not in service, announced before any answer
                    tracing::info!("SIT on early media: cancelling");
                    report.outcome = Outcome::Failed {
                        status: 0,
                        reason: "special information tones on early media (number not in service, intercept)".into(),
                    };
                    hung_up = true;
                    outcome_fixed = true;
                    uac.hangup(now())?;
                }
                report.frames_lost = m.jitter.lost;
            }
            r = rtcp_sock.recv_from(&mut rtcp_buf), if media.is_some() => {
                let Ok((n, src)) = r else {
                    report.ignored += 1;
                    continue;
                };
                let Some(m) = media.as_mut() else { continue };
                if !m.rtcp_latch.on_packet(src) {
                    report.ignored += 1;
                    continue;
                }
                match m.rtcp.on_packet(now(), ntp_now(), &rtcp_buf[..n]) {
                    Ok(()) => report.rtcp = m.rtcp.remote(),
                    Err(e) => {
                        report.ignored += 1;
                        tracing::debug!(error = %e, "RTCP ignored");
                    }
                }
            }
            ev = side.next() => {
                if let Some(s) = session.as_mut() {
                    side.apply(s, ev, now()).await;
                }
            }
            _ = tokio::time::sleep(sleep) => {
                let t = now();
                uac.handle_timeout(t)?;
                // a callee who sends nothing (a pause under silence
                // suppression, or no RTP at all): their time runs on
                if let Some(m) = media.as_mut().filter(|m| m.early_tones.is_none()) {
                    while m.playout.poll_idle(t) {
                        let ticks = m.playout.frame_ticks();
                        fill(m, &mut session, &mut report, t, ticks);
                    }
                }
                if let Some(s) = session.as_mut() { s.tick(t); }
            }
        }
    }
    side.stop().await;
    if let Some(s) = session.as_ref() {
        report.end_type = s.end_type().map(|e| e.as_str().to_string());
    }
    Ok(report)
}

/// Fills `ticks` of the callee's audio that never came, frame by frame
/// (concealment, then silence); true if the tone bank heard SIT in it.
fn fill(
    m: &mut Media,
    session: &mut Option<CallSession>,
    report: &mut SipCallReport,
    t: u64,
    mut left: u32,
) -> bool {
    let mut sit = false;
    while left > 0 {
        match m.conceal(&mut left) {
            Ok(Some((pcm, kind))) => sit |= hear(m, session, report, t, &pcm, kind),
            Ok(None) => {}
            Err(e) => {
                tracing::debug!(error = %e, "concealment failed");
                break;
            }
        }
    }
    sit
}

/// What a frame of the callee's audio is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Heard {
    /// Decoded from their packets.
    Packet,
    /// Concealment of a hole's first 60 ms (AMD's VAD skips it).
    Concealed,
    /// The rest of a hole: silence, heard as silence.
    Silence,
}

/// One 20 ms frame of the callee's audio at the next step of the media
/// clock: before the answer to the tone bank alone (true if it heard SIT),
/// after it to the session.
fn hear(
    m: &mut Media,
    session: &mut Option<CallSession>,
    report: &mut SipCallReport,
    t: u64,
    pcm: &Pcm,
    kind: Heard,
) -> bool {
    let mut frame = AudioFrame::from_pcm(pcm, m.media_ms);
    frame.concealed = kind == Heard::Concealed;
    m.media_ms += u64::from(FRAME_MS);
    if let Some(tones) = m.early_tones.as_mut() {
        let mut sit = false;
        tones.push_frame(&frame, |ev| sit |= matches!(ev, ToneEvent::Sit { .. }));
        return sit;
    }
    if let Some(s) = session.as_mut() {
        if kind == Heard::Packet {
            report.frames_in += 1;
        } else {
            report.frames_concealed += 1;
        }
        if let Err(e) = s.handle_carrier_media(t, &frame) {
            tracing::warn!(error = %e, "AMD failed on a frame");
        }
    }
    false
}

/// Sends one 20 ms μ-law voice frame (the agent's or silence) in its slot
/// of the timeline, in the call's codec.
async fn send_voice(
    sock: &UdpSocket,
    m: &mut Media,
    buf: &mut [u8],
    now: u64,
    ulaw: &[u8; FRAME_SAMPLES],
) -> std::io::Result<bool> {
    let (offset, gap) = m.timeline.take(now);
    let marker = gap || std::mem::take(&mut m.resume);
    let ts = m.ts0.wrapping_add(offset * m.neg.codec.clock_factor());
    let pt = m.pt;
    // the payload in the call's codec: one buffer, on the stack
    let mut encoded = [0u8; opus::MAX_PACKET];
    let n = match (m.neg.codec, m.opus.as_mut()) {
        (Codec::Pcma, _) => {
            for (a, &u) in encoded.iter_mut().zip(ulaw) {
                *a = g711::alaw_encode(g711::ulaw_decode(u));
            }
            FRAME_SAMPLES
        }
        (Codec::Opus { .. }, Some(leg)) => match leg.encode(ulaw, &mut encoded) {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!(error = %e, "Opus encode failed: frame skipped");
                return Ok(false);
            }
        },
        _ => {
            encoded[..FRAME_SAMPLES].copy_from_slice(ulaw);
            FRAME_SAMPLES
        }
    };
    send_rtp(sock, m, buf, pt, marker, ts, &encoded[..n]).await
}

/// Sends one RTP packet of the call, unless the far end holds it (then
/// only time runs on). True if sent.
async fn send_rtp(
    sock: &UdpSocket,
    m: &mut Media,
    buf: &mut [u8],
    pt: u8,
    marker: bool,
    ts: u32,
    payload: &[u8],
) -> std::io::Result<bool> {
    if !m.sending {
        return Ok(false);
    }
    let h = RtpHeader {
        pt,
        marker,
        seq: m.seq,
        ts,
        ssrc: m.ssrc,
    };
    let Some(n) = rtp::write(&h, payload, buf) else {
        return Ok(false);
    };
    sock.send_to(&buf[..n], m.latch.target()).await?;
    m.seq = m.seq.wrapping_add(1);
    m.rtcp.on_sent(ts, payload.len());
    Ok(true)
}

/// The wall clock as NTP, for RTCP sender reports.
fn ntp_now() -> u64 {
    let us = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64);
    ntp_from_unix_micros(us)
}

/// A call's media ports: RTP on an even port and RTCP on the next
/// (RFC 3550 §11), so the far end finds our RTCP without `a=rtcp`.
pub(crate) struct RtpPair {
    pub(crate) rtp: UdpSocket,
    pub(crate) rtcp: UdpSocket,
}

impl RtpPair {
    pub(crate) async fn bind(ip: std::net::IpAddr) -> std::io::Result<Self> {
        for _ in 0..64 {
            let rtp = UdpSocket::bind(SocketAddr::new(ip, 0)).await?;
            let port = rtp.local_addr()?.port();
            if port % 2 == 1 || port == u16::MAX {
                continue;
            }
            if let Ok(rtcp) = UdpSocket::bind(SocketAddr::new(ip, port + 1)).await {
                return Ok(Self { rtp, rtcp });
            }
        }
        Err(std::io::Error::new(
            std::io::ErrorKind::AddrInUse,
            "no free even/odd port pair for RTP and RTCP",
        ))
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Opus packets of 10 ms (a ptime the far end may ask for) are gathered
    /// into whole 20 ms frames: none of their audio is dropped, so the media
    /// clock runs at the sender's pace.
    #[test]
    fn ten_ms_opus_packets_make_whole_frames() {
        let mut enc = opus_rs::OpusEncoder::new(48_000, 1, opus_rs::Application::Voip).unwrap();
        let mut leg = OpusLeg::new().unwrap();
        let tone: Vec<i16> = (0..480)
            .map(|i| ((i as f32 * 0.1).sin() * 8000.0) as i16)
            .collect();
        let mut packet = [0u8; 1500];
        let (mut frames, mut ticks) = (0, 0);
        for _ in 0..5 {
            let len = enc.encode_i16(&tone, 480, &mut packet).unwrap();
            let (n, t) = leg.decode(&packet[..len]).unwrap();
            frames += n;
            ticks += t;
        }
        assert_eq!(ticks, 5 * 480);
        assert_eq!(frames, 2, "50 ms: two whole frames");
        assert_eq!(leg.carried, 480, "and 10 ms carried");
        // a lost 20 ms is concealed after the carried 10 ms
        assert!(leg.conceal().unwrap());
        assert_eq!((leg.n_frames, leg.carried), (1, 480));
    }
}
