//! Lifecycle events end to end: real calls through the sim carrier raise
//! the seed's six events, which reach a real HTTP receiver on loopback
//! through the durable outbox with the seed's exact variables (checked
//! against the seed's own tables, `tests/data/outbound-campaigns.md`),
//! retried with the same idempotency key, signed with the documented
//! recipe; post-call analysis against a local chat-completions server.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use dialgate::app::{self, AppConfig};
use dialgate::carrier::sim;
use dialgate::carrier::twilio::rest::TwilioConfig;
use dialgate::detect::llm::LlmConfig;
use dialgate::events::delivery::DeliveryConfig;
use hmac::{Hmac, Mac};
use serde_json::{Value, json};

/// The seed's tables: event title → [(variable, type)].
fn seed_tables() -> BTreeMap<String, Vec<(String, String)>> {
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/outbound-campaigns.md"),
    )
    .unwrap();
    let mut out = BTreeMap::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        if let Some(rest) = line.split_once(". Call ").map(|(_, r)| r)
            && line.chars().next().is_some_and(|c| c.is_ascii_digit())
        {
            let title = format!("Call {}", rest.split(" [").next().unwrap());
            current = Some(title.clone());
            out.insert(title, Vec::new());
            continue;
        }
        if let Some(t) = &current
            && let Some(rest) = line.strip_prefix("| `")
        {
            let (name, rest) = rest.split_once('`').unwrap();
            let ty = rest.split('|').nth(1).unwrap().trim().to_string();
            out.get_mut(t).unwrap().push((name.to_string(), ty));
        }
    }
    out
}

/// One request the receiver got: headers and body.
type Delivery = (HeaderMap, Vec<u8>);

#[derive(Clone, Default)]
struct Receiver {
    got: Arc<Mutex<Vec<Delivery>>>,
    /// kind → how many 500s to answer first, for each event of that kind
    fail_first: Arc<Mutex<HashMap<String, usize>>>,
    seen_keys: Arc<Mutex<HashMap<String, usize>>>,
}

async fn hook(
    State(r): State<Receiver>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> StatusCode {
    let kind = headers
        .get("x-dialgate-event")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let key = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    r.got.lock().unwrap().push((headers, body.to_vec()));
    let fails = r
        .fail_first
        .lock()
        .unwrap()
        .get(&kind)
        .copied()
        .unwrap_or(0);
    let mut seen = r.seen_keys.lock().unwrap();
    let n = seen.entry(key).or_default();
    *n += 1;
    if *n <= fails {
        StatusCode::INTERNAL_SERVER_ERROR
    } else {
        StatusCode::OK
    }
}

async fn start_receiver(r: Receiver) -> String {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", l.local_addr().unwrap());
    let app = axum::Router::new().route("/hook", post(hook)).with_state(r);
    tokio::spawn(async move { axum::serve(l, app).await });
    url
}

/// A chat-completions server: answers `answers[i]` to the i-th request
/// (the last one repeats) and records the requests.
#[derive(Clone)]
struct Chat {
    answers: Arc<Vec<String>>,
    seen: Arc<Mutex<Vec<Value>>>,
}

async fn chat(
    State(c): State<Chat>,
    body: axum::Json<Value>,
) -> (axum::http::StatusCode, axum::Json<Value>) {
    let n = {
        let mut s = c.seen.lock().unwrap();
        s.push(body.0);
        s.len() - 1
    };
    let a = c.answers.get(n).or(c.answers.last()).unwrap().clone();
    // "400 <message>": OpenAI's error object for a refused request
    if let Some(message) = a.strip_prefix("400 ") {
        return (
            axum::http::StatusCode::BAD_REQUEST,
            axum::Json(json!({"error": {"message": message,
                "type": "invalid_request_error", "param": null, "code": null}})),
        );
    }
    (
        axum::http::StatusCode::OK,
        axum::Json(json!({"id": "x", "object": "chat.completion", "choices": [
            {"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": a}}]})),
    )
}

async fn start_chat(c: Chat) -> String {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/v1", l.local_addr().unwrap());
    let app = axum::Router::new()
        .route("/v1/chat/completions", post(chat))
        .with_state(c);
    tokio::spawn(async move { axum::serve(l, app).await });
    url
}

struct Rig {
    agent_url: String,
    base: String,
    key: String,
    http: reqwest::Client,
    _dir: tempfile::TempDir,
}

async fn rig(llm_url: Option<String>) -> Rig {
    let dir = tempfile::tempdir().unwrap();
    let heldout = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/amd/heldout");
    let rules = vec![
        sim::Rule {
            prefix: "+1201555010".into(),
            outcome: "human".into(),
            wav: Some(heldout.join("hello_silence_0400.wav")),
            ring_ms: 200,
            hangup_after_ms: Some(1000),
            create_fault: None,
        },
        sim::Rule {
            prefix: "+1201555012".into(),
            outcome: "busy".into(),
            wav: None,
            ring_ms: 100,
            hangup_after_ms: None,
            create_fault: None,
        },
        sim::Rule {
            prefix: "+1201555013".into(),
            outcome: "no_answer".into(),
            wav: None,
            ring_ms: 100,
            hangup_after_ms: None,
            create_fault: None,
        },
        sim::Rule {
            prefix: "+1201555015".into(),
            outcome: "failed".into(),
            wav: None,
            ring_ms: 100,
            hangup_after_ms: None,
            create_fault: None,
        },
    ];
    let agent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let agent_url = format!("ws://{}/", agent.local_addr().unwrap());
    tokio::spawn(dialgate::agent::echo::serve(agent));
    let echo = agent_url.clone();
    let sim_l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let sim_cfg = TwilioConfig {
        base_url: format!("http://{}", sim_l.local_addr().unwrap()),
        account_sid: "AC".into(),
        auth_token: "tok".into(),
    };
    tokio::spawn(sim::serve(
        sim_l,
        sim::SimConfig {
            account_sid: "AC".into(),
            auth_token: "tok".into(),
            rules: sim::Rules { rules },
            log: None,
            record_dir: None,
        },
    ));
    let mut carriers = HashMap::new();
    carriers.insert("sim".to_string(), sim_cfg);
    let app = app::start(AppConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        db: dir.path().join("q.db"),
        public_url: None,
        carriers,
        default_agent_url: agent_url,
        default_agent_audio: Default::default(),
        llm: None,
        sip: None,
        sip_listen: None,
        default_session: Default::default(),
        tick: Duration::from_millis(50),
        carrier_backoff: Duration::from_millis(200),
        delivery: DeliveryConfig {
            base_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(400),
            max_attempts: 3,
            poll: Duration::from_millis(50),
            llm: llm_url.map(|u| LlmConfig {
                base_url: u,
                model: "test".into(),
                api_key: String::new(),
            }),
            ..DeliveryConfig::default()
        },
    })
    .await
    .unwrap();
    let (_, key) = app.store.create_api_key(0).unwrap();
    Rig {
        agent_url: echo,
        base: format!("http://{}", app.addr),
        key,
        http: reqwest::Client::new(),
        _dir: dir,
    }
}

impl Rig {
    /// Creates `campaign`, calls a person on it, and returns the call's
    /// id and the call once its analysis is done or failed (at most 40 s).
    async fn analysed_call(&self, campaign: Value) -> (String, Value) {
        let (s, c) = self.post("/v1/campaigns", campaign).await;
        assert_eq!(s, 201, "{c}");
        let (_, v) = self
            .post(
                "/v1/calls",
                json!({"campaign_id": c["id"], "to": "+12015550101"}),
            )
            .await;
        let id = v["call_queue_id"].as_str().unwrap().to_string();
        let t = Instant::now();
        loop {
            let call = self.get(&format!("/v1/calls/{id}")).await;
            if call["analysis"]["status"].is_string() {
                return (id, call);
            }
            assert!(t.elapsed() < Duration::from_secs(40), "{call:#}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        let r = self
            .http
            .post(format!("{}{path}", self.base))
            .bearer_auth(&self.key)
            .json(&body)
            .send()
            .await
            .unwrap();
        let s = r.status().as_u16();
        (s, r.json().await.unwrap_or(Value::Null))
    }
    async fn get(&self, path: &str) -> Value {
        self.http
            .get(format!("{}{path}", self.base))
            .bearer_auth(&self.key)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }
}

fn all_actions(tool: &str) -> Value {
    let a = json!({"tool_id": tool});
    json!({"call_initiation_failure": a, "call_initiated": a, "call_declined": a, "call_missed": a, "call_answered": a, "call_ended": a})
}

fn is_rfc3339(v: &Value) -> bool {
    v.as_str()
        .is_some_and(|s| s.ends_with('Z') && chrono::DateTime::parse_from_rfc3339(s).is_ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn six_events_arrive_with_the_seeds_variables_retried_and_signed() {
    let recv = Receiver::default();
    recv.fail_first
        .lock()
        .unwrap()
        .insert("call_initiated".into(), 2);
    let url = start_receiver(recv.clone()).await;
    let r = rig(None).await;
    let (s, tool) = r
        .post(
            "/v1/tools",
            json!({"name": "crm", "method": "POST", "url": url, "headers": {"X-Api": "k"},
                                  "input_schema": {"type": "object"}}),
        )
        .await;
    assert_eq!(s, 201, "{tool}");
    let tool_id = tool["id"].as_str().unwrap().to_string();
    let secret = tool["secret"].as_str().unwrap().to_string();
    let camp = json!({
        "name": "events", "agent": {"url": r.agent_url, "script": "s"},
        "numbers": {"default": {"id": "us", "number": "+12015550100"}},
        "variables": [{"name": "customer_name", "required": true}],
        "calling_window": {"start": "00:00", "end": "24:00"},
        "limits": {"calls_per_second": 20, "ring_timeout_seconds": 5},
        "actions": all_actions(&tool_id)
    });
    let (s, c) = r.post("/v1/campaigns", camp.clone()).await;
    assert_eq!(s, 201, "{c}");
    let cid = c["id"].as_str().unwrap().to_string();
    // A mapping that names a variable the event lacks is refused at save.
    let mut bad = camp.clone();
    bad["actions"]["call_initiated"] =
        json!({"tool_id": tool_id, "mapping": {"x": "{{conversation_end_type}}"}});
    let (s, v) = r.post("/v1/campaigns", bad).await;
    assert_eq!(s, 422);
    assert_eq!(v["errors"][0]["field"], "actions.call_initiated.mapping.x");

    let mut human = String::new();
    for to in [
        "+12015550101",
        "+12015550121",
        "+12015550131",
        "+12015550151",
    ] {
        let (_, v) = r
            .post("/v1/calls", json!({"campaign_id": cid, "to": to, "variables": {"customer_name": "Ann"}, "metadata": {"crm": 7}}))
            .await;
        if human.is_empty() {
            human = v["call_queue_id"].as_str().unwrap().to_string();
        }
    }
    let kinds = [
        "call_initiation_failure",
        "call_initiated",
        "call_declined",
        "call_missed",
        "call_answered",
        "call_ended",
    ];
    let t = Instant::now();
    loop {
        let got = recv.got.lock().unwrap().clone();
        let seen: Vec<String> = got
            .iter()
            .map(|(h, _)| h["x-dialgate-event"].to_str().unwrap().to_string())
            .collect();
        if kinds.iter().all(|k| seen.iter().any(|s| s == k))
            && seen.iter().filter(|s| *s == "call_initiated").count() >= 12
        {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(40),
            "events so far: {seen:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let got = recv.got.lock().unwrap().clone();
    let tables = seed_tables();
    assert_eq!(tables.len(), 6);
    for (headers, body) in &got {
        let kind =
            dialgate::events::EventKind::parse(headers["x-dialgate-event"].to_str().unwrap())
                .unwrap();
        // The documented recipe: HMAC-SHA256(secret, "<t>.<body>"), hex.
        let sig = headers["x-dialgate-signature"].to_str().unwrap();
        let (t_part, v_part) = sig.split_once(',').unwrap();
        let ts = t_part.strip_prefix("t=").unwrap();
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
        mac.update(format!("{ts}.").as_bytes());
        mac.update(body);
        assert_eq!(
            v_part.strip_prefix("v1=").unwrap(),
            hex::encode(mac.finalize().into_bytes())
        );
        assert_eq!(headers["x-api"], "k");
        assert!(
            headers["idempotency-key"]
                .to_str()
                .unwrap()
                .starts_with("evt_")
        );
        let v: Value = serde_json::from_slice(body).unwrap();
        let obj = v.as_object().unwrap();
        let table = &tables[kind.title()];
        let mut want: Vec<&str> = table.iter().map(|(n, _)| n.as_str()).collect();
        if matches!(
            kind,
            dialgate::events::EventKind::Answered | dialgate::events::EventKind::Ended
        ) {
            want.push("amd");
        }
        let mut have: Vec<&str> = obj.keys().map(String::as_str).collect();
        want.sort();
        have.sort();
        assert_eq!(have, want, "{}", kind.title());
        for (name, ty) in table {
            let x = &obj[name];
            let nullable = x.is_null();
            match ty.as_str() {
                "String" => assert!(x.is_string() || nullable, "{name} in {}: {x}", kind.title()),
                "Datetime" => assert!(is_rfc3339(x) || nullable, "{name} in {}: {x}", kind.title()),
                "Object" => assert!(
                    x.is_object() || x.is_array(),
                    "{name} in {}: {x}",
                    kind.title()
                ),
                other => panic!("unknown seed type {other}"),
            }
        }
        // What must be known is never null.
        for k in [
            "call_queue_id",
            "call_queue_created_at",
            "call_queue_status",
            "call_queue_campaign_id",
            "call_queue_recipient_number",
            "call_queue_scheduled_for_date_time",
        ] {
            assert!(!obj[k].is_null(), "{k} null in {}", kind.title());
        }
    }
    // 500, 500, 200: three deliveries of each event, each with one key.
    let mut by_key: HashMap<String, usize> = HashMap::new();
    for (h, _) in got
        .iter()
        .filter(|(h, _)| h["x-dialgate-event"] == "call_initiated")
    {
        *by_key
            .entry(h["idempotency-key"].to_str().unwrap().to_string())
            .or_default() += 1;
    }
    assert_eq!(by_key.len(), 4);
    assert!(by_key.values().all(|&n| n == 3), "{by_key:?}");
    // Ended carries the conversation and AMD; the order per call held.
    let ended: Value = got
        .iter()
        .find(|(h, _)| h["x-dialgate-event"] == "call_ended")
        .map(|(_, b)| serde_json::from_slice(b).unwrap())
        .unwrap();
    assert_eq!(ended["call_queue_id"], human.as_str());
    assert_eq!(ended["conversation_end_type"], "user_hangup");
    assert_eq!(ended["amd"]["answered_by"], "human");
    assert!(
        ended["conversation_turns_simplified"]
            .as_str()
            .unwrap()
            .starts_with("Agent: Hello.")
    );
    let order: Vec<String> = got
        .iter()
        .filter(|(_, b)| {
            serde_json::from_slice::<Value>(b).unwrap()["call_queue_id"] == human.as_str()
        })
        .map(|(h, _)| h["x-dialgate-event"].to_str().unwrap().to_string())
        .collect();
    let mut dedup = order.clone();
    dedup.dedup();
    assert_eq!(dedup, ["call_initiated", "call_answered", "call_ended"]);
    let failed: Value = got
        .iter()
        .find(|(h, _)| h["x-dialgate-event"] == "call_initiation_failure")
        .map(|(_, b)| serde_json::from_slice(b).unwrap())
        .unwrap();
    assert_eq!(
        failed["call_queue_initiation_error"],
        "provider_error: SIP 404"
    );
    let ev = r.get(&format!("/v1/events?call_queue_id={human}")).await;
    assert!(
        ev["events"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["kind"] != "post_analysis")
            .all(|e| e["state"] == "delivered"),
        "{ev}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn post_analysis_gets_the_context_and_retries_invalid_answers() {
    let chat_state = Chat {
        answers: Arc::new(vec![
            "not json at all".into(),
            r#"{"sentiment": "thrilled"}"#.into(),
            r#"{"sentiment": "positive", "summary": "said hello"}"#.into(),
        ]),
        seen: Arc::new(Mutex::new(Vec::new())),
    };
    let llm = start_chat(chat_state.clone()).await;
    let recv = Receiver::default();
    let url = start_receiver(recv.clone()).await;
    let r = rig(Some(llm)).await;
    let (_, tool) = r
        .post("/v1/tools", json!({"name": "sink", "url": url}))
        .await;
    let schema = json!({"type": "object", "required": ["sentiment", "summary"], "properties": {
        "sentiment": {"type": "string", "enum": ["positive", "neutral", "negative"]}, "summary": {"type": "string"}}});
    let (s, v) = r
        .post(
            "/v1/analysis-templates",
            json!({"name": "bad", "prompt": "{{nope}}", "output_schema": schema}),
        )
        .await;
    assert_eq!(s, 422, "{v}");
    let (s, tpl) = r
        .post("/v1/analysis-templates", json!({"name": "t", "output_schema": schema,
            "prompt": "Call {{call_queue_id}} to {{call_queue_recipient_number}} ended by {{conversation_end_type}}.\nTranscript:\n{{conversation_turns_simplified}}"}))
        .await;
    assert_eq!(s, 201, "{tpl}");
    let camp = json!({
        "name": "analysis", "agent": {"url": r.agent_url, "script": "s"},
        "numbers": {"default": {"id": "us", "number": "+12015550100"}},
        "calling_window": {"start": "00:00", "end": "24:00"},
        "post_analysis_template": tpl["id"],
        "actions": {"call_ended": {"tool_id": tool["id"]}}
    });
    let (id, call) = r.analysed_call(camp).await;
    assert_eq!(call["analysis"]["status"], "done", "{call:#}");
    assert_eq!(call["analysis"]["result"]["sentiment"], "positive");
    let seen = chat_state.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 3, "two invalid answers, then a valid one");
    let prompt = seen[0]["messages"][1]["content"].as_str().unwrap();
    assert!(
        prompt.contains(&id) && prompt.contains("+12015550101") && prompt.contains("user_hangup"),
        "{prompt}"
    );
    assert!(prompt.contains("Agent: Hello."), "{prompt}");
    assert_eq!(seen[0]["response_format"]["json_schema"]["schema"], schema);
    // (reasoning models refuse any temperature but their own)
    assert!(seen[0].get("temperature").is_none(), "{:#}", seen[0]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_that_never_fits_is_reported_and_a_dead_endpoint_is_dead_lettered_then_replayed()
{
    let chat_state = Chat {
        answers: Arc::new(vec![r#"{"sentiment": 5}"#.into()]),
        seen: Arc::new(Mutex::new(Vec::new())),
    };
    let llm = start_chat(chat_state.clone()).await;
    let recv = Receiver::default();
    recv.fail_first
        .lock()
        .unwrap()
        .insert("call_declined".into(), 3);
    let url = start_receiver(recv.clone()).await;
    let r = rig(Some(llm)).await;
    let (_, tool) = r
        .post("/v1/tools", json!({"name": "sink", "url": url}))
        .await;
    let schema = json!({"type": "object", "required": ["sentiment"], "properties": {"sentiment": {"type": "string"}}});
    let (_, tpl) = r.post("/v1/analysis-templates", json!({"name": "t", "prompt": "{{conversation_turns_simplified}}", "output_schema": schema})).await;
    let camp = json!({
        "name": "dead", "agent": {"url": r.agent_url, "script": "s"},
        "numbers": {"default": {"id": "us", "number": "+12015550100"}},
        "calling_window": {"start": "00:00", "end": "24:00"},
        "post_analysis_template": tpl["id"],
        "actions": {"call_declined": {"tool_id": tool["id"]}}
    });
    let (_, c) = r.post("/v1/campaigns", camp).await;
    let (_, human) = r
        .post(
            "/v1/calls",
            json!({"campaign_id": c["id"], "to": "+12015550101"}),
        )
        .await;
    r.post(
        "/v1/calls",
        json!({"campaign_id": c["id"], "to": "+12015550121"}),
    )
    .await;
    let id = human["call_queue_id"].as_str().unwrap().to_string();
    let t = Instant::now();
    loop {
        let call = r.get(&format!("/v1/calls/{id}")).await;
        let dead = r.get("/v1/events?state=dead").await;
        let n_dead = dead["events"].as_array().unwrap().len();
        if call["analysis"]["status"] == "failed" && n_dead == 2 {
            assert!(
                call["analysis"]["error"]
                    .as_str()
                    .unwrap()
                    .contains("does not match the schema"),
                "{call:#}"
            );
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(40), "{call:#}\n{dead:#}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(chat_state.seen.lock().unwrap().len(), 3, "max_attempts");
    // Replay the dead declined event: the receiver now answers 200.
    let dead = r.get("/v1/events?state=dead").await;
    let evt = dead["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["kind"] == "call_declined")
        .unwrap()
        .clone();
    assert!(evt["last_error"].as_str().unwrap().contains("HTTP 500"));
    let (s, _) = r
        .post(
            &format!("/v1/events/{}/replay", evt["id"].as_str().unwrap()),
            json!({}),
        )
        .await;
    assert_eq!(s, 200);
    let t = Instant::now();
    while recv
        .got
        .lock()
        .unwrap()
        .iter()
        .filter(|(h, _)| h["x-dialgate-event"] == "call_declined")
        .count()
        < 4
    {
        // 3 failed attempts (max_attempts), then the replay's 200
        assert!(t.elapsed() < Duration::from_secs(10));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (s, _) = r
        .post(
            &format!("/v1/events/{}/replay", evt["id"].as_str().unwrap()),
            json!({}),
        )
        .await;
    assert_eq!(s, 409, "only dead events replay");
}

/// A model that refuses the request (here: no structured outputs, as
/// OpenAI's audio models answer) is asked once, not at every backoff, and
/// the call's analysis says what the API said.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_analysis_request_fails_at_once_with_the_apis_reason() {
    let refusal = "Invalid parameter: 'response_format' of type 'json_schema' is not supported with this model.";
    let chat_state = Chat {
        answers: Arc::new(vec![format!("400 {refusal}")]),
        seen: Arc::new(Mutex::new(Vec::new())),
    };
    let llm = start_chat(chat_state.clone()).await;
    let r = rig(Some(llm)).await;
    let schema = json!({"type": "object", "required": ["sentiment"], "properties": {"sentiment": {"type": "string"}}});
    let (_, tpl) = r
        .post(
            "/v1/analysis-templates",
            json!({"name": "t", "prompt": "{{conversation_turns_simplified}}", "output_schema": schema}),
        )
        .await;
    let camp = json!({
        "name": "refused", "agent": {"url": r.agent_url, "script": "s"},
        "numbers": {"default": {"id": "us", "number": "+12015550100"}},
        "calling_window": {"start": "00:00", "end": "24:00"},
        "post_analysis_template": tpl["id"],
    });
    let (_, call) = r.analysed_call(camp).await;
    assert_eq!(call["analysis"]["status"], "failed", "{call:#}");
    let error = call["analysis"]["error"].as_str().unwrap();
    assert!(
        error.contains("HTTP 400") && error.contains(refusal),
        "{error}"
    );
    assert_eq!(chat_state.seen.lock().unwrap().len(), 1, "not retried");
}
