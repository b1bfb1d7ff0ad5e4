//! RTP on the SIP media path, sans-IO and allocation-free: a header view
//! over a received datagram, a writer for ours, RFC 4733 telephone-events,
//! symmetric latching, a small reordering buffer and the callee's media
//! clock (which audio is missing, and when a quiet sender's time runs on).
//!
//! Written here rather than taken from `rsiprtp`: its `RtpPacket` owns its
//! payload and CSRC list (two allocations per packet), and the per-frame
//! path must not allocate. The format is twelve bytes and three options.

/// Errors from RTP input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RtpError {
    /// Shorter than a header.
    #[error("RTP packet of {0} bytes is shorter than its header")]
    TooShort(usize),
    /// Not version 2.
    #[error("RTP version {0} (only 2 exists)")]
    Version(u8),
    /// CSRCs, extension or padding run past the end.
    #[error("RTP packet truncated: {0}")]
    Truncated(&'static str),
}

/// The fields of an RTP header that matter to a voice call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtpHeader {
    /// Payload type (0 PCMU, 8 PCMA, 101 telephone-event…).
    pub pt: u8,
    /// Marker bit (start of a talkspurt or of a DTMF event).
    pub marker: bool,
    /// Sequence number.
    pub seq: u16,
    /// Media timestamp.
    pub ts: u32,
    /// Synchronisation source.
    pub ssrc: u32,
}

/// Parses `data` into its header and payload (a slice of `data`).
pub fn parse(data: &[u8]) -> Result<(RtpHeader, &[u8]), RtpError> {
    if data.len() < 12 {
        return Err(RtpError::TooShort(data.len()));
    }
    let version = data[0] >> 6;
    if version != 2 {
        return Err(RtpError::Version(version));
    }
    let padding = data[0] & 0x20 != 0;
    let extension = data[0] & 0x10 != 0;
    let csrcs = usize::from(data[0] & 0x0F);
    let mut start = 12 + 4 * csrcs;
    if data.len() < start {
        return Err(RtpError::Truncated("CSRC list"));
    }
    if extension {
        if data.len() < start + 4 {
            return Err(RtpError::Truncated("extension header"));
        }
        let words = usize::from(u16::from_be_bytes([data[start + 2], data[start + 3]]));
        start += 4 + 4 * words;
        if data.len() < start {
            return Err(RtpError::Truncated("extension"));
        }
    }
    let mut end = data.len();
    if padding {
        let pad = usize::from(data[end - 1]);
        if pad == 0 || end - start < pad {
            return Err(RtpError::Truncated("padding"));
        }
        end -= pad;
    }
    let header = RtpHeader {
        pt: data[1] & 0x7F,
        marker: data[1] & 0x80 != 0,
        seq: u16::from_be_bytes([data[2], data[3]]),
        ts: u32::from_be_bytes([data[4], data[5], data[6], data[7]]),
        ssrc: u32::from_be_bytes([data[8], data[9], data[10], data[11]]),
    };
    Ok((header, &data[start..end]))
}

/// Writes a packet with `h` and `payload` into `out`; returns its length,
/// or `None` if `out` is too small.
pub fn write(h: &RtpHeader, payload: &[u8], out: &mut [u8]) -> Option<usize> {
    let len = 12 + payload.len();
    if out.len() < len {
        return None;
    }
    out[0] = 0x80;
    out[1] = (u8::from(h.marker) << 7) | (h.pt & 0x7F);
    out[2..4].copy_from_slice(&h.seq.to_be_bytes());
    out[4..8].copy_from_slice(&h.ts.to_be_bytes());
    out[8..12].copy_from_slice(&h.ssrc.to_be_bytes());
    out[12..len].copy_from_slice(payload);
    Some(len)
}

/// An RFC 4733 telephone-event payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TelephoneEvent {
    /// Event code: 0–9, 10 `*`, 11 `#`, 12–15 A–D.
    pub event: u8,
    /// The end bit (sent three times).
    pub end: bool,
    /// Duration so far, in timestamp units.
    pub duration: u16,
}

impl TelephoneEvent {
    /// Parses the four-byte payload.
    pub fn parse(p: &[u8]) -> Result<Self, RtpError> {
        if p.len() < 4 {
            return Err(RtpError::Truncated("telephone-event"));
        }
        Ok(Self {
            event: p[0],
            end: p[1] & 0x80 != 0,
            duration: u16::from_be_bytes([p[2], p[3]]),
        })
    }

    /// The digit, for DTMF events.
    pub fn digit(self) -> Option<char> {
        match self.event {
            0..=9 => Some(char::from(b'0' + self.event)),
            10 => Some('*'),
            11 => Some('#'),
            12..=15 => Some(char::from(b'A' + self.event - 12)),
            _ => None,
        }
    }

    /// The four-byte payload (volume 10 dBm0 below full scale).
    pub fn to_bytes(self) -> [u8; 4] {
        let d = self.duration.to_be_bytes();
        [self.event, (u8::from(self.end) << 7) | 10, d[0], d[1]]
    }

    /// The event code of a DTMF digit.
    pub fn code_of(digit: char) -> Option<u8> {
        match digit {
            '0'..='9' => Some(digit as u8 - b'0'),
            '*' => Some(10),
            '#' => Some(11),
            'A'..='D' => Some(digit as u8 - b'A' + 12),
            _ => None,
        }
    }
}

/// Reports each telephone event once, when it ends, though its end packet
/// comes three times and its start may be lost.
#[derive(Debug, Default, Clone)]
pub struct DtmfReceiver {
    /// (timestamp, event) of the last event reported
    last: Option<(u32, u8)>,
}

impl DtmfReceiver {
    /// Feeds a telephone-event packet; returns the digit when it ends.
    pub fn push(&mut self, h: &RtpHeader, ev: TelephoneEvent) -> Option<char> {
        if !ev.end || self.last == Some((h.ts, ev.event)) {
            return None;
        }
        self.last = Some((h.ts, ev.event));
        ev.digit()
    }
}

/// Our outgoing RTP timeline, sans-IO: every packet takes a 20 ms slot
/// anchored to the driver's clock, so the agent's audio, the silence that
/// fills its pauses and the digits never drift from real time (a packet
/// that comes a little early takes the next free slot). When nothing was
/// sent for a slot, silence is due: carriers hang up calls whose RTP stops
/// (Asterisk's `rtptimeout`, SBC media timers), and some peers only play
/// out what later packets push through.
#[derive(Debug, Clone, Copy)]
pub struct TxTimeline {
    start_ms: u64,
    last_slot: Option<u64>,
}

/// Slack after a missed slot before silence is sent, so that an agent
/// frame due at the same moment goes first.
const FILL_SLACK_MS: u64 = 5;

impl TxTimeline {
    /// A timeline starting at `now` (the answer).
    pub fn new(now: u64) -> Self {
        Self {
            start_ms: now,
            last_slot: None,
        }
    }

    /// Takes the slot for a packet sent at `now`: its timestamp offset in
    /// 8 kHz samples, and whether it starts a talkspurt (the first packet,
    /// or one after a gap).
    pub fn take(&mut self, now: u64) -> (u32, bool) {
        let due = (now.saturating_sub(self.start_ms) + 10) / 20;
        let (slot, marker) = match self.last_slot {
            None => (due, true),
            Some(last) => {
                let slot = due.max(last + 1);
                (slot, slot > last + 1)
            }
        };
        self.last_slot = Some(slot);
        ((slot * 160) as u32, marker)
    }

    /// When silence is due if nothing is sent before: a little after the
    /// next slot's time, so the fill keeps the 20 ms cadence.
    pub fn fill_due(&self) -> u64 {
        let next = self.last_slot.map_or(0, |l| l + 1);
        self.start_ms + next * 20 + FILL_SLACK_MS
    }
}

/// One RFC 4733 packet to send, from [`DtmfSender`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventPacket {
    /// The telephone-event payload.
    pub payload: [u8; 4],
    /// The first packet of an event: marker bit, and the event's RTP
    /// timestamp starts here.
    pub first: bool,
}

/// RFC 4733 sender, sans-IO: digits are sent one at a time, each as five
/// packets 20 ms apart (100 ms of tone, the first with the marker bit),
/// then its end packet three times (RFC 4733 §2.5.1.4), then 60 ms of
/// gap before the next digit. Voice is not sent during an event.
#[derive(Debug)]
pub struct DtmfSender {
    /// RTP clock units per 20 ms packet (160 at 8 kHz, 960 at 48 kHz)
    per_packet: u16,
    queue: std::collections::VecDeque<u8>,
    /// event code and packets sent of the digit being sent
    active: Option<(u8, u16)>,
    next_at: Option<u64>,
}

/// Packets of tone per digit (100 ms).
const TONE_PACKETS: u16 = 5;
/// Times the end packet is sent.
const END_REPEATS: u16 = 3;
/// Silence between two digits, ms.
const DIGIT_GAP_MS: u64 = 60;

impl Default for DtmfSender {
    /// For telephone-event at 8 kHz.
    fn default() -> Self {
        Self::with_clock(8000)
    }
}

impl DtmfSender {
    /// For telephone-event at `clock_hz` (durations count in its units).
    pub fn with_clock(clock_hz: u32) -> Self {
        Self {
            per_packet: (clock_hz / 50).min(u32::from(u16::MAX) / 8) as u16,
            queue: std::collections::VecDeque::new(),
            active: None,
            next_at: None,
        }
    }

    /// Queues `digit` at `now`; false if it is not a DTMF digit.
    pub fn push(&mut self, digit: char, now: u64) -> bool {
        let Some(code) = TelephoneEvent::code_of(digit) else {
            return false;
        };
        self.queue.push_back(code);
        if self.next_at.is_none() {
            self.next_at = Some(now);
        }
        true
    }

    /// True while an event is being sent (voice waits).
    pub fn is_sending(&self) -> bool {
        self.active.is_some()
    }

    /// When the next packet is due.
    pub fn poll_timeout(&self) -> Option<u64> {
        self.next_at
    }

    /// The next packet, if one is due at `now`.
    pub fn poll_packet(&mut self, now: u64) -> Option<EventPacket> {
        let at = self.next_at.filter(|&t| now >= t)?;
        let (code, sent) = match self.active {
            Some(a) => a,
            None => match self.queue.pop_front() {
                Some(code) => (code, 0),
                None => {
                    self.next_at = None;
                    return None;
                }
            },
        };
        let n = sent + 1;
        let ev = TelephoneEvent {
            event: code,
            end: n > TONE_PACKETS,
            duration: n.min(TONE_PACKETS) * self.per_packet,
        };
        if n == TONE_PACKETS + END_REPEATS {
            self.active = None;
            self.next_at = (!self.queue.is_empty()).then_some(at + DIGIT_GAP_MS);
        } else {
            self.active = Some((code, n));
            self.next_at = Some(at + 20);
        }
        Some(EventPacket {
            payload: ev.to_bytes(),
            first: n == 1,
        })
    }
}

/// Where to send RTP: first the address the SDP answer names, then, once
/// the callee's RTP arrives, its real source (symmetric RTP, for callees
/// behind NAT). A source with port 0 (some SIPp set-ups) is never latched
/// onto.
///
/// The first packet may come from the SDP's host or from the host that
/// signals the call. The second covers the common NAT case: a callee or
/// trunk that writes its private address into the SDP (baresip writes its
/// LAN address even when it talks over loopback) but sends from the
/// address its SIP comes from. Any other host is a stray or spoofed
/// stream and never gets the call's audio.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Latch {
    target: std::net::SocketAddr,
    signalling: std::net::IpAddr,
    latched: bool,
}

impl Latch {
    /// Starts at the SDP's address; `signalling` is the host the call's SIP
    /// comes from.
    pub fn new(sdp_addr: std::net::SocketAddr, signalling: std::net::IpAddr) -> Self {
        Self {
            target: sdp_addr,
            signalling,
            latched: false,
        }
    }

    /// Where to send now.
    pub fn target(&self) -> std::net::SocketAddr {
        self.target
    }

    /// A packet came from `src`: latch on the first valid one. Returns false
    /// for a packet to ignore (another host than the one latched, or a
    /// source port 0).
    pub fn on_packet(&mut self, src: std::net::SocketAddr) -> bool {
        if src.port() == 0 {
            return false;
        }
        if !self.latched {
            let sdp_host = self.target.ip();
            if src.ip() != sdp_host && src.ip() != self.signalling && !sdp_host.is_unspecified() {
                return false;
            }
            self.target = src;
            self.latched = true;
            return true;
        }
        src == self.target
    }

    /// For the RTCP latch: until RTCP itself arrives, send it beside where
    /// `rtp` latched (its port + 1, RFC 3550 §11). A callee whose SDP names
    /// an address we cannot reach then still gets our sender reports before
    /// its own first report; that first report latches as usual.
    pub fn follow(&mut self, rtp: &Latch) {
        if !self.latched && rtp.latched {
            let t = rtp.target;
            self.target = std::net::SocketAddr::new(t.ip(), t.port().wrapping_add(1));
        }
    }
}

/// RFC 3550 interarrival jitter (§6.4.1, A.8): how much the spacing of
/// arrivals departs from the spacing of RTP timestamps, smoothed over 16
/// packets. Arrival times come from the driver's monotonic clock.
#[derive(Debug, Clone, Copy)]
pub struct JitterEstimator {
    last: Option<(u64, u32)>,
    /// in timestamp units
    j: f64,
    /// the RTP clock, Hz
    clock_hz: f64,
}

impl Default for JitterEstimator {
    /// For an 8 kHz RTP clock (G.711).
    fn default() -> Self {
        Self::with_clock(8000)
    }
}

impl JitterEstimator {
    /// For an RTP clock of `hz` (48 kHz for Opus).
    pub fn with_clock(hz: u32) -> Self {
        Self {
            last: None,
            j: 0.0,
            clock_hz: f64::from(hz),
        }
    }

    /// A packet with timestamp `ts` arrived at `arrival_us`.
    pub fn push(&mut self, arrival_us: u64, ts: u32) {
        if let Some((r0, s0)) = self.last {
            let r = (arrival_us as f64 - r0 as f64) * self.clock_hz / 1e6;
            let s = f64::from(ts.wrapping_sub(s0) as i32);
            let d = (r - s).abs();
            self.j += (d - self.j) / 16.0;
        }
        self.last = Some((arrival_us, ts));
    }

    /// The current estimate, ms.
    pub fn ms(&self) -> f64 {
        self.j * 1000.0 / self.clock_hz
    }
}

/// Packets per jitter window: about 60 ms of reordering tolerance at 20 ms
/// packetisation.
const WINDOW: usize = 4;

/// One held payload: up to `N` bytes.
#[derive(Debug, Clone, Copy)]
struct Held<const N: usize> {
    seq: u16,
    ts: u32,
    len: usize,
    data: [u8; N],
}

/// A small reordering buffer for audio payloads of up to `N` bytes (any
/// packetisation: 10, 20, 30 ms…): payloads come out in sequence order; a
/// missing one is given up once the window is full (counted as lost).
/// Fixed storage, no allocation.
#[derive(Debug, Clone)]
pub struct JitterBuffer<const N: usize> {
    slots: [Option<Held<N>>; WINDOW],
    next: Option<u16>,
    out: [u8; N],
    /// Packets given up as lost.
    pub lost: u64,
    /// Packets too late, duplicated or too big.
    pub discarded: u64,
}

impl<const N: usize> Default for JitterBuffer<N> {
    fn default() -> Self {
        Self {
            slots: [None; WINDOW],
            next: None,
            out: [0; N],
            lost: 0,
            discarded: 0,
        }
    }
}

impl<const N: usize> JitterBuffer<N> {
    /// Adds a packet's payload with its sequence number and timestamp
    /// (over `N` bytes is discarded).
    pub fn push(&mut self, seq: u16, ts: u32, payload: &[u8]) {
        if payload.len() > N || payload.is_empty() {
            self.discarded += 1;
            return;
        }
        let next = *self.next.get_or_insert(seq);
        let ahead = seq.wrapping_sub(next);
        if ahead >= 0x8000 {
            self.discarded += 1; // behind: already played or skipped
            return;
        }
        // far ahead: move the window, giving up what it leaves behind
        while usize::from(seq.wrapping_sub(self.next.unwrap_or(seq))) >= WINDOW {
            self.skip();
        }
        let slot = usize::from(seq) % WINDOW;
        if self.slots[slot].is_some_and(|h| h.seq == seq) {
            self.discarded += 1;
            return;
        }
        let mut data = [0u8; N];
        data[..payload.len()].copy_from_slice(payload);
        self.slots[slot] = Some(Held {
            seq,
            ts,
            len: payload.len(),
            data,
        });
    }

    fn skip(&mut self) {
        if let Some(n) = self.next {
            let slot = usize::from(n) % WINDOW;
            if self.slots[slot].is_some_and(|h| h.seq == n) {
                // held but never played: the window had to move past it
                self.slots[slot] = None;
                self.discarded += 1;
            } else {
                self.lost += 1;
            }
            self.next = Some(n.wrapping_add(1));
        }
    }

    /// The next payload in order with its timestamp, if it is here; once
    /// the window is full a missing packet is given up and the one after it
    /// tried. (What the given-up packet carried is [`Playout`]'s to fill.)
    pub fn pop(&mut self) -> Option<(u32, &[u8])> {
        loop {
            let n = self.next?;
            let slot = usize::from(n) % WINDOW;
            if let Some(h) = self.slots[slot]
                && h.seq == n
            {
                self.slots[slot] = None;
                self.next = Some(n.wrapping_add(1));
                self.out[..h.len].copy_from_slice(&h.data[..h.len]);
                return Some((h.ts, &self.out[..h.len]));
            }
            let held = self.slots.iter().filter(|s| s.is_some()).count();
            if held + 1 < WINDOW {
                return None;
            }
            self.lost += 1;
            self.next = Some(n.wrapping_add(1));
        }
    }
}

/// How long the callee may send nothing before their media clock runs on
/// without them: longer than the jitter buffer waits for a missing packet
/// (three packets, 60 ms at 20 ms) plus ordinary network jitter.
pub const IDLE_HOLD_MS: u64 = 100;

/// A timestamp this far from where the stream was, either way, starts a new
/// stream (the far end restarted or switched sources): it is not a hole.
const MAX_HOLE_MS: u32 = 10_000;

/// The callee's media clock on our side: where each packet out of the
/// jitter buffer belongs in time, and how much audio is missing before it.
///
/// Audio is played as it arrives, and two kinds of hole leave the clock
/// short: a packet that never came (lost, or held back by a sender that
/// stops sending in its pauses), found from the next packet's timestamp;
/// and a sender that has gone quiet for now, found by the time since its
/// last packet. The driver fills both, in 20 ms frames (concealment that
/// fades to silence), so AMD's media time stays the sender's. A packet
/// whose time was already filled while the sender was quiet is late and
/// dropped, as any jitter buffer drops what comes after its play-out; so
/// a stall never shifts the clock, and what is dropped is at most what was
/// filled.
#[derive(Debug, Clone)]
pub struct Playout {
    /// RTP clock ticks in 20 ms (160 for G.711, 960 for Opus).
    frame: u32,
    /// Where the next audio starts on the sender's clock, once a packet
    /// played.
    next_ts: Option<u32>,
    /// When the last packet played (or the media began), driver ms.
    last_ms: u64,
    /// Frames filled since then because nothing came.
    idle: u32,
}

/// What to do with a packet out of the jitter buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arrival {
    /// Fill this many clock ticks of missing audio, then play it.
    Play {
        /// Ticks between the audio played last and this packet.
        missing: u32,
    },
    /// Its time was filled while the sender was quiet: drop it.
    Late,
}

impl Playout {
    /// The clock of a stream at `clock_hz` whose media began at `now`.
    pub fn new(clock_hz: u32, now: u64) -> Self {
        Self {
            frame: clock_hz / 50,
            next_ts: None,
            last_ms: now,
            idle: 0,
        }
    }

    /// Clock ticks in one 20 ms frame.
    pub fn frame_ticks(&self) -> u32 {
        self.frame
    }

    /// A packet stamped `ts` is next in sequence, at `now`.
    pub fn arrive(&mut self, ts: u32, now: u64) -> Arrival {
        let missing = match self.next_ts {
            None => 0,
            Some(next) => {
                let d = i64::from(ts.wrapping_sub(next) as i32);
                let half = i64::from(self.frame / 2);
                let filled = i64::from(self.idle) * i64::from(self.frame);
                if d.unsigned_abs() > u64::from(MAX_HOLE_MS * (self.frame / 20)) {
                    0 // a new stream: its clock starts here
                } else if filled > 0 && d <= -half && d >= -(filled + half) {
                    // starts inside what was filled (by half a frame or
                    // more): its time has been played
                    return Arrival::Late;
                } else {
                    // a little early, or before anything filled (a sender
                    // whose clock stepped back): played from here
                    d.max(0) as u32
                }
            }
        };
        self.last_ms = now;
        self.idle = 0;
        Arrival::Play { missing }
    }

    /// The packet stamped `ts` played `ticks` of audio.
    pub fn played(&mut self, ts: u32, ticks: u32) {
        self.next_ts = Some(ts.wrapping_add(ticks));
    }

    /// When the next frame is due if nothing comes (driver ms).
    pub fn idle_due(&self) -> u64 {
        self.last_ms + IDLE_HOLD_MS + 20 * u64::from(self.idle)
    }

    /// True if at `now` one more 20 ms frame must be filled because the
    /// sender has sent nothing: call until false.
    pub fn poll_idle(&mut self, now: u64) -> bool {
        if now < self.idle_due() {
            return false;
        }
        self.idle += 1;
        if let Some(next) = self.next_ts.as_mut() {
            *next = next.wrapping_add(self.frame);
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet(pt: u8, seq: u16, payload: &[u8]) -> Vec<u8> {
        let mut out = vec![0u8; 12 + payload.len()];
        let h = RtpHeader {
            pt,
            marker: false,
            seq,
            ts: u32::from(seq) * 160,
            ssrc: 7,
        };
        let n = write(&h, payload, &mut out).unwrap();
        out.truncate(n);
        out
    }

    #[test]
    fn round_trip_and_options() {
        let p = packet(8, 513, &[1, 2, 3]);
        let (h, payload) = parse(&p).unwrap();
        assert_eq!((h.pt, h.seq, h.ts, h.ssrc), (8, 513, 513 * 160, 7));
        assert_eq!(payload, &[1, 2, 3]);
        // one CSRC, an extension of one word, two bytes of padding
        let mut q = vec![0xB1, 0x00, 0, 1, 0, 0, 0, 0, 0, 0, 0, 9];
        q.extend_from_slice(&[0, 0, 0, 5]); // CSRC
        q.extend_from_slice(&[0xBE, 0xDE, 0, 1, 1, 2, 3, 4]); // extension
        q.extend_from_slice(&[42, 43, 0, 2]); // payload + padding
        let (h, payload) = parse(&q).unwrap();
        assert_eq!(h.ssrc, 9);
        assert_eq!(payload, &[42, 43]);
    }

    #[test]
    fn malformed_packets_are_errors() {
        assert_eq!(parse(&[]), Err(RtpError::TooShort(0)));
        assert_eq!(parse(&[0x40; 12]), Err(RtpError::Version(1)));
        assert!(parse(&[0x8F, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]).is_err());
        assert!(parse(&[0x90, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF]).is_err());
        assert!(parse(&[0xA0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]).is_err());
        assert!(parse(&[0xA0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 200]).is_err());
        // any bytes at all: an answer, never a panic
        let mut x: u32 = 1;
        for len in 0..200 {
            let buf: Vec<u8> = (0..len)
                .map(|_| {
                    x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
                    (x >> 16) as u8
                })
                .collect();
            let _ = parse(&buf);
            let _ = TelephoneEvent::parse(&buf);
        }
    }

    #[test]
    fn dtmf_is_reported_once_per_event() {
        let mut rx = DtmfReceiver::default();
        let h = RtpHeader {
            pt: 101,
            marker: true,
            seq: 1,
            ts: 8000,
            ssrc: 1,
        };
        let start = TelephoneEvent::parse(&[5, 10, 0, 160]).unwrap();
        assert_eq!(rx.push(&h, start), None);
        let end = TelephoneEvent {
            event: 5,
            end: true,
            duration: 800,
        };
        assert_eq!(TelephoneEvent::parse(&end.to_bytes()).unwrap(), end);
        assert_eq!(rx.push(&h, end), Some('5'));
        assert_eq!(rx.push(&h, end), None);
        assert_eq!(rx.push(&h, end), None);
        let h2 = RtpHeader { ts: 16000, ..h };
        let hash = TelephoneEvent { event: 11, ..end };
        assert_eq!(rx.push(&h2, hash), Some('#'));
        assert_eq!(TelephoneEvent::code_of('#'), Some(11));
        assert_eq!(TelephoneEvent::code_of('x'), None);
    }

    #[test]
    fn latching_ignores_port_zero_and_strangers() {
        let sdp: std::net::SocketAddr = "10.0.0.5:4000".parse().unwrap();
        let sip = "203.0.113.7".parse().unwrap();
        let mut l = Latch::new(sdp, sip);
        assert!(!l.on_packet("10.0.0.5:0".parse().unwrap()));
        assert!(!l.on_packet("10.9.9.9:4000".parse().unwrap()));
        assert_eq!(l.target(), sdp);
        assert!(l.on_packet("10.0.0.5:4010".parse().unwrap()));
        assert_eq!(l.target(), "10.0.0.5:4010".parse().unwrap());
        assert!(!l.on_packet("10.0.0.5:4000".parse().unwrap()));
        assert!(!l.on_packet("203.0.113.7:4000".parse().unwrap()));
    }

    #[test]
    fn a_callee_behind_nat_is_latched_from_its_signalling_host() {
        // the SDP names a private address; RTP comes from the public one
        // the SIP came from
        let sdp: std::net::SocketAddr = "192.168.1.20:4000".parse().unwrap();
        let mut l = Latch::new(sdp, "203.0.113.7".parse().unwrap());
        assert!(!l.on_packet("198.51.100.1:4000".parse().unwrap()));
        assert!(l.on_packet("203.0.113.7:31000".parse().unwrap()));
        assert_eq!(l.target(), "203.0.113.7:31000".parse().unwrap());
        assert!(!l.on_packet("192.168.1.20:4000".parse().unwrap()));
    }

    #[test]
    fn rtcp_goes_beside_the_latched_rtp_until_rtcp_arrives() {
        let sdp: std::net::SocketAddr = "192.168.1.20:4000".parse().unwrap();
        let sip = "203.0.113.7".parse().unwrap();
        let mut rtp = Latch::new(sdp, sip);
        let mut rtcp = Latch::new("192.168.1.20:4001".parse().unwrap(), sip);
        // nothing latched yet: the SDP's address
        rtcp.follow(&rtp);
        assert_eq!(rtcp.target(), "192.168.1.20:4001".parse().unwrap());
        assert!(rtp.on_packet("203.0.113.7:31000".parse().unwrap()));
        rtcp.follow(&rtp);
        assert_eq!(rtcp.target(), "203.0.113.7:31001".parse().unwrap());
        // the callee's own RTCP decides where it goes from then on
        assert!(rtcp.on_packet("203.0.113.7:31007".parse().unwrap()));
        rtcp.follow(&rtp);
        assert_eq!(rtcp.target(), "203.0.113.7:31007".parse().unwrap());
        assert!(!rtcp.on_packet("192.168.1.20:4001".parse().unwrap()));
    }

    #[test]
    fn the_timeline_follows_the_clock_without_drift() {
        let mut t = TxTimeline::new(1000);
        assert_eq!(t.take(1000), (0, true));
        assert_eq!(t.take(1020), (160, false));
        // a frame a little early takes the next slot, not the same
        assert_eq!(t.take(1021), (320, false));
        assert_eq!(t.take(1060), (480, false));
        // nothing for a while: silence is due 25 ms after the last packet
        assert_eq!(t.fill_due(), 1085);
        // after a gap the slot follows the clock, with the marker bit
        assert_eq!(t.take(1200), (1600, true));
        // a thousand frames later, still on the clock
        for k in 1..=1000u64 {
            t.take(1200 + 20 * k);
        }
        assert_eq!(t.take(1200 + 20 * 1001).0, 1600 + 160 * 1001);
        // silence alone keeps the cadence: 50 frames a second
        let mut t = TxTimeline::new(0);
        let mut sent = 0;
        while t.fill_due() < 1000 {
            t.take(t.fill_due());
            sent += 1;
        }
        assert_eq!(sent, 50);
    }

    #[test]
    fn digits_are_sent_as_rfc_4733_events() {
        let mut tx = DtmfSender::default();
        assert!(!tx.push('x', 0));
        assert!(tx.push('5', 1000));
        assert!(tx.push('#', 1000));
        let mut rx = DtmfReceiver::default();
        let mut heard = Vec::new();
        let mut packets = Vec::new();
        let mut ts = 0u32;
        while let Some(at) = tx.poll_timeout() {
            let Some(p) = tx.poll_packet(at) else {
                continue;
            };
            if p.first {
                ts += 8000;
            }
            let ev = TelephoneEvent::parse(&p.payload).unwrap();
            let h = RtpHeader {
                pt: 101,
                marker: p.first,
                seq: packets.len() as u16,
                ts,
                ssrc: 1,
            };
            packets.push((at, p, ev));
            heard.extend(rx.push(&h, ev));
        }
        // the receiver we test against hears each digit once
        assert_eq!(heard, ['5', '#']);
        assert_eq!(packets.len(), 16, "5 tone + 3 end packets per digit");
        let (t0, p0, e0) = packets[0];
        assert_eq!(t0, 1000);
        assert!(p0.first && !e0.end && e0.event == 5 && e0.duration == 160);
        let (_, _, e4) = packets[4];
        assert_eq!((e4.end, e4.duration), (false, 800));
        for (_, p, e) in &packets[5..8] {
            assert!(!p.first && e.end && e.duration == 800);
        }
        // 20 ms apart, then 60 ms of gap before the next digit
        assert_eq!(packets[7].0, 1140);
        assert_eq!(packets[8].0, 1200);
        assert!(packets[8].1.first && packets[8].2.event == 11);
        assert!(!tx.is_sending());
        assert_eq!(tx.poll_timeout(), None);
        // at 48 kHz (beside Opus) the durations count in its units
        let mut tx = DtmfSender::with_clock(48_000);
        tx.push('9', 0);
        let p = tx.poll_packet(0).unwrap();
        assert_eq!(TelephoneEvent::parse(&p.payload).unwrap().duration, 960);
    }

    #[test]
    fn interarrival_jitter_follows_rfc_3550() {
        let mut j = JitterEstimator::default();
        for k in 0..100u64 {
            j.push(k * 20_000, (k * 160) as u32);
        }
        assert!(j.ms() < 1e-9, "perfect pacing has no jitter");
        // every other packet 4 ms late: |D| alternates 4 ms → J tends to 4
        let mut j = JitterEstimator::default();
        for k in 0..400u64 {
            let late = if k % 2 == 1 { 4000 } else { 0 };
            j.push(k * 20_000 + late, (k * 160) as u32);
        }
        assert!((j.ms() - 4.0).abs() < 0.1, "{}", j.ms());
        // the same at Opus's 48 kHz clock
        let mut j = JitterEstimator::with_clock(48_000);
        for k in 0..400u64 {
            let late = if k % 2 == 1 { 4000 } else { 0 };
            j.push(k * 20_000 + late, (k * 960) as u32);
        }
        assert!((j.ms() - 4.0).abs() < 0.1, "{}", j.ms());
    }

    #[test]
    fn the_jitter_buffer_reorders_and_skips_losses() {
        let ts = |seq: u32| seq * 160;
        let mut jb = JitterBuffer::<3>::default();
        jb.push(10, ts(10), &[10, 0]);
        jb.push(12, ts(12), &[12, 0, 0]);
        jb.push(11, ts(11), &[11]);
        assert_eq!(jb.pop(), Some((ts(10), &[10, 0][..])));
        assert_eq!(jb.pop(), Some((ts(11), &[11][..])));
        assert_eq!(jb.pop(), Some((ts(12), &[12, 0, 0][..])));
        assert_eq!(jb.pop(), None);
        // 13 lost: once the window fills, it is skipped
        jb.push(14, ts(14), &[14, 0]);
        assert_eq!(jb.pop(), None);
        jb.push(15, ts(15), &[15, 0]);
        jb.push(16, ts(16), &[16, 0]);
        assert_eq!(jb.pop(), Some((ts(14), &[14, 0][..])));
        assert_eq!(jb.lost, 1);
        // late and duplicate packets are dropped; too big or empty too
        jb.push(12, ts(12), &[12, 0]);
        jb.push(15, ts(15), &[15, 0]);
        jb.push(17, ts(17), &[1, 2, 3, 4]);
        jb.push(17, ts(17), &[]);
        assert_eq!(jb.discarded, 4);
        assert_eq!(jb.pop(), Some((ts(15), &[15, 0][..])));
        // sequence numbers wrap
        let mut jb = JitterBuffer::<1>::default();
        jb.push(65_535, ts(65_535), &[1]);
        jb.push(0, ts(0), &[2]);
        assert_eq!(jb.pop(), Some((ts(65_535), &[1][..])));
        assert_eq!(jb.pop(), Some((ts(0), &[2][..])));
    }

    /// G.711: 160 ticks per 20 ms packet.
    fn g711_clock() -> Playout {
        Playout::new(8000, 0)
    }

    #[test]
    fn a_lost_packet_is_missing_audio_before_the_next() {
        let mut p = g711_clock();
        assert_eq!(p.arrive(1000, 0), Arrival::Play { missing: 0 });
        p.played(1000, 160);
        assert_eq!(p.arrive(1160, 20), Arrival::Play { missing: 0 });
        p.played(1160, 160);
        // 1320 and 1480 lost
        assert_eq!(p.arrive(1640, 80), Arrival::Play { missing: 320 });
        p.played(1640, 160);
        // 10 ms packets, one lost: half a frame
        assert_eq!(p.arrive(1880, 100), Arrival::Play { missing: 80 });
    }

    #[test]
    fn the_timestamp_wraps_without_a_hole() {
        let mut p = g711_clock();
        p.arrive(u32::MAX - 159, 0);
        p.played(u32::MAX - 159, 160);
        assert_eq!(p.arrive(0, 20), Arrival::Play { missing: 0 });
        p.played(0, 160);
        assert_eq!(p.arrive(320, 40), Arrival::Play { missing: 160 });
    }

    #[test]
    fn a_jump_of_more_than_ten_seconds_is_a_new_stream() {
        let mut p = g711_clock();
        p.arrive(0, 0);
        p.played(0, 160);
        assert_eq!(p.arrive(2_000_000, 20), Arrival::Play { missing: 0 });
        p.played(2_000_000, 160);
        // and back
        assert_eq!(p.arrive(5, 40), Arrival::Play { missing: 0 });
        // 9.98 s of silence suppressed is a hole
        let mut p = g711_clock();
        p.arrive(0, 0);
        p.played(0, 160);
        assert_eq!(
            p.arrive(160 + 79_840, 20),
            Arrival::Play { missing: 79_840 }
        );
    }

    #[test]
    fn a_quiet_sender_s_time_runs_on_after_the_hold() {
        let mut p = g711_clock();
        // before any packet: nothing for 100 ms, then a frame every 20 ms
        assert_eq!(p.idle_due(), IDLE_HOLD_MS);
        assert!(!p.poll_idle(99));
        assert!(p.poll_idle(100));
        assert!(!p.poll_idle(119));
        assert!(p.poll_idle(125));
        assert!(!p.poll_idle(125));
        // a packet resets it
        p.arrive(0, 130);
        p.played(0, 160);
        assert_eq!(p.idle_due(), 230);
        // a sender that sends nothing in a 420 ms pause (silence
        // suppression): from 100 ms after its last packet, a frame per 20 ms
        let mut p = g711_clock();
        p.arrive(0, 0);
        p.played(0, 160);
        let mut filled_by = 0;
        for t in 0..=400 {
            while p.poll_idle(t) {
                filled_by += 1;
            }
        }
        assert_eq!(filled_by, 16, "100, 120, … 400 ms");
        // its next packet is 20 frames on: 4 more are missing
        assert_eq!(
            p.arrive(160 + 20 * 160, 420),
            Arrival::Play { missing: 4 * 160 }
        );
    }

    #[test]
    fn packets_for_time_already_filled_are_late() {
        let mut p = g711_clock();
        p.arrive(0, 0);
        p.played(0, 160);
        // the network stalls 200 ms, then delivers the backlog at once
        let mut filled = 0;
        for t in 0..=220 {
            while p.poll_idle(t) {
                filled += 1;
            }
        }
        assert_eq!(filled, 7);
        // packets 1..=7 cover the filled 140 ms: dropped; packet 8 plays
        for k in 1..=7u32 {
            assert_eq!(p.arrive(k * 160, 221), Arrival::Late, "packet {k}");
        }
        assert_eq!(p.arrive(8 * 160, 221), Arrival::Play { missing: 0 });
        p.played(8 * 160, 160);
        // with nothing filled, a packet a little behind is played
        assert_eq!(p.arrive(9 * 160 - 100, 240), Arrival::Play { missing: 0 });
    }

    #[test]
    fn opus_counts_its_48_khz_clock() {
        let mut p = Playout::new(48_000, 0);
        assert_eq!(p.frame_ticks(), 960);
        p.arrive(0, 0);
        p.played(0, 960);
        assert_eq!(p.arrive(3 * 960, 60), Arrival::Play { missing: 2 * 960 });
    }
}
