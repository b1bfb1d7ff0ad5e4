//! LLM verification for AMD (the seed's "Advanced Verification"): when the
//! detector is unsure, the greeting audio is sent to an OpenAI-compatible
//! chat-completions endpoint as a WAV `input_audio` part with a strict
//! instruction, and the model's JSON verdict comes back as p(machine).
//!
//! Request (POST `{base_url}/chat/completions`, `Authorization: Bearer`):
//!
//! ```json
//! {"model": "...", "temperature": 0,
//!  "messages": [{"role": "system", "content": "<instruction>"},
//!               {"role": "user", "content": [
//!                 {"type": "text", "text": "..."},
//!                 {"type": "input_audio", "input_audio": {"data": "<base64 WAV>", "format": "wav"}}]}]}
//! ```
//!
//! Expected answer: `choices[0].message.content` holding
//! `{"answered_by": "human" | "machine", "confidence": 0..1}`. Anything else
//! (a timeout, an HTTP error, prose, a missing field) is an [`LlmError`] that
//! says which; the detector then falls back as configured. No
//! `response_format` is sent: OpenAI's audio models list structured outputs
//! as not supported, and a request with a parameter a model refuses fails
//! with HTTP 400 on every call. The instruction asks for the object alone,
//! and [`parse_verdict`] takes it bare or in a code fence.
//!
//! Configuration: `DIALGATE_LLM_BASE_URL` (default `https://api.openai.com/v1`),
//! `DIALGATE_LLM_MODEL` (default [`DEFAULT_AMD_MODEL`]), and the key from
//! `DIALGATE_LLM_API_KEY` or `OPENAI_API_KEY`. Post-call analysis uses the
//! same endpoint and key with its own model, `DIALGATE_ANALYSIS_MODEL`
//! (default [`DEFAULT_ANALYSIS_MODEL`]): it needs structured outputs, which
//! the audio models lack, and no audio, so one model cannot serve both.

use std::time::Duration;

use base64::Engine as _;
use serde::Deserialize;

/// The instruction sent with every request.
pub const INSTRUCTION: &str = "You classify the first seconds of an outbound phone call. \
The audio is what the called party's side sent after the call was answered. \
Decide whether a live person answered (human) or a recording did (machine: voicemail greeting, \
carrier mailbox announcement, IVR menu, automated message). A person typically says a short \
greeting and waits; a machine speaks a prepared message, often ending in a beep. \
Answer with one JSON object and nothing else: {\"answered_by\": \"human\" or \"machine\", \
\"confidence\": a number from 0 to 1}.";

/// Errors from the verifier.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LlmError {
    /// No answer within the budget.
    #[error("no answer within {budget_ms} ms")]
    Timeout { budget_ms: u64 },
    /// The server answered with an error status.
    #[error("HTTP {status}: {body}")]
    Http { status: u16, body: String },
    /// The request could not be sent or the answer not read.
    #[error("transport: {0}")]
    Transport(String),
    /// The answer was not the JSON verdict asked for.
    #[error("unusable answer: {0}")]
    BadAnswer(String),
    /// The verifier is not configured.
    #[error("LLM verifier not configured: {0}")]
    Config(String),
}

/// Where and how to ask.
#[derive(Debug, Clone)]
pub struct LlmConfig {
    /// Base URL of the OpenAI-compatible API, e.g. `https://api.openai.com/v1`.
    pub base_url: String,
    /// Model name.
    pub model: String,
    /// Bearer token (may be empty for local servers).
    pub api_key: String,
}

/// The model AMD verification asks unless `DIALGATE_LLM_MODEL` says
/// otherwise: it must take audio in (`input_audio`). OpenAI's
/// `gpt-4o-audio-preview`, the default until 2026-12-06, is shut down and
/// `gpt-audio` deprecated; the mini model is the cheapest and quickest of
/// those left, and a verdict has a 1.5 s budget.
pub const DEFAULT_AMD_MODEL: &str = "gpt-audio-mini";

/// The model post-call analysis asks unless `DIALGATE_ANALYSIS_MODEL` says
/// otherwise: a text model with structured outputs (`json_schema`).
pub const DEFAULT_ANALYSIS_MODEL: &str = "gpt-5-mini";

impl LlmConfig {
    /// AMD verification's configuration, from the environment.
    pub fn from_env() -> Self {
        Self::from_vars(env_var, "DIALGATE_LLM_MODEL", DEFAULT_AMD_MODEL)
    }

    /// Post-call analysis's configuration, from the environment: the
    /// verifier's endpoint and key, its own model.
    pub fn analysis_from_env() -> Self {
        Self::from_vars(env_var, "DIALGATE_ANALYSIS_MODEL", DEFAULT_ANALYSIS_MODEL)
    }

    fn from_vars(var: impl Fn(&str) -> Option<String>, model_var: &str, model: &str) -> Self {
        Self {
            base_url: var("DIALGATE_LLM_BASE_URL")
                .unwrap_or_else(|| "https://api.openai.com/v1".into()),
            model: var(model_var).unwrap_or_else(|| model.into()),
            api_key: var("DIALGATE_LLM_API_KEY")
                .or_else(|| var("OPENAI_API_KEY"))
                .unwrap_or_default(),
        }
    }
}

/// A set, non-empty environment variable.
fn env_var(k: &str) -> Option<String> {
    std::env::var(k).ok().filter(|v| !v.is_empty())
}

#[derive(Deserialize)]
struct ChatResponse {
    choices: Vec<Choice>,
}

#[derive(Deserialize)]
struct Choice {
    message: Message,
}

#[derive(Deserialize)]
struct Message {
    content: Option<String>,
}

#[derive(Deserialize)]
struct Verdict {
    answered_by: String,
    confidence: f64,
}

/// Parses the assistant's text into p(machine). Accepts the object bare or
/// inside a Markdown code fence; nothing looser.
pub fn parse_verdict(content: &str) -> Result<f32, LlmError> {
    let t = content.trim();
    let t = t
        .strip_prefix("```json")
        .or_else(|| t.strip_prefix("```"))
        .and_then(|s| s.strip_suffix("```"))
        .unwrap_or(t)
        .trim();
    let v: Verdict = serde_json::from_str(t)
        .map_err(|e| LlmError::BadAnswer(format!("{e}: {:?}", truncate(content, 120))))?;
    if !(0.0..=1.0).contains(&v.confidence) {
        return Err(LlmError::BadAnswer(format!(
            "confidence {} outside 0..1",
            v.confidence
        )));
    }
    match v.answered_by.trim().to_ascii_lowercase().as_str() {
        "machine" => Ok(v.confidence as f32),
        "human" => Ok(1.0 - v.confidence as f32),
        other => Err(LlmError::BadAnswer(format!(
            "answered_by {other:?} is neither human nor machine"
        ))),
    }
}

fn truncate(s: &str, n: usize) -> String {
    s.chars().take(n).collect()
}

/// The chat-completions client.
#[derive(Debug, Clone)]
pub struct LlmVerifier {
    cfg: LlmConfig,
    http: reqwest::Client,
}

impl LlmVerifier {
    /// A verifier for `cfg`.
    pub fn new(cfg: LlmConfig) -> Result<Self, LlmError> {
        if cfg.base_url.is_empty() || cfg.model.is_empty() {
            return Err(LlmError::Config("base URL and model are required".into()));
        }
        let http = reqwest::Client::builder()
            .build()
            .map_err(|e| LlmError::Config(e.to_string()))?;
        Ok(Self { cfg, http })
    }

    /// The request body for `wav`.
    pub fn request_body(&self, wav: &[u8]) -> serde_json::Value {
        serde_json::json!({
            "model": self.cfg.model,
            "temperature": 0,
            "messages": [
                {"role": "system", "content": INSTRUCTION},
                {"role": "user", "content": [
                    {"type": "text", "text": "Was this call answered by a human or a machine?"},
                    {"type": "input_audio", "input_audio": {
                        "data": base64::engine::general_purpose::STANDARD.encode(wav),
                        "format": "wav"
                    }}
                ]}
            ]
        })
    }

    /// Asks, waiting at most `budget`; returns p(machine).
    pub async fn verify_async(&self, wav: &[u8], budget: Duration) -> Result<f32, LlmError> {
        let url = format!(
            "{}/chat/completions",
            self.cfg.base_url.trim_end_matches('/')
        );
        let mut req = self.http.post(&url).json(&self.request_body(wav));
        if !self.cfg.api_key.is_empty() {
            req = req.bearer_auth(&self.cfg.api_key);
        }
        let call = async {
            let resp = req
                .send()
                .await
                .map_err(|e| LlmError::Transport(e.to_string()))?;
            let status = resp.status();
            let body = resp
                .text()
                .await
                .map_err(|e| LlmError::Transport(e.to_string()))?;
            if !status.is_success() {
                return Err(LlmError::Http {
                    status: status.as_u16(),
                    body: truncate(&body, 200),
                });
            }
            let chat: ChatResponse = serde_json::from_str(&body)
                .map_err(|e| LlmError::BadAnswer(format!("not a chat completion: {e}")))?;
            let content = chat
                .choices
                .first()
                .and_then(|c| c.message.content.as_deref())
                .ok_or_else(|| LlmError::BadAnswer("no choices[0].message.content".into()))?;
            parse_verdict(content)
        };
        match tokio::time::timeout(budget, call).await {
            Ok(r) => r,
            Err(_) => Err(LlmError::Timeout {
                budget_ms: budget.as_millis() as u64,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdicts_parse_strictly() {
        assert_eq!(
            parse_verdict(r#"{"answered_by":"machine","confidence":0.9}"#).unwrap(),
            0.9
        );
        assert!(
            (parse_verdict(r#"{"answered_by":"human","confidence":0.8}"#).unwrap() - 0.2).abs()
                < 1e-6
        );
        assert_eq!(
            parse_verdict("```json\n{\"answered_by\":\"Machine\",\"confidence\":1}\n```").unwrap(),
            1.0
        );
        for bad in [
            "",
            "It sounds like a voicemail.",
            r#"{"answered_by":"robot","confidence":0.5}"#,
            r#"{"answered_by":"human","confidence":3}"#,
            r#"{"answered_by":"human"}"#,
            r#"["machine"]"#,
        ] {
            assert!(
                matches!(parse_verdict(bad), Err(LlmError::BadAnswer(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn request_carries_the_audio_as_base64_wav() {
        let v = LlmVerifier::new(LlmConfig {
            base_url: "http://127.0.0.1:9".into(),
            model: "m".into(),
            api_key: String::new(),
        })
        .unwrap();
        let wav = crate::audio::wav::to_wav_bytes(8000, &[0; 80]);
        let body = v.request_body(&wav);
        let data = body["messages"][1]["content"][1]["input_audio"]["data"]
            .as_str()
            .unwrap();
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(data)
            .unwrap();
        assert_eq!(&decoded[..4], b"RIFF");
        assert_eq!(
            body["messages"][1]["content"][1]["input_audio"]["format"],
            "wav"
        );
        assert_eq!(body["model"], "m");
        // (audio models refuse structured outputs: see the module's docs)
        assert!(body.get("response_format").is_none(), "{body}");
    }

    #[test]
    fn analysis_has_its_own_model_on_the_same_endpoint() {
        let vars = |set: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                set.iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| v.to_string())
            }
        };
        let amd = |set| LlmConfig::from_vars(vars(set), "DIALGATE_LLM_MODEL", DEFAULT_AMD_MODEL);
        let analysis = |set| {
            LlmConfig::from_vars(vars(set), "DIALGATE_ANALYSIS_MODEL", DEFAULT_ANALYSIS_MODEL)
        };
        let none: &[(&str, &str)] = &[];
        assert_eq!(amd(none).model, "gpt-audio-mini");
        assert_eq!(analysis(none).model, "gpt-5-mini");
        assert_eq!(amd(none).base_url, "https://api.openai.com/v1");
        let set: &[(&str, &str)] = &[
            ("DIALGATE_LLM_BASE_URL", "http://llm.local/v1"),
            ("DIALGATE_LLM_MODEL", "audio-x"),
            ("OPENAI_API_KEY", "sk-1"),
        ];
        // setting the verifier's model leaves the analysis model alone
        assert_eq!(amd(set).model, "audio-x");
        assert_eq!(analysis(set).model, "gpt-5-mini");
        assert_eq!(analysis(set).base_url, "http://llm.local/v1");
        assert_eq!(analysis(set).api_key, "sk-1");
        let set: &[(&str, &str)] = &[
            ("DIALGATE_ANALYSIS_MODEL", "text-y"),
            ("DIALGATE_LLM_API_KEY", "k"),
            ("OPENAI_API_KEY", "sk-1"),
        ];
        assert_eq!(analysis(set).model, "text-y");
        assert_eq!(amd(set).api_key, "k");
    }
}
