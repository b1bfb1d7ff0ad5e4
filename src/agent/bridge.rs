//! The agent bridge: a WebSocket client to the agent's URL that sends
//! `connected`, `start` (with the call's custom parameters), `media`, `dtmf`,
//! `mark`, `stop` and the `amd` extension exactly as Twilio would, and reads
//! back `media`, `mark`, `clear` and the `transcript` / `hangup` extensions.
//!
//! Audio toward the agent is μ-law 8 kHz, as from Twilio, unless the agent
//! asked for L16 at 16 or 24 kHz ([`AgentAudio`]): then `start` says
//! `audio/x-l16` at that rate, and media payloads are base64 of 16-bit
//! little-endian PCM (as `pcm16` in OpenAI's and Deepgram's WebSocket APIs).
//! The conversion happens here, at the boundary: the call session and the
//! carrier only ever see 8 kHz μ-law. The agent's L16 audio may come in any
//! size; it is resampled in whole 20 ms frames and the rest kept.

use std::collections::BTreeMap;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::audio::resample::Resampler;
use crate::audio::{AudioFrame, FRAME_SAMPLES, g711};
use crate::carrier::twilio::stream::{self, StreamError, StreamEvent};
use crate::detect::amd::AmdOutcome;

/// Errors talking to the agent.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BridgeError {
    /// The agent could not be reached in time.
    #[error("cannot reach the agent at {url}: {reason}")]
    Connect { url: String, reason: String },
    /// The WebSocket failed.
    #[error("agent WebSocket: {0}")]
    Ws(String),
    /// The agent sent something that is not the protocol.
    #[error("agent sent a bad message: {0}")]
    Protocol(#[from] StreamError),
}

/// The audio format an agent speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AgentAudio {
    /// μ-law at 8 kHz, as Twilio sends (the default).
    #[default]
    #[serde(rename = "mulaw_8000")]
    Mulaw8000,
    /// 16-bit little-endian PCM at 16 kHz.
    #[serde(rename = "l16_16000")]
    L16_16000,
    /// 16-bit little-endian PCM at 24 kHz.
    #[serde(rename = "l16_24000")]
    L16_24000,
}

impl AgentAudio {
    /// The `mediaFormat` of `start`: encoding and rate.
    pub fn media_format(self) -> (&'static str, u32) {
        match self {
            Self::Mulaw8000 => ("audio/x-mulaw", 8000),
            Self::L16_16000 => ("audio/x-l16", 16_000),
            Self::L16_24000 => ("audio/x-l16", 24_000),
        }
    }

    /// Its name in configuration (`mulaw_8000`, `l16_16000`, `l16_24000`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Mulaw8000 => "mulaw_8000",
            Self::L16_16000 => "l16_16000",
            Self::L16_24000 => "l16_24000",
        }
    }
}

impl std::str::FromStr for AgentAudio {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "mulaw_8000" => Ok(Self::Mulaw8000),
            "l16_16000" => Ok(Self::L16_16000),
            "l16_24000" => Ok(Self::L16_24000),
            other => Err(format!(
                "unknown agent audio `{other}`: mulaw_8000, l16_16000 or l16_24000"
            )),
        }
    }
}

/// L16 state of one link: a resampler each way and the agent's samples not
/// yet a whole frame. Sized once at connect.
struct L16 {
    up: Resampler,
    down: Resampler,
    /// 8 kHz → agent rate, one frame
    up_out: Vec<i16>,
    /// agent-rate samples waiting for a whole 20 ms frame
    pending: Vec<i16>,
    /// an odd byte left from the last payload
    odd: Option<u8>,
    /// the agent's bytes, decoded from base64
    bytes: Vec<u8>,
    /// wire bytes of one outgoing frame
    wire: Vec<u8>,
}

impl L16 {
    fn new(hz: u32) -> Result<Self, BridgeError> {
        let bad = |e: crate::audio::resample::ResampleError| BridgeError::Ws(e.to_string());
        let up = Resampler::new(8000, hz).map_err(bad)?;
        let down = Resampler::new(hz, 8000).map_err(bad)?;
        let n = up.output_len();
        Ok(Self {
            up_out: vec![0; n],
            pending: Vec::with_capacity(8 * n),
            odd: None,
            bytes: Vec::with_capacity(16 * 1024),
            wire: Vec::with_capacity(2 * n),
            up,
            down,
        })
    }
}

/// What the agent sent.
#[derive(Debug, Clone, PartialEq)]
pub enum AgentIn {
    /// Audio: the μ-law bytes are in [`AgentLink::media`].
    Media,
    /// A mark after the audio sent so far.
    Mark(String),
    /// Drop buffered audio.
    Clear,
    /// A transcript line.
    Transcript {
        /// `agent` or `user`.
        role: String,
        /// The words.
        text: String,
        /// Start, s.
        start: Option<f64>,
        /// End, s.
        end: Option<f64>,
    },
    /// The agent presses a digit (our extension: Twilio's own `dtmf`
    /// message, sent the other way).
    Dtmf(char),
    /// The agent hangs up.
    Hangup,
    /// The agent closed the stream.
    Closed,
}

/// One open agent stream.
pub struct AgentLink {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    stream_sid: String,
    seq: u64,
    chunk: u64,
    out: String,
    media: Vec<u8>,
    ulaw: [u8; FRAME_SAMPLES],
    l16: Option<L16>,
}

impl std::fmt::Debug for AgentLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentLink")
            .field("stream_sid", &self.stream_sid)
            .finish()
    }
}

impl AgentLink {
    /// Connects and sends `connected` and `start`.
    pub async fn connect(
        url: &str,
        call_sid: &str,
        params: &BTreeMap<String, String>,
        audio: AgentAudio,
        timeout: Duration,
    ) -> Result<Self, BridgeError> {
        let fail = |reason: String| BridgeError::Connect {
            url: url.to_string(),
            reason,
        };
        let (ws, _) = tokio::time::timeout(
            timeout,
            tokio_tungstenite::connect_async_with_config(url, Some(ws_config()), true),
        )
        .await
        .map_err(|_| fail(format!("no connection within {} ms", timeout.as_millis())))?
        .map_err(|e| fail(e.to_string()))?;
        let stream_sid = format!("MZ{:032x}", rand_u128());
        let mut link = Self {
            ws,
            stream_sid,
            seq: 0,
            chunk: 0,
            out: String::with_capacity(512),
            media: Vec::with_capacity(4096),
            ulaw: [0; FRAME_SAMPLES],
            l16: match audio {
                AgentAudio::Mulaw8000 => None,
                other => Some(L16::new(other.media_format().1)?),
            },
        };
        let (encoding, rate) = audio.media_format();
        link.send_text(r#"{"event":"connected","protocol":"Call","version":"1.0.0"}"#.to_string())
            .await?;
        link.seq += 1;
        let start = serde_json::json!({
            "event": "start",
            "sequenceNumber": link.seq.to_string(),
            "start": {
                "accountSid": "ACdialgate",
                "streamSid": link.stream_sid,
                "callSid": call_sid,
                "tracks": ["inbound"],
                "customParameters": params,
                "mediaFormat": {"encoding": encoding, "sampleRate": rate, "channels": 1}
            },
            "streamSid": link.stream_sid,
        });
        link.send_text(start.to_string()).await?;
        Ok(link)
    }

    async fn send_text(&mut self, text: String) -> Result<(), BridgeError> {
        self.ws
            .send(Message::text(text))
            .await
            .map_err(|e| BridgeError::Ws(e.to_string()))
    }

    /// Sends 20 ms of the callee's audio. The text is built in place; the
    /// one allocation left is the message buffer tungstenite takes over.
    pub async fn send_media(&mut self, frame: &AudioFrame) -> Result<(), BridgeError> {
        use std::fmt::Write;
        self.seq += 1;
        self.chunk += 1;
        let payload: &[u8] = match self.l16.as_mut() {
            None => {
                g711::ulaw_encode_into(&frame.pcm, &mut self.ulaw);
                &self.ulaw
            }
            Some(l) => {
                let n =
                    l.up.process(&frame.pcm, &mut l.up_out)
                        .map_err(|e| BridgeError::Ws(e.to_string()))?;
                l.wire.clear();
                for s in &l.up_out[..n] {
                    l.wire.extend_from_slice(&s.to_le_bytes());
                }
                &l.wire
            }
        };
        let mut out = std::mem::replace(&mut self.out, String::with_capacity(320));
        out.clear();
        let _ = write!(
            out,
            r#"{{"event":"media","sequenceNumber":"{}","media":{{"track":"inbound","chunk":"{}","timestamp":"{}","payload":""#,
            self.seq, self.chunk, frame.media_ms
        );
        base64::Engine::encode_string(
            &base64::engine::general_purpose::STANDARD,
            payload,
            &mut out,
        );
        let _ = write!(out, r#""}},"streamSid":"{}"}}"#, self.stream_sid);
        self.send_text(out).await
    }

    /// Sends a digit.
    pub async fn send_dtmf(&mut self, digit: char) -> Result<(), BridgeError> {
        self.seq += 1;
        let v = serde_json::json!({"event": "dtmf", "streamSid": self.stream_sid, "sequenceNumber": self.seq.to_string(),
                                   "dtmf": {"track": "inbound_track", "digit": digit.to_string()}});
        self.send_text(v.to_string()).await
    }

    /// Echoes a mark of the agent's: its audio has played.
    pub async fn send_mark(&mut self, name: &str) -> Result<(), BridgeError> {
        self.seq += 1;
        let v = serde_json::json!({"event": "mark", "sequenceNumber": self.seq.to_string(),
                                   "streamSid": self.stream_sid, "mark": {"name": name}});
        self.send_text(v.to_string()).await
    }

    /// Sends the AMD decision (extension; Twilio-only agents ignore it).
    pub async fn send_amd(
        &mut self,
        answered_by: AmdOutcome,
        decision_ms: u64,
    ) -> Result<(), BridgeError> {
        let v = serde_json::json!({"event": "amd", "streamSid": self.stream_sid,
                                   "amd": {"answered_by": answered_by.as_str(), "decision_ms": decision_ms}});
        self.send_text(v.to_string()).await
    }

    /// Sends `stop` and closes.
    pub async fn stop(&mut self, call_sid: &str) {
        self.seq += 1;
        let v = serde_json::json!({"event": "stop", "sequenceNumber": self.seq.to_string(), "streamSid": self.stream_sid,
                                   "stop": {"accountSid": "ACdialgate", "callSid": call_sid}});
        let _ = self.send_text(v.to_string()).await;
        let _ = self.ws.close(None).await;
    }

    /// The μ-law bytes of the last [`AgentIn::Media`].
    pub fn media(&self) -> &[u8] {
        &self.media
    }

    /// The next message from the agent.
    pub async fn recv(&mut self) -> Result<AgentIn, BridgeError> {
        loop {
            let msg = match self.ws.next().await {
                None => return Ok(AgentIn::Closed),
                Some(Err(e)) => return Err(BridgeError::Ws(e.to_string())),
                Some(Ok(m)) => m,
            };
            let text = match msg {
                Message::Text(t) => t,
                Message::Close(_) => return Ok(AgentIn::Closed),
                _ => continue,
            };
            return Ok(match stream::parse(text.as_str())? {
                StreamEvent::Media { payload, .. } => {
                    let max = payload.len() / 4 * 3 + 3;
                    match self.l16.as_mut() {
                        None => {
                            self.media.resize(max, 0);
                            let n = stream::decode_payload(&payload, &mut self.media)?;
                            self.media.truncate(n);
                        }
                        Some(l) => {
                            l.bytes.resize(max, 0);
                            let n = stream::decode_payload(&payload, &mut l.bytes)?;
                            l16_to_ulaw(l, n, &mut self.media)
                                .map_err(|e| BridgeError::Ws(e.to_string()))?;
                        }
                    }
                    AgentIn::Media
                }
                StreamEvent::Mark { name, .. } => AgentIn::Mark(name.into_owned()),
                StreamEvent::Clear => AgentIn::Clear,
                StreamEvent::Transcript {
                    role,
                    text,
                    start,
                    end,
                } => AgentIn::Transcript {
                    role: role.into_owned(),
                    text: text.into_owned(),
                    start,
                    end,
                },
                StreamEvent::Hangup => AgentIn::Hangup,
                StreamEvent::Dtmf { digit, .. } => AgentIn::Dtmf(digit),
                other => {
                    tracing::debug!(?other, "ignoring agent message");
                    continue;
                }
            });
        }
    }
}

/// Turns the agent's `n` L16 bytes in `l.bytes` into 8 kHz μ-law in `media`
/// (whole 20 ms frames; the remainder waits for the next payload).
fn l16_to_ulaw(
    l: &mut L16,
    n: usize,
    media: &mut Vec<u8>,
) -> Result<(), crate::audio::resample::ResampleError> {
    media.clear();
    let mut bytes = &l.bytes[..n];
    if let Some(lo) = l.odd.take()
        && let Some((&hi, rest)) = bytes.split_first()
    {
        l.pending.push(i16::from_le_bytes([lo, hi]));
        bytes = rest;
    }
    let mut pairs = bytes.chunks_exact(2);
    for p in pairs.by_ref() {
        l.pending.push(i16::from_le_bytes([p[0], p[1]]));
    }
    if let [b] = pairs.remainder() {
        l.odd = Some(*b);
    }
    let need = l.down.input_len();
    let mut frame = [0i16; FRAME_SAMPLES];
    let mut ulaw = [0u8; FRAME_SAMPLES];
    let mut used = 0;
    while l.pending.len() - used >= need {
        let k = l.down.process(&l.pending[used..used + need], &mut frame)?;
        g711::ulaw_encode_into(&frame[..k], &mut ulaw[..k]);
        media.extend_from_slice(&ulaw[..k]);
        used += need;
    }
    l.pending.drain(..used);
    Ok(())
}

/// WebSocket buffers sized for Media Streams frames (under 1 KiB), not the
/// 128 KiB default, which per call would dwarf everything else.
pub fn ws_config() -> tokio_tungstenite::tungstenite::protocol::WebSocketConfig {
    tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
        .read_buffer_size(4 * 1024)
        .write_buffer_size(8 * 1024)
        .max_message_size(Some(crate::carrier::twilio::stream::MAX_MESSAGE_BYTES))
}

/// 128 random bits for stream ids (not security-sensitive): the clock and
/// the address of a stack value, mixed.
pub fn rand_u128() -> u128 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let local = 0u8;
    let addr = std::ptr::addr_of!(local) as usize as u128;
    let mut x = t ^ (addr << 64) ^ 0x9E37_79B9_7F4A_7C15_F39C_C060_5CED_C834;
    x ^= x >> 67;
    x = x.wrapping_mul(0x2545_F491_4F6C_DD1D_9E37_79B9_7F4A_7C15);
    x ^ (x >> 61)
}
