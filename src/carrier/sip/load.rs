//! `dialgate sip-load`: N concurrent outbound SIP calls with media through
//! the gateway's own call path (AMD, the echo agent bridged in-process),
//! against a SIP trunk such as a SIPp UAS playing speech. It reports this
//! process's CPU per call-second and the callee RTP's interarrival jitter.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::call::{SipCallConfig, run};
use super::uac::{Outcome, TrunkConfig};
use crate::call::session::{AgentStart, SessionConfig};

/// What to run.
#[derive(Debug, Clone)]
pub struct SipLoadConfig {
    /// The trunk (a SIPp UAS).
    pub trunk: SocketAddr,
    /// Concurrent calls.
    pub calls: usize,
    /// How long each call lasts once answered.
    pub duration: Duration,
    /// Calls start over this long.
    pub ramp: Duration,
}

/// The result.
#[derive(Debug, Clone, Serialize)]
pub struct SipLoadReport {
    /// Calls placed.
    pub calls: usize,
    /// Calls answered and ended normally.
    pub completed: usize,
    /// Calls that failed (with the first reason).
    pub failed: usize,
    /// The first failure's reason.
    pub first_failure: Option<String>,
    /// RTP frames decoded and fed to the call sessions.
    pub frames_in: u64,
    /// RTP frames sent (the echo agent's audio).
    pub frames_out: u64,
    /// RTP frames of silence sent in the agent's pauses.
    pub silence_out: u64,
    /// RTCP reports sent.
    pub rtcp_sent: u64,
    /// Frames the jitter buffers gave up.
    pub frames_lost: u64,
    /// Frames filled in for the callees' audio that never came.
    pub frames_concealed: u64,
    /// Interarrival jitter per call at its end, ms: median and worst.
    pub jitter_ms: (f64, f64),
    /// AMD decisions made.
    pub amd_decided: usize,
    /// This process's CPU per call-second (SIP, RTP, AMD, agent bridge and
    /// the in-process echo agent), µs.
    pub cpu_us_per_call_s: f64,
    /// Wall time, s.
    pub wall_s: f64,
}

fn cpu_ticks() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let rest = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

/// Runs the calls.
pub async fn sip_load(cfg: SipLoadConfig) -> std::io::Result<SipLoadReport> {
    let agent = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let agent_url = format!("ws://{}/", agent.local_addr()?);
    tokio::spawn(crate::agent::echo::serve(agent));
    let cpu0 = cpu_ticks();
    let t0 = Instant::now();
    let mut tasks = Vec::with_capacity(cfg.calls);
    for i in 0..cfg.calls {
        let call = SipCallConfig {
            trunk: TrunkConfig {
                host: cfg.trunk.ip().to_string(),
                port: cfg.trunk.port(),
                username: None,
                password: None,
                from_domain: Some("dialgate.load".into()),
                transport: Default::default(),
                outbound_proxy: None,
            },
            trunk_addr: cfg.trunk,
            ring_timeout: Duration::from_secs(30),
            session: SessionConfig {
                agent_start: AgentStart::Immediate,
                max_duration_ms: cfg.duration.as_millis() as u64,
                ..SessionConfig::default()
            },
            agent_url: agent_url.clone(),
            agent_audio: Default::default(),
            agent_connect_timeout: Duration::from_secs(5),
            llm: None,
            engine: None,
        };
        let delay = cfg.ramp.mul_f64(i as f64 / cfg.calls.max(1) as f64);
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            run(call, &format!("+1555{i:07}"), "+15550000000").await
        }));
    }
    let mut report = SipLoadReport {
        calls: cfg.calls,
        completed: 0,
        failed: 0,
        first_failure: None,
        frames_in: 0,
        frames_out: 0,
        silence_out: 0,
        rtcp_sent: 0,
        frames_lost: 0,
        frames_concealed: 0,
        jitter_ms: (0.0, 0.0),
        amd_decided: 0,
        cpu_us_per_call_s: 0.0,
        wall_s: 0.0,
    };
    let mut jitter = Vec::with_capacity(cfg.calls);
    for t in tasks {
        match t.await {
            Ok(Ok(r)) => {
                match &r.outcome {
                    Outcome::Completed => report.completed += 1,
                    other => {
                        report.failed += 1;
                        report
                            .first_failure
                            .get_or_insert_with(|| format!("{other:?}"));
                    }
                }
                report.frames_in += r.frames_in;
                report.frames_out += r.frames_out;
                report.silence_out += r.silence_out;
                report.rtcp_sent += r.rtcp_sent;
                report.frames_lost += r.frames_lost;
                report.frames_concealed += r.frames_concealed;
                report.amd_decided += usize::from(r.answered_by.is_some());
                jitter.push(r.jitter_ms);
            }
            Ok(Err(e)) => {
                report.failed += 1;
                report.first_failure.get_or_insert_with(|| e.to_string());
            }
            Err(e) => {
                report.failed += 1;
                report.first_failure.get_or_insert_with(|| e.to_string());
            }
        }
    }
    report.wall_s = t0.elapsed().as_secs_f64();
    jitter.sort_by(f64::total_cmp);
    if !jitter.is_empty() {
        report.jitter_ms = (jitter[jitter.len() / 2], jitter[jitter.len() - 1]);
    }
    if let (Some(a), Some(b)) = (cpu0, cpu_ticks()) {
        let ticks_per_s = crate::loadtest::clock_ticks_per_s();
        let call_s = report.completed as f64 * cfg.duration.as_secs_f64();
        if call_s > 0.0 {
            report.cpu_us_per_call_s = (b - a) as f64 / ticks_per_s * 1e6 / call_s;
        }
    }
    Ok(report)
}
