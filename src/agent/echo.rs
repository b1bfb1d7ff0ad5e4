//! `dialgate agent echo`: a minimal agent that speaks the bridge protocol.
//! On `start` it says "Hello." (Allison Smith's Asterisk prompt, CC-BY-SA-3.0,
//! embedded), marks the end of it, then echoes whatever it hears. In
//! `voicemail` mode it says its prompt and hangs up once the mark comes
//! back. It also sends transcript events, so the conversation has turns.
//! Streams started with a `loadtest` parameter get no prompt, only the echo.
//! In L16 (`audio/x-l16` in `start`) the prompt is sent at that rate; the
//! echo returns bytes as they came, so it works in any format.
//! Users point a Twilio number at dialgate with it to check their set-up;
//! the tests use it as the agent.

use std::net::SocketAddr;

use axum::Router;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::response::Response;
use axum::routing::get;
use base64::Engine as _;

use crate::audio::wav::WavReader;
use crate::audio::{FRAME_SAMPLES, g711};
use crate::carrier::twilio::stream::{self, StreamEvent};

/// The prompt, embedded (8 kHz PCM16 WAV).
const PROMPT: &[u8] = include_bytes!("../../fixtures/speech/hello.wav");
/// The mark placed after the prompt.
pub const PROMPT_MARK: &str = "prompt-done";

/// The prompt as 20 ms μ-law frames.
pub fn prompt_frames() -> Vec<[u8; FRAME_SAMPLES]> {
    let mut frames = Vec::new();
    // The embedded file is known-good; a failure would be a build defect.
    let Ok(mut r) = WavReader::new(PROMPT) else {
        return frames;
    };
    while let Ok(Some(f)) = r.next_frame() {
        let mut u = [0u8; FRAME_SAMPLES];
        g711::ulaw_encode_into(&f.pcm, &mut u);
        frames.push(u);
    }
    frames
}

/// The prompt as little-endian L16 frames at `hz` (for agents' L16 mode);
/// empty if the rate is one the resampler does not do.
fn prompt_l16(prompt: &[[u8; FRAME_SAMPLES]], hz: u32) -> Vec<Vec<u8>> {
    let Ok(mut up) = crate::audio::resample::Resampler::new(8000, hz) else {
        return Vec::new();
    };
    let mut out = vec![0i16; up.output_len()];
    let mut pcm = [0i16; FRAME_SAMPLES];
    prompt
        .iter()
        .filter_map(|f| {
            for (p, &b) in pcm.iter_mut().zip(f) {
                *p = g711::ulaw_decode(b);
            }
            let n = up.process(&pcm, &mut out).ok()?;
            Some(out[..n].iter().flat_map(|s| s.to_le_bytes()).collect())
        })
        .collect()
}

fn media(stream_sid: &str, bytes: &[u8]) -> String {
    let mut s = String::new();
    stream::encode_media(&mut s, stream_sid, bytes);
    s
}

async fn session(mut ws: WebSocket) {
    let mut stream_sid = String::new();
    let mut voicemail = false;
    let prompt = prompt_frames();
    let mut buf = vec![0u8; 4096];
    while let Some(Ok(msg)) = ws.recv().await {
        let Message::Text(text) = msg else {
            if matches!(msg, Message::Close(_)) {
                break;
            }
            continue;
        };
        let reply: Vec<String> = match stream::parse(text.as_str()) {
            Ok(StreamEvent::Start { start, .. }) => {
                stream_sid = start.stream_sid.clone();
                voicemail = start.custom_parameters.get("mode").is_some_and(|m| m == "voicemail");
                // A load test measures the gateway's own latency: a prompt
                // would queue every echo behind 0.7 s of paced audio.
                if start.custom_parameters.contains_key("loadtest") {
                    continue;
                }
                let l16_hz = (start.media_format.encoding == "audio/x-l16")
                    .then_some(start.media_format.sample_rate);
                let mut out: Vec<String> = match l16_hz {
                    None => prompt.iter().map(|f| media(&stream_sid, f)).collect(),
                    Some(hz) => prompt_l16(&prompt, hz)
                        .iter()
                        .map(|f| media(&stream_sid, f))
                        .collect(),
                };
                let mut mark = String::new();
                stream::encode_mark(&mut mark, &stream_sid, PROMPT_MARK);
                out.push(mark);
                out.push(
                    serde_json::json!({"event": "transcript", "transcript": {"role": "agent", "text": "Hello.", "start": 0.0, "end": 0.6}})
                        .to_string(),
                );
                out
            }
            Ok(StreamEvent::Media { payload, .. }) => {
                if voicemail {
                    continue;
                }
                match stream::decode_payload(&payload, &mut buf) {
                    Ok(n) => vec![media(&stream_sid, &buf[..n])],
                    Err(_) => continue,
                }
            }
            Ok(StreamEvent::Mark { name, .. }) if voicemail && name == PROMPT_MARK => {
                vec![r#"{"event":"hangup"}"#.to_string()]
            }
            Ok(StreamEvent::Dtmf { digit, .. }) => vec![
                serde_json::json!({"event": "transcript", "transcript": {"role": "user", "text": format!("(pressed {digit})")}})
                    .to_string(),
            ],
            Ok(StreamEvent::Stop { .. }) => break,
            Ok(_) => continue,
            Err(e) => {
                tracing::warn!(error = %e, "echo agent: bad message");
                continue;
            }
        };
        for r in reply {
            if ws.send(Message::Text(r.into())).await.is_err() {
                return;
            }
        }
    }
    let _ = ws.send(Message::Close(None)).await;
}

async fn upgrade(ws: WebSocketUpgrade) -> Response {
    // tungstenite zeroes its whole read buffer on every read: the 128 KiB
    // default cost more than everything else an echoed frame needs.
    ws.read_buffer_size(4 * 1024)
        .write_buffer_size(8 * 1024)
        .on_upgrade(session)
}

/// The echo agent's routes (any path).
pub fn router() -> Router {
    Router::new()
        .route("/", get(upgrade))
        .route("/{*path}", get(upgrade))
}

/// Serves the echo agent on `listener` until the process ends.
pub async fn serve(listener: tokio::net::TcpListener) -> std::io::Result<()> {
    use axum::serve::ListenerExt;
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(listener, router()).await
}

/// Binds `addr` and serves.
pub async fn run(addr: SocketAddr) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(addr = %listener.local_addr()?, "echo agent listening");
    serve(listener).await
}

/// Decodes a base64 μ-law payload (test helper for readers of the echo).
pub fn decode(payload: &str) -> Option<Vec<u8>> {
    base64::engine::general_purpose::STANDARD
        .decode(payload)
        .ok()
}
