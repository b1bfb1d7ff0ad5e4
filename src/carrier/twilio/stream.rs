//! The Twilio Media Streams wire format (JSON text frames over WebSocket),
//! both directions: dialgate reads it from Twilio and writes it to Twilio,
//! and speaks it *as if it were Twilio* to agents (the agent bridge), so one
//! codec serves both boundaries.
//!
//! Sans-IO: [`parse`] turns one text frame into a [`StreamEvent`] borrowing
//! from the frame (the base64 payload is not copied), [`decode_payload`]
//! writes μ-law bytes into a caller's buffer, and the `encode_*` functions
//! write outbound frames into a reused `String`. Nothing here allocates per
//! media frame except the parse of the JSON itself.
//!
//! Everything arriving is untrusted: oversized frames, malformed JSON,
//! missing fields, numbers that are not numbers and bad base64 are errors
//! that say what was wrong, never panics.

use std::borrow::Cow;
use std::collections::BTreeMap;

use base64::Engine as _;
use serde::Deserialize;

/// Largest text frame accepted. A 20 ms media frame is ~300 bytes; a `start`
/// with many custom parameters a few KB. Anything near a megabyte is abuse.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;

/// Errors parsing a Media Streams frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StreamError {
    /// The frame is larger than [`MAX_MESSAGE_BYTES`].
    #[error("message of {len} bytes exceeds the {max}-byte limit")]
    TooLarge { len: usize, max: usize },
    /// Not JSON, or not an object with an `event`.
    #[error("malformed JSON: {0}")]
    Json(String),
    /// A known event lacks a field it must have.
    #[error("`{event}` event without `{field}`")]
    Missing {
        event: &'static str,
        field: &'static str,
    },
    /// A field has the wrong form.
    #[error("`{event}` event: {field} {reason}")]
    Invalid {
        event: &'static str,
        field: &'static str,
        reason: String,
    },
    /// An event name we do not know (Twilio may add some; callers log it).
    #[error("unknown event {0:?}")]
    UnknownEvent(String),
    /// The media payload is not base64, or decodes to more than fits.
    #[error("media payload: {0}")]
    Payload(String),
}

/// The audio format announced in `start.mediaFormat`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct MediaFormat {
    /// `audio/x-mulaw` from Twilio; agents may ask for `audio/x-l16`.
    pub encoding: String,
    /// Hz.
    #[serde(rename = "sampleRate")]
    pub sample_rate: u32,
    /// Channel count.
    pub channels: u16,
}

/// The `start` event's content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Start {
    /// `AC…`
    pub account_sid: String,
    /// `MZ…`
    pub stream_sid: String,
    /// `CA…`
    pub call_sid: String,
    /// Tracks carried (`inbound`, `outbound`).
    pub tracks: Vec<String>,
    /// `<Parameter>`s from the TwiML, in name order.
    pub custom_parameters: BTreeMap<String, String>,
    /// The audio format.
    pub media_format: MediaFormat,
}

/// One parsed frame.
#[derive(Debug, Clone, PartialEq)]
pub enum StreamEvent<'a> {
    /// First frame of a stream (no streamSid).
    Connected {
        /// `Call`.
        protocol: &'a str,
        /// `1.0.0`.
        version: &'a str,
    },
    /// The stream's metadata.
    Start {
        /// Sequence number.
        seq: Option<u64>,
        /// The content.
        start: Box<Start>,
    },
    /// Audio. From Twilio it carries track, chunk and timestamp; toward
    /// Twilio only the payload.
    Media {
        /// Sequence number (Twilio → us).
        seq: Option<u64>,
        /// Stream the frame belongs to.
        stream_sid: Option<&'a str>,
        /// `inbound` or `outbound`.
        track: Option<&'a str>,
        /// Chunk counter, from 1.
        chunk: Option<u64>,
        /// Milliseconds since the stream started.
        timestamp_ms: Option<u64>,
        /// Base64 μ-law (or L16 toward an agent that asked for it);
        /// borrowed from the frame unless the sender escaped a `/`.
        payload: Cow<'a, str>,
    },
    /// A DTMF digit pressed by the callee.
    Dtmf {
        /// Sequence number.
        seq: Option<u64>,
        /// The digit.
        digit: char,
    },
    /// A mark: ours echoed back once played, or an agent's to be echoed.
    Mark {
        /// Sequence number.
        seq: Option<u64>,
        /// The mark's name.
        name: Cow<'a, str>,
    },
    /// Drop buffered audio (toward Twilio, or from an agent).
    Clear,
    /// The stream ended.
    Stop {
        /// Sequence number.
        seq: Option<u64>,
    },
    /// Extension, agent → gateway: a transcript line (a conversation turn).
    Transcript {
        /// `agent` or `user`.
        role: Cow<'a, str>,
        /// What was said.
        text: Cow<'a, str>,
        /// Start, seconds from the stream start, if given.
        start: Option<f64>,
        /// End, if given.
        end: Option<f64>,
    },
    /// Extension, agent → gateway: the agent hangs up.
    Hangup,
    /// Extension, gateway → agent: the AMD decision.
    Amd {
        /// `human`, `machine_start`, …
        answered_by: Cow<'a, str>,
        /// Decision time, ms from answer.
        decision_ms: u64,
    },
}

#[derive(Deserialize)]
struct Raw<'a> {
    #[serde(borrow)]
    event: Option<&'a str>,
    #[serde(rename = "sequenceNumber", borrow)]
    sequence_number: Option<&'a str>,
    #[serde(rename = "streamSid", borrow)]
    stream_sid: Option<&'a str>,
    #[serde(borrow)]
    protocol: Option<&'a str>,
    #[serde(borrow)]
    version: Option<&'a str>,
    start: Option<RawStart>,
    #[serde(borrow)]
    media: Option<RawMedia<'a>>,
    #[serde(borrow)]
    dtmf: Option<RawDtmf<'a>>,
    #[serde(borrow)]
    mark: Option<RawMark<'a>>,
    #[serde(borrow)]
    transcript: Option<RawTranscript<'a>>,
    #[serde(borrow)]
    amd: Option<RawAmd<'a>>,
}

#[derive(Deserialize)]
struct RawStart {
    #[serde(rename = "accountSid", default)]
    account_sid: String,
    #[serde(rename = "streamSid", default)]
    stream_sid: String,
    #[serde(rename = "callSid", default)]
    call_sid: String,
    #[serde(default)]
    tracks: Vec<String>,
    #[serde(rename = "customParameters", default)]
    custom_parameters: BTreeMap<String, String>,
    #[serde(rename = "mediaFormat")]
    media_format: Option<MediaFormat>,
}

#[derive(Deserialize)]
struct RawMedia<'a> {
    #[serde(borrow)]
    track: Option<&'a str>,
    #[serde(borrow)]
    chunk: Option<&'a str>,
    #[serde(borrow)]
    timestamp: Option<&'a str>,
    #[serde(borrow)]
    payload: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct RawDtmf<'a> {
    #[serde(borrow)]
    digit: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct RawMark<'a> {
    #[serde(borrow)]
    name: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct RawTranscript<'a> {
    #[serde(borrow)]
    role: Option<Cow<'a, str>>,
    #[serde(borrow)]
    text: Option<Cow<'a, str>>,
    start: Option<f64>,
    end: Option<f64>,
}

#[derive(Deserialize)]
struct RawAmd<'a> {
    #[serde(borrow)]
    answered_by: Option<Cow<'a, str>>,
    decision_ms: Option<u64>,
}

/// Twilio sends numbers as strings ("4"); accept both forms.
fn number(
    event: &'static str,
    field: &'static str,
    v: Option<&str>,
) -> Result<Option<u64>, StreamError> {
    match v {
        None => Ok(None),
        Some(s) => s
            .trim()
            .parse::<u64>()
            .map(Some)
            .map_err(|_| StreamError::Invalid {
                event,
                field,
                reason: format!("{s:?} is not a whole number"),
            }),
    }
}

/// Parses one text frame.
pub fn parse(text: &str) -> Result<StreamEvent<'_>, StreamError> {
    if text.len() > MAX_MESSAGE_BYTES {
        return Err(StreamError::TooLarge {
            len: text.len(),
            max: MAX_MESSAGE_BYTES,
        });
    }
    let raw: Raw<'_> = serde_json::from_str(text).map_err(|e| StreamError::Json(e.to_string()))?;
    let event = raw
        .event
        .ok_or_else(|| StreamError::Json("no `event` field".into()))?;
    Ok(match event {
        "connected" => StreamEvent::Connected {
            protocol: raw.protocol.unwrap_or(""),
            version: raw.version.unwrap_or(""),
        },
        "start" => {
            let seq = number("start", "sequenceNumber", raw.sequence_number)?;
            let s = raw.start.ok_or(StreamError::Missing {
                event: "start",
                field: "start",
            })?;
            let media_format = s.media_format.ok_or(StreamError::Missing {
                event: "start",
                field: "start.mediaFormat",
            })?;
            let stream_sid = if s.stream_sid.is_empty() {
                raw.stream_sid.unwrap_or_default().to_string()
            } else {
                s.stream_sid
            };
            if stream_sid.is_empty() {
                return Err(StreamError::Missing {
                    event: "start",
                    field: "streamSid",
                });
            }
            StreamEvent::Start {
                seq,
                start: Box::new(Start {
                    account_sid: s.account_sid,
                    stream_sid,
                    call_sid: s.call_sid,
                    tracks: s.tracks,
                    custom_parameters: s.custom_parameters,
                    media_format,
                }),
            }
        }
        "media" => {
            let m = raw.media.ok_or(StreamError::Missing {
                event: "media",
                field: "media",
            })?;
            StreamEvent::Media {
                seq: number("media", "sequenceNumber", raw.sequence_number)?,
                stream_sid: raw.stream_sid,
                track: m.track,
                chunk: number("media", "media.chunk", m.chunk)?,
                timestamp_ms: number("media", "media.timestamp", m.timestamp)?,
                payload: m.payload.ok_or(StreamError::Missing {
                    event: "media",
                    field: "media.payload",
                })?,
            }
        }
        "dtmf" => {
            let d = raw.dtmf.and_then(|d| d.digit).ok_or(StreamError::Missing {
                event: "dtmf",
                field: "dtmf.digit",
            })?;
            let mut chars = d.chars();
            let digit = match (chars.next(), chars.next()) {
                (Some(c), None) if c.is_ascii_digit() || "*#ABCDabcd".contains(c) => {
                    c.to_ascii_uppercase()
                }
                _ => {
                    return Err(StreamError::Invalid {
                        event: "dtmf",
                        field: "dtmf.digit",
                        reason: format!("{:?} is not one of 0-9 * # A-D", d.as_ref()),
                    });
                }
            };
            StreamEvent::Dtmf {
                seq: number("dtmf", "sequenceNumber", raw.sequence_number)?,
                digit,
            }
        }
        "mark" => StreamEvent::Mark {
            seq: number("mark", "sequenceNumber", raw.sequence_number)?,
            name: raw.mark.and_then(|m| m.name).ok_or(StreamError::Missing {
                event: "mark",
                field: "mark.name",
            })?,
        },
        "clear" => StreamEvent::Clear,
        "stop" => StreamEvent::Stop {
            seq: number("stop", "sequenceNumber", raw.sequence_number)?,
        },
        "transcript" => {
            let t = raw.transcript.ok_or(StreamError::Missing {
                event: "transcript",
                field: "transcript",
            })?;
            let role = t.role.ok_or(StreamError::Missing {
                event: "transcript",
                field: "transcript.role",
            })?;
            if role != "agent" && role != "user" {
                return Err(StreamError::Invalid {
                    event: "transcript",
                    field: "transcript.role",
                    reason: format!("{role:?} is neither agent nor user"),
                });
            }
            StreamEvent::Transcript {
                role,
                text: t.text.ok_or(StreamError::Missing {
                    event: "transcript",
                    field: "transcript.text",
                })?,
                start: t.start,
                end: t.end,
            }
        }
        "hangup" => StreamEvent::Hangup,
        "amd" => {
            let a = raw.amd.ok_or(StreamError::Missing {
                event: "amd",
                field: "amd",
            })?;
            StreamEvent::Amd {
                answered_by: a.answered_by.ok_or(StreamError::Missing {
                    event: "amd",
                    field: "amd.answered_by",
                })?,
                decision_ms: a.decision_ms.unwrap_or(0),
            }
        }
        other => return Err(StreamError::UnknownEvent(other.chars().take(64).collect())),
    })
}

/// Decodes a base64 payload into `out`; returns the bytes written. `out`
/// must hold the decoded size (3/4 of the payload's length).
pub fn decode_payload(payload: &str, out: &mut [u8]) -> Result<usize, StreamError> {
    let padding = payload
        .bytes()
        .rev()
        .take_while(|&b| b == b'=')
        .count()
        .min(2);
    let max = (payload.len() / 4 * 3).saturating_sub(padding);
    if max > out.len() {
        return Err(StreamError::Payload(format!(
            "{} base64 characters decode to up to {max} bytes, buffer holds {}",
            payload.len(),
            out.len()
        )));
    }
    base64::engine::general_purpose::STANDARD
        .decode_slice(payload, out)
        .map_err(|e| StreamError::Payload(e.to_string()))
}

/// Appends base64 of `bytes` to `out`.
fn push_base64(out: &mut String, bytes: &[u8]) {
    base64::engine::general_purpose::STANDARD.encode_string(bytes, out);
}

/// Writes an outbound `media` frame (μ-law bytes) into `out` (cleared first).
pub fn encode_media(out: &mut String, stream_sid: &str, audio: &[u8]) {
    out.clear();
    out.push_str(r#"{"event":"media","streamSid":"#);
    push_json_str(out, stream_sid);
    out.push_str(r#","media":{"payload":""#);
    push_base64(out, audio);
    out.push_str(r#""}}"#);
}

/// Writes a `mark` frame.
pub fn encode_mark(out: &mut String, stream_sid: &str, name: &str) {
    out.clear();
    out.push_str(r#"{"event":"mark","streamSid":"#);
    push_json_str(out, stream_sid);
    out.push_str(r#","mark":{"name":"#);
    push_json_str(out, name);
    out.push_str("}}");
}

/// Writes a `clear` frame.
pub fn encode_clear(out: &mut String, stream_sid: &str) {
    out.clear();
    out.push_str(r#"{"event":"clear","streamSid":"#);
    push_json_str(out, stream_sid);
    out.push('}');
}

fn push_json_str(out: &mut String, s: &str) {
    // serde_json's escaping, without an intermediate allocation for the
    // common case of plain ASCII identifiers.
    if s.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
    {
        out.push('"');
        out.push_str(s);
        out.push('"');
    } else {
        out.push_str(&serde_json::Value::from(s).to_string());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const START: &str = r#"{"event":"start","sequenceNumber":"1","start":{"accountSid":"AC123","streamSid":"MZ456","callSid":"CA789","tracks":["inbound"],"customParameters":{"call_queue_id":"q1","mode":"conversation"},"mediaFormat":{"encoding":"audio/x-mulaw","sampleRate":8000,"channels":1}},"streamSid":"MZ456"}"#;

    #[test]
    fn every_documented_message_parses() {
        assert_eq!(
            parse(r#"{"event":"connected","protocol":"Call","version":"1.0.0"}"#).unwrap(),
            StreamEvent::Connected {
                protocol: "Call",
                version: "1.0.0"
            }
        );
        match parse(START).unwrap() {
            StreamEvent::Start { seq, start } => {
                assert_eq!(seq, Some(1));
                assert_eq!(start.call_sid, "CA789");
                assert_eq!(start.stream_sid, "MZ456");
                assert_eq!(start.custom_parameters["call_queue_id"], "q1");
                assert_eq!(start.media_format.sample_rate, 8000);
            }
            other => panic!("{other:?}"),
        }
        let media = r#"{"event":"media","sequenceNumber":"4","media":{"track":"inbound","chunk":"2","timestamp":"5","payload":"//8A"},"streamSid":"MZ456"}"#;
        assert_eq!(
            parse(media).unwrap(),
            StreamEvent::Media {
                seq: Some(4),
                stream_sid: Some("MZ456"),
                track: Some("inbound"),
                chunk: Some(2),
                timestamp_ms: Some(5),
                payload: Cow::Borrowed("//8A")
            }
        );
        assert_eq!(
            parse(r#"{"event":"dtmf","streamSid":"MZ","sequenceNumber":"5","dtmf":{"track":"inbound_track","digit":"1"}}"#).unwrap(),
            StreamEvent::Dtmf { seq: Some(5), digit: '1' }
        );
        assert_eq!(
            parse(r#"{"event":"mark","sequenceNumber":"4","streamSid":"MZ","mark":{"name":"x"}}"#)
                .unwrap(),
            StreamEvent::Mark {
                seq: Some(4),
                name: Cow::Borrowed("x")
            }
        );
        assert_eq!(
            parse(r#"{"event":"stop","sequenceNumber":"5","stop":{"accountSid":"AC","callSid":"CA"},"streamSid":"MZ"}"#).unwrap(),
            StreamEvent::Stop { seq: Some(5) }
        );
        assert_eq!(
            parse(r#"{"event":"clear","streamSid":"MZ"}"#).unwrap(),
            StreamEvent::Clear
        );
        assert_eq!(parse(r#"{"event":"hangup"}"#).unwrap(), StreamEvent::Hangup);
        match parse(r#"{"event":"transcript","transcript":{"role":"user","text":"hi \"you\"","start":0.5,"end":0.9}}"#).unwrap() {
            StreamEvent::Transcript { role, text, start, end } => {
                assert_eq!((role.as_ref(), text.as_ref()), ("user", "hi \"you\""));
                assert_eq!((start, end), (Some(0.5), Some(0.9)));
            }
            other => panic!("{other:?}"),
        }
        match parse(r#"{"event":"amd","amd":{"answered_by":"human","decision_ms":640}}"#).unwrap() {
            StreamEvent::Amd {
                answered_by,
                decision_ms,
            } => assert_eq!((answered_by.as_ref(), decision_ms), ("human", 640)),
            other => panic!("{other:?}"),
        }
        // a payload whose '/' the sender escaped still decodes
        match parse(r#"{"event":"media","media":{"payload":"\/\/8A"}}"#).unwrap() {
            StreamEvent::Media { payload, .. } => assert_eq!(payload, "//8A"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn outbound_frames_round_trip() {
        let mut s = String::new();
        encode_media(&mut s, "MZ1", &[0xFF; 160]);
        let StreamEvent::Media {
            payload,
            stream_sid,
            ..
        } = parse(&s).unwrap()
        else {
            panic!("{s}")
        };
        assert_eq!(stream_sid, Some("MZ1"));
        let mut buf = [0u8; 160];
        assert_eq!(decode_payload(&payload, &mut buf).unwrap(), 160);
        assert_eq!(buf, [0xFF; 160]);
        encode_mark(&mut s, "MZ1", "utterance \"3\"");
        match parse(&s).unwrap() {
            StreamEvent::Mark { name, .. } => assert_eq!(name, "utterance \"3\""),
            other => panic!("{other:?}"),
        }
        encode_clear(&mut s, "MZ1");
        assert_eq!(parse(&s).unwrap(), StreamEvent::Clear);
    }

    #[test]
    fn malformed_input_is_an_error_with_a_reason() {
        let cases: &[(&str, &str)] = &[
            ("", "malformed JSON"),
            ("not json", "malformed JSON"),
            ("[1,2,3]", "malformed JSON"),
            (r#"{"foo":1}"#, "no `event`"),
            (
                r#"{"event":"media","sequenceNumber":"4"}"#,
                "without `media`",
            ),
            (
                r#"{"event":"media","media":{"payload":"AA=="},"sequenceNumber":"four"}"#,
                "not a whole number",
            ),
            (
                r#"{"event":"media","media":{"chunk":"x","payload":"AA=="}}"#,
                "media.chunk",
            ),
            (
                r#"{"event":"media","media":{"track":"inbound"}}"#,
                "media.payload",
            ),
            (
                r#"{"event":"start","start":{"streamSid":"MZ"}}"#,
                "mediaFormat",
            ),
            (
                r#"{"event":"start","start":{"mediaFormat":{"encoding":"audio/x-mulaw","sampleRate":8000,"channels":1}}}"#,
                "streamSid",
            ),
            (r#"{"event":"dtmf","dtmf":{"digit":"12"}}"#, "not one of"),
            (r#"{"event":"dtmf","dtmf":{}}"#, "dtmf.digit"),
            (r#"{"event":"mark","mark":{}}"#, "mark.name"),
            (
                r#"{"event":"transcript","transcript":{"role":"robot","text":"x"}}"#,
                "neither agent nor user",
            ),
            (r#"{"event":"telepathy"}"#, "unknown event"),
            (r#"{"event":5}"#, "malformed JSON"),
        ];
        for (text, want) in cases {
            let e = parse(text).unwrap_err().to_string();
            assert!(e.contains(want), "{text}: {e}");
        }
        let huge = format!(
            r#"{{"event":"media","media":{{"payload":"{}"}}}}"#,
            "A".repeat(1 << 20)
        );
        assert!(matches!(parse(&huge), Err(StreamError::TooLarge { .. })));
        let mut buf = [0u8; 160];
        assert!(decode_payload("%%%%", &mut buf).is_err());
        assert!(decode_payload(&"A".repeat(400), &mut buf).is_err());
        // every prefix of a real frame: an error or an event, never a panic
        for n in 0..START.len() {
            let _ = parse(&START[..n]);
        }
    }
}
