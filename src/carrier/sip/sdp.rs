//! SDP for SIP calls, both directions: reading the far end's description
//! (an answer to our offer, or an inbound caller's offer), writing ours,
//! and answering a re-INVITE's new offer (hold and resume, RFC 3264 §8.4).
//! Parsing and writing come from `rsiprtp`; the choices are ours. Pure
//! functions of their input: the signalling cores call them.

use std::net::{IpAddr, SocketAddr};

use rsiprtp::sdp::{Direction, MediaBuilder, MediaType, SdpBuilder, SessionDescription};

/// The voice codec of a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    /// G.711 μ-law, payload type 0.
    Pcmu,
    /// G.711 A-law, payload type 8.
    Pcma,
    /// Opus (`opus/48000/2`) at its dynamic payload type: 48 kHz RTP clock,
    /// 20 ms frames, decoded and resampled to 8 kHz at the boundary.
    Opus {
        /// The payload type.
        pt: u8,
    },
}

impl Codec {
    /// Its RTP payload type.
    pub fn payload_type(self) -> u8 {
        match self {
            Self::Pcmu => 0,
            Self::Pcma => 8,
            Self::Opus { pt } => pt,
        }
    }

    /// RTP timestamp units per 8 kHz sample (Opus counts at 48 kHz).
    pub fn clock_factor(self) -> u32 {
        match self {
            Self::Opus { .. } => 6,
            _ => 1,
        }
    }
}

/// The payload type we offer Opus at.
pub const OPUS_PT: u8 = 111;
/// The payload type we offer telephone-event at 48 kHz at (beside Opus).
pub const OPUS_EVENT_PT: u8 = 102;

/// What the far end's SDP gives us.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Negotiated {
    /// Where the far end wants RTP.
    pub addr: SocketAddr,
    /// The voice codec.
    pub codec: Codec,
    /// The telephone-event payload type, if accepted.
    pub dtmf_pt: Option<u8>,
    /// Its RTP clock, Hz (8000, or 48000 beside Opus).
    pub dtmf_clock: u32,
}

fn parse(sdp: &[u8]) -> Result<SessionDescription, String> {
    let text = std::str::from_utf8(sdp).map_err(|_| "SDP is not UTF-8".to_string())?;
    SessionDescription::parse(text).map_err(|e| format!("bad SDP: {e}"))
}

/// Reads the far end's SDP (the callee's answer, or an inbound caller's
/// offer): its first audio stream, the first of PCMU, PCMA and Opus it
/// lists (the offerer's preference), and telephone-event. None of them is
/// "no common codec".
pub fn negotiate(sdp: &[u8]) -> Result<Negotiated, String> {
    let sdp = parse(sdp)?;
    let audio = sdp
        .media
        .iter()
        .find(|m| m.media_type == MediaType::Audio && m.port != 0)
        .ok_or("SDP has no audio stream")?;
    let conn = audio
        .connection
        .as_ref()
        .or(sdp.connection.as_ref())
        .ok_or("SDP has no connection address")?;
    let ip: IpAddr = conn
        .address
        .parse()
        .map_err(|_| format!("SDP address `{}` is not an IP", conn.address))?;
    let maps = audio.rtpmaps();
    let opus = maps
        .iter()
        .find(|m| m.encoding.eq_ignore_ascii_case("opus") && m.clock_rate == 48_000)
        .map(|m| m.payload_type);
    let codec = audio
        .formats
        .iter()
        .find_map(|f| match f.as_str() {
            "0" => Some(Codec::Pcmu),
            "8" => Some(Codec::Pcma),
            f => opus
                .filter(|pt| f.parse::<u8>().ok() == Some(*pt))
                .map(|pt| Codec::Opus { pt }),
        })
        .ok_or("no common codec (PCMU, PCMA or Opus) in the SDP")?;
    // telephone-event at the voice codec's clock (RFC 4733 §2.1: events in
    // the audio's stream count time as the audio does), else any
    let clock = 8000 * codec.clock_factor();
    let events = || {
        maps.iter()
            .filter(|m| m.encoding.eq_ignore_ascii_case("telephone-event"))
    };
    let dtmf = events()
        .find(|m| m.clock_rate == clock)
        .or_else(|| events().next());
    let dtmf_pt = dtmf.map(|m| m.payload_type);
    let dtmf_clock = dtmf.map_or(8000, |m| m.clock_rate);
    Ok(Negotiated {
        addr: SocketAddr::new(ip, audio.port),
        codec,
        dtmf_pt,
        dtmf_clock,
    })
}

/// The direction the far end asks for in `sdp`: its audio stream's
/// attribute, else the session's, else sendrecv; a connection address of
/// 0.0.0.0 (RFC 2543 hold) is inactive.
pub fn direction(sdp: &[u8]) -> Result<Direction, String> {
    let sdp = parse(sdp)?;
    let audio = sdp
        .media
        .iter()
        .find(|m| m.media_type == MediaType::Audio)
        .ok_or("SDP has no audio stream")?;
    let held_address = audio
        .connection
        .as_ref()
        .or(sdp.connection.as_ref())
        .is_some_and(|c| c.address == "0.0.0.0");
    if held_address || audio.port == 0 {
        return Ok(Direction::Inactive);
    }
    let named = |name: &str| match name {
        "sendrecv" => Some(Direction::SendRecv),
        "sendonly" => Some(Direction::SendOnly),
        "recvonly" => Some(Direction::RecvOnly),
        "inactive" => Some(Direction::Inactive),
        _ => None,
    };
    Ok(audio
        .attributes
        .iter()
        .find_map(|a| named(&a.name))
        .or_else(|| sdp.attributes.iter().find_map(|a| named(&a.name)))
        .unwrap_or(Direction::SendRecv))
}

/// Our SDP: the offer of an outbound call or the answer of an inbound
/// one, written again (with a new version) when a re-INVITE changes the
/// direction.
#[derive(Debug, Clone)]
pub struct LocalSdp {
    ip: IpAddr,
    rtp_port: u16,
    /// None: offer both laws
    codec: Option<Codec>,
    dtmf_pt: Option<u8>,
    dtmf_clock: u32,
    /// `o=` session id: the same for the whole dialog (RFC 3264 §5)
    session_id: u64,
    version: u64,
    direction: Direction,
}

/// A fresh `o=` session id: unique enough (RFC 4566 asks for no more),
/// from the standard library's per-instance random hasher keys.
fn new_session_id() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish()
        >> 2
}

impl LocalSdp {
    /// An outbound call's offer: PCMU, PCMA, Opus 111 (after G.711, which
    /// the PSTN carries anyway), telephone-event 101.
    pub fn offer(ip: IpAddr, rtp_port: u16) -> Self {
        Self {
            ip,
            rtp_port,
            codec: None,
            dtmf_pt: Some(101),
            dtmf_clock: 8000,
            session_id: new_session_id(),
            version: 1,
            direction: Direction::SendRecv,
        }
    }

    /// An inbound call's answer to `neg`: its codec, and telephone-event at
    /// the payload type it offered.
    pub fn answer(ip: IpAddr, rtp_port: u16, neg: &Negotiated) -> Self {
        Self {
            ip,
            rtp_port,
            codec: Some(neg.codec),
            dtmf_pt: neg.dtmf_pt,
            dtmf_clock: neg.dtmf_clock,
            session_id: new_session_id(),
            version: 1,
            direction: Direction::SendRecv,
        }
    }

    /// The SDP as it stands.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut m = MediaBuilder::audio(self.rtp_port);
        m = match self.codec {
            None => m.pcmu().pcma().codec(OPUS_PT, "opus", 48_000, Some(2)),
            Some(Codec::Pcmu) => m.pcmu(),
            Some(Codec::Pcma) => m.pcma(),
            Some(Codec::Opus { pt }) => m.codec(pt, "opus", 48_000, Some(2)),
        };
        if let Some(pt) = self.dtmf_pt {
            m = match self.dtmf_clock {
                8000 => m.telephone_event(pt),
                clock => m.codec(pt, "telephone-event", clock, None).fmtp(pt, "0-16"),
            };
        }
        if self.codec.is_none() {
            // the offer: events at Opus's clock too, for an Opus answer
            m = m
                .codec(OPUS_EVENT_PT, "telephone-event", 48_000, None)
                .fmtp(OPUS_EVENT_PT, "0-16");
        }
        SdpBuilder::new(self.ip)
            .session_name("dialgate")
            .session_id(self.session_id)
            .session_version(self.version)
            .add_media(m.ptime(20).direction(self.direction))
            .build_string()
            .into_bytes()
    }

    /// Answers a re-INVITE's offer: the mirror of its direction (sendonly
    /// → recvonly: the far end holds us, we only listen), with a new
    /// version when it changes. An offer we cannot read keeps what we had.
    pub fn reanswer(&mut self, their_offer: &[u8]) -> Vec<u8> {
        if let Ok(d) = direction(their_offer) {
            let mirrored = match d {
                Direction::SendOnly => Direction::RecvOnly,
                Direction::RecvOnly => Direction::SendOnly,
                other => other,
            };
            if mirrored != self.direction {
                self.direction = mirrored;
                self.version += 1;
            }
        }
        self.to_bytes()
    }

    /// True while our direction lets us send RTP.
    pub fn sending(&self) -> bool {
        matches!(self.direction, Direction::SendRecv | Direction::SendOnly)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sdp(extra: &str, conn: &str) -> Vec<u8> {
        format!(
            "v=0\r\no=- 1 1 IN IP4 10.0.0.9\r\ns=-\r\nc=IN IP4 {conn}\r\nt=0 0\r\n\
             m=audio 6000 RTP/AVP 0 101\r\na=rtpmap:101 telephone-event/8000\r\n{extra}"
        )
        .into_bytes()
    }

    #[test]
    fn the_answer_picks_the_far_ends_codec_and_address() {
        let sdp = "v=0\r\no=- 1 1 IN IP4 10.0.0.9\r\ns=-\r\nc=IN IP4 10.0.0.9\r\nt=0 0\r\n\
                   m=audio 6000 RTP/AVP 8 101\r\na=rtpmap:8 PCMA/8000\r\na=rtpmap:101 telephone-event/8000\r\n";
        let n = negotiate(sdp.as_bytes()).unwrap();
        assert_eq!(n.codec, Codec::Pcma);
        assert_eq!(n.addr, "10.0.0.9:6000".parse().unwrap());
        assert_eq!(n.dtmf_pt, Some(101));
        let opus = "v=0\r\no=- 1 1 IN IP4 10.0.0.9\r\ns=-\r\nc=IN IP4 10.0.0.9\r\nt=0 0\r\n\
                    m=audio 6000 RTP/AVP 96 0\r\na=rtpmap:96 opus/48000/2\r\n";
        assert_eq!(
            negotiate(opus.as_bytes()).unwrap().codec,
            Codec::Opus { pt: 96 },
            "the offerer's first choice"
        );
        let g722 = "v=0\r\no=- 1 1 IN IP4 10.0.0.9\r\ns=-\r\nc=IN IP4 10.0.0.9\r\nt=0 0\r\n\
                    m=audio 6000 RTP/AVP 9 111\r\na=rtpmap:111 SILK/16000\r\n";
        assert!(
            negotiate(g722.as_bytes())
                .unwrap_err()
                .contains("no common codec")
        );
        assert!(negotiate(b"\xff\xfe").is_err());
        assert!(negotiate(b"v=0\r\nm=audio x\r\n").is_err());
        assert!(negotiate(b"").is_err());
    }

    #[test]
    fn directions_are_read_at_media_then_session_level() {
        assert_eq!(direction(&sdp("", "10.0.0.9")), Ok(Direction::SendRecv));
        assert_eq!(
            direction(&sdp("a=sendonly\r\n", "10.0.0.9")),
            Ok(Direction::SendOnly)
        );
        assert_eq!(
            direction(&sdp("a=inactive\r\n", "10.0.0.9")),
            Ok(Direction::Inactive)
        );
        // RFC 2543 hold
        assert_eq!(direction(&sdp("", "0.0.0.0")), Ok(Direction::Inactive));
        // session level
        let s = "v=0\r\no=- 1 1 IN IP4 10.0.0.9\r\ns=-\r\nc=IN IP4 10.0.0.9\r\nt=0 0\r\n\
                 a=sendonly\r\nm=audio 6000 RTP/AVP 0\r\n";
        assert_eq!(direction(s.as_bytes()), Ok(Direction::SendOnly));
        assert!(direction(b"nonsense").is_err());
    }

    #[test]
    fn hold_and_resume_mirror_the_direction_with_a_new_version() {
        let mut ours = LocalSdp::offer("10.0.0.1".parse().unwrap(), 4000);
        let first = String::from_utf8(ours.to_bytes()).unwrap();
        assert!(first.contains("a=sendrecv"), "{first}");
        assert!(
            first.contains("m=audio 4000 RTP/AVP 0 8 111 101"),
            "{first}"
        );
        assert!(first.contains("a=rtpmap:111 opus/48000/2"), "{first}");
        let held = String::from_utf8(ours.reanswer(&sdp("a=sendonly\r\n", "10.0.0.9"))).unwrap();
        assert!(held.contains("a=recvonly"), "{held}");
        assert!(!ours.sending());
        let o = |s: &str| s.lines().find(|l| l.starts_with("o=")).unwrap().to_string();
        assert_ne!(o(&first), o(&held), "a changed SDP has a new version");
        // the same hold again: same version (RFC 3264 §8)
        let again = String::from_utf8(ours.reanswer(&sdp("a=sendonly\r\n", "10.0.0.9"))).unwrap();
        assert_eq!(o(&held), o(&again));
        let resumed = String::from_utf8(ours.reanswer(&sdp("", "10.0.0.9"))).unwrap();
        assert!(resumed.contains("a=sendrecv"), "{resumed}");
        assert!(ours.sending());
        // unreadable: nothing changes
        ours.reanswer(b"garbage");
        assert!(ours.sending());
        assert_eq!(
            direction(&ours.reanswer(&sdp("a=inactive\r\n", "10.0.0.9"))),
            Ok(Direction::Inactive)
        );
    }

    #[test]
    fn events_follow_the_voice_codecs_clock() {
        let offer = |formats: &str| {
            format!(
                "v=0\r\no=- 1 1 IN IP4 10.0.0.9\r\ns=-\r\nc=IN IP4 10.0.0.9\r\nt=0 0\r\n\
                 m=audio 6000 RTP/AVP {formats}\r\na=rtpmap:111 opus/48000/2\r\n\
                 a=rtpmap:101 telephone-event/8000\r\na=rtpmap:102 telephone-event/48000\r\n"
            )
        };
        let opus = negotiate(offer("111 101 102").as_bytes()).unwrap();
        assert_eq!((opus.dtmf_pt, opus.dtmf_clock), (Some(102), 48_000));
        let g711 = negotiate(offer("0 101 102").as_bytes()).unwrap();
        assert_eq!((g711.dtmf_pt, g711.dtmf_clock), (Some(101), 8000));
        // an answer to an Opus offer names the 48 kHz events
        let ours = String::from_utf8(
            LocalSdp::answer("10.0.0.1".parse().unwrap(), 4000, &opus).to_bytes(),
        )
        .unwrap();
        assert!(
            ours.contains("a=rtpmap:102 telephone-event/48000"),
            "{ours}"
        );
        assert!(!ours.contains("telephone-event/8000"), "{ours}");
    }

    #[test]
    fn an_answer_keeps_the_offered_event_type() {
        let neg = negotiate(&sdp("", "10.0.0.9")).unwrap();
        let ours =
            String::from_utf8(LocalSdp::answer("10.0.0.1".parse().unwrap(), 4000, &neg).to_bytes())
                .unwrap();
        assert!(ours.contains("m=audio 4000 RTP/AVP 0 101"), "{ours}");
        assert!(negotiate(ours.as_bytes()).is_ok());
    }
}
