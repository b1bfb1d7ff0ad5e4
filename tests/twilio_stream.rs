//! The gateway on loopback: a Twilio-like client streams a recorded call to
//! `/twilio/stream` in real time; the gateway runs AMD and bridges to the
//! built-in echo agent. Also signatures on the upgrade and bad input.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use base64::Engine as _;
use dialgate::audio::wav::WavReader;
use dialgate::audio::{FRAME_SAMPLES, g711};
use dialgate::call::session::{AgentStart, MachineAction, SessionConfig};
use dialgate::server::ServerConfig;
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

/// Starts the echo agent and the gateway; returns the gateway's address.
async fn start(mut cfg: ServerConfig) -> SocketAddr {
    let agent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    cfg.agent_url = format!("ws://{}/", agent.local_addr().unwrap());
    tokio::spawn(dialgate::agent::echo::serve(agent));
    let gw = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = gw.local_addr().unwrap();
    tokio::spawn(dialgate::server::serve(gw, cfg));
    addr
}

fn config(session: SessionConfig) -> ServerConfig {
    ServerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        agent_url: String::new(),
        agent_audio: Default::default(),
        twilio_auth_token: None,
        public_url: None,
        session,
        agent_connect_timeout: Duration::from_secs(3),
        llm: None,
        engine: None,
    }
}

/// The detector's result on a clip, with the default settings.
fn classified(path: &std::path::Path) -> dialgate::detect::bench::Classification {
    dialgate::detect::bench::classify_file(path, Default::default(), None, Default::default())
        .unwrap()
}

/// The μ-law frames of a held-out clip the detector classifies as `want`.
fn clip(scenario: &str, want: &str) -> (common::Label, Vec<[u8; FRAME_SAMPLES]>) {
    let dir = common::corpus_dir().join("heldout");
    let row = common::labels(&dir)
        .into_iter()
        .filter(|r| r.scenario == scenario)
        .find(|r| classified(&r.path).answered_by == want)
        .unwrap();
    let frames = ulaw_frames(&row.path);
    (row, frames)
}

/// A recording as the 20 ms μ-law frames Twilio would send.
fn ulaw_frames(path: &std::path::Path) -> Vec<[u8; FRAME_SAMPLES]> {
    let mut r = WavReader::open(path).unwrap();
    let mut frames = Vec::new();
    while let Some(f) = r.next_frame().unwrap() {
        let mut u = [0u8; FRAME_SAMPLES];
        g711::ulaw_encode_into(&f.pcm, &mut u);
        frames.push(u);
    }
    frames
}

fn start_msg() -> String {
    serde_json::json!({"event":"start","sequenceNumber":"1","streamSid":"MZtest",
        "start":{"accountSid":"ACtest","streamSid":"MZtest","callSid":"CAtest","tracks":["inbound"],
                 "customParameters":{"call_queue_id":"q-42"},
                 "mediaFormat":{"encoding":"audio/x-mulaw","sampleRate":8000,"channels":1}}})
    .to_string()
}

fn media_msg(seq: usize, frame: &[u8]) -> String {
    serde_json::json!({"event":"media","sequenceNumber":(seq + 2).to_string(),"streamSid":"MZtest",
        "media":{"track":"inbound","chunk":(seq + 1).to_string(),"timestamp":(seq * 20).to_string(),
                 "payload": base64::engine::general_purpose::STANDARD.encode(frame)}})
    .to_string()
}

/// What the fake Twilio saw.
struct Seen {
    /// (ms since stream start, decoded μ-law)
    media: Vec<(u64, Vec<u8>)>,
    marks: Vec<String>,
    clears: usize,
    /// ms since start when the gateway closed the stream
    closed_at: Option<u64>,
}

/// Streams `frames` in real time (20 ms apart) and records the replies;
/// echoes marks back as Twilio does.
async fn call(addr: SocketAddr, frames: &[[u8; FRAME_SAMPLES]], extra_ms: u64) -> Seen {
    let (ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/twilio/stream"))
        .await
        .unwrap();
    let (mut tx, mut rx) = ws.split();
    tx.send(Message::text(
        r#"{"event":"connected","protocol":"Call","version":"1.0.0"}"#,
    ))
    .await
    .unwrap();
    tx.send(Message::text(start_msg())).await.unwrap();
    let t0 = Instant::now();
    let mut seen = Seen {
        media: Vec::new(),
        marks: Vec::new(),
        clears: 0,
        closed_at: None,
    };
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    let mut i = 0;
    let end = Duration::from_millis(frames.len() as u64 * 20 + extra_ms);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                if t0.elapsed() > end { break; }
                if i < frames.len() {
                    if tx.send(Message::text(media_msg(i, &frames[i]))).await.is_err() { break; }
                    i += 1;
                }
            }
            msg = rx.next() => {
                let at = t0.elapsed().as_millis() as u64;
                match msg {
                    Some(Ok(Message::Text(t))) => {
                        let v: serde_json::Value = serde_json::from_str(t.as_str()).unwrap();
                        match v["event"].as_str().unwrap() {
                            "media" => {
                                let p = v["media"]["payload"].as_str().unwrap();
                                seen.media.push((at, base64::engine::general_purpose::STANDARD.decode(p).unwrap()));
                            }
                            "mark" => {
                                let name = v["mark"]["name"].as_str().unwrap().to_string();
                                // Twilio echoes a mark once the audio before it played
                                let echo = serde_json::json!({"event":"mark","sequenceNumber":"0","streamSid":"MZtest","mark":{"name":name}});
                                let _ = tx.send(Message::text(echo.to_string())).await;
                                seen.marks.push(name);
                            }
                            "clear" => seen.clears += 1,
                            other => panic!("unexpected {other}"),
                        }
                    }
                    Some(Ok(Message::Close(_))) | None | Some(Err(_)) => {
                        seen.closed_at = Some(at);
                        break;
                    }
                    _ => {}
                }
            }
        }
    }
    let _ = tx.send(Message::text(r#"{"event":"stop","sequenceNumber":"999","streamSid":"MZtest","stop":{"accountSid":"ACtest","callSid":"CAtest"}}"#)).await;
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_is_bridged_to_the_agent_with_paced_audio() {
    let (row, frames) = clip("hello_silence", "human");
    let addr = start(config(SessionConfig::default())).await;
    let seen = call(addr, &frames, 300).await;
    let speech_end = row.speech_end_ms.unwrap();
    assert!(
        !seen.media.is_empty(),
        "the agent's audio reached the carrier"
    );
    assert!(
        seen.media.iter().all(|(_, m)| m.len() == FRAME_SAMPLES),
        "whole 20 ms frames only"
    );
    let first = seen.media[0].0;
    assert!(
        first >= speech_end,
        "after_amd: agent audio only after the decision ({first} ms vs speech end {speech_end})"
    );
    // The prompt (about 0.7 s) was sent in one burst by the agent: the
    // gateway paces it, 20 ms a frame with an 80 ms lead.
    let n = 30.min(seen.media.len());
    let spread = seen.media[n - 1].0 - seen.media[0].0;
    assert!(
        spread + 120 >= (n as u64 - 1) * 20,
        "{n} frames arrived over {spread} ms: a burst"
    );
    assert!(
        seen.marks
            .contains(&dialgate::agent::echo::PROMPT_MARK.to_string())
    );
    // After the prompt the echo agent returns what it hears: our own frames
    // come back through gateway → agent → gateway byte for byte (μ-law's
    // two zero codes aside).
    let sent: std::collections::HashSet<Vec<u8>> = frames
        .iter()
        .map(|f| {
            f.iter()
                .map(|&b| if b == 0x7F { 0xFF } else { b })
                .collect()
        })
        .collect();
    let echoed = seen.media.iter().filter(|(_, m)| sent.contains(m)).count();
    let gaps: Vec<u64> = seen.media.windows(2).map(|w| w[1].0 - w[0].0).collect();
    let mut sorted = gaps.clone();
    sorted.sort();
    eprintln!(
        "{}: speech end {speech_end} ms, first agent frame {first} ms, {} frames, inter-arrival p50 {} ms p99 {} ms, {echoed} echoed",
        row.file,
        seen.media.len(),
        sorted[sorted.len() / 2],
        sorted[sorted.len() * 99 / 100]
    );
    assert!(
        echoed > 20,
        "only {echoed} echoed frames matched what was sent"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_machine_is_hung_up_on() {
    let (row, frames) = clip("personal_vm_beep", "machine_start");
    let cfg = SessionConfig {
        agent_start: AgentStart::AfterAmd,
        machine_action: MachineAction::EndCall,
        ..SessionConfig::default()
    };
    let addr = start(config(cfg)).await;
    let seen = call(addr, &frames, 300).await;
    let closed = seen.closed_at.expect("the gateway ended the call");
    assert!(
        closed < frames.len() as u64 * 20,
        "{}: closed at {closed} ms",
        row.file
    );
    assert!(
        seen.media.is_empty(),
        "no agent audio reaches a machine under after_amd"
    );
    assert_eq!(seen.clears, 1, "stop speaking clears the carrier");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrades_must_be_signed_when_a_token_is_set() {
    // Twilio signs the public URL it was given, whatever the server binds.
    let mut cfg = config(SessionConfig::default());
    cfg.twilio_auth_token = Some("secret-token".into());
    cfg.public_url = Some("wss://gw.example.com".into());
    let addr = start(cfg).await;
    let url = format!("ws://{addr}/twilio/stream");
    let signed_url = "wss://gw.example.com/twilio/stream";
    // unsigned: refused
    let err = tokio_tungstenite::connect_async(url.clone())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("403"), "{err}");
    // wrong signature: refused
    let mut req = url.clone().into_client_request().unwrap();
    req.headers_mut()
        .insert("X-Twilio-Signature", "AAAA".parse().unwrap());
    assert!(tokio_tungstenite::connect_async(req).await.is_err());
    // a valid signature over the public URL: accepted
    let sig = dialgate::carrier::twilio::signature::sign("secret-token", signed_url, &[]);
    let mut req = url.into_client_request().unwrap();
    req.headers_mut()
        .insert("X-Twilio-Signature", sig.parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();
    ws.send(Message::text(start_msg())).await.unwrap();
    ws.close(None).await.unwrap();
}

async fn bad_stream(addr: SocketAddr, messages: &[&str]) -> bool {
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/twilio/stream"))
        .await
        .unwrap();
    for m in messages {
        if ws.send(Message::text(*m)).await.is_err() {
            return true;
        }
    }
    // the gateway must close the stream on its own
    let closed = tokio::time::timeout(Duration::from_secs(3), async {
        loop {
            match ws.next().await {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return true,
                _ => {}
            }
        }
    })
    .await;
    closed.unwrap_or(false)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_ends_that_call_and_the_server_carries_on() {
    let addr = start(config(SessionConfig::default())).await;
    let frame = media_msg(0, &[0xFF; 160]);
    let start = start_msg();
    let big = format!(
        r#"{{"event":"media","media":{{"payload":"{}"}}}}"#,
        "A".repeat(1 << 20)
    );
    let cases: Vec<(&str, Vec<&str>)> = vec![
        ("malformed JSON", vec!["{not json"]),
        ("media before start", vec![frame.as_str()]),
        (
            "invalid base64",
            vec![
                start.as_str(),
                r#"{"event":"media","media":{"payload":"!!!!"}}"#,
            ],
        ),
        ("1 MB message", vec![start.as_str(), big.as_str()]),
    ];
    for (name, msgs) in cases {
        assert!(
            bad_stream(addr, &msgs).await,
            "{name}: the stream was not closed"
        );
    }
    // unknown events and odd payload sizes are fine; abrupt disconnects too
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/twilio/stream"))
        .await
        .unwrap();
    ws.send(Message::text(start_msg())).await.unwrap();
    ws.send(Message::text(r#"{"event":"telepathy"}"#))
        .await
        .unwrap();
    ws.send(Message::text(media_msg(0, &[0xFF; 100])))
        .await
        .unwrap();
    ws.send(Message::text(media_msg(1, &[0xFF; 333])))
        .await
        .unwrap();
    drop(ws);
    // the server still answers
    let (row, frames) = clip("hello_silence", "human");
    let seen = call(addr, &frames[..frames.len().min(150)], 0).await;
    let _ = row;
    assert!(seen.closed_at.is_none() || seen.closed_at.unwrap() > 1000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leave_message_plays_the_voicemail_agent_after_the_beep() {
    // a held-out voicemail whose beep the detector reports
    let dir = common::corpus_dir().join("heldout");
    let row = common::labels(&dir)
        .into_iter()
        .filter(|r| r.scenario == "personal_vm_beep")
        .find(|r| classified(&r.path).machine_end.as_deref() == Some("machine_end_beep"))
        .unwrap();
    leave_message_on(row).await;
}

async fn leave_message_on(row: common::Label) {
    let mut r = WavReader::open(&row.path).unwrap();
    let mut frames = Vec::new();
    while let Some(f) = r.next_frame().unwrap() {
        let mut u = [0u8; FRAME_SAMPLES];
        g711::ulaw_encode_into(&f.pcm, &mut u);
        frames.push(u);
    }
    let cfg = SessionConfig {
        agent_start: AgentStart::AfterAmd,
        machine_action: MachineAction::LeaveMessage {
            voicemail_script: "scripts/voicemail".into(),
        },
        ..SessionConfig::default()
    };
    let addr = start(config(cfg)).await;
    // keep the line open 3 s after the clip: the message plays into it
    let seen = call(addr, &frames, 3000).await;
    let beep_end = row.beep_end_ms.unwrap();
    assert!(
        !seen.media.is_empty(),
        "{}: the voicemail agent spoke",
        row.file
    );
    assert!(
        seen.media[0].0 >= beep_end,
        "{}: message started at {} ms, before the beep ended at {beep_end}",
        row.file,
        seen.media[0].0
    );
    // the echo agent hangs up after its prompt in voicemail mode: the
    // gateway ends the call (voicemail_ended) by closing the stream
    let closed = seen.closed_at.expect("the call ended after the message");
    // (this fake Twilio echoes marks at once; real Twilio after playback)
    assert!(closed >= seen.media.last().unwrap().0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dtmf_reaches_the_agent_and_an_unreachable_agent_ends_the_call() {
    // DTMF: the echo agent answers a digit with a transcript event, which
    // the gateway keeps as a turn; here we check the digit got through by
    // the agent staying up and the call continuing (no protocol error).
    let cfg = SessionConfig {
        agent_start: AgentStart::Immediate,
        ..SessionConfig::default()
    };
    let addr = start(config(cfg.clone())).await;
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/twilio/stream"))
        .await
        .unwrap();
    ws.send(Message::text(start_msg())).await.unwrap();
    ws.send(Message::text(
        r#"{"event":"dtmf","streamSid":"MZtest","sequenceNumber":"5","dtmf":{"track":"inbound_track","digit":"7"}}"#,
    ))
    .await
    .unwrap();
    // the immediate agent says its prompt: audio arrives
    let got_media = tokio::time::timeout(Duration::from_secs(3), async {
        while let Some(Ok(m)) = ws.next().await {
            if let Message::Text(t) = m
                && t.as_str().contains(r#""event":"media""#)
            {
                return true;
            }
        }
        false
    })
    .await
    .unwrap_or(false);
    assert!(got_media);
    ws.close(None).await.unwrap();

    // An agent nobody listens on: the call ends promptly with a reason.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let a = l.local_addr().unwrap();
        drop(l);
        a
    };
    let gw = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = gw.local_addr().unwrap();
    let mut c = config(cfg);
    c.agent_url = format!("ws://{dead}/");
    tokio::spawn(dialgate::server::serve(gw, c));
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/twilio/stream"))
        .await
        .unwrap();
    ws.send(Message::text(start_msg())).await.unwrap();
    let t0 = Instant::now();
    let closed = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match ws.next().await {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return true,
                _ => {}
            }
        }
    })
    .await
    .unwrap_or(false);
    assert!(closed, "the gateway hung up");
    assert!(
        t0.elapsed() < Duration::from_secs(4),
        "no hung call: {:?}",
        t0.elapsed()
    );
}

/// An agent that asked for L16 at 16 kHz: `start` says so, the callee's
/// audio reaches it as 640-byte (20 ms) little-endian payloads, and its own
/// L16 audio, sent in odd-sized pieces, reaches the carrier as whole 20 ms
/// μ-law frames of the same tone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_l16_agent_gets_16_khz_and_is_heard_at_8_khz() {
    use dialgate::agent::bridge::AgentAudio;
    let agent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let agent_addr = agent.local_addr().unwrap();
    let (seen_tx, seen_rx) = tokio::sync::oneshot::channel::<(serde_json::Value, Vec<usize>)>();
    tokio::spawn(async move {
        let (tcp, _) = agent.accept().await.unwrap();
        let mut ws = tokio_tungstenite::accept_async(tcp).await.unwrap();
        let mut format = serde_json::Value::Null;
        let mut sizes = Vec::new();
        while let Some(Ok(Message::Text(t))) = ws.next().await {
            let v: serde_json::Value = serde_json::from_str(t.as_str()).unwrap();
            match v["event"].as_str().unwrap_or("") {
                "start" => {
                    format = v["start"]["mediaFormat"].clone();
                    // 1 s of a 1 kHz tone at 16 kHz, in 1001-byte pieces
                    let pcm: Vec<u8> = (0..16_000)
                        .flat_map(|i| {
                            let x =
                                (2.0 * std::f64::consts::PI * 1000.0 * i as f64 / 16_000.0).sin();
                            ((x * 8000.0) as i16).to_le_bytes()
                        })
                        .collect();
                    for piece in pcm.chunks(1001) {
                        let m = serde_json::json!({"event":"media","streamSid":"MZagent",
                            "media":{"payload": base64::engine::general_purpose::STANDARD.encode(piece)}});
                        ws.send(Message::text(m.to_string())).await.unwrap();
                    }
                }
                "media" => {
                    let p = v["media"]["payload"].as_str().unwrap();
                    sizes.push(
                        base64::engine::general_purpose::STANDARD
                            .decode(p)
                            .unwrap()
                            .len(),
                    );
                }
                "stop" => break,
                _ => {}
            }
        }
        let _ = seen_tx.send((format, sizes));
    });
    let mut cfg = config(SessionConfig {
        agent_start: AgentStart::Immediate,
        ..SessionConfig::default()
    });
    cfg.agent_url = format!("ws://{agent_addr}/");
    cfg.agent_audio = AgentAudio::L16_16000;
    let gw = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = gw.local_addr().unwrap();
    tokio::spawn(dialgate::server::serve(gw, cfg));

    let (_, frames) = clip("hello_silence", "human");
    let seen = call(addr, &frames[..75], 1500).await;
    let (format, sizes) = tokio::time::timeout(Duration::from_secs(5), seen_rx)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(format["encoding"], "audio/x-l16");
    assert_eq!(format["sampleRate"], 16_000);
    assert!(
        sizes.len() >= 60,
        "{} frames reached the agent",
        sizes.len()
    );
    assert!(sizes.iter().all(|&n| n == 640), "{sizes:?}");
    // 16,000 samples at 16 kHz = 50 frames at 8 kHz (the resampler's delay
    // may hold back the last one)
    assert!(
        (49..=50).contains(&seen.media.len()),
        "{} frames",
        seen.media.len()
    );
    assert!(seen.media.iter().all(|(_, m)| m.len() == FRAME_SAMPLES));
    // a 1 kHz tone crosses zero 2,000 times a second: 40 per frame
    let mid = &seen.media[10].1;
    let pcm: Vec<i16> = mid.iter().map(|&b| g711::ulaw_decode(b)).collect();
    let crossings = pcm.windows(2).filter(|w| (w[0] < 0) != (w[1] < 0)).count();
    assert!((38..=42).contains(&crossings), "{crossings} zero crossings");
}

/// A local server speaking OpenAI's chat-completions protocol that calls
/// every greeting a machine, counting requests.
async fn machine_llm() -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let calls = Arc::new(AtomicUsize::new(0));
    let c = calls.clone();
    let app = axum::Router::new().route(
        "/v1/chat/completions",
        axum::routing::post(move |body: String| {
            let c = c.clone();
            async move {
                c.fetch_add(1, Ordering::SeqCst);
                let v: serde_json::Value = serde_json::from_str(&body).unwrap();
                assert_eq!(
                    v["messages"][1]["content"][1]["input_audio"]["format"],
                    "wav"
                );
                let content = r#"{"answered_by":"machine","confidence":0.95}"#;
                axum::Json(serde_json::json!({
                    "id": "chatcmpl-1", "object": "chat.completion", "model": "m",
                    "choices": [{"index": 0, "finish_reason": "stop",
                                 "message": {"role": "assistant", "content": content}}]
                }))
            }
        }),
    );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/v1", l.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
    (url, calls)
}

/// A voicemail the detector is unsure about at its deadline: with LLM
/// verification on, `serve` asks the LLM once, and its "machine" ends the
/// call (end-call rule) long before the recording does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unsure_detector_asks_the_llm_and_its_answer_decides() {
    use dialgate::detect::amd::AmdConfig;
    use dialgate::detect::llm::{LlmConfig, LlmVerifier};
    let dir = common::corpus_dir().join("heldout");
    let unsure = AmdConfig {
        llm_budget_ms: Some(1500),
        ..AmdConfig::default()
    };
    // unsure: with verification on and no verifier, it asks and falls back
    let row = common::labels(&dir)
        .into_iter()
        .filter(|r| r.label == "machine")
        .find(|r| {
            let c =
                dialgate::detect::bench::classify_file(&r.path, unsure, None, Default::default())
                    .unwrap();
            c.escalated && c.timeline[0].trigger == "llm_failed"
        })
        .expect("a held-out voicemail the detector is unsure about");
    let frames = ulaw_frames(&row.path);
    let (url, calls) = machine_llm().await;
    let mut cfg = config(SessionConfig {
        agent_start: AgentStart::AfterAmd,
        machine_action: MachineAction::EndCall,
        amd: Some(unsure),
        ..SessionConfig::default()
    });
    cfg.llm = Some(std::sync::Arc::new(
        LlmVerifier::new(LlmConfig {
            base_url: url,
            model: "m".into(),
            api_key: String::new(),
        })
        .unwrap(),
    ));
    let addr = start(cfg).await;
    let seen = call(addr, &frames[..frames.len().min(500)], 300).await;
    assert_eq!(
        calls.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "asked once"
    );
    let closed = seen.closed_at.expect("the machine was hung up on");
    // Without the LLM it would listen on to at least 5 s (the fallback).
    assert!(closed < 5000, "{}: closed at {closed} ms", row.file);
    assert!(seen.media.is_empty(), "no agent audio reached the machine");
}

/// An agent that records every message it gets, in order.
async fn recording_agent() -> (
    SocketAddr,
    tokio::sync::mpsc::UnboundedReceiver<serde_json::Value>,
) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = l.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let Ok(mut ws) = tokio_tungstenite::accept_async(tcp).await else {
                    return;
                };
                while let Some(Ok(Message::Text(t))) = ws.next().await {
                    let v: serde_json::Value = serde_json::from_str(t.as_str()).unwrap();
                    let _ = tx.send(v);
                }
            });
        }
    });
    (addr, rx)
}

/// Gate `immediate`: the agent hears the callee from the first frame, before
/// AMD has decided; then gets the `amd` event, and a digit the callee
/// presses arrives as Twilio's `dtmf` message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_immediate_agent_hears_the_callee_before_the_decision_and_gets_dtmf() {
    let (agent, mut got) = recording_agent().await;
    let mut cfg = config(SessionConfig {
        agent_start: AgentStart::Immediate,
        ..SessionConfig::default()
    });
    cfg.agent_url = format!("ws://{agent}/");
    let gw = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = gw.local_addr().unwrap();
    tokio::spawn(dialgate::server::serve(gw, cfg));

    let (row, frames) = clip("hello_silence", "human");
    let (ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/twilio/stream"))
        .await
        .unwrap();
    let (mut tx, mut rx) = ws.split();
    tokio::spawn(async move { while rx.next().await.is_some() {} });
    tx.send(Message::text(start_msg())).await.unwrap();
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    for (i, f) in frames.iter().enumerate() {
        tick.tick().await;
        tx.send(Message::text(media_msg(i, f))).await.unwrap();
    }
    tx.send(Message::text(
        r#"{"event":"dtmf","streamSid":"MZtest","sequenceNumber":"900","dtmf":{"track":"inbound_track","digit":"7"}}"#,
    ))
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    tx.send(Message::text(
        r#"{"event":"stop","sequenceNumber":"901","streamSid":"MZtest","stop":{"accountSid":"AC","callSid":"CAtest"}}"#,
    ))
    .await
    .unwrap();

    let mut events = Vec::new();
    while let Ok(Some(v)) = tokio::time::timeout(Duration::from_secs(2), got.recv()).await {
        let stop = v["event"] == "stop";
        events.push(v);
        if stop {
            break;
        }
    }
    let kinds: Vec<&str> = events
        .iter()
        .map(|v| v["event"].as_str().unwrap())
        .collect();
    let first_media = kinds
        .iter()
        .position(|k| *k == "media")
        .expect("media reached the agent");
    let amd = kinds
        .iter()
        .position(|k| *k == "amd")
        .expect("the amd event");
    assert!(
        first_media < amd,
        "{}: audio before the decision: {kinds:?}",
        row.file
    );
    let before = kinds[..amd].iter().filter(|k| **k == "media").count();
    assert!(before >= 25, "only {before} frames before the decision");
    assert_eq!(events[amd]["amd"]["answered_by"], "human");
    let dtmf = events
        .iter()
        .find(|v| v["event"] == "dtmf")
        .expect("the digit reached the agent");
    assert_eq!(dtmf["dtmf"]["digit"], "7");
    assert_eq!(kinds[0], "connected");
    assert_eq!(kinds[1], "start");
    assert_eq!(
        events[1]["start"]["customParameters"]["call_queue_id"],
        "q-42"
    );
}
