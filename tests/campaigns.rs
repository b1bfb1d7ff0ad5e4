//! Campaigns end to end, in process: the real API over HTTP, a real SQLite
//! file, the `sim` carrier speaking Twilio's REST shape and status
//! callbacks, the echo agent, and the dialer on real time.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use dialgate::app::{self, App, AppConfig};
use dialgate::carrier::sim;
use dialgate::carrier::twilio::rest::TwilioConfig;
use serde_json::{Value, json};

struct Rig {
    app: App,
    base: String,
    key: String,
    http: reqwest::Client,
    sim_log: PathBuf,
    sim: TwilioConfig,
    _dir: tempfile::TempDir,
}

fn rule(prefix: &str, outcome: &str, ring_ms: u64, wav: Option<&str>) -> sim::Rule {
    sim::Rule {
        prefix: prefix.into(),
        outcome: outcome.into(),
        wav: wav.map(|w| {
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("fixtures/amd/heldout")
                .join(w)
        }),
        ring_ms,
        hangup_after_ms: Some(1000),
        create_fault: None,
    }
}

async fn rig(rules: Vec<sim::Rule>) -> Rig {
    let dir = tempfile::tempdir().unwrap();
    let agent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let agent_url = format!("ws://{}/", agent.local_addr().unwrap());
    tokio::spawn(dialgate::agent::echo::serve(agent));
    let sim_l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let sim_url = format!("http://{}", sim_l.local_addr().unwrap());
    let sim_log = dir.path().join("dials.jsonl");
    tokio::spawn(sim::serve(
        sim_l,
        sim::SimConfig {
            account_sid: "ACtest".into(),
            auth_token: "tok".into(),
            rules: sim::Rules { rules },
            log: Some(sim_log.clone()),
            record_dir: Some(dir.path().to_path_buf()),
        },
    ));
    let sim = TwilioConfig {
        base_url: sim_url,
        account_sid: "ACtest".into(),
        auth_token: "tok".into(),
    };
    let mut carriers = HashMap::new();
    carriers.insert("sim".to_string(), sim.clone());
    let app = app::start(AppConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        db: dir.path().join("q.db"),
        public_url: None,
        carriers,
        default_agent_url: agent_url.clone(),
        default_agent_audio: Default::default(),
        llm: None,
        sip: None,
        sip_listen: None,
        default_session: Default::default(),
        tick: Duration::from_millis(50),
        carrier_backoff: Duration::from_millis(200),
        delivery: Default::default(),
    })
    .await
    .unwrap();
    let (_, key) = app.store.create_api_key(0).unwrap();
    let base = format!("http://{}", app.addr);
    Rig {
        app,
        base,
        key,
        http: reqwest::Client::new(),
        sim_log,
        sim,
        _dir: dir,
    }
}

fn campaign(agent_url: &str, retry: Value, limits: Value) -> Value {
    json!({
        "name": "test",
        "agent": {"url": agent_url, "script": "opening"},
        "numbers": {"default": {"id": "us", "number": "+12015550100"},
                    "overrides": [{"prefix": "+968", "id": "om", "number": "+96822000100"}]},
        "default_region": "US",
        "retry": retry,
        "amd": {"enabled": true, "action": "end_call"},
        "variables": [{"name": "customer_name", "required": true}],
        "metadata": [{"name": "crm_id"}],
        "calling_window": {"start": "00:00", "end": "24:00"},
        "limits": limits
    })
}

impl Rig {
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

    /// Queues a call to `to`, which must be accepted.
    async fn queue(&self, cid: &str, to: &str) -> Value {
        let (s, v) = self
            .post(
                "/v1/calls",
                json!({"campaign_id": cid, "to": to, "variables": {"customer_name": "X"}}),
            )
            .await;
        assert_eq!(s, 201, "{v}");
        v
    }

    async fn create_campaign(&self, c: Value) -> String {
        let (s, v) = self.post("/v1/campaigns", c).await;
        assert_eq!(s, 201, "{v}");
        v["id"].as_str().unwrap().to_string()
    }

    async fn calls(&self, cid: &str) -> Vec<Value> {
        self.get(&format!("/v1/calls?campaign_id={cid}&limit=1000"))
            .await["calls"]
            .as_array()
            .unwrap()
            .clone()
    }

    /// Waits until no attempt of the campaign is waiting or in flight.
    async fn settle(&self, cid: &str, within: Duration) -> Vec<Value> {
        let t = Instant::now();
        loop {
            let calls = self.calls(cid).await;
            let live = calls.iter().any(|c| {
                !matches!(
                    c["status"].as_str().unwrap(),
                    "completed"
                        | "failed"
                        | "busy"
                        | "declined"
                        | "missed"
                        | "canceled"
                        | "expired"
                        | "suppressed"
                )
            });
            if !live && !calls.is_empty() {
                return calls;
            }
            assert!(t.elapsed() < within, "not settled: {calls:#?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The sim's dial log; a last line still being written (no newline
    /// yet) is left for the next read.
    fn dials(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.sim_log)
            .unwrap_or_default()
            .split_inclusive('\n')
            .filter(|l| l.ends_with('\n'))
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_required_variable_is_422_and_queues_nothing() {
    let r = rig(vec![]).await;
    let cid = r
        .create_campaign(campaign("ws://127.0.0.1:9/", json!({}), json!({})))
        .await;
    let (s, v) = r
        .post(
            "/v1/calls",
            json!({"campaign_id": cid, "to": "+12015550101", "variables": {}}),
        )
        .await;
    assert_eq!(s, 422);
    assert_eq!(v["errors"][0]["field"], "variables.customer_name");
    assert_eq!(v["errors"][0]["message"], "required");
    let (s, v) = r
        .post(
            "/v1/calls",
            json!({"campaign_id": cid, "to": "twelve", "variables": {"customer_name": "A"}}),
        )
        .await;
    assert_eq!(s, 422);
    assert_eq!(v["errors"][0]["field"], "to");
    assert!(r.calls(&cid).await.is_empty());
    // No key, no API.
    let s = r
        .http
        .get(format!("{}/v1/campaigns", r.base))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(s, 401);
    // A good call is queued once per idempotency key.
    let body = json!({"campaign_id": cid, "to": "(201) 555-0101", "variables": {"customer_name": "A"},
                      "idempotency_key": "k1", "scheduled_for": "2099-01-01T00:00:00Z"});
    let (s1, v1) = r.post("/v1/calls", body.clone()).await;
    let (s2, v2) = r.post("/v1/calls", body).await;
    assert_eq!((s1, s2), (201, 200));
    assert_eq!(v1["call_queue_id"], v2["call_queue_id"]);
    assert_eq!(v1["status"], "scheduled");
    assert_eq!(v1["call"]["recipient_number"], "+12015550101");
    assert_eq!(r.calls(&cid).await.len(), 1);
    // Invalid campaigns get field errors.
    let (s, v) = r
        .post(
            "/v1/campaigns",
            json!({"name": "", "agent": {"url": "http://x", "script": "s"},
                                      "numbers": {"default": {"id": "a", "number": "12"}}}),
        )
        .await;
    assert_eq!(s, 422);
    let fields: Vec<&str> = v["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert!(
        fields.contains(&"name")
            && fields.contains(&"agent.url")
            && fields.contains(&"numbers.default.number"),
        "{fields:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn csv_reports_bad_rows_and_queues_the_rest() {
    let r = rig(vec![]).await;
    let cid = r
        .create_campaign(campaign("ws://127.0.0.1:9/", json!({}), json!({})))
        .await;
    r.post(&format!("/v1/campaigns/{cid}/pause"), json!({}))
        .await;
    let csv = "to_number,customer_name,crm_id,extra\n\
               +12015550101,Ann,c1,x\n\
               not-a-number,Bob,c2,x\n\
               +12015550103,,c3,x\n\
               +12015550104,Dan,c4\n\
               +96891230001,Eve,c5,x\n";
    let resp: Value = r
        .http
        .post(format!("{}/v1/campaigns/{cid}/uploads", r.base))
        .bearer_auth(&r.key)
        .body(csv)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(resp["accepted"], 2, "{resp}");
    assert_eq!(resp["rejected_count"], 3);
    let rej = resp["rejected"].as_array().unwrap();
    assert_eq!(rej[0]["row"], 3);
    assert!(rej[0]["reason"].as_str().unwrap().starts_with("to:"));
    assert_eq!(rej[1]["row"], 4);
    assert_eq!(rej[1]["reason"], "variables.customer_name: required");
    assert_eq!(rej[2]["row"], 5);
    assert!(
        rej[2]["reason"]
            .as_str()
            .unwrap()
            .contains("found record with 3 fields"),
        "{}",
        rej[2]
    );
    assert_eq!(resp["ignored_columns"], json!(["extra"]));
    let calls = r.calls(&cid).await;
    let mut tos: Vec<&str> = calls
        .iter()
        .map(|c| c["recipient_number"].as_str().unwrap())
        .collect();
    tos.sort();
    assert_eq!(tos, ["+12015550101", "+96891230001"]);
    assert_eq!(calls[0]["metadata"]["crm_id"].as_str().unwrap().len(), 2);
    // A file with no destination column is refused as a whole.
    let s = r
        .http
        .post(format!("{}/v1/campaigns/{cid}/uploads", r.base))
        .bearer_auth(&r.key)
        .body("name\nx\n")
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(s, 400);
}

/// The attempts to `to`, first first.
fn attempts_to<'a>(calls: &'a [Value], to: &str) -> Vec<&'a Value> {
    let mut v: Vec<&Value> = calls
        .iter()
        .filter(|c| c["recipient_number"] == to)
        .collect();
    v.sort_by_key(|c| c["attempt"].as_u64());
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routing_retries_and_declines() {
    let r = rig(vec![
        rule("+1201555012", "busy", 50, None),
        rule("+1201555014", "declined", 50, None),
        rule("+968", "failed", 50, None),
        rule("+1201555015", "failed", 50, None),
    ])
    .await;
    let retry = json!({"on_busy": true, "on_decline": false, "on_no_answer": true, "max_retries": 2, "delay_seconds": 1});
    let cid = r
        .create_campaign(campaign(
            "ws://127.0.0.1:9/",
            retry,
            json!({"max_concurrency": 4, "calls_per_second": 20}),
        ))
        .await;
    for to in [
        "+12015550121",
        "+12015550141",
        "+96891230001",
        "+12015550151",
    ] {
        r.queue(&cid, to).await;
    }
    let calls = r.settle(&cid, Duration::from_secs(30)).await;
    let by_to = |to: &str| attempts_to(&calls, to);
    // Busy: 1 + 2 retries, each at least the delay after the previous ended.
    let busy = by_to("+12015550121");
    assert_eq!(busy.len(), 3);
    for w in busy.windows(2) {
        assert_eq!(w[0]["status"], "busy");
        assert_eq!(w[1]["retry_of"], w[0]["call_queue_id"]);
        assert_eq!(w[1]["first_attempt_id"], busy[0]["call_queue_id"]);
        let ended =
            chrono::DateTime::parse_from_rfc3339(w[0]["completed_at"].as_str().unwrap()).unwrap();
        let next =
            chrono::DateTime::parse_from_rfc3339(w[1]["processing_started_at"].as_str().unwrap())
                .unwrap();
        assert!(
            next - ended >= chrono::Duration::milliseconds(1000),
            "retried too early"
        );
    }
    assert_eq!(busy[2]["status"], "busy");
    // A decline is not retried.
    let declined = by_to("+12015550141");
    assert_eq!(declined.len(), 1);
    assert_eq!(declined[0]["status"], "declined");
    // Routing: +968 from the Omani number, others from the default.
    assert_eq!(by_to("+96891230001")[0]["calling_number"], "+96822000100");
    assert_eq!(by_to("+96891230001")[0]["calling_number_id"], "om");
    assert_eq!(busy[0]["calling_number"], "+12015550100");
    let failed = by_to("+12015550151");
    assert_eq!(failed[0]["status"], "failed");
    assert_eq!(failed[0]["initiation_error"], "provider_error: SIP 404");
    // The carrier saw each attempt exactly once.
    let dials = r.dials();
    assert_eq!(dials.len(), calls.len());
    let mut ids: Vec<&str> = dials
        .iter()
        .map(|d| d["call_queue_id"].as_str().unwrap())
        .collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), calls.len());

    // With declines configured, a decline is retried.
    let retry = json!({"on_decline": true, "max_retries": 1, "delay_seconds": 1});
    let cid2 = r
        .create_campaign(campaign(
            "ws://127.0.0.1:9/",
            retry,
            json!({"calls_per_second": 20}),
        ))
        .await;
    r.post(
        "/v1/calls",
        json!({"campaign_id": cid2, "to": "+12015550142", "variables": {"customer_name": "X"}}),
    )
    .await;
    let calls = r.settle(&cid2, Duration::from_secs(20)).await;
    assert_eq!(calls.len(), 2);
    assert!(calls.iter().all(|c| c["status"] == "declined"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_stops_new_dials_and_resume_continues() {
    let r = rig(vec![rule("+1201555", "busy", 300, None)]).await;
    let cid = r
        .create_campaign(campaign(
            "ws://127.0.0.1:9/",
            json!({}),
            json!({"max_concurrency": 1, "calls_per_second": 2}),
        ))
        .await;
    r.post(&format!("/v1/campaigns/{cid}/pause"), json!({}))
        .await;
    for i in 0..4 {
        r.post("/v1/calls", json!({"campaign_id": cid, "to": format!("+1201555012{i}"), "variables": {"customer_name": "X"}}))
            .await;
    }
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(r.dials().is_empty(), "dialled while paused");
    r.post(&format!("/v1/campaigns/{cid}/resume"), json!({}))
        .await;
    // Wait for the first dial, pause again: nothing new after what was in flight.
    let t = Instant::now();
    while r.dials().is_empty() {
        assert!(t.elapsed() < Duration::from_secs(10));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (_, v) = r
        .post(&format!("/v1/campaigns/{cid}/pause"), json!({}))
        .await;
    assert_eq!(v["state"], "paused");
    let at_pause = r.dials().len();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(r.dials().len(), at_pause, "dialled after pause");
    r.post(&format!("/v1/campaigns/{cid}/resume"), json!({}))
        .await;
    let calls = r.settle(&cid, Duration::from_secs(20)).await;
    assert_eq!(calls.len(), 4);
    assert!(calls.iter().all(|c| c["status"] == "busy"));
    // Cancel: what is queued is canceled, nothing is dialled.
    for i in 0..2 {
        r.post("/v1/calls", json!({"campaign_id": cid, "to": format!("+1201555013{i}"), "variables": {"customer_name": "X"},
                                   "scheduled_for": "2099-01-01T00:00:00Z"}))
            .await;
    }
    let (_, v) = r
        .post(&format!("/v1/campaigns/{cid}/cancel"), json!({}))
        .await;
    assert_eq!(v["canceled_attempts"], 2);
    let stats = r.get(&format!("/v1/campaigns/{cid}/stats")).await;
    assert_eq!(stats["by_status"]["canceled"], 2);
    assert_eq!(stats["by_status"]["busy"], 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_human_call_completes_with_amd_and_conversation() {
    let r = rig(vec![rule(
        "+1201555010",
        "human",
        100,
        Some("hello_silence_0400.wav"),
    )])
    .await;
    let agent = r.app.engine.store().clone();
    drop(agent);
    let echo = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let echo_url = format!("ws://{}/", echo.local_addr().unwrap());
    tokio::spawn(dialgate::agent::echo::serve(echo));
    let cid = r
        .create_campaign(campaign(&echo_url, json!({}), json!({})))
        .await;
    let (_, v) = r
        .post(
            "/v1/calls",
            json!({"campaign_id": cid, "to": "+12015550101", "variables": {"customer_name": "Ann"},
                                  "metadata": {"crm_id": "c-1"}}),
        )
        .await;
    let id = v["call_queue_id"].as_str().unwrap().to_string();
    r.settle(&cid, Duration::from_secs(30)).await;
    let c = r.get(&format!("/v1/calls/{id}")).await;
    assert_eq!(c["status"], "completed", "{c:#}");
    assert_eq!(c["answered_by"], "human");
    assert!(c["amd_decision_ms"].as_i64().unwrap() > 0);
    assert_eq!(c["conversation"]["end_type"], "user_hangup");
    assert!(c["conversation"]["conversation_id"].is_string());
    assert_eq!(c["conversation"]["turns"][0]["role"], "agent");
    // The sim recorded what the callee heard: the agent's "Hello." and more.
    let sid = c["provider_call_id"].as_str().expect("a provider call id");
    let heard = std::fs::read(r._dir.path().join(format!("{sid}.wav"))).unwrap();
    let mut wav = dialgate::audio::wav::WavReader::new(&heard[..]).unwrap();
    let mut frames = 0;
    let mut loud = 0;
    while let Some(f) = wav.next_frame().unwrap() {
        frames += 1;
        loud += usize::from(f.rms_dbfs() > -40.0);
    }
    assert!(
        frames >= 30 && loud >= 10,
        "{frames} frames heard, {loud} loud"
    );
    for k in [
        "created_at",
        "enqueued_at",
        "processing_started_at",
        "completed_at",
    ] {
        assert!(c[k].is_string(), "{k} missing");
    }
    // /metrics and /openapi.json are served.
    let m = r
        .http
        .get(format!("{}/metrics", r.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(m.contains("dialgate_calls{status=\"completed\"} 1"), "{m}");
    let o: Value = r
        .http
        .get(format!("{}/openapi.json", r.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(o["paths"]["/v1/calls"]["post"].is_object());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsigned_status_callbacks_are_refused() {
    let r = rig(vec![]).await;
    let s = r
        .http
        .post(format!("{}/twilio/status?cq=x", r.base))
        .form(&[("CallSid", "CA1"), ("CallStatus", "busy")])
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(s, 403);
    let url = format!("{}/twilio/status?cq=nope", r.base);
    let params = [("CallSid", "CA1"), ("CallStatus", "busy")];
    let sig = dialgate::carrier::twilio::signature::sign("tok", &url, &params);
    let s = r
        .http
        .post(&url)
        .header("X-Twilio-Signature", sig)
        .form(&params)
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(s, 404, "signed but for no call");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconcile_adopts_or_requeues_attempts_left_processing() {
    let r = rig(vec![rule("+1201555012", "busy", 2000, None)]).await;
    let cid = r
        .create_campaign(campaign("ws://127.0.0.1:9/", json!({}), json!({})))
        .await;
    r.post(&format!("/v1/campaigns/{cid}/pause"), json!({}))
        .await;
    let mut ids = Vec::new();
    for to in ["+12015550121", "+12015550122"] {
        let (_, v) = r
            .post(
                "/v1/calls",
                json!({"campaign_id": cid, "to": to, "variables": {"customer_name": "X"}}),
            )
            .await;
        ids.push(v["call_queue_id"].as_str().unwrap().to_string());
    }
    let store = r.app.engine.store();
    let now = chrono::Utc::now().timestamp_millis();
    for id in &ids {
        assert!(store.claim(id, now, "us", "+12015550100", "sim").unwrap());
        // A second claim of the same attempt loses.
        assert!(!store.claim(id, now, "us", "+12015550100", "sim").unwrap());
    }
    // The first reached the carrier, but the answer was lost in the crash
    // (and its callbacks go nowhere); the second never left.
    assert!(r.dials().is_empty());
    let client = dialgate::carrier::twilio::rest::TwilioClient::new(r.sim.clone());
    let mut params = std::collections::BTreeMap::new();
    params.insert("call_queue_id".to_string(), ids[0].clone());
    let placed = client
        .create_call(&dialgate::carrier::twilio::rest::Dial {
            to: "+12015550121",
            from: "+12015550100",
            stream_url: "ws://127.0.0.1:9/twilio/stream",
            parameters: &params,
            status_callback: "http://127.0.0.1:9/twilio/status",
            timeout_s: 5,
            time_limit_s: 60,
        })
        .await
        .unwrap();
    r.app.engine.reconcile().await.unwrap();
    let a = r.get(&format!("/v1/calls/{}", ids[0])).await;
    assert_eq!(a["provider_call_id"], placed.sid.as_str(), "{a:#}");
    assert!(
        matches!(a["status"].as_str().unwrap(), "initiated" | "ringing"),
        "{a:#}"
    );
    let b = r.get(&format!("/v1/calls/{}", ids[1])).await;
    assert_eq!(b["status"], "failed");
    assert!(
        b["initiation_error"]
            .as_str()
            .unwrap()
            .contains("not dialled")
    );
    let attempts = b["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 2, "{b:#}");
    assert_eq!(attempts[1]["status"], "queued");
    assert_eq!(r.dials().len(), 1, "reconciliation must not dial");
}

/// A carrier in trouble at dial time. One number's first create gets a 503
/// (no call placed); another's first create places the call but its answer
/// breaks off, so the gateway cannot know whether the person is ringing.
/// Neither contact is lost and neither is rung twice: the first is tried
/// again after the back-off, the second is followed through the carrier's
/// own callbacks, not failed and not dialled again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_carrier_fault_at_dial_loses_no_contact_and_rings_none_twice() {
    let mut unavailable = rule("+1201555031", "busy", 100, None);
    unavailable.create_fault = Some(sim::CreateFault::Unavailable);
    let mut lost = rule("+1201555032", "busy", 100, None);
    lost.create_fault = Some(sim::CreateFault::LostAnswer);
    let r = rig(vec![unavailable, lost]).await;
    let cid = r
        .create_campaign(campaign(
            "ws://127.0.0.1:9/",
            json!({}),
            json!({"calls_per_second": 20}),
        ))
        .await;
    for to in ["+12015550311", "+12015550321"] {
        r.queue(&cid, to).await;
    }
    let calls = r.settle(&cid, Duration::from_secs(30)).await;
    let by_to = |to: &str| attempts_to(&calls, to);
    let dials = r.dials();
    let dials_to = |to: &str| dials.iter().filter(|d| d["to"] == to).count();

    // 503: the attempt says it was not dialled, and a second one was.
    let u = by_to("+12015550311");
    assert_eq!(u.len(), 2, "{u:#?}");
    assert_eq!(u[0]["status"], "failed");
    let why = u[0]["initiation_error"].as_str().unwrap();
    assert!(
        why.starts_with("provider_unavailable") && why.contains("not dialled"),
        "{why}"
    );
    assert_eq!(u[1]["retry_of"], u[0]["call_queue_id"]);
    assert_eq!(u[1]["status"], "busy", "{:#}", u[1]);
    assert_eq!(dials_to("+12015550311"), 1);

    // Lost answer: one attempt, which follows the call the carrier placed.
    let l = by_to("+12015550321");
    assert_eq!(l.len(), 1, "{l:#?}");
    assert_eq!(l[0]["status"], "busy", "{:#}", l[0]);
    assert_eq!(dials_to("+12015550321"), 1, "rung twice");
    let dial = dials.iter().find(|d| d["to"] == "+12015550321").unwrap();
    assert_eq!(l[0]["provider_call_id"], dial["sid"]);
}
