//! Lifecycle events: the seed's six, with exactly its variables. An event
//! is built from the call-queue row inside the same transaction as the
//! status change that raises it and written to the outbox there (see
//! [`crate::store`]), so a crash can neither lose it nor send an event for a
//! change that did not happen. [`delivery`] sends them to the campaign's
//! actions.
//!
//! Which change raises which event:
//!
//! | change | event |
//! |---|---|
//! | `processing → initiated` | Call Initiated |
//! | `→ failed` before an answer, `→ expired`, `→ suppressed`, `→ canceled` | Call Initiation Failure (`call_queue_initiation_error` says why) |
//! | `→ busy`, `→ declined` | Call Declined |
//! | `→ missed` (no answer, ring time-out) | Call Missed |
//! | the first AMD decision (or the answer, when AMD is off, or the end, when AMD never decided) | Call Answered, with `amd` |
//! | `answered → completed` | Call Ended, with `amd` |
//!
//! Call Answered waits for AMD so that its `amd` extension says who
//! answered; `conversation_start_time` is still when the audio began.

pub mod delivery;

use chrono::{DateTime, Utc};
use serde_json::{Map, Value, json};

use crate::store::{CallRow, CallStatus};

/// The six events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventKind {
    /// Call Initiation Failure.
    InitiationFailure,
    /// Call Initiated.
    Initiated,
    /// Call Declined.
    Declined,
    /// Call Missed.
    Missed,
    /// Call Answered.
    Answered,
    /// Call Ended.
    Ended,
}

/// All six, in lifecycle order.
pub const ALL_EVENTS: [EventKind; 6] = [
    EventKind::InitiationFailure,
    EventKind::Initiated,
    EventKind::Declined,
    EventKind::Missed,
    EventKind::Answered,
    EventKind::Ended,
];

const COMMON: [&str; 14] = [
    "call_queue_id",
    "call_queue_created_at",
    "call_queue_enqueued_at",
    "call_queue_processing_started_at",
    "call_queue_completed_at",
    "call_queue_status",
    "call_queue_campaign_id",
    "call_queue_calling_number_id",
    "call_queue_calling_number_provider",
    "call_queue_provider_call_id",
    "call_queue_recipient_number",
    "call_queue_scheduled_for_date_time",
    "call_queue_dynamic_variables",
    "call_queue_metadata",
];

impl EventKind {
    /// The stored and wire name (`call_ended`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InitiationFailure => "call_initiation_failure",
            Self::Initiated => "call_initiated",
            Self::Declined => "call_declined",
            Self::Missed => "call_missed",
            Self::Answered => "call_answered",
            Self::Ended => "call_ended",
        }
    }

    /// The seed's name (`Call Ended`).
    pub fn title(self) -> &'static str {
        match self {
            Self::InitiationFailure => "Call Initiation Failure",
            Self::Initiated => "Call Initiated",
            Self::Declined => "Call Declined",
            Self::Missed => "Call Missed",
            Self::Answered => "Call Answered",
            Self::Ended => "Call Ended",
        }
    }

    /// From the stored name.
    pub fn parse(s: &str) -> Option<Self> {
        ALL_EVENTS.into_iter().find(|k| k.as_str() == s)
    }

    /// The seed's variables for this event, in its table's order, then the
    /// `amd` extension where it applies.
    pub fn variables(self) -> Vec<&'static str> {
        let mut v: Vec<&'static str> = COMMON.to_vec();
        match self {
            Self::InitiationFailure => v.push("call_queue_initiation_error"),
            Self::Initiated | Self::Declined | Self::Missed => v.push("conversation_id"),
            Self::Answered => v.extend(["conversation_id", "conversation_start_time", "amd"]),
            Self::Ended => v.extend([
                "conversation_id",
                "conversation_start_time",
                "conversation_end_time",
                "conversation_end_type",
                "conversation_turns",
                "conversation_turns_simplified",
                "amd",
            ]),
        }
        v
    }

    /// The event a status change raises, if any. `answered_before` says
    /// whether the call had been answered (a failure after that ends it).
    pub fn for_transition(to: CallStatus, answered_before: bool) -> Option<Self> {
        match to {
            CallStatus::Initiated => Some(Self::Initiated),
            CallStatus::Busy | CallStatus::Declined => Some(Self::Declined),
            CallStatus::Missed => Some(Self::Missed),
            CallStatus::Completed => Some(Self::Ended),
            CallStatus::Failed if answered_before => Some(Self::Ended),
            CallStatus::Failed
            | CallStatus::Expired
            | CallStatus::Suppressed
            | CallStatus::Canceled => Some(Self::InitiationFailure),
            _ => None,
        }
    }
}

fn time(ms: Option<i64>) -> Value {
    ms.and_then(DateTime::<Utc>::from_timestamp_millis)
        .map_or(Value::Null, |t| {
            Value::String(t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        })
}

fn opt(s: &Option<String>) -> Value {
    s.as_ref().map_or(Value::Null, |s| Value::String(s.clone()))
}

/// The provider's display name, as the seed writes it (`Twilio`).
fn provider_name(p: &Option<String>) -> Value {
    match p.as_deref() {
        Some("twilio") => json!("Twilio"),
        Some("sim") => json!("Sim"),
        Some(other) => json!(other),
        None => Value::Null,
    }
}

/// A readable transcript: one `Role: text` line per turn.
pub fn simplify_turns(turns: &Value) -> String {
    let Some(list) = turns.as_array() else {
        return String::new();
    };
    list.iter()
        .filter_map(|t| {
            let text = t.get("text")?.as_str()?;
            let role = match t.get("role").and_then(Value::as_str) {
                Some("agent") | Some("assistant") => "Agent",
                Some("user") => "User",
                Some(other) => other,
                None => "Unknown",
            };
            Some(format!("{role}: {text}"))
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The payload of `kind` for the attempt as it is now. Every variable of
/// the seed's table is present; what is unknown is `null`.
pub fn payload(kind: EventKind, c: &CallRow) -> Map<String, Value> {
    let mut m = Map::new();
    for key in kind.variables() {
        let v = match key {
            "call_queue_id" => json!(c.id),
            "call_queue_created_at" => time(Some(c.created_at)),
            "call_queue_enqueued_at" => time(c.enqueued_at),
            "call_queue_processing_started_at" => time(c.processing_started_at),
            "call_queue_completed_at" => time(c.completed_at),
            "call_queue_status" => json!(c.status.as_str()),
            "call_queue_campaign_id" => json!(c.campaign_id),
            "call_queue_calling_number_id" => opt(&c.caller_number_id),
            "call_queue_calling_number_provider" => provider_name(&c.provider),
            "call_queue_provider_call_id" => opt(&c.provider_call_id),
            "call_queue_recipient_number" => json!(c.to_number),
            // A call launched for "now" was scheduled for its creation.
            "call_queue_scheduled_for_date_time" => {
                time(Some(c.scheduled_for.unwrap_or(c.created_at)))
            }
            "call_queue_dynamic_variables" => Value::Object(c.variables.clone()),
            "call_queue_metadata" => Value::Object(c.metadata.clone()),
            "call_queue_initiation_error" => opt(&c.initiation_error),
            "conversation_id" => opt(&c.conversation_id),
            "conversation_start_time" => time(c.conversation_start),
            "conversation_end_time" => time(c.conversation_end),
            "conversation_end_type" => opt(&c.end_type),
            "conversation_turns" => c.turns.clone().unwrap_or_else(|| Value::Array(Vec::new())),
            "conversation_turns_simplified" => {
                json!(simplify_turns(c.turns.as_ref().unwrap_or(&Value::Null)))
            }
            "amd" => json!({
                "answered_by": c.answered_by,
                "decision_ms": c.amd_decision_ms,
            }),
            _ => Value::Null,
        };
        m.insert(key.to_string(), v);
    }
    m
}

/// Renders an action's mapping over an event's variables: a template that
/// is exactly `{{name}}` keeps the variable's JSON type (objects stay
/// objects); anything else is text with each `{{name}}` replaced. An empty
/// mapping sends every variable.
pub fn render(
    mapping: &std::collections::BTreeMap<String, String>,
    vars: &Map<String, Value>,
) -> Value {
    if mapping.is_empty() {
        return Value::Object(vars.clone());
    }
    let mut out = Map::new();
    for (field, tpl) in mapping {
        let t = tpl.trim();
        let whole = t
            .strip_prefix("{{")
            .and_then(|r| r.strip_suffix("}}"))
            .map(str::trim)
            .filter(|n| !n.contains("{{") && !n.contains("}}"));
        let v = match whole {
            Some(name) => vars.get(name).cloned().unwrap_or(Value::Null),
            None => {
                let mut s = String::new();
                let mut rest = tpl.as_str();
                while let Some(i) = rest.find("{{") {
                    s.push_str(&rest[..i]);
                    match rest[i + 2..].find("}}") {
                        Some(j) => {
                            let name = rest[i + 2..i + 2 + j].trim();
                            match vars.get(name) {
                                Some(Value::String(x)) => s.push_str(x),
                                Some(Value::Null) | None => {}
                                Some(other) => s.push_str(&other.to_string()),
                            }
                            rest = &rest[i + 2 + j + 2..];
                        }
                        None => {
                            s.push_str(&rest[i..]);
                            rest = "";
                        }
                    }
                }
                s.push_str(rest);
                Value::String(s)
            }
        };
        out.insert(field.clone(), v);
    }
    Value::Object(out)
}

/// The variables a template refers to.
pub fn template_vars(tpl: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = tpl;
    while let Some(i) = rest.find("{{") {
        match rest[i + 2..].find("}}") {
            Some(j) => {
                out.push(rest[i + 2..i + 2 + j].trim().to_string());
                rest = &rest[i + 2 + j + 2..];
            }
            None => break,
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn the_tables_have_the_seeds_sizes() {
        // 15, 15, 15, 15, 16, 20 variables, plus `amd` on the last two.
        let sizes: Vec<usize> = ALL_EVENTS.iter().map(|k| k.variables().len()).collect();
        assert_eq!(sizes, [15, 15, 15, 15, 17, 21]);
    }

    #[test]
    fn templates_keep_types_or_interpolate() {
        let vars: Map<String, Value> =
            serde_json::from_value(json!({"a": {"x": 1}, "n": 3, "s": "hi", "z": null})).unwrap();
        let mut m = BTreeMap::new();
        m.insert("obj".to_string(), "{{a}}".to_string());
        m.insert("num".to_string(), "{{ n }}".to_string());
        m.insert("text".to_string(), "say {{s}} {{n}} times{{z}}".to_string());
        m.insert("broken".to_string(), "x {{s".to_string());
        let v = render(&m, &vars);
        assert_eq!(v["obj"], json!({"x": 1}));
        assert_eq!(v["num"], json!(3));
        assert_eq!(v["text"], json!("say hi 3 times"));
        assert_eq!(v["broken"], json!("x {{s"));
        assert_eq!(template_vars("a {{x}} b {{ y }}"), ["x", "y"]);
    }

    #[test]
    fn transcripts_read_as_lines() {
        let t = json!([{"role": "agent", "text": "Hello."}, {"role": "user", "text": "Hi"}]);
        assert_eq!(simplify_turns(&t), "Agent: Hello.\nUser: Hi");
        assert_eq!(simplify_turns(&Value::Null), "");
    }
}
