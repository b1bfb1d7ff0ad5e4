//! Campaigns: the configuration template every outbound call is launched
//! under (the seed's "Outbound Campaigns"). This module is the model and its
//! rules, with no I/O: validation with field-level errors, number routing
//! (default number plus longest-prefix regional overrides), typed variables
//! and metadata, and the call settings a [`crate::call::session::CallSession`]
//! is built from. The store persists it; the dialer reads it for every
//! attempt it dials, so an edit applies to attempts not yet dialled.

pub mod phone;
pub mod window;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::call::session::{AgentStart, MachineAction, SessionConfig};
use crate::detect::amd::AmdConfig;
pub use window::CallingWindow;

/// One field's problem, as the API reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldError {
    /// A JSON-pointer-like path (`numbers.overrides[1].prefix`).
    pub field: String,
    /// What is wrong.
    pub message: String,
}

impl FieldError {
    fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// Renders errors as one line, for CSV rejections and logs.
pub fn errors_line(errors: &[FieldError]) -> String {
    errors
        .iter()
        .map(|e| format!("{}: {}", e.field, e.message))
        .collect::<Vec<_>>()
        .join("; ")
}

/// The agent and its script.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentSpec {
    /// The agent's WebSocket URL (Twilio Media Streams protocol).
    pub url: String,
    /// The opening script (passed to the agent as `script`).
    pub script: String,
    /// "Inject To/From Numbers": pass `to_number` and `from_number` to the agent.
    #[serde(default)]
    pub inject_numbers: bool,
    /// `immediate` or `after_amd`.
    #[serde(default = "default_start")]
    pub start: String,
    /// The audio the agent speaks: `mulaw_8000` (default, as Twilio),
    /// `l16_16000` or `l16_24000`.
    #[serde(default)]
    pub audio: crate::agent::bridge::AgentAudio,
}

fn default_start() -> String {
    "after_amd".into()
}

/// A business number calls are shown from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CallerNumber {
    /// Our id for it (`call_queue_calling_number_id`).
    pub id: String,
    /// The number, E.164 after validation.
    pub number: String,
    /// `twilio` or `sim` (`call_queue_calling_number_provider`).
    #[serde(default = "default_carrier")]
    pub carrier: String,
}

fn default_carrier() -> String {
    "sim".into()
}

/// A regional override: destinations starting with `prefix` use `number`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Override {
    /// `+` and digits, e.g. `+968`.
    pub prefix: String,
    /// The number to show.
    #[serde(flatten)]
    pub number: CallerNumber,
}

/// Number routing ("local presence").
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NumberRouting {
    /// The fallback number.
    pub default: CallerNumber,
    /// Regional overrides; the longest matching prefix wins.
    #[serde(default)]
    pub overrides: Vec<Override>,
}

/// Retry triggers and limits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetrySpec {
    /// Retry on a busy signal.
    #[serde(default)]
    pub on_busy: bool,
    /// Retry on a decline (a deliberate rejection): off unless asked.
    #[serde(default)]
    pub on_decline: bool,
    /// Retry on no answer / ring time-out.
    #[serde(default)]
    pub on_no_answer: bool,
    /// Retries after the first attempt.
    #[serde(default)]
    pub max_retries: u32,
    /// Delay before a retry, seconds.
    #[serde(default = "default_retry_delay")]
    pub delay_seconds: u64,
}

fn default_retry_delay() -> u64 {
    3600
}

impl Default for RetrySpec {
    fn default() -> Self {
        Self {
            on_busy: false,
            on_decline: false,
            on_no_answer: false,
            max_retries: 0,
            delay_seconds: default_retry_delay(),
        }
    }
}

/// Voicemail detection settings (the seed's AMD section).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AmdSpec {
    /// AMD on or off.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// How long to listen before deciding, ms (the seed: usually 2–3 s).
    #[serde(default = "default_check_delay")]
    pub initial_check_delay_ms: u64,
    /// Send the greeting to an LLM when unsure.
    #[serde(default)]
    pub llm_verification: bool,
    /// LLM time budget, ms.
    #[serde(default = "default_llm_budget")]
    pub llm_budget_ms: u64,
    /// Pause the agent the moment a machine is detected.
    #[serde(default = "yes")]
    pub stop_speaking: bool,
    /// `end_call` or `leave_message`.
    #[serde(default = "default_action")]
    pub action: String,
    /// The script path used to leave a message.
    #[serde(default)]
    pub voicemail_script: Option<String>,
    /// After a person was detected, how long a voicemail beep still
    /// overturns it, ms (0: never). A short greeting's beep can come after
    /// the agent has started talking; it then stops, and the action runs.
    #[serde(default = "default_late_beep")]
    pub late_beep_ms: u64,
}

fn yes() -> bool {
    true
}
fn default_check_delay() -> u64 {
    AmdConfig::default().initial_check_delay_ms
}
fn default_llm_budget() -> u64 {
    1500
}
fn default_late_beep() -> u64 {
    AmdConfig::default().late_beep_ms
}
fn default_action() -> String {
    "end_call".into()
}

impl Default for AmdSpec {
    fn default() -> Self {
        Self {
            enabled: true,
            initial_check_delay_ms: default_check_delay(),
            llm_verification: false,
            llm_budget_ms: default_llm_budget(),
            stop_speaking: true,
            action: default_action(),
            voicemail_script: None,
            late_beep_ms: default_late_beep(),
        }
    }
}

/// A variable or metadata key the campaign expects.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FieldSpec {
    /// Its name (a CSV column of the same name fills it).
    pub name: String,
    /// `string`, `number`, `boolean` or `date` (`YYYY-MM-DD`).
    #[serde(rename = "type", default = "default_type")]
    pub kind: String,
    /// Missing → the call does not launch.
    #[serde(default)]
    pub required: bool,
    /// Used when the value is missing and not required.
    #[serde(default)]
    pub default: Option<Value>,
}

fn default_type() -> String {
    "string".into()
}

/// An action: a lifecycle event sent to a custom tool.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActionSpec {
    /// The custom tool's id.
    pub tool_id: String,
    /// Tool input field → template over the event's variables
    /// (`{{call_queue_id}}`).
    #[serde(default)]
    pub mapping: BTreeMap<String, String>,
}

/// The six lifecycle events and their actions.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Actions {
    /// Call Initiation Failure.
    #[serde(default)]
    pub call_initiation_failure: Option<ActionSpec>,
    /// Call Initiated.
    #[serde(default)]
    pub call_initiated: Option<ActionSpec>,
    /// Call Declined.
    #[serde(default)]
    pub call_declined: Option<ActionSpec>,
    /// Call Missed.
    #[serde(default)]
    pub call_missed: Option<ActionSpec>,
    /// Call Answered.
    #[serde(default)]
    pub call_answered: Option<ActionSpec>,
    /// Call Ended.
    #[serde(default)]
    pub call_ended: Option<ActionSpec>,
}

/// Pacing and call limits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Calls in flight at once for the campaign.
    #[serde(default = "default_concurrency")]
    pub max_concurrency: u32,
    /// New calls per second for the campaign.
    #[serde(default = "default_cps")]
    pub calls_per_second: f64,
    /// Calls in flight at once per caller number (carriers limit this).
    #[serde(default)]
    pub max_concurrency_per_number: Option<u32>,
    /// New calls per second per caller number (Twilio: 1 CPS by default).
    #[serde(default)]
    pub calls_per_second_per_number: Option<f64>,
    /// How long to let it ring, seconds.
    #[serde(default = "default_ring")]
    pub ring_timeout_seconds: u32,
    /// Longest call, seconds.
    #[serde(default = "default_max_duration")]
    pub max_duration_seconds: u32,
}

fn default_concurrency() -> u32 {
    10
}
fn default_cps() -> f64 {
    1.0
}
fn default_ring() -> u32 {
    30
}
fn default_max_duration() -> u32 {
    600
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_concurrency: default_concurrency(),
            calls_per_second: default_cps(),
            max_concurrency_per_number: None,
            calls_per_second_per_number: None,
            ring_timeout_seconds: default_ring(),
            max_duration_seconds: default_max_duration(),
        }
    }
}

/// A call's checked variables and metadata.
pub type CheckedInputs = (Map<String, Value>, Map<String, Value>);

/// Everything a campaign says (what `POST /v1/campaigns` takes).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CampaignSpec {
    /// A name for people.
    pub name: String,
    /// Agent and opening script.
    pub agent: AgentSpec,
    /// Caller IDs.
    pub numbers: NumberRouting,
    /// Region for destinations written without `+country` (ISO alpha-2).
    #[serde(default)]
    pub default_region: Option<String>,
    /// Retries.
    #[serde(default)]
    pub retry: RetrySpec,
    /// Voicemail detection.
    #[serde(default)]
    pub amd: AmdSpec,
    /// Variables the script uses.
    #[serde(default)]
    pub variables: Vec<FieldSpec>,
    /// Metadata attached to the call.
    #[serde(default)]
    pub metadata: Vec<FieldSpec>,
    /// Post-analysis template id.
    #[serde(default)]
    pub post_analysis_template: Option<String>,
    /// The six actions.
    #[serde(default)]
    pub actions: Actions,
    /// When calls may be placed, recipient's local time.
    #[serde(default)]
    pub calling_window: CallingWindow,
    /// Pacing.
    #[serde(default)]
    pub limits: Limits,
    /// No call is placed after this (RFC 3339).
    #[serde(default)]
    pub expires_at: Option<chrono::DateTime<chrono::Utc>>,
    /// Numbers never to call (any format; normalised on save).
    #[serde(default)]
    pub do_not_call: Vec<String>,
}

/// A campaign's run state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CampaignState {
    /// Dialling.
    Active,
    /// No new dials until resumed.
    Paused,
    /// Stopped for good; queued attempts are canceled.
    Canceled,
}

impl CampaignState {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Paused => "paused",
            Self::Canceled => "canceled",
        }
    }

    /// From the stored name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "active" => Some(Self::Active),
            "paused" => Some(Self::Paused),
            "canceled" => Some(Self::Canceled),
            _ => None,
        }
    }
}

const TYPES: [&str; 4] = ["string", "number", "boolean", "date"];

impl CampaignSpec {
    /// Checks every field and normalises numbers in place; all problems are
    /// reported at once.
    pub fn validate(&mut self) -> Result<(), Vec<FieldError>> {
        let mut errs = Vec::new();
        if self.name.trim().is_empty() {
            errs.push(FieldError::new("name", "must not be empty"));
        }
        if !(self.agent.url.starts_with("ws://") || self.agent.url.starts_with("wss://")) {
            errs.push(FieldError::new(
                "agent.url",
                "must be a ws:// or wss:// URL",
            ));
        }
        if self.agent.script.trim().is_empty() {
            errs.push(FieldError::new(
                "agent.script",
                "must name the opening script",
            ));
        }
        if !matches!(self.agent.start.as_str(), "immediate" | "after_amd") {
            errs.push(FieldError::new(
                "agent.start",
                "must be `immediate` or `after_amd`",
            ));
        }
        if let Some(r) = &self.default_region
            && r.to_ascii_uppercase()
                .parse::<phonenumber::country::Id>()
                .is_err()
        {
            errs.push(FieldError::new(
                "default_region",
                "not an ISO 3166 alpha-2 region",
            ));
        }
        let region = self.default_region.clone();
        check_number(
            &mut self.numbers.default,
            "numbers.default",
            region.as_deref(),
            &mut errs,
        );
        let mut prefixes = std::collections::HashSet::new();
        for (i, o) in self.numbers.overrides.iter_mut().enumerate() {
            let f = format!("numbers.overrides[{i}]");
            let p = o.prefix.trim();
            if p.len() < 2 || !p.starts_with('+') || !p[1..].chars().all(|c| c.is_ascii_digit()) {
                errs.push(FieldError::new(
                    format!("{f}.prefix"),
                    "must be `+` followed by digits",
                ));
            } else if !prefixes.insert(p.to_string()) {
                errs.push(FieldError::new(format!("{f}.prefix"), "duplicate prefix"));
            }
            o.prefix = p.to_string();
            check_number(&mut o.number, &f, region.as_deref(), &mut errs);
        }
        if self.retry.max_retries > 20 {
            errs.push(FieldError::new("retry.max_retries", "at most 20"));
        }
        if self.retry.delay_seconds == 0 && self.retry.max_retries > 0 {
            errs.push(FieldError::new(
                "retry.delay_seconds",
                "must be positive when retries are on",
            ));
        }
        if !(500..=10_000).contains(&self.amd.initial_check_delay_ms) {
            errs.push(FieldError::new(
                "amd.initial_check_delay_ms",
                "must be 500–10000",
            ));
        }
        if self.amd.late_beep_ms > 30_000 {
            errs.push(FieldError::new("amd.late_beep_ms", "must be 0–30000"));
        }
        match self.amd.action.as_str() {
            "end_call" => {}
            "leave_message" => {
                if self
                    .amd
                    .voicemail_script
                    .as_deref()
                    .is_none_or(|s| s.trim().is_empty())
                {
                    errs.push(FieldError::new(
                        "amd.voicemail_script",
                        "required when the action is `leave_message`",
                    ));
                }
            }
            _ => errs.push(FieldError::new(
                "amd.action",
                "must be `end_call` or `leave_message`",
            )),
        }
        for (list, name) in [(&self.variables, "variables"), (&self.metadata, "metadata")] {
            let mut seen = std::collections::HashSet::new();
            for (i, v) in list.iter().enumerate() {
                let f = format!("{name}[{i}]");
                if v.name.is_empty()
                    || !v
                        .name
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_')
                {
                    errs.push(FieldError::new(
                        format!("{f}.name"),
                        "letters, digits and `_` only",
                    ));
                }
                if matches!(
                    v.name.as_str(),
                    "to_number" | "to" | "scheduled_for" | "expires_at"
                ) {
                    errs.push(FieldError::new(format!("{f}.name"), "reserved column name"));
                }
                if !seen.insert(v.name.clone()) {
                    errs.push(FieldError::new(format!("{f}.name"), "duplicate name"));
                }
                if !TYPES.contains(&v.kind.as_str()) {
                    errs.push(FieldError::new(
                        format!("{f}.type"),
                        "must be string, number, boolean or date",
                    ));
                } else if let Some(d) = &v.default
                    && let Err(m) = coerce(&v.kind, d)
                {
                    errs.push(FieldError::new(format!("{f}.default"), m));
                }
            }
        }
        if window::Window::new(&self.calling_window).is_none() {
            errs.push(FieldError::new(
                "calling_window",
                "start and end must be HH:MM with start before end, days mon…sun",
            ));
        }
        if let Some(tz) = &self.calling_window.fallback_time_zone
            && tz.parse::<chrono_tz::Tz>().is_err()
        {
            errs.push(FieldError::new(
                "calling_window.fallback_time_zone",
                "unknown IANA zone",
            ));
        }
        let l = &self.limits;
        if l.max_concurrency == 0 || l.max_concurrency > 10_000 {
            errs.push(FieldError::new("limits.max_concurrency", "must be 1–10000"));
        }
        if !(l.calls_per_second > 0.0 && l.calls_per_second <= 1000.0) {
            errs.push(FieldError::new(
                "limits.calls_per_second",
                "must be in (0, 1000]",
            ));
        }
        if l.max_concurrency_per_number == Some(0) {
            errs.push(FieldError::new(
                "limits.max_concurrency_per_number",
                "must be positive",
            ));
        }
        if let Some(c) = l.calls_per_second_per_number
            && !(c > 0.0 && c <= 1000.0)
        {
            errs.push(FieldError::new(
                "limits.calls_per_second_per_number",
                "must be in (0, 1000]",
            ));
        }
        if !(5..=600).contains(&l.ring_timeout_seconds) {
            errs.push(FieldError::new(
                "limits.ring_timeout_seconds",
                "must be 5–600",
            ));
        }
        if !(10..=14_400).contains(&l.max_duration_seconds) {
            errs.push(FieldError::new(
                "limits.max_duration_seconds",
                "must be 10–14400",
            ));
        }
        let mut dnc = Vec::with_capacity(self.do_not_call.len());
        for (i, n) in self.do_not_call.iter().enumerate() {
            match phone::normalize(n, region.as_deref()) {
                Ok(e) => dnc.push(e),
                Err(e) => errs.push(FieldError::new(format!("do_not_call[{i}]"), e.to_string())),
            }
        }
        self.do_not_call = dnc;
        if errs.is_empty() { Ok(()) } else { Err(errs) }
    }

    /// The caller number for a destination: the longest matching override
    /// prefix, else the default.
    pub fn route(&self, to_e164: &str) -> &CallerNumber {
        self.numbers
            .overrides
            .iter()
            .filter(|o| to_e164.starts_with(&o.prefix))
            .max_by_key(|o| o.prefix.len())
            .map_or(&self.numbers.default, |o| &o.number)
    }

    /// Checks a call's variables and metadata against the campaign and
    /// fills defaults. `strings` says the values came from CSV text and are
    /// coerced to their types.
    pub fn check_inputs(
        &self,
        variables: &Map<String, Value>,
        metadata: &Map<String, Value>,
    ) -> Result<CheckedInputs, Vec<FieldError>> {
        let mut errs = Vec::new();
        let vars = fill(&self.variables, variables, "variables", &mut errs);
        let meta = fill(&self.metadata, metadata, "metadata", &mut errs);
        if errs.is_empty() {
            Ok((vars, meta))
        } else {
            Err(errs)
        }
    }

    /// The recipient's zones: from the number, else the campaign fallback.
    pub fn zones_for(&self, to_e164: &str) -> Vec<chrono_tz::Tz> {
        let names = phone::time_zones(to_e164);
        let mut zones: Vec<chrono_tz::Tz> = names.iter().filter_map(|n| n.parse().ok()).collect();
        if zones.is_empty()
            && let Some(tz) = self
                .calling_window
                .fallback_time_zone
                .as_deref()
                .and_then(|t| t.parse().ok())
        {
            zones.push(tz);
        }
        if zones.is_empty() {
            zones.push(chrono_tz::UTC);
        }
        zones
    }

    /// The call session settings for one attempt.
    pub fn session_config(&self, params: BTreeMap<String, String>) -> SessionConfig {
        let amd = self.amd.enabled.then(|| AmdConfig {
            initial_check_delay_ms: self.amd.initial_check_delay_ms,
            llm_budget_ms: self.amd.llm_verification.then_some(self.amd.llm_budget_ms),
            late_beep_ms: self.amd.late_beep_ms,
            ..AmdConfig::default()
        });
        let machine_action = match self.amd.action.as_str() {
            "leave_message" => MachineAction::LeaveMessage {
                voicemail_script: self.amd.voicemail_script.clone().unwrap_or_default(),
            },
            _ => MachineAction::EndCall,
        };
        SessionConfig {
            agent_start: if self.agent.start == "immediate" {
                AgentStart::Immediate
            } else {
                AgentStart::AfterAmd
            },
            stop_speaking: self.amd.stop_speaking,
            machine_action,
            max_duration_ms: u64::from(self.limits.max_duration_seconds) * 1000,
            amd,
            agent_params: params,
            ..SessionConfig::default()
        }
    }
}

fn check_number(
    n: &mut CallerNumber,
    field: &str,
    region: Option<&str>,
    errs: &mut Vec<FieldError>,
) {
    if n.id.trim().is_empty() {
        errs.push(FieldError::new(format!("{field}.id"), "must not be empty"));
    }
    match phone::normalize(&n.number, region) {
        Ok(e) => n.number = e,
        Err(e) => errs.push(FieldError::new(format!("{field}.number"), e.to_string())),
    }
    if !matches!(n.carrier.as_str(), "twilio" | "sim" | "sip") {
        errs.push(FieldError::new(
            format!("{field}.carrier"),
            "must be `twilio`, `sim` or `sip` (the SIP trunk)",
        ));
    }
}

fn fill(
    specs: &[FieldSpec],
    given: &Map<String, Value>,
    section: &str,
    errs: &mut Vec<FieldError>,
) -> Map<String, Value> {
    let mut out = Map::new();
    for s in specs {
        let f = format!("{section}.{}", s.name);
        match given.get(&s.name) {
            Some(v) if !is_blank(v) => match coerce(&s.kind, v) {
                Ok(v) => {
                    out.insert(s.name.clone(), v);
                }
                Err(m) => errs.push(FieldError::new(f, m)),
            },
            _ if s.required => errs.push(FieldError::new(f, "required")),
            _ => {
                if let Some(d) = &s.default {
                    out.insert(s.name.clone(), coerce(&s.kind, d).unwrap_or(Value::Null));
                }
            }
        }
    }
    // Keys the campaign does not declare are kept: metadata is often a
    // pass-through for the user's CRM.
    for (k, v) in given {
        if !out.contains_key(k) && !specs.iter().any(|s| &s.name == k) {
            out.insert(k.clone(), v.clone());
        }
    }
    out
}

fn is_blank(v: &Value) -> bool {
    v.is_null() || v.as_str().is_some_and(|s| s.trim().is_empty())
}

/// Converts a value (JSON or CSV text) to the declared type.
fn coerce(kind: &str, v: &Value) -> Result<Value, String> {
    match (kind, v) {
        ("string", Value::String(_)) => Ok(v.clone()),
        ("string", Value::Number(n)) => Ok(Value::String(n.to_string())),
        ("string", Value::Bool(b)) => Ok(Value::String(b.to_string())),
        ("number", Value::Number(_)) => Ok(v.clone()),
        ("number", Value::String(s)) => s
            .trim()
            .parse::<f64>()
            .ok()
            .filter(|f| f.is_finite())
            .and_then(serde_json::Number::from_f64)
            .map(|n| {
                // Keep integers integral in the JSON the agent receives.
                if n.as_f64()
                    .is_some_and(|f| f.fract() == 0.0 && f.abs() < 9e15)
                {
                    Value::from(n.as_f64().unwrap_or(0.0) as i64)
                } else {
                    Value::Number(n)
                }
            })
            .ok_or_else(|| format!("`{s}` is not a number")),
        ("boolean", Value::Bool(_)) => Ok(v.clone()),
        ("boolean", Value::String(s)) => match s.trim().to_ascii_lowercase().as_str() {
            "true" | "yes" | "1" | "y" => Ok(Value::Bool(true)),
            "false" | "no" | "0" | "n" => Ok(Value::Bool(false)),
            _ => Err(format!("`{s}` is not a boolean")),
        },
        ("date", Value::String(s)) => chrono::NaiveDate::parse_from_str(s.trim(), "%Y-%m-%d")
            .map(|d| Value::String(d.to_string()))
            .map_err(|_| format!("`{s}` is not a date (YYYY-MM-DD)")),
        (k, v) => Err(format!("expected a {k}, got {}", type_name(v))),
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    pub(crate) fn example() -> CampaignSpec {
        serde_json::from_value(json!({
            "name": "renewals",
            "agent": {"url": "ws://127.0.0.1:9/", "script": "renewal-opening"},
            "numbers": {
                "default": {"id": "num-us", "number": "+12015550100"},
                "overrides": [
                    {"prefix": "+968", "id": "num-om", "number": "+96822000000"},
                    {"prefix": "+9689", "id": "num-om-mobile", "number": "+96891000000"}
                ]
            },
            "variables": [
                {"name": "customer_name", "required": true},
                {"name": "balance", "type": "number", "default": 0}
            ],
            "metadata": [{"name": "crm_id"}]
        }))
        .unwrap()
    }

    #[test]
    fn valid_campaign_passes_and_normalises() {
        let mut c = example();
        c.numbers.default.number = "(201) 555-0100".into();
        c.default_region = Some("US".into());
        c.validate().unwrap();
        assert_eq!(c.numbers.default.number, "+12015550100");
    }

    #[test]
    fn longest_prefix_wins() {
        let mut c = example();
        c.validate().unwrap();
        assert_eq!(c.route("+96824123456").id, "num-om");
        assert_eq!(c.route("+96891234567").id, "num-om-mobile");
        assert_eq!(c.route("+447700900123").id, "num-us");
    }

    #[test]
    fn field_errors_name_every_field() {
        let mut c = example();
        c.agent.url = "http://x".into();
        c.numbers.overrides[0].prefix = "968".into();
        c.numbers.default.number = "nope".into();
        c.limits.max_concurrency = 0;
        c.amd.action = "leave_message".into();
        c.amd.late_beep_ms = 60_000;
        c.calling_window.start = "22:00".into();
        let errs = c.validate().unwrap_err();
        let fields: Vec<&str> = errs.iter().map(|e| e.field.as_str()).collect();
        for f in [
            "agent.url",
            "numbers.overrides[0].prefix",
            "numbers.default.number",
            "limits.max_concurrency",
            "amd.voicemail_script",
            "amd.late_beep_ms",
            "calling_window",
        ] {
            assert!(fields.contains(&f), "{f} missing from {fields:?}");
        }
    }

    #[test]
    fn inputs_are_typed_required_and_defaulted() {
        let c = example();
        let ok = c
            .check_inputs(
                json!({"customer_name": "Ahmed", "balance": "12.5"})
                    .as_object()
                    .unwrap(),
                json!({"crm_id": 42, "extra": "x"}).as_object().unwrap(),
            )
            .unwrap();
        assert_eq!(ok.0["balance"], json!(12.5));
        assert_eq!(ok.1["crm_id"], json!("42"));
        assert_eq!(ok.1["extra"], json!("x"));
        let d = c
            .check_inputs(
                json!({"customer_name": "A"}).as_object().unwrap(),
                &Map::new(),
            )
            .unwrap();
        assert_eq!(d.0["balance"], json!(0));
        let errs = c
            .check_inputs(json!({"balance": "lots"}).as_object().unwrap(), &Map::new())
            .unwrap_err();
        assert_eq!(errs.len(), 2);
        assert_eq!(errs[0].field, "variables.customer_name");
        assert_eq!(errs[0].message, "required");
        assert!(errors_line(&errs).contains("`lots` is not a number"));
        // A blank CSV cell is missing, not an empty name.
        assert!(
            c.check_inputs(
                json!({"customer_name": "  "}).as_object().unwrap(),
                &Map::new()
            )
            .is_err()
        );
    }

    #[test]
    fn unknown_fields_are_refused() {
        let r: Result<CampaignSpec, _> = serde_json::from_value(json!({
            "name": "x", "agent": {"url": "ws://a", "script": "s"},
            "numbers": {"default": {"id": "a", "number": "+12015550100"}},
            "retry": {"on_bussy": true}
        }));
        assert!(r.is_err());
    }
}
