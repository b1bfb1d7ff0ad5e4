//! `dialgate loadtest`: N concurrent simulated Twilio streams against a
//! running gateway that bridges them to the echo agent.
//!
//! Each stream sends `connected`, `start`, then a 20 ms μ-law frame every
//! 20 ms: a callee saying "Hello." (the echo agent's prompt) and then
//! near-silence, so the gateway's AMD runs its whole pipeline (VAD, tone
//! bank, classifier) and decides `human` as it would on a real pickup,
//! instead of waiting out its no-speech timeout. Every frame carries its sequence number and a marker in its first
//! bytes (codes chosen to survive the gateway's decode/encode), so each frame
//! the echo agent returns through the gateway is matched to the instant it
//! was sent: that is the round-trip latency through gateway → agent →
//! gateway. A frame sent after the echo started and never returned is
//! dropped; one that returns more than 60 ms after it was sent is late.
//! With `--gateway-pid`, the gateway's CPU time and resident memory are read
//! from `/proc` before and after.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use base64::Engine as _;
use futures_util::{SinkExt, StreamExt};
use serde::Serialize;
use tokio_tungstenite::tungstenite::Message;

use crate::audio::FRAME_SAMPLES;

/// The 30 μ-law codes of smallest magnitude (±0 to ±~250 of 32768), used
/// as base-30 digits so the tagged frames stay near-silent. 0x7F and 0xFF
/// (the two zeros) are left out: 0x7F does not survive a decode/encode.
const DIGITS: [u8; 30] = [
    0x70, 0x71, 0x72, 0x73, 0x74, 0x75, 0x76, 0x77, 0x78, 0x79, 0x7A, 0x7B, 0x7C, 0x7D, 0x7E, 0xF0,
    0xF1, 0xF2, 0xF3, 0xF4, 0xF5, 0xF6, 0xF7, 0xF8, 0xF9, 0xFA, 0xFB, 0xFC, 0xFD, 0xFE,
];
/// Marker after the five digits.
const MARK: [u8; 3] = [0xF3, 0x73, 0xF8];

/// An echo later than this is late.
pub const LATE_MS: f64 = 60.0;

/// What to run.
#[derive(Debug, Clone)]
pub struct LoadConfig {
    /// `ws://host:port/twilio/stream`.
    pub target: String,
    /// Concurrent streams.
    pub streams: usize,
    /// How long each stream sends.
    pub duration: Duration,
    /// Connections are spread over this long.
    pub ramp: Duration,
    /// The gateway's process id, to measure its CPU and memory.
    pub gateway_pid: Option<u32>,
}

/// p50 / p99.
#[derive(Debug, Clone, Copy, Serialize, Default)]
pub struct Latency {
    /// Median, ms.
    pub p50: f64,
    /// 99th percentile, ms.
    pub p99: f64,
}

/// The result (`--json` prints it).
#[derive(Debug, Clone, Serialize, Default)]
pub struct LoadReport {
    /// Streams asked for.
    pub streams: usize,
    /// Streams that connected and started.
    pub connected: usize,
    /// Frames sent in all.
    pub frames_sent: u64,
    /// Echoed frames received.
    pub frames_received: u64,
    /// Frames sent after a stream's echo began that never came back.
    pub dropped_frames: u64,
    /// Echoes later than 60 ms.
    pub late_frames: u64,
    /// Round-trip latency of echoed frames, ms.
    pub latency_ms: Latency,
    /// Gateway CPU per stream-second, µs (with `--gateway-pid`).
    pub gateway_cpu_us_per_stream_s: Option<f64>,
    /// Gateway resident memory added per stream, KiB (with `--gateway-pid`).
    pub gateway_kib_per_stream: Option<f64>,
    /// Wall time of the test, s.
    pub wall_s: f64,
}

/// Frame `seq` of a stream: the greeting's frame while it lasts, then
/// near-silence; the tag overwrites its first 8 samples (1 ms).
fn frame(seq: u32, greeting: &[[u8; FRAME_SAMPLES]]) -> [u8; FRAME_SAMPLES] {
    let mut f = [0xFEu8; FRAME_SAMPLES];
    match greeting.get(seq as usize) {
        Some(g) => f.copy_from_slice(g),
        None => {
            for (i, b) in f.iter_mut().enumerate().skip(8) {
                *b = if (i + seq as usize).is_multiple_of(3) {
                    0xFD
                } else {
                    0xFE
                };
            }
        }
    }
    let mut v = seq;
    for b in f.iter_mut().take(5) {
        *b = DIGITS[(v % 30) as usize];
        v /= 30;
    }
    f[5..8].copy_from_slice(&MARK);
    f
}

fn seq_of(bytes: &[u8]) -> Option<u32> {
    if bytes.len() < 8 || bytes[5..8] != MARK {
        return None;
    }
    let mut v = 0u32;
    for &b in bytes[..5].iter().rev() {
        let d = DIGITS.iter().position(|&x| x == b)?;
        v = v * 30 + d as u32;
    }
    Some(v)
}

#[derive(Default)]
struct Totals {
    sent: AtomicU64,
    received: AtomicU64,
    dropped: AtomicU64,
    late: AtomicU64,
    connected: AtomicU64,
}

/// Reads utime+stime (clock ticks) and VmRSS (KiB) of `pid`.
fn proc_sample(pid: u32) -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // fields after the ")" of the command name
    let rest = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some((ticks, rss))
}

/// Clock ticks per second of `/proc/<pid>/stat` CPU times.
pub fn clock_ticks_per_s() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as f64 } else { 100.0 }
}

async fn one_stream(
    i: usize,
    cfg: Arc<LoadConfig>,
    totals: Arc<Totals>,
    greeting: Arc<Vec<[u8; FRAME_SAMPLES]>>,
) -> Vec<f64> {
    let mut lat = Vec::new();
    let Ok((ws, _)) = tokio_tungstenite::connect_async_with_config(
        cfg.target.as_str(),
        Some(crate::agent::bridge::ws_config()),
        true,
    )
    .await
    else {
        return lat;
    };
    let (mut tx, mut rx) = ws.split();
    let sid = format!("MZload{i:06}");
    let start = serde_json::json!({"event":"start","sequenceNumber":"1","streamSid":sid,
        "start":{"accountSid":"ACload","streamSid":sid,"callSid":format!("CAload{i:06}"),"tracks":["inbound"],
                 "customParameters":{"loadtest":"1"},
                 "mediaFormat":{"encoding":"audio/x-mulaw","sampleRate":8000,"channels":1}}});
    if tx
        .send(Message::text(
            r#"{"event":"connected","protocol":"Call","version":"1.0.0"}"#,
        ))
        .await
        .is_err()
        || tx.send(Message::text(start.to_string())).await.is_err()
    {
        return lat;
    }
    totals.connected.fetch_add(1, Ordering::Relaxed);
    let n_frames = (cfg.duration.as_millis() / 20) as usize;
    let mut sent_at: Vec<Option<Instant>> = vec![None; n_frames];
    let mut echoed = vec![false; n_frames];
    let mut first_echo: Option<u32> = None;
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut seq = 0usize;
    let mut buf = String::with_capacity(400);
    let end = Instant::now() + cfg.duration + Duration::from_millis(500);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                if Instant::now() >= end { break; }
                if seq < n_frames {
                    buf.clear();
                    crate::carrier::twilio::stream::encode_media(&mut buf, &sid, &frame(seq as u32, &greeting));
                    // Twilio's media frames carry track/chunk/timestamp; the
                    // gateway does not need them, so the outbound shape does.
                    sent_at[seq] = Some(Instant::now());
                    if tx.send(Message::text(buf.clone())).await.is_err() { break; }
                    totals.sent.fetch_add(1, Ordering::Relaxed);
                    seq += 1;
                }
            }
            msg = rx.next() => {
                let Some(Ok(Message::Text(t))) = msg else {
                    if matches!(msg, None | Some(Err(_)) | Some(Ok(Message::Close(_)))) { break; }
                    continue;
                };
                let Ok(crate::carrier::twilio::stream::StreamEvent::Media { payload, .. }) =
                    crate::carrier::twilio::stream::parse(t.as_str()) else { continue };
                let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(payload.as_bytes()) else { continue };
                if let Some(k) = seq_of(&bytes)
                    && let Some(Some(at)) = sent_at.get(k as usize)
                {
                    let ms = at.elapsed().as_secs_f64() * 1000.0;
                    if !echoed[k as usize] {
                        echoed[k as usize] = true;
                        first_echo.get_or_insert(k);
                        lat.push(ms);
                        totals.received.fetch_add(1, Ordering::Relaxed);
                        if ms > LATE_MS {
                            totals.late.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            }
        }
    }
    if let Some(first) = first_echo {
        // frames after the echo began, except the last 200 ms still in flight
        let upto = seq.saturating_sub(10);
        let dropped = (first as usize..upto).filter(|&k| !echoed[k]).count();
        totals.dropped.fetch_add(dropped as u64, Ordering::Relaxed);
    }
    let _ = tx
        .send(Message::text(format!(
            r#"{{"event":"stop","sequenceNumber":"0","streamSid":"{sid}","stop":{{"accountSid":"ACload","callSid":"CAload"}}}}"#
        )))
        .await;
    let _ = tx.close().await;
    lat
}

/// When stream `i` of `n` starts: spread over the ramp, and at its own phase
/// within the 20 ms frame period. Real calls arrive at random phases; evenly
/// spaced starts would put every stream's frame in the same millisecond
/// (e.g. 40 ms apart for 500 over 20 s) and measure a thundering herd
/// instead of the gateway. The golden-ratio sequence spreads phases evenly.
fn start_delay(i: usize, n: usize, ramp: Duration) -> Duration {
    let frame_us = u64::from(crate::audio::FRAME_MS) * 1000;
    let base_us = ramp.mul_f64(i as f64 / n.max(1) as f64).as_micros() as u64;
    let phase_us = ((i as f64 * 0.618_033_988_75).fract() * frame_us as f64) as u64;
    Duration::from_micros(base_us - base_us % frame_us + phase_us)
}

/// Runs the load test.
pub async fn run(cfg: LoadConfig) -> LoadReport {
    let cfg = Arc::new(cfg);
    let totals = Arc::new(Totals::default());
    let before = cfg.gateway_pid.and_then(proc_sample);
    let t0 = Instant::now();
    let mut tasks = Vec::with_capacity(cfg.streams);
    let greeting = Arc::new(crate::agent::echo::prompt_frames());
    for i in 0..cfg.streams {
        let delay = start_delay(i, cfg.streams, cfg.ramp);
        let (c, t, g) = (cfg.clone(), totals.clone(), greeting.clone());
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            one_stream(i, c, t, g).await
        }));
    }
    // sample the gateway at the busiest moment: all streams up
    tokio::time::sleep(cfg.ramp + cfg.duration / 2).await;
    let middle = cfg.gateway_pid.and_then(proc_sample);
    let mut lat = Vec::new();
    for t in tasks {
        if let Ok(l) = t.await {
            lat.extend(l);
        }
    }
    let after = cfg.gateway_pid.and_then(proc_sample);
    lat.sort_by(f64::total_cmp);
    let pct = |q: f64| {
        if lat.is_empty() {
            0.0
        } else {
            lat[((q * lat.len() as f64).ceil() as usize).clamp(1, lat.len()) - 1]
        }
    };
    let connected = totals.connected.load(Ordering::Relaxed) as usize;
    let stream_s = connected as f64 * cfg.duration.as_secs_f64();
    LoadReport {
        streams: cfg.streams,
        connected,
        frames_sent: totals.sent.load(Ordering::Relaxed),
        frames_received: totals.received.load(Ordering::Relaxed),
        dropped_frames: totals.dropped.load(Ordering::Relaxed),
        late_frames: totals.late.load(Ordering::Relaxed),
        latency_ms: Latency {
            p50: pct(0.5),
            p99: pct(0.99),
        },
        gateway_cpu_us_per_stream_s: match (before, after) {
            (Some(b), Some(a)) if stream_s > 0.0 => {
                Some((a.0 - b.0) as f64 / clock_ticks_per_s() * 1e6 / stream_s)
            }
            _ => None,
        },
        gateway_kib_per_stream: match (before, middle) {
            (Some(b), Some(m)) if connected > 0 => {
                Some((m.1 as f64 - b.1 as f64) / connected as f64)
            }
            _ => None,
        },
        wall_s: t0.elapsed().as_secs_f64(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequence_numbers_survive_the_mulaw_round_trip() {
        let greeting = crate::agent::echo::prompt_frames();
        assert!(!greeting.is_empty());
        for k in [0u32, 1, 29, 30, 899, 1_000_000, 24_299_999] {
            let f = frame(k, &greeting);
            let back: Vec<u8> = f
                .iter()
                .map(|&b| crate::audio::g711::ulaw_encode(crate::audio::g711::ulaw_decode(b)))
                .collect();
            assert_eq!(seq_of(&back), Some(k));
        }
        assert_eq!(seq_of(&[0xFF; 160]), None);
    }

    #[test]
    fn streams_start_at_spread_phases() {
        // 500 streams 40 ms apart would all share one phase without it
        let n = 500;
        let mut per_ms = [0usize; 20];
        for i in 0..n {
            let d = start_delay(i, n, Duration::from_secs(20));
            per_ms[(d.as_millis() % 20) as usize] += 1;
        }
        assert!(per_ms.iter().all(|&c| (20..=30).contains(&c)), "{per_ms:?}");
    }
}
