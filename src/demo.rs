//! `dialgate demo`: the whole product on one machine with embedded
//! defaults. It starts the echo agent, the `sim` carrier and the gateway
//! (API, dialer, media) on a fresh SQLite file, creates the example
//! campaign from `examples/demo/` through the real HTTP API, uploads the
//! example CSV, shows progress, and prints one line per contact. Nothing
//! here decides anything: it is a client of the same API users call.
//!
//! Also `dialgate queue-bench`, which measures the call queue.

use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use serde::Serialize;
use serde_json::{Value, json};

use crate::api::import_csv;
use crate::app::{self, AppConfig};
use crate::campaign::CampaignSpec;
use crate::carrier::sim;
use crate::carrier::twilio::rest::TwilioConfig;
use crate::store::Store;

/// Demo options.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// JSON output.
    pub json: bool,
    /// Where to keep the database and logs.
    pub dir: Option<PathBuf>,
    /// Give up after.
    pub timeout: Duration,
}

/// The example files: `examples/demo` under the working directory, else
/// under the source tree this binary was built from.
pub fn assets_dir() -> PathBuf {
    let local = PathBuf::from("examples/demo");
    if local.join("campaign.json").exists() {
        return local;
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/demo")
}

fn fresh_dir(dir: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    let d = dir.unwrap_or_else(|| {
        std::env::temp_dir().join(format!(
            "dialgate-demo-{}-{}",
            std::process::id(),
            chrono::Utc::now().timestamp_millis()
        ))
    });
    std::fs::create_dir_all(&d).with_context(|| format!("creating {}", d.display()))?;
    let db = d.join("dialgate.db");
    for ext in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{ext}", db.display()));
    }
    let _ = std::fs::remove_file(d.join("sim-dials.jsonl"));
    Ok(d)
}

/// One contact's outcome.
#[derive(Debug, Clone, Serialize)]
pub struct ContactResult {
    /// Destination.
    pub to: String,
    /// Final status (the last attempt's).
    pub status: String,
    /// Attempts made.
    pub attempts: u32,
    /// Caller ID used.
    pub caller_id: Option<String>,
    /// AMD outcome.
    pub answered_by: Option<String>,
    /// AMD decision time, ms after answer.
    pub amd_decision_ms: Option<i64>,
    /// How the conversation ended.
    pub end_type: Option<String>,
}

/// Runs the demo; `Ok(false)` when it timed out.
pub async fn run(opts: DemoOptions) -> anyhow::Result<bool> {
    let assets = assets_dir();
    let dir = fresh_dir(opts.dir.clone())?;
    let say = |s: String| {
        if !opts.json {
            eprintln!("{s}");
        }
    };
    tokio::task::spawn_blocking(crate::detect::classifier::warm_up)
        .await?
        .context("loading the AMD model")?;

    let agent_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let agent_url = format!("ws://{}/", agent_listener.local_addr()?);
    tokio::spawn(crate::agent::echo::serve(agent_listener));

    let rules = sim::Rules::load(&assets.join("sim-rules.json"))?;
    let sim_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let sim_url = format!("http://{}", sim_listener.local_addr()?);
    let token = "demo-sim-token".to_string();
    let sim_cfg = sim::SimConfig {
        account_sid: "ACdemo".into(),
        auth_token: token.clone(),
        rules,
        log: Some(dir.join("sim-dials.jsonl")),
        record_dir: None,
    };
    tokio::spawn(sim::serve(sim_listener, sim_cfg));

    let mut carriers = HashMap::new();
    carriers.insert(
        "sim".to_string(),
        TwilioConfig {
            base_url: sim_url,
            account_sid: "ACdemo".into(),
            auth_token: token,
        },
    );
    let gw = app::start(AppConfig {
        listen: "127.0.0.1:0".parse()?,
        db: dir.join("dialgate.db"),
        public_url: None,
        carriers,
        default_agent_url: agent_url.clone(),
        default_agent_audio: Default::default(),
        llm: None,
        sip: None,
        sip_listen: None,
        default_session: Default::default(),
        tick: Duration::from_millis(100),
        carrier_backoff: Duration::from_secs(15),
        delivery: Default::default(),
    })
    .await?;
    let (_, key) = gw
        .store
        .create_api_key(chrono::Utc::now().timestamp_millis())?;
    let base = format!("http://{}", gw.addr);
    say(format!(
        "dialgate demo: gateway {base}, sim carrier, echo agent {agent_url}; database {}",
        dir.join("dialgate.db").display()
    ));

    let http = reqwest::Client::new();
    let mut campaign: Value =
        serde_json::from_slice(&std::fs::read(assets.join("campaign.json"))?)?;
    campaign["agent"]["url"] = json!(agent_url);
    let resp = http
        .post(format!("{base}/v1/campaigns"))
        .bearer_auth(&key)
        .json(&campaign)
        .send()
        .await?;
    if !resp.status().is_success() {
        bail!("creating the campaign failed: {}", resp.text().await?);
    }
    let created: Value = resp.json().await?;
    let cid = created["id"].as_str().unwrap_or_default().to_string();
    say(format!("campaign {cid} created: {}", campaign["name"]));

    let csv = std::fs::read(assets.join("contacts.csv"))?;
    let resp = http
        .post(format!("{base}/v1/campaigns/{cid}/uploads"))
        .bearer_auth(&key)
        .header("content-type", "text/csv")
        .body(csv)
        .send()
        .await?;
    if !resp.status().is_success() {
        bail!("uploading the contacts failed: {}", resp.text().await?);
    }
    let upload: Value = resp.json().await?;
    say(format!(
        "uploaded contacts.csv: {} accepted, {} rejected",
        upload["accepted"], upload["rejected_count"]
    ));
    if let Some(rej) = upload["rejected"].as_array() {
        for r in rej {
            say(format!(
                "  row {:>3} rejected: {}",
                r["row"],
                r["reason"].as_str().unwrap_or("")
            ));
        }
    }

    let started = Instant::now();
    let mut done = false;
    let mut last_line = String::new();
    while started.elapsed() < opts.timeout {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let stats: Value = http
            .get(format!("{base}/v1/campaigns/{cid}/stats"))
            .bearer_auth(&key)
            .send()
            .await?
            .json()
            .await?;
        let by = stats["by_status"].as_object().cloned().unwrap_or_default();
        let n = |k: &str| by.get(k).and_then(Value::as_i64).unwrap_or(0);
        let waiting = n("scheduled") + n("queued");
        let live = n("processing") + n("initiated") + n("ringing") + n("answered");
        let line = format!(
            "[{:>5.1}s] waiting {waiting:>2} · in flight {live:>2} · completed {} · busy {} · declined {} · missed {} · failed {}",
            started.elapsed().as_secs_f64(),
            n("completed"),
            n("busy"),
            n("declined"),
            n("missed"),
            n("failed")
        );
        if line[9..] != last_line.get(9..).unwrap_or("")[..] {
            say(line.clone());
            last_line = line;
        }
        if waiting == 0 && live == 0 {
            done = true;
            break;
        }
    }

    let mut rows = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let mut url = format!("{base}/v1/calls?campaign_id={cid}&limit=1000");
        if let Some(a) = &after {
            url.push_str(&format!("&after={a}"));
        }
        let page: Value = http.get(url).bearer_auth(&key).send().await?.json().await?;
        rows.extend(page["calls"].as_array().cloned().unwrap_or_default());
        match page["next_after"].as_str() {
            Some(a) => after = Some(a.to_string()),
            None => break,
        }
    }
    let mut contacts: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for r in rows {
        contacts
            .entry(
                r["first_attempt_id"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            )
            .or_default()
            .push(r);
    }
    let mut results: Vec<(i64, ContactResult)> = contacts
        .into_values()
        .map(|mut attempts| {
            attempts.sort_by_key(|a| a["attempt"].as_u64());
            let first_created = attempts[0]["created_at"].as_str().unwrap_or("").to_string();
            let last = attempts.last().cloned().unwrap_or(Value::Null);
            let answered = attempts
                .iter()
                .rev()
                .find(|a| !a["answered_by"].is_null())
                .unwrap_or(&last);
            let order = chrono::DateTime::parse_from_rfc3339(&first_created)
                .map_or(0, |t| t.timestamp_millis());
            (
                order,
                ContactResult {
                    to: last["recipient_number"].as_str().unwrap_or("").to_string(),
                    status: last["status"].as_str().unwrap_or("").to_string(),
                    attempts: attempts.len() as u32,
                    caller_id: last["calling_number"].as_str().map(str::to_string),
                    answered_by: answered["answered_by"].as_str().map(str::to_string),
                    amd_decision_ms: answered["amd_decision_ms"].as_i64(),
                    end_type: last["conversation"]["end_type"]
                        .as_str()
                        .map(str::to_string),
                },
            )
        })
        .collect();
    results.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.to.cmp(&b.1.to)));
    let results: Vec<ContactResult> = results.into_iter().map(|r| r.1).collect();
    let mut totals: BTreeMap<String, u64> = BTreeMap::new();
    for r in &results {
        *totals.entry(r.status.clone()).or_default() += 1;
    }
    let dials = std::fs::read_to_string(dir.join("sim-dials.jsonl"))
        .map(|s| s.lines().count())
        .unwrap_or(0);
    let rejected: Vec<Value> = upload["rejected"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .map(|r| json!({"row": r["row"], "errors": r["errors"]}))
        .collect();
    let total_json = json!({
        "contacts": results.len() + rejected.len(),
        "accepted": upload["accepted"],
        "rejected": rejected.len(),
        "dials": dials,
        "by_status": totals,
        "completed_in_s": (started.elapsed().as_secs_f64() * 10.0).round() / 10.0,
        "finished": done,
    });
    if opts.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({
                "campaign_id": cid,
                "calls": results,
                "rejected_rows": rejected,
                "totals": total_json,
            }))?
        );
    } else {
        println!();
        println!(
            "{:<15} {:<10} {:>8}  {:<14} {:<18} {:>8}  {:<16}",
            "to", "status", "attempts", "caller id", "answered by", "AMD ms", "end type"
        );
        for r in &results {
            println!(
                "{:<15} {:<10} {:>8}  {:<14} {:<18} {:>8}  {:<16}",
                r.to,
                r.status,
                r.attempts,
                r.caller_id.as_deref().unwrap_or("-"),
                r.answered_by.as_deref().unwrap_or("-"),
                r.amd_decision_ms.map_or("-".to_string(), |m| m.to_string()),
                r.end_type.as_deref().unwrap_or("-")
            );
        }
        for r in &rejected {
            println!(
                "row {:<11} rejected: {}",
                r["row"],
                crate::campaign::errors_line(
                    &serde_json::from_value::<Vec<crate::campaign::FieldError>>(
                        r["errors"].clone()
                    )
                    .unwrap_or_default()
                )
            );
        }
        println!();
        println!(
            "totals: {} contacts, {} accepted, {} rejected, {} dials; {}; {:.1} s{}",
            results.len() + rejected.len(),
            upload["accepted"],
            rejected.len(),
            dials,
            totals
                .iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect::<Vec<_>>()
                .join(", "),
            started.elapsed().as_secs_f64(),
            if done {
                ""
            } else {
                " (TIMED OUT: some calls are not finished)"
            }
        );
    }
    Ok(done)
}

/// A CSV generated as it is read: `rows` contacts with distinct valid US
/// numbers, so the import benchmark measures the import, not the file.
pub struct GeneratedCsv {
    next: u64,
    rows: u64,
    buf: Vec<u8>,
    pos: usize,
}

impl GeneratedCsv {
    /// `rows` data rows after a header.
    pub fn new(rows: u64) -> Self {
        Self {
            next: 0,
            rows,
            buf: b"to_number,customer_name,plan,crm_id\n".to_vec(),
            pos: 0,
        }
    }
}

impl Read for GeneratedCsv {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        while self.pos == self.buf.len() {
            if self.next == self.rows {
                return Ok(0);
            }
            self.buf.clear();
            self.pos = 0;
            let i = self.next;
            // exchanges 200–999, lines 0000–9999: 8 M distinct numbers
            let exchange = 200 + (i / 10_000) % 800;
            let line = i % 10_000;
            use std::io::Write as _;
            let _ = writeln!(
                self.buf,
                "+1201{exchange:03}{line:04},Customer {i},gold,crm-{i}"
            );
            self.next += 1;
        }
        let n = out.len().min(self.buf.len() - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

fn vm_hwm_kib() -> Option<u64> {
    std::fs::read_to_string("/proc/self/status")
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

fn vm_rss_kib() -> Option<u64> {
    std::fs::read_to_string("/proc/self/status")
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Measures CSV import and claims on a fresh SQLite file.
pub fn queue_bench(rows: u64, claims: u64, keep: Option<&Path>) -> anyhow::Result<Value> {
    let dir = fresh_dir(keep.map(Path::to_path_buf))?;
    let db = dir.join("dialgate.db");
    let store = Store::open(&db)?;
    let mut spec: CampaignSpec =
        serde_json::from_slice(&std::fs::read(assets_dir().join("campaign.json"))?)?;
    spec.validate()
        .map_err(|e| anyhow::anyhow!("example campaign: {}", crate::campaign::errors_line(&e)))?;
    let cid = store.insert_campaign(&spec, chrono::Utc::now().timestamp_millis())?;
    // Pause it: a benchmark must not be mistaken for work by a dialer.
    store.set_campaign_state(&cid, crate::campaign::CampaignState::Paused, 0)?;
    let rss_before = vm_rss_kib().unwrap_or(0);
    let t = Instant::now();
    let report =
        import_csv(&store, &cid, &spec, GeneratedCsv::new(rows)).map_err(anyhow::Error::msg)?;
    let import_s = t.elapsed().as_secs_f64();
    let hwm = vm_hwm_kib().unwrap_or(0);

    let now = chrono::Utc::now().timestamp_millis();
    let mut claimed = 0u64;
    let t = Instant::now();
    while claimed < claims {
        let due = store.due_in(&cid, now, 500)?;
        if due.is_empty() {
            break;
        }
        for c in due {
            if claimed == claims {
                break;
            }
            if store.claim(&c.id, now, "num", "+12015550100", "sim")? {
                claimed += 1;
            }
        }
    }
    let claim_s = t.elapsed().as_secs_f64();
    let db_bytes = std::fs::metadata(&db).map(|m| m.len()).unwrap_or(0);
    Ok(json!({
        "rows": rows,
        "accepted": report.accepted,
        "rejected": report.rejected_count,
        "import_seconds": import_s,
        "import_rows_per_second": rows as f64 / import_s,
        "rss_before_import_kib": rss_before,
        "peak_rss_kib": hwm,
        "db_bytes": db_bytes,
        "claims": claimed,
        "claims_per_second": claimed as f64 / claim_s,
        "claim_note": "each claim is a due-query share plus one UPDATE … WHERE status = 'queued' in its own transaction",
    }))
    .inspect(|_| {
        // A million-row database is half a gigabyte: keep it only if asked.
        if keep.is_none() {
            let _ = std::fs::remove_dir_all(&dir);
        }
    })
}

/// Measures event delivery to a local receiver: events per second with
/// nothing else pending, then the same with `stuck` events pending for a
/// receiver that accepts connections and never answers.
pub async fn delivery_bench(events: usize, stuck: usize, per_host: usize) -> anyhow::Result<Value> {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    let got = Arc::new(AtomicUsize::new(0));
    let g = got.clone();
    let fast = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let fast_url = format!("http://{}/hook", fast.local_addr()?);
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move || {
            let g = g.clone();
            async move {
                g.fetch_add(1, Ordering::Relaxed);
                "ok"
            }
        }),
    );
    tokio::spawn(async move {
        use axum::serve::ListenerExt;
        let fast = fast.tap_io(|t| {
            let _ = t.set_nodelay(true);
        });
        axum::serve(fast, app).await
    });
    // Accepts and reads, never answers.
    let dead = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let dead_url = format!("http://{}/hook", dead.local_addr()?);
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = dead.accept().await {
            held.push(s);
        }
    });

    let mut results = Vec::new();
    for with_stuck in [false, true] {
        let dir = fresh_dir(None)?;
        let store = Store::open(&dir.join("dialgate.db"))?;
        let now = chrono::Utc::now().timestamp_millis();
        let tool = |url: &str| json!({"name": "t", "method": "POST", "url": url, "headers": {}, "input_schema": {"type": "object"}});
        let fast_tool = store.insert_tool("fast", &tool(&fast_url), "s", now)?;
        let dead_tool = store.insert_tool("dead", &tool(&dead_url), "s", now)?;
        let mut spec: CampaignSpec =
            serde_json::from_slice(&std::fs::read(assets_dir().join("campaign.json"))?)?;
        spec.validate()
            .map_err(|e| anyhow::anyhow!(crate::campaign::errors_line(&e)))?;
        let add = |tool_id: &str, n: usize| -> anyhow::Result<()> {
            let mut s = spec.clone();
            s.actions.call_initiated = Some(crate::campaign::ActionSpec {
                tool_id: tool_id.to_string(),
                mapping: Default::default(),
            });
            let cid = store.insert_campaign(&s, now)?;
            store.set_campaign_state(&cid, crate::campaign::CampaignState::Paused, now)?;
            let calls: Vec<crate::store::NewCall> = (0..n)
                .map(|i| crate::store::NewCall {
                    campaign_id: cid.clone(),
                    to_number: format!("+1201555{:04}", i % 10_000),
                    variables: Default::default(),
                    metadata: Default::default(),
                    scheduled_for: None,
                    expires_at: None,
                    idempotency_key: None,
                    suppressed: false,
                })
                .collect();
            for id in store.insert_calls(&calls, now)? {
                store.emit(&id, crate::events::EventKind::Initiated, now)?;
            }
            Ok(())
        };
        if with_stuck {
            add(&dead_tool, stuck)?;
        }
        add(&fast_tool, events)?;
        got.store(0, Ordering::Relaxed);
        let cfg = crate::events::delivery::DeliveryConfig {
            poll: Duration::from_millis(20),
            max_per_host: per_host.max(1),
            ..Default::default()
        };
        let worker = tokio::spawn(crate::events::delivery::run(store.clone(), cfg));
        let t = Instant::now();
        while got.load(Ordering::Relaxed) < events && t.elapsed() < Duration::from_secs(600) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let secs = t.elapsed().as_secs_f64();
        worker.abort();
        let _ = std::fs::remove_dir_all(&dir);
        results.push(json!({
            "stuck_events_pending": if with_stuck { stuck } else { 0 },
            "delivered": got.load(Ordering::Relaxed),
            "seconds": secs,
            "events_per_second": events as f64 / secs,
        }));
    }
    let ratio = results[1]["events_per_second"].as_f64().unwrap_or(0.0)
        / results[0]["events_per_second"].as_f64().unwrap_or(1.0);
    Ok(
        json!({"max_per_host": per_host, "runs": results, "throughput_with_a_stuck_endpoint_ratio": ratio}),
    )
}
