//! Minimal RTCP (RFC 3550 §6) for a SIP call's media, sans-IO: what we
//! tell the far end (a sender or receiver report with our reception
//! statistics, and our CNAME, every 5 s; the first at 2.5 s, §6.2) and
//! what it tells us (its view of our stream's loss, and the round trip
//! from its report of our last sender report). Carriers' SBCs read it for
//! call quality; we report what it says at the end of the call.
//!
//! [`Rtcp`] keeps the counters. The driver feeds it every RTP packet it
//! sends and receives, asks it for a report when [`Rtcp::poll_timeout`]
//! comes, and hands it the RTCP datagrams that arrive. Times are the
//! driver's: `now` in ms for scheduling, and the wall clock as an NTP
//! timestamp for the sender report.

use super::rtp::{RtpError, RtpHeader};

/// The report interval, ms (RFC 3550's minimum).
const INTERVAL_MS: u64 = 5000;

/// Our reception of the far end's stream (RFC 3550 A.1, A.3).
#[derive(Debug, Default, Clone, Copy)]
struct Reception {
    ssrc: u32,
    base_seq: u32,
    max_seq: u16,
    cycles: u32,
    received: u32,
    expected_prior: u32,
    received_prior: u32,
    started: bool,
}

impl Reception {
    fn push(&mut self, h: &RtpHeader) {
        if !self.started || h.ssrc != self.ssrc {
            *self = Self {
                ssrc: h.ssrc,
                base_seq: u32::from(h.seq),
                max_seq: h.seq,
                started: true,
                ..Self::default()
            };
        } else {
            let delta = h.seq.wrapping_sub(self.max_seq);
            if delta < 0x8000 && delta != 0 {
                if h.seq < self.max_seq {
                    self.cycles += 1 << 16;
                }
                self.max_seq = h.seq;
            }
        }
        self.received += 1;
    }

    fn extended_max(&self) -> u32 {
        self.cycles + u32::from(self.max_seq)
    }

    /// Fraction lost since the last report (of 256) and total lost.
    fn loss(&mut self) -> (u8, u32) {
        let expected = self.extended_max().wrapping_sub(self.base_seq) + 1;
        let lost = expected.saturating_sub(self.received);
        let expected_interval = expected.wrapping_sub(self.expected_prior);
        let received_interval = self.received.wrapping_sub(self.received_prior);
        self.expected_prior = expected;
        self.received_prior = self.received;
        let lost_interval = expected_interval.saturating_sub(received_interval);
        let fraction = (lost_interval << 8)
            .checked_div(expected_interval)
            .map_or(0, |f| f.min(255) as u8);
        (fraction, lost.min(0x7F_FFFF))
    }
}

/// What the far end's reports told us about our stream.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct RemoteView {
    /// RTCP packets received.
    pub reports: u64,
    /// Its last fraction lost of our stream, 0–1.
    pub fraction_lost: f64,
    /// Its count of our packets lost.
    pub cumulative_lost: u32,
    /// Round trip from its last report of our sender report, ms.
    pub rtt_ms: Option<f64>,
}

/// RTCP for one call.
#[derive(Debug)]
pub struct Rtcp {
    ssrc: u32,
    cname: String,
    next_at: u64,
    sent_packets: u32,
    sent_octets: u32,
    last_rtp_ts: u32,
    reception: Reception,
    /// interarrival jitter of the far end's stream, in its timestamp units
    jitter_ts: u32,
    /// middle 32 bits of the NTP time of the far end's last SR, and when
    /// it came (ms)
    last_sr: Option<(u32, u64)>,
    remote: RemoteView,
}

/// NTP time (seconds since 1900 in 32.32 fixed point) of a Unix time in µs.
pub fn ntp_from_unix_micros(us: u64) -> u64 {
    const UNIX_TO_NTP_S: u64 = 2_208_988_800;
    let secs = us / 1_000_000 + UNIX_TO_NTP_S;
    let frac = ((us % 1_000_000) << 32) / 1_000_000;
    (secs << 32) | frac
}

impl Rtcp {
    /// RTCP for our stream `ssrc`, named `cname`, starting at `now` (ms).
    pub fn new(ssrc: u32, cname: &str, now: u64) -> Self {
        Self {
            ssrc,
            cname: cname.chars().take(255).collect(),
            next_at: now + INTERVAL_MS / 2,
            sent_packets: 0,
            sent_octets: 0,
            last_rtp_ts: 0,
            reception: Reception::default(),
            jitter_ts: 0,
            last_sr: None,
            remote: RemoteView::default(),
        }
    }

    /// We sent an RTP packet with `payload_len` bytes of payload.
    pub fn on_sent(&mut self, ts: u32, payload_len: usize) {
        self.sent_packets = self.sent_packets.wrapping_add(1);
        self.sent_octets = self.sent_octets.wrapping_add(payload_len as u32);
        self.last_rtp_ts = ts;
    }

    /// We received the far end's RTP packet; `jitter_ms` is the current
    /// interarrival jitter estimate, reported in units of an RTP clock of
    /// `clock_hz`.
    pub fn on_received(&mut self, h: &RtpHeader, jitter_ms: f64, clock_hz: u32) {
        self.reception.push(h);
        self.jitter_ts = (jitter_ms * f64::from(clock_hz) / 1000.0) as u32;
    }

    /// What the far end reported.
    pub fn remote(&self) -> RemoteView {
        self.remote
    }

    /// When the next report is due.
    pub fn poll_timeout(&self) -> u64 {
        self.next_at
    }

    /// Writes the report due at `now` into `out`: SR (if we have sent) or
    /// RR, with a report block once the far end's RTP has come, then SDES
    /// with our CNAME. `ntp` is the wall clock as NTP. Returns its length.
    pub fn report(&mut self, now: u64, ntp: u64, out: &mut [u8]) -> usize {
        self.next_at = now + INTERVAL_MS;
        let mut w = Writer { out, len: 0 };
        let blocks = u8::from(self.reception.started);
        let sender = self.sent_packets > 0;
        let words = if sender { 6 } else { 1 } + 6 * usize::from(blocks);
        w.header(blocks, if sender { 200 } else { 201 }, words);
        w.u32(self.ssrc);
        if sender {
            w.u32((ntp >> 32) as u32);
            w.u32(ntp as u32);
            w.u32(self.last_rtp_ts);
            w.u32(self.sent_packets);
            w.u32(self.sent_octets);
        }
        if blocks == 1 {
            let (fraction, lost) = self.reception.loss();
            w.u32(self.reception.ssrc);
            w.u32((u32::from(fraction) << 24) | lost);
            w.u32(self.reception.extended_max());
            w.u32(self.jitter_ts);
            let (lsr, dlsr) = match self.last_sr {
                Some((lsr, at)) => (lsr, ((now.saturating_sub(at)) * 65_536 / 1000) as u32),
                None => (0, 0),
            };
            w.u32(lsr);
            w.u32(dlsr);
        }
        // SDES: one chunk, CNAME, END, padded to a 32-bit boundary
        let item = 2 + self.cname.len();
        let chunk_words = (4 + item + 1).div_ceil(4);
        w.header(1, 202, chunk_words);
        w.u32(self.ssrc);
        w.u8(1);
        w.u8(self.cname.len() as u8);
        w.bytes(self.cname.as_bytes());
        let pad = chunk_words * 4 - 4 - item;
        for _ in 0..pad {
            w.u8(0);
        }
        w.len
    }

    /// An RTCP datagram from the far end, at `now` (ms) and wall clock
    /// `ntp`. Malformed input is an error and changes nothing.
    pub fn on_packet(&mut self, now: u64, ntp: u64, data: &[u8]) -> Result<(), RtpError> {
        // check the whole compound packet before using any of it
        let mut at = 0;
        while at < data.len() {
            let (len, _, _) = header(&data[at..])?;
            at += len;
        }
        if at == 0 {
            return Err(RtpError::Truncated("RTCP"));
        }
        let mut at = 0;
        while at < data.len() {
            let (len, count, pt) = header(&data[at..])?;
            let p = &data[at..at + len];
            let blocks_from = match pt {
                200 if p.len() >= 28 => {
                    let mid = u32::from_be_bytes([p[10], p[11], p[12], p[13]]);
                    self.last_sr = Some((mid, now));
                    28
                }
                201 => 8,
                _ => len, // SDES, BYE, APP: nothing we need
            };
            let mut b = blocks_from;
            for _ in 0..count {
                if b + 24 > p.len() {
                    break;
                }
                let blk = &p[b..b + 24];
                if u32::from_be_bytes([blk[0], blk[1], blk[2], blk[3]]) == self.ssrc {
                    self.remote.fraction_lost = f64::from(blk[4]) / 256.0;
                    self.remote.cumulative_lost = u32::from_be_bytes([0, blk[5], blk[6], blk[7]]);
                    let lsr = u32::from_be_bytes([blk[16], blk[17], blk[18], blk[19]]);
                    let dlsr = u32::from_be_bytes([blk[20], blk[21], blk[22], blk[23]]);
                    if lsr != 0 {
                        let now_mid = (ntp >> 16) as u32;
                        // signed: on a short path the far end's DLSR, kept
                        // on a coarser clock than ours, can exceed the time
                        // that really passed, and the round trip comes out a
                        // little below zero; that is a round trip of ~0
                        let rtt = now_mid.wrapping_sub(lsr).wrapping_sub(dlsr) as i32;
                        // beyond 100 ms below zero or a minute above, it is
                        // a clock or peer error, not a measurement
                        if (-65_536 / 10..60 * 65_536).contains(&rtt) {
                            self.remote.rtt_ms = Some(f64::from(rtt.max(0)) * 1000.0 / 65_536.0);
                        }
                    }
                }
                b += 24;
            }
            at += len;
        }
        self.remote.reports += 1;
        Ok(())
    }
}

/// One RTCP header: the packet's length in bytes, its count field and
/// its payload type.
fn header(p: &[u8]) -> Result<(usize, usize, u8), RtpError> {
    if p.len() < 4 {
        return Err(RtpError::Truncated("RTCP header"));
    }
    if p[0] >> 6 != 2 {
        return Err(RtpError::Version(p[0] >> 6));
    }
    let len = (usize::from(u16::from_be_bytes([p[2], p[3]])) + 1) * 4;
    if len > p.len() {
        return Err(RtpError::Truncated("RTCP packet"));
    }
    Ok((len, usize::from(p[0] & 0x1F), p[1]))
}

struct Writer<'a> {
    out: &'a mut [u8],
    len: usize,
}

impl Writer<'_> {
    fn u8(&mut self, v: u8) {
        if let Some(b) = self.out.get_mut(self.len) {
            *b = v;
        }
        self.len += 1;
    }
    fn u32(&mut self, v: u32) {
        self.bytes(&v.to_be_bytes());
    }
    fn bytes(&mut self, v: &[u8]) {
        for &b in v {
            self.u8(b);
        }
    }
    fn header(&mut self, count: u8, pt: u8, words_after: usize) {
        self.u8(0x80 | count);
        self.u8(pt);
        self.bytes(&(words_after as u16).to_be_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rtp(seq: u16) -> RtpHeader {
        RtpHeader {
            pt: 0,
            marker: false,
            seq,
            ts: u32::from(seq) * 160,
            ssrc: 0xFEED,
        }
    }

    #[test]
    fn our_sender_report_reads_back_through_the_peers_eyes() {
        // we send 100 packets and receive 50 of 52 (two lost)
        let mut ours = Rtcp::new(0xABCD, "dialgate@test", 0);
        assert_eq!(ours.poll_timeout(), 2500);
        for k in 0..100u32 {
            ours.on_sent(k * 160, 160);
        }
        for seq in (1000u16..1052).filter(|s| *s != 1010 && *s != 1020) {
            ours.on_received(&rtp(seq), 1.5, 8000);
        }
        let ntp = ntp_from_unix_micros(1_700_000_000_000_000);
        let mut buf = [0u8; 512];
        let n = ours.report(2500, ntp, &mut buf);
        assert_eq!(n % 4, 0);
        assert_eq!(ours.poll_timeout(), 7500);
        assert_eq!(buf[1], 200, "a sender report");
        assert_eq!(buf[0] & 0x1F, 1, "one report block");
        assert_eq!(u32::from_be_bytes(buf[20..24].try_into().unwrap()), 100);
        // the block: 2 of 52 lost → 9/256; highest 1051; jitter 12 ts units
        assert_eq!(buf[32], (2 * 256 / 52) as u8);
        assert_eq!(u32::from_be_bytes([0, buf[33], buf[34], buf[35]]), 2);
        assert_eq!(u32::from_be_bytes(buf[36..40].try_into().unwrap()), 1051);
        assert_eq!(u32::from_be_bytes(buf[40..44].try_into().unwrap()), 12);
        // SDES with the CNAME follows
        assert_eq!(buf[53], 202);
        assert!(buf[..n].windows(13).any(|w| w == b"dialgate@test"));

        // The peer (another Rtcp) takes our SR, and 100 ms later reports
        // our stream back; we compute the round trip from it.
        let mut peer = Rtcp::new(0xFEED, "peer", 0);
        peer.on_packet(2520, ntp, &buf[..n]).unwrap();
        peer.on_received(
            &RtpHeader {
                ssrc: 0xABCD,
                ..rtp(1)
            },
            0.0,
            8000,
        );
        let mut reply = [0u8; 512];
        let m = peer.report(2620, ntp, &mut reply);
        assert_eq!(reply[1], 201, "the peer has sent nothing: receiver report");
        // it reaches us 20 ms after it left: 20 + 100 + 20 ms since our SR
        let later = ntp + (140u64 << 32) / 1000;
        ours.on_packet(2640, later, &reply[..m]).unwrap();
        let v = ours.remote();
        assert_eq!(v.reports, 1);
        let rtt = v.rtt_ms.unwrap();
        assert!((rtt - 40.0).abs() < 1.0, "{rtt}");

        // On loopback the report can come back sooner than its DLSR says
        // (the peer's clock is coarser): a round trip of zero, not none.
        let early = ntp + (99u64 << 32) / 1000;
        ours.on_packet(2621, early, &reply[..m]).unwrap();
        assert_eq!(ours.remote().rtt_ms, Some(0.0));
        // A report that makes no sense on any clock (120 ms short of its
        // own DLSR) leaves the last round trip as it was.
        ours.on_packet(2640, later, &reply[..m]).unwrap();
        let impossible = ntp - (20u64 << 32) / 1000;
        ours.on_packet(2641, impossible, &reply[..m]).unwrap();
        let rtt = ours.remote().rtt_ms.unwrap();
        assert!((rtt - 40.0).abs() < 1.0, "{rtt}");
    }

    #[test]
    fn sequence_numbers_wrap_into_cycles() {
        let mut r = Reception::default();
        for seq in [65_534u16, 65_535, 0, 1] {
            r.push(&rtp(seq));
        }
        assert_eq!(r.extended_max(), 65_536 + 1);
        assert_eq!(r.loss(), (0, 0));
    }

    #[test]
    fn malformed_rtcp_is_an_error_and_changes_nothing() {
        let mut r = Rtcp::new(1, "x", 0);
        for bad in [
            &b""[..],
            b"\x80",
            b"\x40\xc8\x00\x00",     // version 1
            b"\x80\xc8\x00\x09\x00", // claims 40 bytes
            b"\x81\xc9\x00\x01\x00\x00\x00\x01\x81\xc9\xff\xff",
        ] {
            assert!(r.on_packet(0, 0, bad).is_err(), "{bad:?}");
        }
        assert_eq!(r.remote(), RemoteView::default());
        // a receiver report that claims a block it does not carry is cut
        assert!(
            r.on_packet(0, 0, b"\x81\xc9\x00\x01\x00\x00\x00\x02")
                .is_ok()
        );
    }

    #[test]
    fn ntp_time_of_the_unix_epoch() {
        assert_eq!(ntp_from_unix_micros(0) >> 32, 2_208_988_800);
        assert_eq!(ntp_from_unix_micros(500_000) & 0xFFFF_FFFF, 1 << 31);
    }
}
