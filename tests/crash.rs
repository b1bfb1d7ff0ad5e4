//! `kill -9` of a running `dialgate serve` mid-campaign, then a restart on
//! the same SQLite file: every contact is accounted for and no attempt was
//! dialled twice. Real processes (the binary under test for the gateway,
//! the sim carrier and the echo agent), a real SQLite file, real sockets.
//! Also: `dialgate demo --json` runs to completion.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_dialgate");

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn(args: &[&str], log: &Path) -> Proc {
    let f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    Proc(
        Command::new(BIN)
            .args(args)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(f)
            .spawn()
            .unwrap(),
    )
}

async fn wait_up(url: &str) {
    let t = Instant::now();
    while reqwest::get(url).await.is_err() {
        assert!(t.elapsed() < Duration::from_secs(30), "{url} never came up");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn dials(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_campaign_loses_nothing_and_dials_nothing_twice() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let heldout = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/amd/heldout");
    let rules = json!({"rules": [
        {"prefix": "+1201555010", "outcome": "human", "wav": heldout.join("hello_silence_0400.wav"), "ring_ms": 800, "hangup_after_ms": 1500},
        {"prefix": "+1201555011", "outcome": "voicemail", "wav": heldout.join("personal_vm_beep_0050.wav"), "ring_ms": 800},
        {"prefix": "+1201555012", "outcome": "busy", "ring_ms": 400},
        {"prefix": "+1201555013", "outcome": "no_answer"},
        {"prefix": "+1201555014", "outcome": "declined", "ring_ms": 600}
    ]});
    std::fs::write(d.join("rules.json"), rules.to_string()).unwrap();
    let (sim_port, gw_port, agent_port) = (free_port(), free_port(), free_port());
    let db = d.join("dialgate.db");
    let dial_log = d.join("dials.jsonl");
    let logs = d.join("processes.log");
    let _sim = spawn(
        &[
            "sim",
            "--listen",
            &format!("127.0.0.1:{sim_port}"),
            "--rules",
            d.join("rules.json").to_str().unwrap(),
            "--log",
            dial_log.to_str().unwrap(),
            "--auth-token",
            "tok",
        ],
        &logs,
    );
    let _agent = spawn(
        &[
            "agent",
            "echo",
            "--listen",
            &format!("127.0.0.1:{agent_port}"),
        ],
        &logs,
    );
    let out = Command::new(BIN)
        .args(["apikey", "create", "--db", db.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success());
    let key = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let serve_args = [
        "serve",
        "--listen",
        &format!("127.0.0.1:{gw_port}"),
        "--db",
        db.to_str().unwrap(),
        "--sim-url",
        &format!("http://127.0.0.1:{sim_port}"),
        "--sim-auth-token",
        "tok",
    ];
    let mut gw = spawn(&serve_args, &logs);
    let base = format!("http://127.0.0.1:{gw_port}");
    wait_up(&format!("{base}/healthz")).await;

    let http = reqwest::Client::new();
    let camp = json!({
        "name": "crash", "agent": {"url": format!("ws://127.0.0.1:{agent_port}/"), "script": "s"},
        "numbers": {"default": {"id": "us", "number": "+12015550100"}},
        "retry": {"on_busy": true, "on_no_answer": true, "max_retries": 1, "delay_seconds": 1},
        "amd": {"action": "leave_message", "voicemail_script": "vm"},
        "variables": [{"name": "customer_name", "required": true}],
        "calling_window": {"start": "00:00", "end": "24:00"},
        "limits": {"max_concurrency": 6, "calls_per_second": 10, "ring_timeout_seconds": 5, "max_duration_seconds": 60}
    });
    let v: Value = http
        .post(format!("{base}/v1/campaigns"))
        .bearer_auth(&key)
        .json(&camp)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    // (once in about ten runs here this came back without an id; say what
    // came back, so the next failure can be read)
    let cid = v["id"]
        .as_str()
        .unwrap_or_else(|| panic!("campaign not created: {v}"))
        .to_string();
    let mut csv = String::from("to_number,customer_name\n");
    for i in 0..30 {
        csv.push_str(&format!("+120155501{}{},C{i}\n", i % 5, i / 5));
    }
    let up: Value = http
        .post(format!("{base}/v1/campaigns/{cid}/uploads"))
        .bearer_auth(&key)
        .body(csv)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(up["accepted"], 30, "{up}");

    // Kill it while calls are ringing and talking.
    let t = Instant::now();
    while dials(&dial_log).len() < 9 {
        assert!(t.elapsed() < Duration::from_secs(30), "no dials");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    gw.0.kill().unwrap(); // SIGKILL
    gw.0.wait().unwrap();
    let at_kill = dials(&dial_log).len();
    tokio::time::sleep(Duration::from_millis(700)).await;
    let _gw2 = spawn(&serve_args, &logs);
    wait_up(&format!("{base}/healthz")).await;

    let t = Instant::now();
    let calls = loop {
        let v: Value = http
            .get(format!("{base}/v1/calls?campaign_id={cid}&limit=1000"))
            .bearer_auth(&key)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let calls = v["calls"].as_array().unwrap().clone();
        let live = calls
            .iter()
            .filter(|c| {
                !matches!(
                    c["status"].as_str().unwrap(),
                    "completed"
                        | "failed"
                        | "busy"
                        | "declined"
                        | "missed"
                        | "canceled"
                        | "expired"
                )
            })
            .count();
        if live == 0 {
            break calls;
        }
        assert!(
            t.elapsed() < Duration::from_secs(120),
            "{live} attempts never finished; see {}",
            logs.display()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };

    let log = std::fs::read_to_string(&logs).unwrap_or_default();
    eprintln!(
        "dials before the kill {at_kill}, after {}; reconciliation: {} adopted, {} requeued (never dialled), {} hung up mid-call",
        dials(&dial_log).len() - at_kill,
        log.matches("adopted a call the carrier placed").count(),
        log.matches("never reached the carrier").count(),
        calls_interrupted(&calls)
    );
    // Every contact is accounted for.
    let mut roots: Vec<&str> = calls
        .iter()
        .map(|c| c["first_attempt_id"].as_str().unwrap())
        .collect();
    roots.sort();
    roots.dedup();
    assert_eq!(roots.len(), 30);
    // No attempt was dialled twice, and every dial belongs to an attempt
    // that knows the carrier's call id.
    let dials = dials(&dial_log);
    assert!(
        dials.len() > at_kill,
        "nothing was dialled after the restart"
    );
    let mut ids: Vec<&str> = dials
        .iter()
        .map(|x| x["call_queue_id"].as_str().unwrap())
        .collect();
    ids.sort();
    let n = ids.len();
    ids.dedup();
    assert_eq!(ids.len(), n, "an attempt was dialled twice");
    for dial in &dials {
        let c = calls
            .iter()
            .find(|c| c["call_queue_id"] == dial["call_queue_id"])
            .unwrap_or_else(|| panic!("dial {dial} has no attempt"));
        assert_eq!(c["provider_call_id"], dial["sid"], "{c:#}");
    }
    // Attempts that never reached the carrier say so and were not dialled.
    for c in &calls {
        let dialled = dials
            .iter()
            .any(|x| x["call_queue_id"] == c["call_queue_id"]);
        let never = c["initiation_error"]
            .as_str()
            .is_some_and(|e| e.contains("not dialled"));
        if dialled == never {
            // Rare (seen once in many runs): say everything the processes
            // logged about this attempt, so the failure explains itself.
            let id = c["call_queue_id"].as_str().unwrap_or_default();
            let said: Vec<&str> = log.lines().filter(|l| l.contains(id)).collect();
            panic!(
                "attempt {c:#} dialled={dialled}, marked not dialled={never}; the logs about it:\n{}",
                said.join("\n")
            );
        }
    }
}

fn calls_interrupted(calls: &[Value]) -> usize {
    calls
        .iter()
        .filter(|c| {
            c["initiation_error"]
                .as_str()
                .is_some_and(|e| e.contains("restarted during the call"))
        })
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_runs_to_completion() {
    let dir = tempfile::tempdir().unwrap();
    let out = tokio::task::spawn_blocking({
        let d = dir.path().to_path_buf();
        move || {
            Command::new(BIN)
                .args(["demo", "--json", "--dir", d.to_str().unwrap()])
                .current_dir(env!("CARGO_MANIFEST_DIR"))
                .output()
                .unwrap()
        }
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(v["totals"]["finished"], true);
    let calls = v["calls"].as_array().unwrap();
    let rejected = v["rejected_rows"].as_array().unwrap();
    assert_eq!(calls.len() + rejected.len(), 25);
    assert_eq!(rejected.len(), 5);
    let status_of = |to: &str| {
        calls
            .iter()
            .find(|c| c["to"] == to)
            .map(|c| c["status"].as_str().unwrap().to_string())
    };
    assert_eq!(status_of("+12015550121").as_deref(), Some("busy"));
    assert_eq!(status_of("+12015550141").as_deref(), Some("declined"));
    assert_eq!(status_of("+12015550131").as_deref(), Some("missed"));
    assert_eq!(status_of("+12015550151").as_deref(), Some("failed"));
    let oman = calls.iter().find(|c| c["to"] == "+96891230001").unwrap();
    assert_eq!(oman["caller_id"], "+96822000100");
    assert_eq!(oman["answered_by"], "human");
    for c in calls {
        for k in [
            "to",
            "status",
            "attempts",
            "caller_id",
            "answered_by",
            "amd_decision_ms",
            "end_type",
        ] {
            assert!(c.get(k).is_some(), "{k} missing in {c}");
        }
    }
    let vm = calls.iter().find(|c| c["to"] == "+12015550111").unwrap();
    assert!(
        vm["answered_by"].as_str().unwrap().starts_with("machine"),
        "{vm}"
    );
    assert_eq!(vm["end_type"], "voicemail_ended");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_for_a_dead_receiver_survive_kill_9_and_arrive_after_restart() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let heldout = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/amd/heldout");
    let rules = json!({"rules": [
        {"prefix": "+1201555010", "outcome": "human", "wav": heldout.join("hello_silence_0400.wav"), "ring_ms": 200, "hangup_after_ms": 1000},
        {"prefix": "+1201555012", "outcome": "busy", "ring_ms": 100},
        {"prefix": "+1201555015", "outcome": "failed", "ring_ms": 100}
    ]});
    std::fs::write(d.join("rules.json"), rules.to_string()).unwrap();
    let (sim_port, gw_port, agent_port, recv_port) =
        (free_port(), free_port(), free_port(), free_port());
    let db = d.join("dialgate.db");
    let logs = d.join("processes.log");
    let _sim = spawn(
        &[
            "sim",
            "--listen",
            &format!("127.0.0.1:{sim_port}"),
            "--rules",
            d.join("rules.json").to_str().unwrap(),
            "--auth-token",
            "tok",
        ],
        &logs,
    );
    let _agent = spawn(
        &[
            "agent",
            "echo",
            "--listen",
            &format!("127.0.0.1:{agent_port}"),
        ],
        &logs,
    );
    let out = Command::new(BIN)
        .args(["apikey", "create", "--db", db.to_str().unwrap()])
        .output()
        .unwrap();
    let key = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let serve_args = [
        "serve",
        "--listen",
        &format!("127.0.0.1:{gw_port}"),
        "--db",
        db.to_str().unwrap(),
        "--sim-url",
        &format!("http://127.0.0.1:{sim_port}"),
        "--sim-auth-token",
        "tok",
        "--event-backoff-ms",
        "200",
        "--event-max-attempts",
        "30",
    ];
    let mut gw = spawn(&serve_args, &logs);
    let base = format!("http://127.0.0.1:{gw_port}");
    wait_up(&format!("{base}/healthz")).await;
    let http = reqwest::Client::new();
    let post = |path: String, body: Value| {
        let http = http.clone();
        let key = key.clone();
        async move {
            http.post(path)
                .bearer_auth(key)
                .json(&body)
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        }
    };
    // The receiver's port is reserved but nobody listens yet.
    let tool = post(
        format!("{base}/v1/tools"),
        json!({"name": "crm", "url": format!("http://127.0.0.1:{recv_port}/hook")}),
    )
    .await;
    let a = json!({"tool_id": tool["id"]});
    let camp = post(format!("{base}/v1/campaigns"), json!({
        "name": "events", "agent": {"url": format!("ws://127.0.0.1:{agent_port}/"), "script": "s"},
        "numbers": {"default": {"id": "us", "number": "+12015550100"}},
        "calling_window": {"start": "00:00", "end": "24:00"},
        "limits": {"calls_per_second": 20},
        "actions": {"call_initiation_failure": a, "call_initiated": a, "call_declined": a,
                    "call_missed": a, "call_answered": a, "call_ended": a}
    })).await;
    let cid = camp["id"].as_str().unwrap().to_string();
    for to in ["+12015550101", "+12015550121", "+12015550151"] {
        post(
            format!("{base}/v1/calls"),
            json!({"campaign_id": cid, "to": to}),
        )
        .await;
    }
    // All three calls end while the receiver is down.
    let t = Instant::now();
    loop {
        let v: Value = http
            .get(format!("{base}/v1/calls?campaign_id={cid}"))
            .bearer_auth(&key)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let done = v["calls"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| {
                matches!(
                    c["status"].as_str().unwrap(),
                    "completed" | "busy" | "failed"
                )
            })
            .count();
        if done == 3 {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(30), "{v:#}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let pending: Value = http
        .get(format!("{base}/v1/events?state=pending"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let pending = pending["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] != "post_analysis")
        .count();
    assert_eq!(
        pending, 7,
        "initiated ×3, answered, ended, declined, initiation failure"
    );
    gw.0.kill().unwrap();
    gw.0.wait().unwrap();

    // The receiver comes up; dialgate restarts.
    let got: std::sync::Arc<std::sync::Mutex<Vec<(String, String)>>> = Default::default();
    let g = got.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |h: axum::http::HeaderMap| {
            let g = g.clone();
            async move {
                let k = |n: &str| {
                    h.get(n)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("")
                        .to_string()
                };
                g.lock()
                    .unwrap()
                    .push((k("x-dialgate-event"), k("idempotency-key")));
                "ok"
            }
        }),
    );
    let l = tokio::net::TcpListener::bind(("127.0.0.1", recv_port))
        .await
        .unwrap();
    tokio::spawn(async move { axum::serve(l, app).await });
    let _gw2 = spawn(&serve_args, &logs);
    let t = Instant::now();
    loop {
        let mut keys: Vec<String> = got.lock().unwrap().iter().map(|x| x.1.clone()).collect();
        keys.sort();
        keys.dedup();
        if keys.len() == 7 {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "received {:?}",
            got.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut kinds: Vec<String> = got.lock().unwrap().iter().map(|x| x.0.clone()).collect();
    kinds.sort();
    kinds.dedup();
    assert_eq!(
        kinds,
        [
            "call_answered",
            "call_declined",
            "call_ended",
            "call_initiated",
            "call_initiation_failure"
        ]
    );
}
