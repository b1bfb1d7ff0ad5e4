//! The Twilio REST client the dialer places calls through: create a call
//! (`Calls.json` with TwiML `<Connect><Stream>` and its `<Parameter>`s, a
//! status callback for all four events and the ring `Timeout`), fetch one,
//! list by destination (crash reconciliation), and hang up. The same client
//! drives the `sim` carrier, which speaks the same REST shape.
//!
//! Also here: the mapping from Twilio's `CallStatus` (plus the SIP response
//! code Twilio reports) to call-queue statuses, and building the TwiML.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use crate::store::CallStatus;

/// Errors talking to Twilio.
#[derive(Debug, thiserror::Error)]
pub enum RestError {
    /// Could not reach it, or it did not answer in time.
    #[error("cannot reach the carrier at {url}: {source}")]
    Transport {
        /// Where.
        url: String,
        /// Why.
        source: reqwest::Error,
    },
    /// It answered with an error (Twilio's `{code, message}` when given).
    #[error("carrier refused ({status}): {message}")]
    Api {
        /// HTTP status.
        status: u16,
        /// Twilio's error code.
        code: Option<i64>,
        /// Its message.
        message: String,
    },
    /// It answered something that is not Twilio's shape.
    #[error("carrier answered an unexpected body: {0}")]
    Body(String),
}

/// What a failed create request says about the call it asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CreateFailure {
    /// Not placed, and asking again later may work: the request never left
    /// (no connection), or the carrier said "not now" (429, 503).
    NotPlaced,
    /// Perhaps placed: the request left and no clear answer came back (a
    /// time-out, a connection cut mid-answer, a 5xx from a gateway, a body
    /// that is not a call). The person may be ringing.
    Unknown,
    /// Refused, for good (a bad number, a caller ID not allowed, …).
    Refused,
}

impl RestError {
    /// What this error, from a create request, says about the call.
    pub fn create_failure(&self) -> CreateFailure {
        match self {
            Self::Transport { source, .. } if source.is_connect() || source.is_builder() => {
                CreateFailure::NotPlaced
            }
            Self::Transport { .. } | Self::Body(_) => CreateFailure::Unknown,
            Self::Api {
                status: 429 | 503, ..
            } => CreateFailure::NotPlaced,
            Self::Api { status, .. } if *status >= 500 => CreateFailure::Unknown,
            Self::Api { .. } => CreateFailure::Refused,
        }
    }
}

/// Account and endpoint.
#[derive(Debug, Clone)]
pub struct TwilioConfig {
    /// `https://api.twilio.com` or a simulator.
    pub base_url: String,
    /// `AC…`.
    pub account_sid: String,
    /// Signs webhooks and authenticates requests.
    pub auth_token: String,
}

/// A call as Twilio describes it.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct CallInfo {
    /// `CA…`.
    pub sid: String,
    /// Twilio's status (`queued`, `ringing`, `in-progress`, `completed`, …).
    pub status: String,
    /// Destination.
    #[serde(default)]
    pub to: Option<String>,
    /// Caller ID.
    #[serde(default)]
    pub from: Option<String>,
    /// RFC 2822 start time, when it started.
    #[serde(default)]
    pub start_time: Option<String>,
    /// RFC 2822 creation time.
    #[serde(default)]
    pub date_created: Option<String>,
}

#[derive(Deserialize)]
struct CallList {
    calls: Vec<CallInfo>,
}

#[derive(Deserialize)]
struct ApiErrorBody {
    code: Option<i64>,
    message: Option<String>,
}

/// What to dial.
#[derive(Debug, Clone)]
pub struct Dial<'a> {
    /// E.164.
    pub to: &'a str,
    /// E.164 caller ID.
    pub from: &'a str,
    /// The gateway's stream URL (`wss://…/twilio/stream`).
    pub stream_url: &'a str,
    /// `<Parameter>`s for the stream's `start.customParameters`.
    pub parameters: &'a BTreeMap<String, String>,
    /// Where status callbacks go.
    pub status_callback: &'a str,
    /// Ring time-out, s.
    pub timeout_s: u32,
    /// Hard limit on the call, s.
    pub time_limit_s: u32,
}

/// The client.
#[derive(Clone)]
pub struct TwilioClient {
    cfg: TwilioConfig,
    http: reqwest::Client,
}

impl TwilioClient {
    /// A client with sane time-outs: a carrier that hangs must not hold a
    /// dial slot for long.
    pub fn new(cfg: TwilioConfig) -> Self {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(15))
            .build()
            .unwrap_or_default();
        Self { cfg, http }
    }

    /// The configuration.
    pub fn config(&self) -> &TwilioConfig {
        &self.cfg
    }

    fn url(&self, tail: &str) -> String {
        format!(
            "{}/2010-04-01/Accounts/{}/{tail}",
            self.cfg.base_url.trim_end_matches('/'),
            self.cfg.account_sid
        )
    }

    async fn send<T: serde::de::DeserializeOwned>(
        &self,
        req: reqwest::RequestBuilder,
        url: &str,
    ) -> Result<T, RestError> {
        let resp = req
            .basic_auth(&self.cfg.account_sid, Some(&self.cfg.auth_token))
            .send()
            .await
            .map_err(|source| RestError::Transport {
                url: url.to_string(),
                source,
            })?;
        let status = resp.status();
        let body = resp.bytes().await.map_err(|source| RestError::Transport {
            url: url.to_string(),
            source,
        })?;
        if !status.is_success() {
            let parsed: Option<ApiErrorBody> = serde_json::from_slice(&body).ok();
            return Err(RestError::Api {
                status: status.as_u16(),
                code: parsed.as_ref().and_then(|p| p.code),
                message: parsed
                    .and_then(|p| p.message)
                    .unwrap_or_else(|| String::from_utf8_lossy(&body).chars().take(200).collect()),
            });
        }
        serde_json::from_slice(&body).map_err(|e| RestError::Body(e.to_string()))
    }

    /// Places a call.
    pub async fn create_call(&self, d: &Dial<'_>) -> Result<CallInfo, RestError> {
        let url = self.url("Calls.json");
        let twiml = connect_stream_twiml(d.stream_url, d.parameters);
        let timeout = d.timeout_s.to_string();
        let limit = d.time_limit_s.to_string();
        let form: Vec<(&str, &str)> = vec![
            ("To", d.to),
            ("From", d.from),
            ("Twiml", &twiml),
            ("StatusCallback", d.status_callback),
            ("StatusCallbackMethod", "POST"),
            ("StatusCallbackEvent", "initiated"),
            ("StatusCallbackEvent", "ringing"),
            ("StatusCallbackEvent", "answered"),
            ("StatusCallbackEvent", "completed"),
            ("Timeout", &timeout),
            ("TimeLimit", &limit),
        ];
        self.send(self.http.post(&url).form(&form), &url).await
    }

    /// One call's current state.
    pub async fn fetch_call(&self, sid: &str) -> Result<CallInfo, RestError> {
        let url = self.url(&format!("Calls/{sid}.json"));
        self.send(self.http.get(&url), &url).await
    }

    /// Calls to `to` from `from` (newest first), for reconciliation.
    pub async fn list_calls(&self, to: &str, from: &str) -> Result<Vec<CallInfo>, RestError> {
        let url = self.url("Calls.json");
        let list: CallList = self
            .send(
                self.http
                    .get(&url)
                    .query(&[("To", to), ("From", from), ("PageSize", "20")]),
                &url,
            )
            .await?;
        Ok(list.calls)
    }

    /// Ends a call: cancels it while ringing, hangs up once answered.
    pub async fn hangup(&self, sid: &str) -> Result<CallInfo, RestError> {
        let url = self.url(&format!("Calls/{sid}.json"));
        self.send(self.http.post(&url).form(&[("Status", "completed")]), &url)
            .await
    }
}

fn xml_escape(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&apos;"),
            c => o.push(c),
        }
    }
    o
}

/// `<Response><Connect><Stream url=…><Parameter …/>…</Stream></Connect></Response>`.
pub fn connect_stream_twiml(stream_url: &str, params: &BTreeMap<String, String>) -> String {
    let mut t = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response><Connect><Stream url=\"{}\">",
        xml_escape(stream_url)
    );
    for (k, v) in params {
        t.push_str(&format!(
            "<Parameter name=\"{}\" value=\"{}\"/>",
            xml_escape(k),
            xml_escape(v)
        ));
    }
    t.push_str("</Stream></Connect></Response>");
    t
}

/// Maps a status callback (or a fetched status) to the queue's status.
/// `answered` says whether the call was answered before (`completed` after
/// an answer is `completed`; without one Twilio never says `completed`, but
/// a carrier that does is treated as missed). A 603 SIP response (Decline)
/// reported with `busy` or `no-answer` is a deliberate decline.
pub fn map_status(
    call_status: &str,
    sip_response_code: Option<u16>,
    answered: bool,
) -> Option<CallStatus> {
    Some(match call_status {
        "queued" | "initiated" => CallStatus::Initiated,
        "ringing" => CallStatus::Ringing,
        "in-progress" | "answered" => CallStatus::Answered,
        "completed" if answered => CallStatus::Completed,
        "completed" => CallStatus::Missed,
        "busy" | "no-answer" if sip_response_code == Some(603) => CallStatus::Declined,
        "busy" => CallStatus::Busy,
        "no-answer" => CallStatus::Missed,
        "failed" => CallStatus::Failed,
        "canceled" => CallStatus::Canceled,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn twiml_escapes_parameters() {
        let mut p = BTreeMap::new();
        p.insert(
            "customer_name".to_string(),
            "Tom & \"Jerry\" <3".to_string(),
        );
        let t = connect_stream_twiml("wss://gw.example/twilio/stream?a=1&b=2", &p);
        assert!(t.contains("url=\"wss://gw.example/twilio/stream?a=1&amp;b=2\""));
        assert!(t.contains("value=\"Tom &amp; &quot;Jerry&quot; &lt;3\""));
    }

    #[test]
    fn a_failed_create_says_whether_the_call_may_exist() {
        let api = |status| RestError::Api {
            status,
            code: None,
            message: String::new(),
        };
        assert_eq!(api(503).create_failure(), CreateFailure::NotPlaced);
        assert_eq!(api(429).create_failure(), CreateFailure::NotPlaced);
        assert_eq!(api(504).create_failure(), CreateFailure::Unknown);
        assert_eq!(api(500).create_failure(), CreateFailure::Unknown);
        assert_eq!(api(400).create_failure(), CreateFailure::Refused);
        assert_eq!(api(401).create_failure(), CreateFailure::Refused);
        assert_eq!(
            RestError::Body("<html>".into()).create_failure(),
            CreateFailure::Unknown
        );
    }

    #[test]
    fn statuses_map_to_the_queue() {
        assert_eq!(map_status("busy", Some(486), false), Some(CallStatus::Busy));
        assert_eq!(
            map_status("busy", Some(603), false),
            Some(CallStatus::Declined)
        );
        assert_eq!(
            map_status("no-answer", None, false),
            Some(CallStatus::Missed)
        );
        assert_eq!(
            map_status("completed", None, true),
            Some(CallStatus::Completed)
        );
        assert_eq!(
            map_status("failed", Some(404), false),
            Some(CallStatus::Failed)
        );
        assert_eq!(
            map_status("canceled", None, false),
            Some(CallStatus::Canceled)
        );
        assert_eq!(
            map_status("in-progress", None, false),
            Some(CallStatus::Answered)
        );
        assert_eq!(map_status("exploded", None, false), None);
    }
}
