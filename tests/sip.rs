//! Outbound SIP calls against SIPp (Debian `sip-tester`) as the trunk: each
//! final response maps to the dialer's outcome, a call ringing past the
//! ring time-out is cancelled, a 401 is answered with digest credentials,
//! an answered call ends with a clean BYE. SIPp checks its side of every
//! flow (ACKs, CANCEL, credentials) and exits non-zero when one is wrong.
//! baresip, a second SIP stack, answers as a voicemail box with a beep.
//!
//! `.ci/run` installs SIPp and baresip and sets `DIALGATE_REQUIRE_PEERS=1`,
//! so there a missing peer fails; elsewhere these tests say they were
//! skipped.

use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use dialgate::carrier::sip::call::{SipCallConfig, SipCallReport, run};
use dialgate::carrier::sip::uac::{Outcome, TrunkConfig};

fn have_sipp() -> bool {
    let found = Command::new("sipp")
        .arg("-v")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    if !found {
        assert!(
            std::env::var_os("DIALGATE_REQUIRE_PEERS").is_none(),
            "sipp is required (apt-get install sip-tester)"
        );
        eprintln!("SKIPPED: sipp not installed (apt-get install sip-tester)");
    }
    found
}

/// A block of four UDP ports free now, for SIPp's signalling or its media
/// (it binds audio RTP at N and video RTP at N+2).
///
/// The ports come from below the kernel's ephemeral range (32768 and up on
/// Linux), counted per process: a port picked from the ephemeral range and
/// released could be taken by any socket bound to port 0 meanwhile (our
/// own RTP sockets in a parallel test), and SIPp then fails to bind it.
fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU16, Ordering};
    static NEXT: AtomicU16 = AtomicU16::new(0);
    // Spread processes apart so two test binaries at once rarely meet.
    let base = 20_000 + (std::process::id() % 100) as u16 * 100;
    loop {
        let p = base + (NEXT.fetch_add(4, Ordering::Relaxed) % 2_800);
        if (p..p + 4).all(|q| UdpSocket::bind(("127.0.0.1", q)).is_ok()) {
            return p;
        }
    }
}

struct Sipp {
    child: Child,
    addr: SocketAddr,
    _scenario: tempfile::TempDir,
}

impl Sipp {
    /// Starts SIPp on `scenario` from `tests/sipp`, with each `[key]` of
    /// the template replaced by its value, as the callee.
    fn start(scenario: &str, keys: &[(&str, &str)]) -> Self {
        Self::spawn(scenario, keys, None, false)
    }

    /// The callee over TCP (`-t t1`), listening once this returns.
    fn start_tcp(scenario: &str, keys: &[(&str, &str)]) -> Self {
        let sipp = Self::spawn(scenario, keys, None, true);
        // listening once its port cannot be bound
        let t0 = Instant::now();
        while std::net::TcpListener::bind(sipp.addr).is_ok() {
            assert!(
                t0.elapsed() < Duration::from_secs(10),
                "SIPp did not listen"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        sipp
    }

    /// SIPp as a caller placing one call to `target`.
    fn call(scenario: &str, keys: &[(&str, &str)], target: SocketAddr) -> Self {
        Self::spawn(scenario, keys, Some(target), false)
    }

    fn spawn(scenario: &str, keys: &[(&str, &str)], target: Option<SocketAddr>, tcp: bool) -> Self {
        let port = free_port();
        let media = free_port();
        // SIPp checks status codes when it loads a scenario, before any
        // `-key` substitution: fill the template in here instead.
        let template = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/sipp")
            .join(scenario);
        let mut xml = std::fs::read_to_string(&template).unwrap();
        for (k, v) in keys {
            xml = xml.replace(&format!("[{k}]"), v);
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(scenario);
        std::fs::write(&path, xml).unwrap();
        let mut cmd = Command::new("sipp");
        if let Some(t) = target {
            cmd.arg(t.to_string());
        }
        if tcp {
            cmd.args(["-t", "t1"]);
        }
        cmd.args(["-sf", path.to_str().unwrap(), "-i", "127.0.0.1"])
            .args(["-p", &port.to_string(), "-mp", &media.to_string()])
            .args(["-m", "1", "-timeout", "40s", "-nostdin"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        // DIALGATE_SIPP_TRACE=DIR keeps SIPp's message and error logs there.
        if let Some(dir) = std::env::var_os("DIALGATE_SIPP_TRACE") {
            cmd.args(["-trace_msg", "-trace_err"]).current_dir(dir);
        }
        let child = cmd.spawn().expect("sipp starts");
        Self {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            _scenario: dir,
        }
    }

    /// Waits for SIPp to finish its one call; true if it judged it a success.
    fn finished_ok(mut self) -> bool {
        let t0 = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                if !status.success() {
                    let mut err = String::new();
                    if let Some(mut e) = self.child.stderr.take() {
                        use std::io::Read;
                        let _ = e.read_to_string(&mut err);
                    }
                    eprintln!("sipp exited with {status}: {err}");
                }
                return status.success();
            }
            if t0.elapsed() > Duration::from_secs(10) {
                let _ = self.child.kill();
                let _ = self.child.wait();
                eprintln!("sipp did not finish its call");
                return false;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn trunk(auth: bool) -> TrunkConfig {
    TrunkConfig {
        host: "127.0.0.1".into(),
        port: 5060,
        username: auth.then(|| "alice".to_string()),
        password: auth.then(|| "secret".to_string()),
        from_domain: Some("dialgate.test".into()),
        transport: Default::default(),
        outbound_proxy: None,
    }
}

/// A call through SIPp with the gateway's own call driver. Answered calls
/// end at `max_ms` (the session's maximum duration) with our BYE.
fn sip_call(
    callee: SocketAddr,
    trunk: TrunkConfig,
    ring: Duration,
    agent: &str,
    max_ms: u64,
) -> SipCallConfig {
    use dialgate::call::session::{AgentStart, SessionConfig};
    SipCallConfig {
        trunk: TrunkConfig {
            port: callee.port(),
            ..trunk
        },
        trunk_addr: callee,
        ring_timeout: ring,
        session: SessionConfig {
            agent_start: AgentStart::Immediate,
            max_duration_ms: max_ms,
            ..SessionConfig::default()
        },
        agent_url: agent.to_string(),
        agent_audio: Default::default(),
        agent_connect_timeout: Duration::from_secs(3),
        llm: None,
        engine: None,
    }
}

/// Signalling checks: no agent answers (and none is needed).
async fn dial(sipp: &Sipp, trunk: TrunkConfig, ring: Duration) -> SipCallReport {
    dial_with(sipp.addr, trunk, ring).await
}

/// [`dial`] to any callee at `addr`, without credentials.
async fn dial_addr(addr: SocketAddr, ring: Duration) -> SipCallReport {
    dial_with(addr, trunk(false), ring).await
}

async fn dial_with(addr: SocketAddr, trunk: TrunkConfig, ring: Duration) -> SipCallReport {
    let cfg = sip_call(addr, trunk, ring, "ws://127.0.0.1:9/", 300);
    tokio::time::timeout(
        Duration::from_secs(45),
        run(cfg, "+15551230001", "+15550009999"),
    )
    .await
    .expect("the call ends")
    .expect("the call runs")
}

#[tokio::test]
async fn final_responses_map_to_outcomes() {
    if !have_sipp() {
        return;
    }
    type Check = fn(&Outcome) -> bool;
    let cases: [(&str, &str, Check); 5] = [
        ("486", "Busy Here", |o| *o == Outcome::Busy),
        ("603", "Decline", |o| *o == Outcome::Declined),
        ("480", "Temporarily Unavailable", |o| {
            *o == Outcome::NoAnswer
        }),
        (
            "488",
            "Not Acceptable Here",
            |o| matches!(o, Outcome::Failed { status: 488, reason } if reason.contains("no common codec")),
        ),
        (
            "404",
            "Not Found",
            |o| matches!(o, Outcome::Failed { status: 404, reason } if reason.contains("invalid number")),
        ),
    ];
    for (status, reason, ok) in cases {
        let sipp = Sipp::start("uas_final.xml", &[("status", status), ("reason", reason)]);
        let report = dial(&sipp, trunk(false), Duration::from_secs(20)).await;
        assert!(ok(&report.outcome), "{status}: {:?}", report.outcome);
        assert_eq!(
            report.outcome.as_status(),
            match status {
                "486" => "busy",
                "603" => "declined",
                "480" => "no-answer",
                _ => "failed",
            }
        );
        assert!(
            sipp.finished_ok(),
            "{status}: SIPp saw a wrong flow (no ACK?)"
        );
    }
}

#[tokio::test]
async fn ringing_forever_is_cancelled_at_the_ring_timeout() {
    if !have_sipp() {
        return;
    }
    let sipp = Sipp::start("uas_ring_forever.xml", &[]);
    let t0 = Instant::now();
    let report = dial(&sipp, trunk(false), Duration::from_millis(1500)).await;
    let took = t0.elapsed();
    assert_eq!(report.outcome, Outcome::NoAnswer);
    assert_eq!(report.progress, vec![180]);
    assert!(
        took >= Duration::from_millis(1500) && took < Duration::from_secs(5),
        "{took:?}"
    );
    assert!(sipp.finished_ok(), "SIPp saw a wrong CANCEL flow");
}

#[tokio::test]
async fn an_answered_call_ends_with_a_clean_bye() {
    if !have_sipp() {
        return;
    }
    let sipp = Sipp::start("uas_answer.xml", &[]);
    let report = dial(&sipp, trunk(false), Duration::from_secs(20)).await;
    assert_eq!(report.outcome, Outcome::Completed);
    assert_eq!(
        report.media.map(|m| m.codec),
        Some(dialgate::carrier::sip::call::Codec::Pcma),
        "the SDP answer's codec"
    );
    assert!(sipp.finished_ok(), "SIPp did not get ACK and BYE");
}

#[tokio::test]
async fn a_401_challenge_is_answered_with_digest_credentials() {
    if !have_sipp() {
        return;
    }
    let sipp = Sipp::start("uas_auth.xml", &[]);
    let report = dial(&sipp, trunk(true), Duration::from_secs(20)).await;
    assert_eq!(
        report.outcome,
        Outcome::Completed,
        "SIPp refused our credentials"
    );
    assert!(report.media.is_some());
    assert!(sipp.finished_ok());

    // wrong password: SIPp's check fails and it answers 403
    let sipp = Sipp::start("uas_auth.xml", &[]);
    let wrong = TrunkConfig {
        password: Some("wrong".into()),
        ..trunk(true)
    };
    let report = dial(&sipp, wrong, Duration::from_secs(20)).await;
    assert!(
        matches!(report.outcome, Outcome::Failed { status: 403, .. }),
        "{:?}",
        report.outcome
    );
    assert!(sipp.finished_ok());
}

/// An agent that counts the messages it gets, by event.
async fn counting_agent() -> (
    SocketAddr,
    std::sync::Arc<std::sync::Mutex<std::collections::HashMap<String, usize>>>,
) {
    use futures_util::StreamExt;
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(std::collections::HashMap::new()));
    let s = seen.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = l.accept().await {
            let s = s.clone();
            tokio::spawn(async move {
                let Ok(mut ws) = tokio_tungstenite::accept_async(tcp).await else {
                    return;
                };
                while let Some(Ok(tokio_tungstenite::tungstenite::Message::Text(t))) =
                    ws.next().await
                {
                    let v: serde_json::Value = serde_json::from_str(t.as_str()).unwrap();
                    let event = v["event"].as_str().unwrap_or("").to_string();
                    if event == "start" {
                        let params = &v["start"]["customParameters"];
                        let mode = params["mode"].as_str().unwrap_or("?");
                        *s.lock()
                            .unwrap()
                            .entry(format!("start:{mode}"))
                            .or_insert(0) += 1;
                        if let Some(d) = params["direction"].as_str() {
                            *s.lock()
                                .unwrap()
                                .entry(format!("direction:{d}"))
                                .or_insert(0) += 1;
                        }
                    }
                    *s.lock().unwrap().entry(event).or_insert(0) += 1;
                }
            });
        }
    });
    (addr, seen)
}

/// SIPp answers and plays 7 s of speech (its `g711a.pcap`): the RTP is
/// decoded, AMD decides on it, the agent (started at answer) hears it as
/// Twilio-style media, and the call ends at its maximum duration with a
/// BYE SIPp accepts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answered_call_runs_amd_and_the_agent_on_its_rtp() {
    use dialgate::carrier::sip::call::Codec;
    if !have_sipp() {
        return;
    }
    let sipp = Sipp::start("uas_speech.xml", &[]);
    let (agent, seen) = counting_agent().await;
    // 7 s of speech; the call ends at 6 s (end-call on a machine is the default)
    let report = place(sipp.addr, agent, |cfg| cfg.session.max_duration_ms = 6000).await;
    assert_eq!(report.media.map(|m| m.codec), Some(Codec::Pcma));
    assert!(
        report.frames_in > 100,
        "{} frames of RTP decoded",
        report.frames_in
    );
    let answered_by = report.answered_by.clone().expect("AMD decided");
    assert_ne!(answered_by, "unknown", "speech is not silence");
    let media_at_agent = seen.lock().unwrap().get("media").copied().unwrap_or(0);
    assert!(
        media_at_agent > 75,
        "the agent heard {media_at_agent} frames"
    );
    assert!(seen.lock().unwrap().get("start").is_some());
    assert!(report.end_type.is_some());
    assert!(sipp.finished_ok(), "SIPp did not get a clean BYE");
}

/// The callee presses 1 (RFC 4733 from SIPp's `dtmf_2833_1.pcap`): the agent
/// gets Twilio's `dtmf` message once, though the end packet comes thrice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_digit_pressed_by_the_callee_reaches_the_agent() {
    if !have_sipp() {
        return;
    }
    let sipp = Sipp::start("uas_dtmf.xml", &[]);
    let (agent, seen) = counting_agent().await;
    let report = place(sipp.addr, agent, |cfg| cfg.session.max_duration_ms = 3000).await;
    assert_eq!(report.outcome, Outcome::Completed);
    assert_eq!(
        seen.lock().unwrap().get("dtmf").copied(),
        Some(1),
        "{report:?}"
    );
    assert!(sipp.finished_ok());
}

/// With the echo agent, its prompt goes back to the callee as RTP, paced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agents_audio_goes_back_as_rtp() {
    if !have_sipp() {
        return;
    }
    let sipp = Sipp::start("uas_speech.xml", &[]);
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let agent = l.local_addr().unwrap();
    tokio::spawn(dialgate::agent::echo::serve(l));
    let t0 = Instant::now();
    let report = place(sipp.addr, agent, |cfg| cfg.session.max_duration_ms = 3000).await;
    // 3 s of call: the prompt (0.8 s) then the echo of what it hears
    assert!(report.frames_out >= 60, "{report:?}");
    assert!(report.frames_out <= 160, "paced, not a burst: {report:?}");
    assert!(t0.elapsed() >= Duration::from_secs(3));
    assert!(sipp.finished_ok());
}

/// `dialgate serve` (the app) with a SIP trunk, and an API key.
struct Gateway {
    app: dialgate::app::App,
    _dir: tempfile::TempDir,
    key: String,
    http: reqwest::Client,
}

impl Gateway {
    async fn start(sip: dialgate::engine::SipTrunk, agent_url: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let app = dialgate::app::start(dialgate::app::AppConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            db: dir.path().join("q.db"),
            public_url: None,
            carriers: Default::default(),
            default_agent_url: agent_url.to_string(),
            default_agent_audio: Default::default(),
            llm: None,
            sip_listen: None,
            sip: Some(sip),
            default_session: Default::default(),
            tick: Duration::from_millis(50),
            carrier_backoff: Duration::from_millis(200),
            delivery: Default::default(),
        })
        .await
        .unwrap();
        let (_, key) = app.store.create_api_key(0).unwrap();
        Self {
            app,
            _dir: dir,
            key,
            http: reqwest::Client::new(),
        }
    }

    async fn post(&self, path: &str, body: serde_json::Value) -> serde_json::Value {
        let r = self
            .http
            .post(format!("http://{}{path}", self.app.addr))
            .bearer_auth(&self.key)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201, "{path}");
        r.json().await.unwrap()
    }

    /// A campaign on the trunk (with `extra` settings) and one call in it;
    /// the call's id.
    async fn campaign_call(&self, agent_url: &str, extra: serde_json::Value) -> String {
        let mut spec = serde_json::json!({
            "name": "sip", "agent": {"url": agent_url, "script": "opening"},
            "numbers": {"default": {"id": "trunk", "number": "+12015550100", "carrier": "sip"}},
            "calling_window": {"start": "00:00", "end": "24:00"}});
        for (k, v) in extra.as_object().unwrap() {
            spec[k] = v.clone();
        }
        let camp = self.post("/v1/campaigns", spec).await;
        let call = self
            .post(
                "/v1/calls",
                serde_json::json!({"campaign_id": camp["id"], "to": "+12015550123"}),
            )
            .await;
        call["call_queue_id"].as_str().unwrap().to_string()
    }

    async fn call(&self, id: &str) -> serde_json::Value {
        self.http
            .get(format!("http://{}/v1/calls/{id}", self.app.addr))
            .bearer_auth(&self.key)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// Waits (up to 30 s) for the call to end; its final record.
    async fn ended(&self, id: &str) -> serde_json::Value {
        let t0 = Instant::now();
        loop {
            let c = self.call(id).await;
            if ["completed", "busy", "failed", "missed", "declined"]
                .contains(&c["status"].as_str().unwrap_or(""))
            {
                return c;
            }
            assert!(t0.elapsed() < Duration::from_secs(30), "{c:#}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

fn sip_trunk(addr: SocketAddr, options_interval: Option<Duration>) -> dialgate::engine::SipTrunk {
    dialgate::engine::SipTrunk {
        trunk: TrunkConfig {
            port: addr.port(),
            ..trunk(false)
        },
        addr,
        llm: None,
        options_interval,
        up: std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true)),
    }
}

/// A campaign whose caller number's carrier is `sip`: the dialer places the
/// attempt through the trunk, and it ends with the same statuses, AMD
/// result and conversation as a Twilio call. A busy callee is `busy`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_campaign_dials_through_the_sip_trunk() {
    if !have_sipp() {
        return;
    }
    for (scenario, keys, want) in [
        ("uas_speech.xml", &[][..], "completed"),
        (
            "uas_final.xml",
            &[("status", "486"), ("reason", "Busy Here")][..],
            "busy",
        ),
    ] {
        let sipp = Sipp::start(scenario, keys);
        let echo = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let agent_url = format!("ws://{}/", echo.local_addr().unwrap());
        tokio::spawn(dialgate::agent::echo::serve(echo));
        let gw = Gateway::start(sip_trunk(sipp.addr, None), &agent_url).await;
        let id = gw
            .campaign_call(
                &agent_url,
                serde_json::json!({"amd": {"enabled": true, "action": "end_call"},
                                   "limits": {"max_duration_seconds": 10}}),
            )
            .await;
        let call = gw.ended(&id).await;
        assert_eq!(call["status"], want, "{call:#}");
        if want == "completed" {
            assert!(call["answered_by"].is_string(), "{call:#}");
            assert!(call["conversation"]["end_type"].is_string(), "{call:#}");
        }
        assert!(sipp.finished_ok(), "{scenario}");
    }
}

/// baresip as the callee: it answers on its own (`answermode=auto`), plays
/// one WAV as its side of the call and hangs up when the file ends. A real
/// SIP stack that is not ours and not SIPp: its own SDP answer, its own RTP
/// timing, its own BYE.
struct Baresip {
    child: Child,
    addr: SocketAddr,
    dir: tempfile::TempDir,
}

impl Baresip {
    /// Starts baresip as the number `user`, playing `samples` (8 kHz) and
    /// answering with the first of `codecs` it can (`PCMU,PCMA`,
    /// `opus/48000/2`); None if it is not installed (a failure where
    /// `DIALGATE_REQUIRE_PEERS` is set). It answers only calls to its own
    /// user (404 otherwise).
    fn start_with(user: &str, samples: &[i16], codecs: &str) -> Option<Self> {
        let found = Command::new("baresip")
            .arg("-h")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok();
        if !found {
            assert!(
                std::env::var_os("DIALGATE_REQUIRE_PEERS").is_none(),
                "baresip is required (apt-get install baresip-core)"
            );
            eprintln!("SKIPPED: baresip not installed (apt-get install baresip-core)");
            return None;
        }
        let (sip, rtp) = (free_port(), free_port());
        let dir = tempfile::tempdir().unwrap();
        let wav = dir.path().join("greeting.wav");
        if codecs.starts_with("opus") {
            // aufile plays only at the codec's rate and channels
            write_48k_stereo(&wav, samples);
        } else {
            dialgate::audio::wav::write_pcm16(&wav, 8000, samples).unwrap();
        }
        let config = format!(
            "sip_listen 127.0.0.1:{sip}\n\
             audio_player aubridge,sink\n\
             audio_alert aubridge,sink\n\
             audio_source aufile,{}\n\
             rtp_ports {rtp}-{}\n\
             module_path /usr/lib/baresip/modules\n\
             module g711.so\n\
             module opus.so\n\
             module aufile.so\n\
             module aubridge.so\n\
             module_app account.so\n\
             module_app menu.so\n",
            wav.display(),
            rtp + 3
        );
        std::fs::write(dir.path().join("config"), config).unwrap();
        std::fs::write(
            dir.path().join("accounts"),
            format!("<sip:{user}@127.0.0.1>;regint=0;answermode=auto;audio_codecs={codecs}\n"),
        )
        .unwrap();
        let log = std::fs::File::create(dir.path().join("baresip.log")).unwrap();
        let child = Command::new("baresip")
            .args(["-f", dir.path().to_str().unwrap(), "-v"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("baresip starts");
        let bs = Self {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], sip)),
            dir,
        };
        // Ready once its SIP socket is bound: binding the port then fails.
        let t0 = Instant::now();
        while UdpSocket::bind(bs.addr).is_ok() {
            assert!(
                t0.elapsed() < Duration::from_secs(10),
                "baresip did not listen: {}",
                bs.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Some(bs)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("baresip.log")).unwrap_or_default()
    }
}

/// `samples` (8 kHz) as a 48 kHz stereo WAV, resampled by the gateway's
/// own resampler.
fn write_48k_stereo(path: &Path, samples: &[i16]) {
    let mut up = dialgate::audio::resample::Resampler::new(8000, 48_000).unwrap();
    let mut frame = [0i16; 960];
    let mut data = Vec::with_capacity(samples.len() * 6 * 4);
    for chunk in samples.chunks_exact(160) {
        let n = up.process(chunk, &mut frame).unwrap();
        for &v in &frame[..n] {
            data.extend_from_slice(&v.to_le_bytes());
            data.extend_from_slice(&v.to_le_bytes());
        }
    }
    let mut wav = Vec::with_capacity(44 + data.len());
    wav.extend_from_slice(b"RIFF");
    wav.extend_from_slice(&(36 + data.len() as u32).to_le_bytes());
    wav.extend_from_slice(b"WAVEfmt ");
    wav.extend_from_slice(&16u32.to_le_bytes());
    wav.extend_from_slice(&1u16.to_le_bytes()); // PCM
    wav.extend_from_slice(&2u16.to_le_bytes()); // stereo
    wav.extend_from_slice(&48_000u32.to_le_bytes());
    wav.extend_from_slice(&(48_000u32 * 4).to_le_bytes());
    wav.extend_from_slice(&4u16.to_le_bytes());
    wav.extend_from_slice(&16u16.to_le_bytes());
    wav.extend_from_slice(b"data");
    wav.extend_from_slice(&(data.len() as u32).to_le_bytes());
    wav.extend_from_slice(&data);
    std::fs::write(path, wav).unwrap();
}

/// Calls `callee` (answered calls last up to 20 s) with the agent at
/// `agent` and the settings `tweak`ed; waits for the call's end.
async fn place(
    callee: SocketAddr,
    agent: SocketAddr,
    tweak: impl FnOnce(&mut SipCallConfig),
) -> SipCallReport {
    let mut cfg = sip_call(
        callee,
        trunk(false),
        Duration::from_secs(10),
        &format!("ws://{agent}/"),
        20_000,
    );
    tweak(&mut cfg);
    let report = tokio::time::timeout(
        Duration::from_secs(30),
        run(cfg, "+15551230001", "+15550009999"),
    )
    .await
    .expect("the call ends")
    .expect("the call runs");
    eprintln!("{report:?}");
    report
}

impl Drop for Baresip {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// baresip answers with a personal voicemail greeting that ends in a beep
/// (a held-out corpus clip, then 5 s of the silence a recorder listens to).
/// With *leave message*, AMD finds the machine, waits for the greeting's
/// end, reports `machine_end_beep`, and the agent is started in voicemail
/// mode with the campaign's voicemail script.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_voicemail_beep_from_baresip_is_machine_end_beep() {
    use dialgate::carrier::sip::call::Codec;
    let Some(report) = voicemail_from_baresip("PCMU,PCMA").await else {
        return;
    };
    assert_eq!(report.media.map(|m| m.codec), Some(Codec::Pcmu));
    // RTCP both ways over the 11 s call: our reports went out every 5 s
    // (the first at 2.5 s), and baresip's came back and were read
    assert!(report.rtcp_sent >= 1, "{report:?}");
    assert!(report.rtcp.reports >= 1, "{report:?}");
    // its receiver report of our sender report gives the round trip:
    // baresip read our SR's NTP time right
    assert!(
        report.rtcp.rtt_ms.is_some_and(|ms| ms < 100.0),
        "{report:?}"
    );
}

/// The same voicemail with baresip answering in Opus only: its 48 kHz
/// packets are decoded and resampled, and AMD still finds the beep's end
/// (a 1.9 kHz tone, which survives Opus at 48 kHz).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_opus_voicemail_from_baresip_is_machine_end_beep() {
    use dialgate::carrier::sip::call::Codec;
    let Some(report) = voicemail_from_baresip("opus/48000/2").await else {
        return;
    };
    assert!(
        matches!(report.media.map(|m| m.codec), Some(Codec::Opus { .. })),
        "{report:?}"
    );
    assert!(report.frames_in > 300, "{report:?}");
    assert!(
        report.jitter_ms < 20.0,
        "jitter at the 48 kHz clock: {report:?}"
    );
}

/// Calls baresip playing the voicemail clip in `codecs` with *leave
/// message*, checks the AMD result and the voicemail agent; the report.
async fn voicemail_from_baresip(codecs: &str) -> Option<SipCallReport> {
    use dialgate::call::session::{AgentStart, MachineAction};
    let clip = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/amd/heldout/personal_vm_beep_0050.wav");
    let (_, mut samples) = dialgate::audio::wav::read_8k_mono(&clip, None).unwrap();
    // 5 s of silence after the beep: the call outlasts two of baresip's RTCP
    // intervals, so one of its reports follows our first sender report
    samples.extend(std::iter::repeat_n(0i16, 40_000));
    let callee = Baresip::start_with("+15551230001", &samples, codecs)?;
    let (agent, seen) = counting_agent().await;
    let report = place(callee.addr, agent, |cfg| {
        cfg.session.agent_start = AgentStart::AfterAmd;
        cfg.session.machine_action = MachineAction::LeaveMessage {
            voicemail_script: "scripts/voicemail.txt".into(),
        };
    })
    .await;
    assert_eq!(report.outcome, Outcome::Completed, "{}", callee.log());
    assert_eq!(
        report.answered_by.as_deref(),
        Some("machine_end_beep"),
        "{}",
        callee.log()
    );
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.get("start:voicemail"), Some(&1), "{seen:?}");
    assert!(!seen.contains_key("start:human"), "{seen:?}");
    Some(report)
}

fn inbound(answer_after: Duration, agent: &str) -> dialgate::carrier::sip::inbound::InboundConfig {
    dialgate::carrier::sip::inbound::InboundConfig {
        agent_url: agent.to_string(),
        agent_audio: Default::default(),
        agent_connect_timeout: Duration::from_secs(3),
        session: dialgate::call::session::SessionConfig {
            max_duration_ms: 20_000,
            ..Default::default()
        },
        answer_after,
        max_calls: 8,
    }
}

/// Waits (up to 10 s) until `f` holds.
async fn eventually(what: &str, f: impl Fn() -> bool) {
    let t0 = Instant::now();
    while !f() {
        assert!(t0.elapsed() < Duration::from_secs(10), "never: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// SIPp calls the gateway's SIP port with PCMA and speaks for 4 s: the
/// call is answered with our SDP, the agent is started at once with
/// `direction=inbound` and hears the caller's RTP, and the caller's BYE
/// gets its 200. Garbage datagrams sent to the SIP port before and during
/// the call are dropped and counted; the call does not notice them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_inbound_call_reaches_the_agent() {
    use std::sync::atomic::Ordering::Relaxed;
    if !have_sipp() {
        return;
    }
    let (agent, seen) = counting_agent().await;
    let (addr, stats) = dialgate::carrier::sip::inbound::start(
        "127.0.0.1:0".parse().unwrap(),
        inbound(Duration::ZERO, &format!("ws://{agent}/")),
    )
    .await
    .unwrap();
    let junk = UdpSocket::bind("127.0.0.1:0").unwrap();
    let garbage: [&[u8]; 4] = [
        b"\x00\x01\x02",
        b"INVITE sip:x SIP/2.0\r\n\r\n",
        b"SIP/2.0 200 OK\r\nCall-ID: nobody\r\n\r\n",
        &[0x80; 300],
    ];
    for g in garbage {
        junk.send_to(g, addr).unwrap();
    }
    let sipp = Sipp::call("uac_inbound.xml", &[("hangup_ms", "4000")], addr);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    for g in garbage {
        junk.send_to(g, addr).unwrap();
    }
    let ok = tokio::task::spawn_blocking(move || sipp.finished_ok())
        .await
        .unwrap();
    assert!(ok, "SIPp saw a wrong flow");
    eventually("the call ends", || stats.ended.load(Relaxed) == 1).await;
    assert_eq!(stats.calls.load(Relaxed), 1);
    assert!(stats.ignored.load(Relaxed) >= 8, "{stats:?}");
    let seen = seen.lock().unwrap().clone();
    eprintln!("{stats:?} {seen:?}");
    assert_eq!(seen.get("direction:inbound"), Some(&1), "{seen:?}");
    let media = seen.get("media").copied().unwrap_or(0);
    assert!(
        media > 150,
        "the agent heard {media} frames in 4 s: {seen:?}"
    );
    assert_eq!(seen.get("stop"), Some(&1), "{seen:?}");
}

/// A caller who gives up while it rings gets 200 for its CANCEL and 487
/// for its INVITE; a caller offering only G.722 gets 488. SIPp checks both
/// flows, ACKs included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inbound_cancel_and_no_common_codec() {
    use std::sync::atomic::Ordering::Relaxed;
    if !have_sipp() {
        return;
    }
    let (addr, stats) = dialgate::carrier::sip::inbound::start(
        "127.0.0.1:0".parse().unwrap(),
        inbound(Duration::from_secs(5), "ws://127.0.0.1:9/"),
    )
    .await
    .unwrap();
    let sipp = Sipp::call("uac_cancel.xml", &[], addr);
    let ok = tokio::task::spawn_blocking(move || sipp.finished_ok())
        .await
        .unwrap();
    assert!(ok, "CANCEL flow");
    eventually("the cancelled call ends", || stats.ended.load(Relaxed) == 1).await;
    let sipp = Sipp::call("uac_refused.xml", &[], addr);
    let ok = tokio::task::spawn_blocking(move || sipp.finished_ok())
        .await
        .unwrap();
    assert!(ok, "488 flow");
    assert_eq!(stats.refused.load(Relaxed), 1);
    assert_eq!(stats.calls.load(Relaxed), 1);
}

/// An agent that presses `digits` (Twilio's `dtmf` message, sent the other
/// way) half a second after its stream starts, as an agent would once an
/// IVR's prompt began, then listens until the call ends.
async fn pressing_agent(digits: &'static str) -> SocketAddr {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = l.accept().await {
            tokio::spawn(async move {
                let Ok(mut ws) = tokio_tungstenite::accept_async(tcp).await else {
                    return;
                };
                while let Some(Ok(Message::Text(t))) = ws.next().await {
                    if t.as_str().contains(r#""event":"start""#) {
                        tokio::time::sleep(Duration::from_millis(500)).await;
                        for d in digits.chars() {
                            let msg = format!(r#"{{"event":"dtmf","dtmf":{{"digit":"{d}"}}}}"#);
                            ws.send(Message::Text(msg.into())).await.unwrap();
                        }
                    }
                }
            });
        }
    });
    addr
}

/// The agent presses 1 then # (to get through an IVR menu): the digits go
/// to the callee as RFC 4733 events, and baresip, a SIP stack that is not
/// ours, hears both; in G.711 and in Opus.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agents_digits_reach_the_callee_as_rfc_4733() {
    for codecs in ["PCMU,PCMA", "opus/48000/2"] {
        let Some(callee) = Baresip::start_with("+15551230001", &[0i16; 8000 * 3], codecs) else {
            return;
        };
        let agent = pressing_agent("1#").await;
        let report = place(callee.addr, agent, |cfg| cfg.session.amd = None).await;
        assert_eq!(report.outcome, Outcome::Completed, "{}", callee.log());
        assert_eq!(report.events_out, 16, "5 tone and 3 end packets per digit");
        // baresip logs each change of event and end bit it decodes
        let log = callee.log();
        for heard in [
            "received event: '1' (end=0)",
            "received event: '1' (end=1)",
            "received event: '#' (end=0)",
            "received event: '#' (end=1)",
        ] {
            assert!(
                log.contains(heard),
                "{codecs}: baresip did not log {heard}: {log}"
            );
        }
        // the agent is silent: its pauses are filled with silence, one
        // frame per 20 ms (3 s of call), less the 16 slots the digits took
        assert!(report.silence_out > 100, "{report:?}");
    }
}

/// With an outbound proxy, the INVITE goes to the proxy's address with the
/// trunk in its request URI and a pre-loaded Route to the proxy (SIPp
/// checks both, and the Route of the ACK); the 486 still means busy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outbound_proxy_carries_the_call() {
    if !have_sipp() {
        return;
    }
    let sipp = Sipp::start("uas_via_proxy.xml", &[]);
    let mut cfg = sip_call(
        sipp.addr,
        TrunkConfig {
            host: "trunk.example".into(),
            outbound_proxy: Some(sipp.addr.to_string()),
            ..trunk(false)
        },
        Duration::from_secs(10),
        "ws://127.0.0.1:9/",
        300,
    );
    cfg.trunk.port = 5060;
    let report = tokio::time::timeout(
        Duration::from_secs(45),
        run(cfg, "+15551230001", "+15550009999"),
    )
    .await
    .expect("the call ends")
    .expect("the call runs");
    assert_eq!(report.outcome, Outcome::Busy);
    assert!(sipp.finished_ok(), "SIPp's checks failed");
}

/// The start of a response to `req` (status line, Via, From, To with our
/// tag, Call-ID, CSeq), as a stateless UAS writes it; the caller ends it.
fn response_to(req: &str, status: &str) -> String {
    let mut out = format!("SIP/2.0 {status}\r\n");
    for l in req.lines() {
        let lower = l.to_ascii_lowercase();
        if ["via:", "from:", "call-id:", "cseq:"]
            .iter()
            .any(|h| lower.starts_with(h))
        {
            out += l;
            out += "\r\n";
        } else if lower.starts_with("to:") {
            out += l;
            out += ";tag=fake\r\n";
        }
    }
    out
}

/// A PCMU SDP at 127.0.0.1:`port`, with the headers that carry it.
fn sdp_body(port: u16) -> String {
    let sdp = format!(
        "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
         m=audio {port} RTP/AVP 0\r\n"
    );
    format!(
        "Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
        sdp.len()
    )
}

/// The RTP port of our offer in `invite`.
fn offered_rtp_port(invite: &str) -> u16 {
    invite
        .lines()
        .find_map(|l| l.strip_prefix("m=audio "))
        .and_then(|l| l.split(' ').next())
        .and_then(|p| p.parse().ok())
        .unwrap()
}

/// A callee written here, on `sip`: it answers an INVITE with 200 OK and a
/// PCMU SDP at `media_port`, and a BYE with 200; for each INVITE,
/// `on_answer` gets the address our RTP goes to, and starts the callee's
/// media.
fn answering_callee(
    sip: tokio::net::UdpSocket,
    media_port: u16,
    mut on_answer: impl FnMut(SocketAddr) + Send + 'static,
) {
    let callee = sip.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 65_535];
        while let Ok((n, src)) = sip.recv_from(&mut buf).await {
            let req = String::from_utf8_lossy(&buf[..n]).to_string();
            let method = req.split(' ').next().unwrap_or("").to_string();
            if method != "INVITE" && method != "BYE" {
                continue;
            }
            let mut out = response_to(&req, "200 OK");
            if method == "BYE" {
                out += "Content-Length: 0\r\n\r\n";
                let _ = sip.send_to(out.as_bytes(), src).await;
                continue;
            }
            out += &format!("Contact: <sip:callee@{callee}>\r\n{}", sdp_body(media_port));
            let _ = sip.send_to(out.as_bytes(), src).await;
            on_answer(SocketAddr::from(([127, 0, 0, 1], offered_rtp_port(&req))));
        }
    });
}

/// A PCMU RTP packet: packet `k` of `ssrc`, with `payload`.
fn pcmu_packet(k: u16, ssrc: u32, payload: &[u8; 160]) -> [u8; 172] {
    let mut p = [0u8; 172];
    p[..2].copy_from_slice(&[0x80, 0]);
    p[2..4].copy_from_slice(&k.to_be_bytes());
    p[4..8].copy_from_slice(&(u32::from(k) * 160).to_be_bytes());
    p[8..12].copy_from_slice(&ssrc.to_be_bytes());
    p[12..].copy_from_slice(payload);
    p
}

/// A stateless stand-in for a trunk: once `answer` is set it answers
/// OPTIONS with 200 and INVITE with 486; it counts what it receives by
/// method.
async fn fake_trunk(
    answer: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> (
    SocketAddr,
    std::sync::Arc<std::sync::Mutex<std::collections::HashMap<String, usize>>>,
) {
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = sock.local_addr().unwrap();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(std::collections::HashMap::new()));
    let s = seen.clone();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 65_535];
        while let Ok((n, src)) = sock.recv_from(&mut buf).await {
            let req = String::from_utf8_lossy(&buf[..n]).to_string();
            let method = req.split(' ').next().unwrap_or("").to_string();
            *s.lock().unwrap().entry(method.clone()).or_insert(0) += 1;
            let status = match method.as_str() {
                "OPTIONS" => "200 OK",
                "INVITE" => "486 Busy Here",
                _ => continue,
            };
            if !answer.load(std::sync::atomic::Ordering::Relaxed) {
                continue;
            }
            let out = response_to(&req, status) + "Content-Length: 0\r\n\r\n";
            let _ = sock.send_to(out.as_bytes(), src).await;
        }
    });
    (addr, seen)
}

/// A trunk that stops answering OPTIONS is down: the dialer holds a
/// campaign's call (queued, no INVITE) instead of spending the attempt on
/// a dial that would time out. When the trunk answers again the call goes
/// out (and is busy here).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trunk_that_does_not_answer_options_holds_its_calls() {
    use std::sync::atomic::Ordering::Relaxed;
    let answering = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (addr, seen) = fake_trunk(answering.clone()).await;
    let trunk = sip_trunk(addr, Some(Duration::from_millis(300)));
    let up = trunk.up.clone();
    let agent = "ws://127.0.0.1:9/";
    let gw = Gateway::start(trunk, agent).await;
    eventually("the trunk is down", || !up.load(Relaxed)).await;
    let id = gw.campaign_call(agent, serde_json::json!({})).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(gw.call(&id).await["status"], "queued");
    assert_eq!(
        seen.lock().unwrap().get("INVITE"),
        None,
        "held, not dialled"
    );
    assert!(seen.lock().unwrap().get("OPTIONS").copied().unwrap_or(0) >= 3);
    // the trunk is back: the next ping finds it, and the call goes out
    answering.store(true, Relaxed);
    let call = gw.ended(&id).await;
    assert_eq!(call["status"], "busy", "{call:#}");
    assert!(up.load(Relaxed));
    assert_eq!(seen.lock().unwrap().get("INVITE"), Some(&1));
}

/// Over TCP (`--sip-transport tcp`): one connection per call and no
/// retransmissions. SIPp in TCP mode checks each flow: a busy callee is
/// busy; an answered call is ACKed and ends with a clean BYE.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_over_tcp() {
    use dialgate::carrier::sip::uac::Transport;
    if !have_sipp() {
        return;
    }
    for (scenario, keys, want) in [
        (
            "uas_final.xml",
            &[("status", "486"), ("reason", "Busy Here")][..],
            Outcome::Busy,
        ),
        ("uas_answer.xml", &[][..], Outcome::Completed),
    ] {
        let sipp = Sipp::start_tcp(scenario, keys);
        let tcp = TrunkConfig {
            transport: Transport::Tcp,
            ..trunk(false)
        };
        let report = dial(&sipp, tcp, Duration::from_secs(20)).await;
        assert_eq!(report.outcome, want, "{scenario}");
        assert!(sipp.finished_ok(), "{scenario}: SIPp saw a wrong flow");
    }
}

/// A callee written here, so the test knows both ends' media ports: it
/// answers the INVITE with PCMU and sends 2 s of RTP from the port its SDP
/// names, while a stranger sends RTP that looks right, and random garbage,
/// to our RTP and RTCP ports. Only the callee's packets are heard; the
/// rest is counted and dropped, and the call ends normally with our BYE.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rtp_from_a_stranger_and_garbage_are_ignored() {
    use std::sync::Arc;
    let sip = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let media = Arc::new(tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap());
    // another host where the loopback has one (Linux routes all 127/8)
    let stranger = Arc::new(match tokio::net::UdpSocket::bind("127.0.0.2:0").await {
        Ok(s) => s,
        Err(_) => tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap(),
    });
    let callee = sip.local_addr().unwrap();
    let media_port = media.local_addr().unwrap().port();
    answering_callee(sip, media_port, move |rtp| {
        let (media, stranger) = (media.clone(), stranger.clone());
        tokio::spawn(async move {
            let rtcp = SocketAddr::new(rtp.ip(), rtp.port() + 1);
            for k in 0..100u16 {
                let _ = media
                    .send_to(&pcmu_packet(k, 0xCA11, &[0xFF; 160]), rtp)
                    .await;
                // the stranger: a well-formed packet of its own, then junk
                let _ = stranger
                    .send_to(&pcmu_packet(k, 0xBAD0, &[0xFF; 160]), rtp)
                    .await;
                let junk = [k as u8; 7];
                let _ = stranger.send_to(&junk, rtp).await;
                let _ = stranger.send_to(&junk, rtcp).await;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        });
    });
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let agent = l.local_addr().unwrap();
    tokio::spawn(dialgate::agent::echo::serve(l));
    let report = place(callee, agent, |cfg| {
        cfg.session.amd = None;
        cfg.session.max_duration_ms = 3000;
    })
    .await;
    assert_eq!(report.outcome, Outcome::Completed);
    assert!(
        (95..=100).contains(&report.frames_in),
        "only the callee's 100 frames: {report:?}"
    );
    // the stranger's 100 packets, and its 200 pieces of junk
    assert!(report.ignored >= 290, "{report:?}");
    assert!(
        report.frames_out > 0,
        "the echo agent still talks: {report:?}"
    );
}

/// A carrier that does not answer but plays "number not in service" on
/// early media: a 183 with SDP, then the SIT tones and announcement (a
/// held-out corpus clip) as RTP. The tone bank hears the SIT before any
/// answer, the call is cancelled at once (not at the ring time-out) and
/// ends as failed with the reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sit_on_early_media_cancels_the_call() {
    let sip = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let media = std::sync::Arc::new(tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap());
    let callee = sip.local_addr().unwrap();
    let media_port = media.local_addr().unwrap().port();
    let clip = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/amd/heldout/sit_0024.wav");
    let (_, samples) = dialgate::audio::wav::read_8k_mono(&clip, None).unwrap();
    let cancelled = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let c = cancelled.clone();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 65_535];
        let mut invite = String::new();
        while let Ok((n, src)) = sip.recv_from(&mut buf).await {
            let req = String::from_utf8_lossy(&buf[..n]).to_string();
            match req.split(' ').next().unwrap_or("") {
                "INVITE" => {
                    invite = req.clone();
                    let out = response_to(&req, "183 Session Progress") + &sdp_body(media_port);
                    let _ = sip.send_to(out.as_bytes(), src).await;
                    let ours = offered_rtp_port(&req);
                    let (media, samples) = (media.clone(), samples.clone());
                    tokio::spawn(async move {
                        let to = SocketAddr::from(([127, 0, 0, 1], ours));
                        for (k, chunk) in samples.chunks_exact(160).enumerate() {
                            let mut ulaw = [0u8; 160];
                            for (b, &x) in ulaw.iter_mut().zip(chunk) {
                                *b = dialgate::audio::g711::ulaw_encode(x);
                            }
                            let packet = pcmu_packet(k as u16, 0x51F, &ulaw);
                            if media.send_to(&packet, to).await.is_err() {
                                return;
                            }
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                    });
                }
                "CANCEL" => {
                    c.store(true, std::sync::atomic::Ordering::Relaxed);
                    let ok = response_to(&req, "200 OK") + "Content-Length: 0\r\n\r\n";
                    let _ = sip.send_to(ok.as_bytes(), src).await;
                    let terminated = response_to(&invite, "487 Request Terminated")
                        + "Content-Length: 0\r\n\r\n";
                    let _ = sip.send_to(terminated.as_bytes(), src).await;
                }
                _ => {}
            }
        }
    });
    let t0 = Instant::now();
    let report = dial_addr(callee, Duration::from_secs(20)).await;
    assert!(
        matches!(&report.outcome, Outcome::Failed { reason, .. } if reason.contains("special information tones")),
        "{report:?}"
    );
    assert!(cancelled.load(std::sync::atomic::Ordering::Relaxed));
    assert!(
        t0.elapsed() < Duration::from_secs(8),
        "cancelled on the tones, not at the 20 s ring time-out"
    );
    assert_eq!(report.progress, vec![183]);
}

/// A callee behind a lossy line whose phone stops sending in its pauses
/// (silence suppression): it answers with PCMU and says "Hello?" (a
/// held-out corpus clip), but one packet in seven is lost on the way and,
/// once the hello ends, no packet comes at all. The media clock keeps the
/// sender's time: the lost packets are concealed where their timestamps
/// say, and once nothing comes the callee's time runs on in silence, so
/// AMD hears the pause after the hello and calls a person. (Before, the
/// clock stood still while nothing came, and AMD decided only when the
/// call ended, on the audio running out.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lossy_callee_who_sends_nothing_in_its_pause_is_heard_as_a_person() {
    use dialgate::detect::amd::{AmdOutcome, Trigger};
    let sip = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let media = std::sync::Arc::new(tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap());
    let callee = sip.local_addr().unwrap();
    let media_port = media.local_addr().unwrap().port();
    let clip =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/amd/heldout/hello_silence_0073.wav");
    let (_, samples) = dialgate::audio::wav::read_8k_mono(&clip, None).unwrap();
    // labels.csv: the hello ends at 2040 ms; the phone sends 100 ms more
    let talk = (2140 / 20) as usize;
    let sent = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let sent_by_callee = sent.clone();
    answering_callee(sip, media_port, move |to| {
        let (media, samples, sent) = (media.clone(), samples.clone(), sent_by_callee.clone());
        tokio::spawn(async move {
            let start = tokio::time::Instant::now();
            for (k, chunk) in samples.chunks_exact(160).take(talk).enumerate() {
                // paced by the clock, as a phone sends
                tokio::time::sleep_until(start + Duration::from_millis(20 * k as u64)).await;
                if k % 7 == 3 {
                    continue; // lost on the way
                }
                let mut ulaw = [0u8; 160];
                for (b, &x) in ulaw.iter_mut().zip(chunk) {
                    *b = dialgate::audio::g711::ulaw_encode(x);
                }
                let _ = media
                    .send_to(&pcmu_packet(k as u16, 0x7A1C, &ulaw), to)
                    .await;
                sent.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        });
    });
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let agent = l.local_addr().unwrap();
    tokio::spawn(dialgate::agent::echo::serve(l));
    let report = place(callee, agent, |cfg| cfg.session.max_duration_ms = 5000).await;
    let sent = sent.load(std::sync::atomic::Ordering::Relaxed) as u64;
    assert_eq!(report.outcome, Outcome::Completed);
    // a person, on the pause after the hello (not at the end of the call,
    // which the stalled clock left AMD to)
    let d = report.amd_first.expect("AMD decided");
    assert_eq!(d.outcome, AmdOutcome::Human, "{report:?}");
    assert_eq!(d.trigger, Trigger::ShortUtterance, "{report:?}");
    assert!((2040..3000).contains(&d.at_ms), "{d:?}");
    assert_eq!(
        report.frames_in, sent,
        "every packet sent was heard: {report:?}"
    );
    // the 15 lost inside the hello, then the pause until the call's end
    let lost = (0..talk).filter(|k| k % 7 == 3).count() as u64;
    assert!(
        report.frames_concealed >= lost + 100,
        "{lost} lost and 2 s or more of pause filled: {report:?}"
    );
    assert!(
        report.frames_in + report.frames_concealed <= 5000 / 20 + 10,
        "no more time than the call lasted: {report:?}"
    );
    assert_eq!(report.frames_late, 0, "{report:?}");
}
