//! LLM verification against a local server that speaks the OpenAI
//! chat-completions protocol: good verdicts, HTTP errors, prose, slowness,
//! no server; and the detector escalating to it on an ambiguous clip.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use base64::Engine as _;
use dialgate::detect::amd::AmdConfig;
use dialgate::detect::bench::classify_file;
use dialgate::detect::llm::{LlmConfig, LlmError, LlmVerifier};
use dialgate::verifier::BlockingVerifier;

#[derive(Clone, Copy)]
enum Mode {
    Machine,
    Human,
    ServerError,
    Prose,
    Slow,
}

#[derive(Clone)]
struct Srv {
    mode: Mode,
    calls: Arc<AtomicUsize>,
}

async fn chat(State(s): State<Srv>, headers: HeaderMap, body: String) -> (StatusCode, String) {
    s.calls.fetch_add(1, Ordering::SeqCst);
    // Check the request is what the protocol wants.
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(headers.get("authorization").unwrap(), "Bearer test-key");
    assert_eq!(v["model"], "audio-model");
    let audio = &v["messages"][1]["content"][1]["input_audio"];
    assert_eq!(audio["format"], "wav");
    let wav = base64::engine::general_purpose::STANDARD
        .decode(audio["data"].as_str().unwrap())
        .unwrap();
    assert_eq!(&wav[..4], b"RIFF");
    assert!(wav.len() > 44, "the WAV carries audio");
    assert!(
        v["messages"][0]["content"]
            .as_str()
            .unwrap()
            .contains("JSON")
    );
    let answer = |content: &str| {
        serde_json::json!({
            "id": "chatcmpl-1", "object": "chat.completion", "model": "audio-model",
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": content}}]
        })
        .to_string()
    };
    match s.mode {
        Mode::Machine => (
            StatusCode::OK,
            answer(r#"{"answered_by":"machine","confidence":0.95}"#),
        ),
        Mode::Human => (
            StatusCode::OK,
            answer(r#"{"answered_by":"human","confidence":0.9}"#),
        ),
        Mode::ServerError => (
            StatusCode::INTERNAL_SERVER_ERROR,
            r#"{"error":"boom"}"#.into(),
        ),
        Mode::Prose => (
            StatusCode::OK,
            answer("That sounds like a voicemail to me."),
        ),
        Mode::Slow => {
            tokio::time::sleep(Duration::from_secs(3)).await;
            (
                StatusCode::OK,
                answer(r#"{"answered_by":"machine","confidence":0.9}"#),
            )
        }
    }
}

/// Starts a server on 127.0.0.1 on its own runtime thread; returns its base
/// URL and call counter.
fn serve(mode: Mode) -> (String, Arc<AtomicUsize>) {
    let calls = Arc::new(AtomicUsize::new(0));
    let state = Srv {
        mode,
        calls: calls.clone(),
    };
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            tx.send(listener.local_addr().unwrap()).unwrap();
            let app = Router::new()
                .route("/v1/chat/completions", post(chat))
                .with_state(state);
            axum::serve(listener, app).await.unwrap();
        });
    });
    let addr = rx.recv().unwrap();
    (format!("http://{addr}/v1"), calls)
}

fn verifier(base_url: String) -> LlmVerifier {
    LlmVerifier::new(LlmConfig {
        base_url,
        model: "audio-model".into(),
        api_key: "test-key".into(),
    })
    .unwrap()
}

fn greeting() -> Vec<u8> {
    dialgate::audio::wav::to_wav_bytes(8000, &dialgate::audio::synth::tones(&[300.0], -20.0, 500))
}

fn ask(mode: Mode, budget: Duration) -> (Result<f32, LlmError>, Duration) {
    let (url, _) = serve(mode);
    let v = verifier(url);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let start = Instant::now();
    let r = rt.block_on(v.verify_async(&greeting(), budget));
    (r, start.elapsed())
}

#[test]
fn verdicts_and_failures() {
    let (r, _) = ask(Mode::Machine, Duration::from_secs(5));
    assert!((r.unwrap() - 0.95).abs() < 1e-6);
    let (r, _) = ask(Mode::Human, Duration::from_secs(5));
    assert!((r.unwrap() - 0.1).abs() < 1e-6);
    let (r, _) = ask(Mode::ServerError, Duration::from_secs(5));
    assert!(
        matches!(r, Err(LlmError::Http { status: 500, .. })),
        "{r:?}"
    );
    let (r, _) = ask(Mode::Prose, Duration::from_secs(5));
    assert!(matches!(r, Err(LlmError::BadAnswer(_))), "{r:?}");
    let (r, took) = ask(Mode::Slow, Duration::from_millis(300));
    assert!(
        matches!(r, Err(LlmError::Timeout { budget_ms: 300 })),
        "{r:?}"
    );
    assert!(
        took < Duration::from_secs(2),
        "the budget bounds the wait: {took:?}"
    );
    // nothing listening
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let a = l.local_addr().unwrap();
        drop(l);
        format!("http://{a}/v1")
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let r = rt.block_on(verifier(dead).verify_async(&greeting(), Duration::from_secs(2)));
    assert!(matches!(r, Err(LlmError::Transport(_))), "{r:?}");
}

/// One clip through the core itself with an LLM that never answers, up to
/// its first decision: the detector, when it asked (the answer's deadline),
/// whether the callee was talking just before that deadline, and the
/// decision.
struct Unanswered {
    amd: dialgate::detect::amd::Amd,
    asked: Option<u64>,
    talking_at_deadline: bool,
    first: Option<dialgate::detect::amd::AmdDecision>,
}

fn unanswered(path: &std::path::Path, cfg: AmdConfig) -> Unanswered {
    use dialgate::detect::amd::{Amd, AmdEvent};
    let mut reader = dialgate::audio::wav::WavReader::open(path).unwrap();
    let mut amd = Amd::new(cfg).unwrap();
    let (mut asked, mut talking_at_deadline) = (None, false);
    let first = loop {
        let Some(frame) = reader.next_frame().unwrap() else {
            break None;
        };
        amd.push_frame(&frame).unwrap();
        if asked.is_some_and(|d| frame.end_ms() < d) {
            talking_at_deadline = amd.frontend().features().in_speech();
        }
        match amd.poll_event() {
            Some(AmdEvent::Verify { deadline_ms, .. }) => asked = Some(deadline_ms),
            Some(AmdEvent::Decision(d)) => break Some(d),
            None => {}
        }
    };
    Unanswered {
        amd,
        asked,
        talking_at_deadline,
        first,
    }
}

/// A held-out clip the detector is unsure about at the deadline and stays
/// unsure about for the whole budget and after it: with a verifier that
/// never answers, its first decision is the detector's own `llm_failed`
/// human fallback (at the callee's first pause after the budget ran out),
/// not a machine it asked the LLM to confirm.
fn ambiguous_clip(cfg: AmdConfig) -> std::path::PathBuf {
    use dialgate::detect::amd::{AmdOutcome, Trigger};
    let dir = common::corpus_dir().join("heldout");
    for row in common::labels(&dir) {
        let u = unanswered(&row.path, cfg);
        if let (Some(deadline), Some(d)) = (u.asked, u.first)
            && d.trigger == Trigger::LlmFailed
            && d.outcome == AmdOutcome::Human
            && d.at_ms >= deadline
        {
            return row.path;
        }
    }
    panic!("no held-out clip leaves the detector unsure for the whole budget");
}

#[test]
fn the_detector_escalates_when_unsure_and_falls_back_on_failure() {
    let cfg = AmdConfig {
        llm_budget_ms: Some(1500),
        ..AmdConfig::default()
    };
    let clip = ambiguous_clip(cfg);
    let (url, calls) = serve(Mode::Machine);
    let v = BlockingVerifier::new(verifier(url)).unwrap();
    let c = classify_file(&clip, cfg, Some(&v), Default::default()).unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), 1, "asked exactly once");
    assert!(c.escalated);
    assert_eq!(c.answered_by, "machine_start", "{c:?}");
    assert_eq!(c.timeline[0].trigger, "llm");
    assert!(c.llm_error.is_none());

    let (url, _) = serve(Mode::ServerError);
    let v = BlockingVerifier::new(verifier(url)).unwrap();
    let c = classify_file(&clip, cfg, Some(&v), Default::default()).unwrap();
    assert!(c.escalated);
    assert_eq!(
        c.answered_by, "human",
        "falls back to the configured fallback"
    );
    assert_eq!(c.timeline[0].trigger, "llm_failed");
    assert!(
        c.llm_error.as_deref().unwrap().contains("500"),
        "{:?}",
        c.llm_error
    );

    // An LLM slower than the budget: the detector's own deadline fires.
    let (url, _) = serve(Mode::Slow);
    let v = BlockingVerifier::new(verifier(url)).unwrap();
    let c = classify_file(&clip, cfg, Some(&v), Default::default()).unwrap();
    assert_eq!(c.timeline[0].trigger, "llm_failed");
    assert!(
        c.llm_error.as_deref().unwrap().contains("1500"),
        "{:?}",
        c.llm_error
    );
}

/// The LLM fails (here: never answers) while the callee is still talking:
/// the fallback waits for their pause, as the plain one does, and a beep in
/// the meantime still calls the machine. Driven through the core on every
/// held-out clip it escalates on.
#[test]
fn a_failed_llm_falls_back_at_the_callees_pause() {
    use dialgate::detect::amd::{AmdOutcome, Trigger};
    let cfg = AmdConfig {
        llm_budget_ms: Some(1500),
        ..AmdConfig::default()
    };
    let dir = common::corpus_dir().join("heldout");
    let mut waited = 0;
    for row in common::labels(&dir) {
        let Unanswered {
            amd,
            asked,
            talking_at_deadline,
            first,
        } = unanswered(&row.path, cfg);
        let (Some(deadline), Some(d)) = (asked, first) else {
            continue;
        };
        if d.trigger == Trigger::LlmFailed && d.outcome != AmdOutcome::Human {
            // asked to confirm a machine: the model's call stands at once
            assert_eq!(d.outcome, AmdOutcome::MachineStart, "{}: {d:?}", row.file);
            assert!(d.p_machine >= cfg.machine_threshold, "{}: {d:?}", row.file);
        } else if d.trigger == Trigger::LlmFailed {
            // (a callee who never pauses, such as a carrier's long
            // announcement, gets it `max_defer_ms` after the failure)
            let f = amd.frontend().features();
            assert!(
                (!f.in_speech() && f.current_silence_ms() >= cfg.human_silence_long_ms)
                    || d.at_ms >= deadline + cfg.max_defer_ms,
                "{}: fell back at {} ms mid-speech",
                row.file,
                d.at_ms
            );
            if d.at_ms > deadline {
                waited += 1;
            }
        } else if talking_at_deadline && d.at_ms >= deadline {
            // a beep, speech that never paused (a carrier's greeting) or
            // the person's own pause settled it first
            assert!(
                matches!(
                    d.trigger,
                    Trigger::Beep | Trigger::LongSpeech | Trigger::ShortUtterance
                ),
                "{}: {d:?}",
                row.file
            );
        }
    }
    assert!(waited >= 1, "no clip was still talking when the LLM failed");
}

/// With verification on, a machine the model would call on timing alone is
/// first confirmed by the LLM (the seed: "confirm it is a voicemail; reduces
/// false positives"). A "human" answer keeps the person on the line; a
/// failed LLM leaves the model's call standing.
#[test]
fn the_llm_confirms_a_machine_called_on_timing_alone() {
    // (a 3 s initial check delay: the model calls few machines before the
    // default 2 s one, and none on this set)
    let plain = AmdConfig {
        initial_check_delay_ms: 3000,
        ..AmdConfig::default()
    };
    let dir = common::corpus_dir().join("heldout");
    let row = common::labels(&dir)
        .into_iter()
        .find(|r| {
            // before the initial check delay, where an unsure model would
            // have asked the LLM anyway
            let c = classify_file(&r.path, plain, None, Default::default()).unwrap();
            c.timeline[0].trigger == "model" && c.decision_ms < plain.initial_check_delay_ms
        })
        .expect("a held-out clip the model calls a machine early");
    let cfg = AmdConfig {
        llm_budget_ms: Some(1500),
        ..plain
    };
    let alone = classify_file(&row.path, plain, None, Default::default()).unwrap();

    let (url, calls) = serve(Mode::Human);
    let v = BlockingVerifier::new(verifier(url)).unwrap();
    let c = classify_file(&row.path, cfg, Some(&v), Default::default()).unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), 1, "asked once");
    assert!(c.escalated);
    assert_eq!(c.answered_by, "human", "{}: {c:?}", row.file);
    assert_eq!(c.timeline[0].trigger, "llm");
    // asked when the model was about to call it, not later
    assert!(
        c.decision_ms >= alone.decision_ms && c.decision_ms <= alone.decision_ms + 1500,
        "{}: alone {alone:?}, with the LLM {c:?}",
        row.file
    );

    let (url, _) = serve(Mode::Machine);
    let v = BlockingVerifier::new(verifier(url)).unwrap();
    let c = classify_file(&row.path, cfg, Some(&v), Default::default()).unwrap();
    assert_eq!(c.answered_by, "machine_start", "{c:?}");
    assert_eq!(c.timeline[0].trigger, "llm");

    let (url, _) = serve(Mode::ServerError);
    let v = BlockingVerifier::new(verifier(url)).unwrap();
    let c = classify_file(&row.path, cfg, Some(&v), Default::default()).unwrap();
    assert_eq!(
        c.answered_by, "machine_start",
        "the model's call stands: {c:?}"
    );
    assert_eq!(c.timeline[0].trigger, "llm_failed");
}

/// `amd classify --llm` asks the model configured in the environment, as
/// `amd bench --llm` does (it used to run without a verifier and report
/// every escalation as "no LLM verifier configured").
#[test]
fn the_classify_command_asks_the_llm_from_the_environment() {
    let cfg = AmdConfig {
        llm_budget_ms: Some(1500),
        ..AmdConfig::default()
    };
    let clip = ambiguous_clip(cfg);
    let (url, calls) = serve(Mode::Machine);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_dialgate"))
        .args([
            "amd",
            "classify",
            "--json",
            "--llm",
            "--llm-budget-ms",
            "1500",
        ])
        .arg(&clip)
        .env("DIALGATE_LLM_BASE_URL", &url)
        .env("DIALGATE_LLM_MODEL", "audio-model")
        .env("DIALGATE_LLM_API_KEY", "test-key")
        .env("RUST_LOG", "off")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let c: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), 1, "asked exactly once");
    assert_eq!(c["escalated"], true, "{c}");
    assert_eq!(c["answered_by"], "machine_start", "{c}");
    assert_eq!(c["timeline"][0]["trigger"], "llm", "{c}");
    assert!(c["llm_error"].is_null(), "{c}");
}
