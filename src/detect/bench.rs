//! `amd classify` and `amd bench`: the file driver for the detector, and the
//! accuracy, latency and cost figures over a labelled corpus (AMD.md's CLI
//! contract).
//!
//! The driver feeds a file's frames in media order as fast as the CPU allows
//! ("simulated real time": every decision is stamped with media time, so the
//! figures are what a live call would see). When the detector asks for LLM
//! verification the call is made for real and frames keep flowing until media
//! time has advanced by the call's latency, so a slow LLM costs exactly what
//! it would cost live.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;

use super::amd::{
    Amd, AmdConfig, AmdDecision, AmdError, AmdEvent, AmdOutcome, LlmVerdict, Trigger,
};
use super::baseline::{AsteriskAmd, Baseline, TwilioAmd};
use super::corpus::{self, LabelRow, Truth};
use crate::audio::wav::{WavError, WavReader};

/// Errors classifying audio.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BenchError {
    /// The audio could not be read.
    #[error("{}", named(.file, .source))]
    Wav {
        file: String,
        #[source]
        source: WavError,
    },
    /// The file holds no audio.
    #[error("{file}: no audio (0 samples)")]
    NoAudio { file: String },
    /// The detector failed.
    #[error("{file}: {source}")]
    Amd {
        file: String,
        #[source]
        source: AmdError,
    },
    /// The labels could not be read.
    #[error(transparent)]
    Corpus(#[from] corpus::CorpusError),
    /// Not one clip of the corpus could be read.
    #[error("{dir}: none of its {skipped} clips could be read; the first: {first}")]
    NothingReadable {
        dir: String,
        skipped: usize,
        first: String,
    },
}

/// `file: error`, but an I/O error as it is: it names its path already.
fn named(file: &str, e: &WavError) -> String {
    match e {
        WavError::Io { .. } => e.to_string(),
        _ => format!("{file}: {e}"),
    }
}

/// Asks an LLM whether a greeting is a machine (see [`super::llm`]).
pub trait Verifier: Sync {
    /// Sends `wav` and waits at most `budget`; returns the verdict, how long
    /// it took and, on failure, why.
    fn verify(&self, wav: &[u8], budget: Duration) -> (LlmVerdict, Duration, Option<String>);
}

/// One decision, as printed.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct TimelineEntry {
    /// The outcome.
    pub outcome: String,
    /// Media time, ms since answer.
    pub at_ms: u64,
    /// p(machine) then.
    pub p_machine: f32,
    /// What triggered it.
    pub trigger: String,
}

/// A beep as printed.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct BeepJson {
    /// Start, ms.
    pub start_ms: u64,
    /// End, ms.
    pub end_ms: u64,
    /// Frequency, Hz.
    pub freq_hz: f32,
}

/// The result of classifying one file (`amd classify --json`).
#[derive(Debug, Clone, Serialize)]
pub struct Classification {
    /// The first decision: `human`, `machine_start`, `fax`, `sit` or `unknown`.
    pub answered_by: String,
    /// When it was made, ms since answer.
    pub decision_ms: u64,
    /// When the end of a machine's greeting was found.
    pub machine_end_ms: Option<u64>,
    /// How the greeting ended (`machine_end_beep`, …).
    pub machine_end: Option<String>,
    /// The beep that ended it.
    pub beep: Option<BeepJson>,
    /// p(machine) at the first decision.
    pub p_machine: f32,
    /// Whether the LLM was consulted.
    pub escalated: bool,
    /// Why the LLM failed, when it did.
    pub llm_error: Option<String>,
    /// Every decision in order.
    pub timeline: Vec<TimelineEntry>,
    /// Audio processed, ms.
    pub audio_ms: u64,
    /// CPU time spent, ms.
    pub cpu_ms: f64,
}

/// CPU time of the calling thread.
fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own; the clock id is
    // a constant supported on every Linux.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    if rc != 0 {
        return Duration::ZERO;
    }
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

fn entry(d: &AmdDecision) -> TimelineEntry {
    TimelineEntry {
        outcome: d.outcome.as_str().to_string(),
        at_ms: d.at_ms,
        p_machine: d.p_machine,
        trigger: d.trigger.as_str().to_string(),
    }
}

/// How a recording is read.
#[derive(Debug, Clone, Copy)]
pub struct ReadOptions {
    /// Read at most this much (a long recording is cut there: AMD is
    /// decided in seconds).
    pub max_audio_ms: u64,
    /// The callee's channel of a multi-channel recording, from 1; `None`
    /// mixes all channels.
    pub channel: Option<u16>,
}

impl Default for ReadOptions {
    fn default() -> Self {
        Self {
            max_audio_ms: 60_000,
            channel: None,
        }
    }
}

impl ReadOptions {
    fn open(&self, path: &Path) -> Result<WavReader<std::io::BufReader<std::fs::File>>, WavError> {
        let mut reader = WavReader::open(path)?;
        if let Some(c) = self.channel {
            reader.select_channel(c)?;
        }
        Ok(reader)
    }
}

/// Runs the detector over a file.
pub fn classify_file(
    path: &Path,
    cfg: AmdConfig,
    verifier: Option<&dyn Verifier>,
    read: ReadOptions,
) -> Result<Classification, BenchError> {
    let max_audio_ms = read.max_audio_ms;
    let file = path.display().to_string();
    let wav = |source| BenchError::Wav {
        file: file.clone(),
        source,
    };
    let amd_err = |source| BenchError::Amd {
        file: file.clone(),
        source,
    };
    let mut reader = read.open(path).map_err(wav)?;
    let mut amd = Amd::new(cfg).map_err(amd_err)?;
    let cpu0 = thread_cpu();
    let mut decisions: Vec<AmdDecision> = Vec::new();
    let mut pending: Option<(LlmVerdict, u64)> = None;
    let mut llm_error = None;
    let mut audio_ms = 0;
    while let Some(frame) = reader.next_frame().map_err(wav)? {
        audio_ms = frame.end_ms();
        amd.push_frame(&frame).map_err(amd_err)?;
        if let Some((verdict, at)) = pending
            && frame.end_ms() >= at
        {
            amd.llm_verdict(verdict);
            pending = None;
        }
        while let Some(ev) = amd.poll_event() {
            match ev {
                AmdEvent::Decision(d) => decisions.push(d),
                AmdEvent::Verify {
                    wav, deadline_ms, ..
                } => {
                    let budget = Duration::from_millis(deadline_ms.saturating_sub(frame.end_ms()));
                    match verifier {
                        Some(v) => {
                            let (verdict, took, err) = v.verify(&wav, budget);
                            llm_error = err;
                            pending = Some((verdict, frame.end_ms() + took.as_millis() as u64));
                        }
                        None => {
                            llm_error = Some("no LLM verifier configured".into());
                            amd.llm_verdict(LlmVerdict::Failed);
                        }
                    }
                }
            }
        }
        if amd.is_done() || audio_ms >= max_audio_ms {
            break;
        }
    }
    if audio_ms == 0 {
        return Err(BenchError::NoAudio { file });
    }
    amd.finish();
    while let Some(ev) = amd.poll_event() {
        if let AmdEvent::Decision(d) = ev {
            decisions.push(d);
        }
    }
    let cpu_ms = (thread_cpu().saturating_sub(cpu0)).as_secs_f64() * 1000.0;
    let first = decisions.first().copied();
    let end = decisions
        .iter()
        .find(|d| d.outcome.is_machine_end())
        .copied();
    Ok(Classification {
        answered_by: first.map_or("unknown".into(), |d| d.outcome.as_str().to_string()),
        decision_ms: first.map_or(audio_ms, |d| d.at_ms),
        machine_end_ms: end.map(|d| d.at_ms),
        machine_end: end.map(|d| d.outcome.as_str().to_string()),
        beep: end.and_then(|d| d.beep).map(|b| BeepJson {
            start_ms: b.start_ms,
            end_ms: b.end_ms,
            freq_hz: b.freq_hz,
        }),
        p_machine: first.map_or(0.0, |d| d.p_machine),
        escalated: decisions.iter().any(|d| d.escalated),
        llm_error,
        timeline: decisions.iter().map(entry).collect(),
        audio_ms,
        cpu_ms,
    })
}

/// Runs a baseline over a file; returns its first decision and CPU time.
pub fn classify_baseline(
    path: &Path,
    baseline: Baseline,
    read: ReadOptions,
) -> Result<Classification, BenchError> {
    let max_audio_ms = read.max_audio_ms;
    let file = path.display().to_string();
    let wav = |source| BenchError::Wav {
        file: file.clone(),
        source,
    };
    let mut reader = read.open(path).map_err(wav)?;
    let cpu0 = thread_cpu();
    let mut ast = AsteriskAmd::default();
    let mut tw = match baseline {
        Baseline::Twilio => Some(TwilioAmd::new().map_err(|e| BenchError::Amd {
            file: file.clone(),
            source: e.into(),
        })?),
        Baseline::Asterisk => None,
    };
    let mut decision = None;
    let mut audio_ms = 0;
    while let Some(frame) = reader.next_frame().map_err(wav)? {
        audio_ms = frame.end_ms();
        decision = match tw.as_mut() {
            Some(t) => t.push_frame(&frame).map_err(|e| BenchError::Amd {
                file: file.clone(),
                source: e.into(),
            })?,
            None => ast.push_frame(&frame),
        };
        if decision.is_some() || audio_ms >= max_audio_ms {
            break;
        }
    }
    if audio_ms == 0 {
        return Err(BenchError::NoAudio { file });
    }
    let cpu_ms = thread_cpu().saturating_sub(cpu0).as_secs_f64() * 1000.0;
    let d = decision.unwrap_or(AmdDecision {
        outcome: AmdOutcome::Unknown,
        at_ms: audio_ms,
        p_machine: 0.0,
        trigger: Trigger::EndOfAudio,
        beep: None,
        escalated: false,
    });
    Ok(Classification {
        answered_by: d.outcome.as_str().to_string(),
        decision_ms: d.at_ms,
        machine_end_ms: None,
        machine_end: None,
        beep: None,
        p_machine: d.p_machine,
        escalated: false,
        llm_error: None,
        timeline: vec![entry(&d)],
        audio_ms,
        cpu_ms,
    })
}

/// The class a classification falls in, for the confusion matrix.
pub fn predicted_class(c: &Classification) -> &'static str {
    match c.answered_by.as_str() {
        "human" => "human",
        "fax" => "fax",
        "sit" => "sit",
        "unknown" => "unknown",
        _ => "machine",
    }
}

fn correct(truth: Truth, predicted: &str) -> bool {
    match truth {
        Truth::Silence => predicted == "unknown",
        t => t.as_str() == predicted,
    }
}

/// p50 and p95 of a distribution, in ms.
#[derive(Debug, Clone, Copy, Serialize, Default, PartialEq)]
pub struct Percentiles {
    /// Median.
    pub p50: Option<f64>,
    /// 95th percentile.
    pub p95: Option<f64>,
    /// How many values.
    pub n: usize,
}

fn percentile(sorted: &[f64], q: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    Some(sorted[rank - 1])
}

fn percentiles(mut v: Vec<f64>) -> Percentiles {
    v.sort_by(f64::total_cmp);
    Percentiles {
        p50: percentile(&v, 0.5),
        p95: percentile(&v, 0.95),
        n: v.len(),
    }
}

/// A rate with its 95 % Wilson interval.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct Rate {
    /// k / n.
    pub rate: f64,
    /// Lower bound.
    pub ci95_low: f64,
    /// Upper bound.
    pub ci95_high: f64,
    /// Events.
    pub k: usize,
    /// Trials.
    pub n: usize,
}

/// k of n with a Wilson score interval at 95 %.
pub fn wilson(k: usize, n: usize) -> Rate {
    if n == 0 {
        return Rate {
            rate: 0.0,
            ci95_low: 0.0,
            ci95_high: 1.0,
            k,
            n,
        };
    }
    let z = 1.96f64;
    let nf = n as f64;
    let p = k as f64 / nf;
    let denom = 1.0 + z * z / nf;
    let centre = (p + z * z / (2.0 * nf)) / denom;
    let half = z * (p * (1.0 - p) / nf + z * z / (4.0 * nf * nf)).sqrt() / denom;
    Rate {
        rate: p,
        ci95_low: (centre - half).max(0.0),
        ci95_high: (centre + half).min(1.0),
        k,
        n,
    }
}

/// One file's line in `--per-file`.
#[derive(Debug, Clone, Serialize)]
pub struct FileResult {
    /// The file, relative to the corpus.
    pub file: String,
    /// The truth.
    pub label: String,
    /// The scenario tag.
    pub scenario: String,
    /// Predicted class.
    pub predicted: String,
    /// Right or wrong.
    pub correct: bool,
    /// The detector's output.
    pub result: Classification,
}

/// The figures of one detector over a corpus (`amd bench --json`).
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Which detector.
    pub detector: String,
    /// Clips.
    pub total: usize,
    /// Share correct (silence is right when called unknown).
    pub accuracy: f64,
    /// Mean recall over the classes present.
    pub balanced_accuracy: f64,
    /// Humans called machine.
    pub human_as_machine_rate: f64,
    /// Machines called human.
    pub machine_as_human_rate: f64,
    /// The same with 95 % Wilson intervals.
    pub human_as_machine: Rate,
    /// The same with 95 % Wilson intervals.
    pub machine_as_human: Rate,
    /// Non-silence clips called unknown.
    pub unknown_rate: f64,
    /// Silence clips called machine (must be 0).
    pub silence_as_machine: usize,
    /// Correct human decisions: ms after `speech_end_ms`.
    pub human_decision_ms: Percentiles,
    /// Correct machine decisions: ms from answer.
    pub machine_decision_ms: Percentiles,
    /// `machine_end_beep` decision time after `beep_end_ms`.
    pub beep_lag_ms: Percentiles,
    /// Labelled beeps never reported; `None` (null) when `labels.csv` has
    /// no `beep_end_ms` column, so nothing can be missed or false.
    pub missed_beeps: Option<usize>,
    /// Beeps reported on clips with none (a late beep after a `human`
    /// decision included); `None` as for `missed_beeps`.
    pub false_beeps: Option<usize>,
    /// Machines called human whose beep, heard within
    /// [`AmdConfig::late_beep_ms`] of that decision, then gave
    /// `machine_end_beep` (trigger `late_beep`). Still counted in
    /// `machine_as_human`: the agent had started talking.
    pub late_beep_corrections: usize,
    /// truth → predicted → count.
    pub confusion: BTreeMap<String, BTreeMap<String, usize>>,
    /// scenario → accuracy.
    pub per_scenario: BTreeMap<String, f64>,
    /// CPU ms per second of audio, one core.
    pub cpu_ms_per_audio_s: f64,
    /// Clips listed in `labels.csv` that could not be read, and why. They
    /// are in no figure above: `total` counts the clips that ran.
    pub skipped: Vec<Skipped>,
    /// Per-file results, with `--per-file`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub files: Option<Vec<FileResult>>,
}

/// A clip the bench could not read.
#[derive(Debug, Clone, Serialize)]
pub struct Skipped {
    /// The file, relative to the corpus.
    pub file: String,
    /// Why, as the reader said it.
    pub error: String,
}

/// Computes the report from per-file results.
pub fn report(
    detector: &str,
    results: Vec<FileResult>,
    rows: &[LabelRow],
    per_file: bool,
) -> Report {
    let mut confusion: BTreeMap<String, BTreeMap<String, usize>> = BTreeMap::new();
    let mut per_scenario: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    let mut recall: BTreeMap<Truth, (usize, usize)> = BTreeMap::new();
    let (mut humans, mut h_as_m, mut machines, mut m_as_h) = (0, 0, 0, 0);
    let (mut non_silence, mut unknowns, mut silence_as_machine) = (0, 0, 0);
    let (mut human_lat, mut machine_lat, mut beep_lag) = (Vec::new(), Vec::new(), Vec::new());
    let (mut missed_beeps, mut false_beeps, mut late_beep_corrections) = (0, 0, 0);
    // (counted either way; reported only if the table labels beeps)
    let beeps_labelled = rows.iter().any(|r| r.beep_labelled);
    let (mut cpu_ms, mut audio_ms) = (0.0, 0u64);
    for (r, row) in results.iter().zip(rows) {
        let pred = r.predicted.as_str();
        *confusion
            .entry(row.label.as_str().to_string())
            .or_default()
            .entry(pred.to_string())
            .or_default() += 1;
        let scenario = if row.scenario.is_empty() {
            "(none)"
        } else {
            &row.scenario
        };
        let s = per_scenario.entry(scenario.to_string()).or_default();
        s.1 += 1;
        let rc = recall.entry(row.label).or_default();
        rc.1 += 1;
        if r.correct {
            s.0 += 1;
            rc.0 += 1;
        }
        cpu_ms += r.result.cpu_ms;
        audio_ms += r.result.audio_ms;
        if row.label != Truth::Silence {
            non_silence += 1;
            unknowns += usize::from(pred == "unknown");
        } else if pred == "machine" {
            silence_as_machine += 1;
        }
        match row.label {
            Truth::Human => {
                humans += 1;
                if pred == "machine" {
                    h_as_m += 1;
                }
                if pred == "human"
                    && let Some(end) = row.speech_end_ms
                {
                    human_lat.push(r.result.decision_ms as f64 - end as f64);
                }
            }
            Truth::Machine => {
                machines += 1;
                if pred == "human" {
                    m_as_h += 1;
                    late_beep_corrections += usize::from(
                        r.result
                            .timeline
                            .iter()
                            .any(|t| t.trigger == Trigger::LateBeep.as_str()),
                    );
                }
                if pred == "machine" {
                    machine_lat.push(r.result.decision_ms as f64);
                }
            }
            _ => {}
        }
        let beep_reported = r.result.machine_end.as_deref() == Some("machine_end_beep");
        match row.beep_end_ms {
            Some(end) if beep_reported => {
                beep_lag.push(r.result.machine_end_ms.unwrap_or(0) as f64 - end as f64);
            }
            Some(_) => missed_beeps += 1,
            None if beep_reported => false_beeps += 1,
            None => {}
        }
    }
    let total = results.len();
    let correct = results.iter().filter(|r| r.correct).count();
    let balanced = if recall.is_empty() {
        0.0
    } else {
        recall
            .values()
            .map(|(k, n)| *k as f64 / (*n).max(1) as f64)
            .sum::<f64>()
            / recall.len() as f64
    };
    let hm = wilson(h_as_m, humans);
    let mh = wilson(m_as_h, machines);
    Report {
        detector: detector.to_string(),
        total,
        accuracy: correct as f64 / total.max(1) as f64,
        balanced_accuracy: balanced,
        human_as_machine_rate: hm.rate,
        machine_as_human_rate: mh.rate,
        human_as_machine: hm,
        machine_as_human: mh,
        unknown_rate: unknowns as f64 / non_silence.max(1) as f64,
        silence_as_machine,
        human_decision_ms: percentiles(human_lat),
        machine_decision_ms: percentiles(machine_lat),
        beep_lag_ms: percentiles(beep_lag),
        missed_beeps: beeps_labelled.then_some(missed_beeps),
        false_beeps: beeps_labelled.then_some(false_beeps),
        late_beep_corrections,
        confusion,
        per_scenario: per_scenario
            .into_iter()
            .map(|(k, (c, n))| (k, c as f64 / n.max(1) as f64))
            .collect(),
        cpu_ms_per_audio_s: cpu_ms / (audio_ms as f64 / 1000.0).max(1e-9),
        skipped: Vec::new(),
        files: per_file.then_some(results),
    }
}

/// Which detector a bench run measures.
#[derive(Clone, Copy)]
pub enum Detector<'a> {
    /// dialgate's detector (the configuration by reference: it is copied
    /// to every worker thread).
    Dialgate(&'a AmdConfig, Option<&'a dyn Verifier>),
    /// A re-implemented baseline.
    Baseline(Baseline),
}

/// Runs a detector over every clip of `dir` on `threads` threads.
///
/// A clip that cannot be read (missing, not audio, empty) is skipped and
/// listed in [`Report::skipped`]: one bad file among a thousand recordings
/// should not throw away the other 999 results. A detector failure is not a
/// property of one clip and ends the run.
pub fn bench(
    dir: &Path,
    detector: Detector<'_>,
    threads: usize,
    per_file: bool,
    read: ReadOptions,
    progress: &(dyn Fn(usize, usize) + Sync),
) -> Result<Report, BenchError> {
    let rows = corpus::read_labels(dir)?;
    let paths: Vec<PathBuf> = rows.iter().map(|r| dir.join(&r.file)).collect();
    let done = std::sync::atomic::AtomicUsize::new(0);
    let threads = threads.clamp(1, 64);
    let chunks: Vec<Vec<usize>> = (0..threads)
        .map(|t| (t..rows.len()).step_by(threads).collect())
        .collect();
    let mut slots: Vec<Option<Result<Classification, BenchError>>> =
        (0..rows.len()).map(|_| None).collect();
    std::thread::scope(|s| {
        let handles: Vec<_> = chunks
            .into_iter()
            .map(|idx| {
                let paths = &paths;
                let done = &done;
                s.spawn(move || {
                    idx.into_iter()
                        .map(|i| {
                            let r = match detector {
                                Detector::Dialgate(cfg, v) => {
                                    classify_file(&paths[i], *cfg, v, read)
                                }
                                Detector::Baseline(b) => classify_baseline(&paths[i], b, read),
                            };
                            let n = done.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
                            progress(n, paths.len());
                            (i, r)
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        for h in handles {
            if let Ok(results) = h.join() {
                for (i, r) in results {
                    slots[i] = Some(r);
                }
            }
        }
    });
    let mut results = Vec::with_capacity(rows.len());
    let (mut ran, mut skipped) = (Vec::with_capacity(rows.len()), Vec::new());
    for (slot, row) in slots.into_iter().zip(rows) {
        let c = match slot {
            Some(Ok(c)) => c,
            Some(Err(e @ (BenchError::Wav { .. } | BenchError::NoAudio { .. }))) => {
                skipped.push(Skipped {
                    file: row.file.clone(),
                    error: e.to_string(),
                });
                continue;
            }
            Some(Err(e)) => return Err(e),
            None => {
                return Err(BenchError::NoAudio {
                    file: format!("{} (worker thread panicked)", row.file),
                });
            }
        };
        let predicted = predicted_class(&c);
        results.push(FileResult {
            file: row.file.clone(),
            label: row.label.as_str().to_string(),
            scenario: row.scenario.clone(),
            predicted: predicted.to_string(),
            correct: correct(row.label, predicted),
            result: c,
        });
        ran.push(row);
    }
    if ran.is_empty()
        && let Some(first) = skipped.first()
    {
        return Err(BenchError::NothingReadable {
            dir: dir.display().to_string(),
            skipped: skipped.len(),
            first: first.error.clone(),
        });
    }
    let name = match detector {
        Detector::Dialgate(..) => "dialgate",
        Detector::Baseline(b) => b.as_str(),
    };
    let mut report = report(name, results, &ran, per_file);
    report.skipped = skipped;
    Ok(report)
}

fn count(r: &Rate) -> String {
    format!("{}/{} ({:.1} %)", r.k, r.n, r.rate * 100.0)
}

fn interval(r: &Rate) -> String {
    format!("{:.1}-{:.1} %", r.ci95_low * 100.0, r.ci95_high * 100.0)
}

fn fmt_ms(v: Option<f64>) -> String {
    v.map_or("-".into(), |v| format!("{v:.0}"))
}

fn fmt_beeps(n: Option<usize>) -> String {
    n.map_or("not labelled".into(), |n| n.to_string())
}

/// The report as text for a terminal; `others` are baselines shown beside.
pub fn format_report(r: &Report, others: &[Report]) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let all: Vec<&Report> = std::iter::once(r).chain(others).collect();
    let _ = write!(s, "{:<34}", "");
    for x in &all {
        let _ = write!(s, "{:>18}", x.detector);
    }
    s.push('\n');
    let mut line = |name: &str, f: &dyn Fn(&Report) -> String| {
        let _ = write!(s, "{name:<34}");
        for x in &all {
            let _ = write!(s, "{:>18}", f(x));
        }
        s.push('\n');
    };
    line("clips", &|x| x.total.to_string());
    line("accuracy", &|x| format!("{:.1} %", x.accuracy * 100.0));
    line("balanced accuracy", &|x| {
        format!("{:.1} %", x.balanced_accuracy * 100.0)
    });
    line("humans called machine", &|x| count(&x.human_as_machine));
    line("  95 % interval", &|x| interval(&x.human_as_machine));
    line("machines called human", &|x| count(&x.machine_as_human));
    line("  95 % interval", &|x| interval(&x.machine_as_human));
    line("  then caught by a late beep", &|x| {
        x.late_beep_corrections.to_string()
    });
    line("unknown rate", &|x| {
        format!("{:.1} %", x.unknown_rate * 100.0)
    });
    line("silence called machine", &|x| {
        x.silence_as_machine.to_string()
    });
    line("human decision after speech, p50", &|x| {
        fmt_ms(x.human_decision_ms.p50)
    });
    line("  p95 (ms)", &|x| fmt_ms(x.human_decision_ms.p95));
    line("machine decision from answer, p50", &|x| {
        fmt_ms(x.machine_decision_ms.p50)
    });
    line("  p95 (ms)", &|x| fmt_ms(x.machine_decision_ms.p95));
    line("beep end found after truth, p50", &|x| {
        fmt_ms(x.beep_lag_ms.p50)
    });
    line("  p95 (ms)", &|x| fmt_ms(x.beep_lag_ms.p95));
    line("missed beeps", &|x| fmt_beeps(x.missed_beeps));
    line("false beeps", &|x| fmt_beeps(x.false_beeps));
    line("CPU ms per audio second", &|x| {
        format!("{:.2}", x.cpu_ms_per_audio_s)
    });
    let _ = writeln!(
        s,
        "\nconfusion ({}; rows truth, columns predicted)",
        r.detector
    );
    let cols = ["human", "machine", "fax", "sit", "unknown"];
    let _ = write!(s, "{:<10}", "");
    for c in cols {
        let _ = write!(s, "{c:>9}");
    }
    s.push('\n');
    for (truth, preds) in &r.confusion {
        let _ = write!(s, "{truth:<10}");
        for c in cols {
            let _ = write!(s, "{:>9}", preds.get(c).copied().unwrap_or(0));
        }
        s.push('\n');
    }
    let _ = writeln!(s, "\nper scenario ({})", r.detector);
    for (k, v) in &r.per_scenario {
        let _ = writeln!(s, "  {k:<24} {:>6.1} %", v * 100.0);
    }
    if !r.skipped.is_empty() {
        let _ = writeln!(
            s,
            "\nskipped: {} clips could not be read and are in no figure above",
            r.skipped.len()
        );
        for k in &r.skipped {
            let _ = writeln!(s, "  {}", k.error);
        }
    }
    s
}

/// An SVG with decision-latency distributions per class and the confusion
/// matrix.
pub fn plot_svg(r: &Report) -> String {
    use std::fmt::Write;
    let files = r.files.as_deref().unwrap_or(&[]);
    let mut s = String::new();
    let (w, h) = (980, 420);
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="{w}" height="{h}" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="20" y="24" font-size="15">dialgate amd bench: {} clips, accuracy {:.1} %</text>"#,
        r.total,
        r.accuracy * 100.0
    );
    // Left: decision times per predicted-correct class, as dots on a time axis.
    let (x0, x1, y0) = (110.0, 560.0, 60.0);
    let max_ms = 6000.0;
    let xs = |ms: f64| x0 + (ms.clamp(-1000.0, max_ms) + 1000.0) / (max_ms + 1000.0) * (x1 - x0);
    let classes = ["human", "machine", "fax", "sit", "unknown"];
    for (i, class) in classes.iter().enumerate() {
        let y = y0 + 40.0 + i as f64 * 60.0;
        let _ = writeln!(s, r#"<text x="20" y="{}">{class}</text>"#, y + 4.0);
        let _ = writeln!(
            s,
            r##"<line x1="{x0}" y1="{y}" x2="{x1}" y2="{y}" stroke="#ccc"/>"##
        );
        let mut vals: Vec<f64> = files
            .iter()
            .filter(|f| f.correct && f.predicted == *class)
            .map(|f| f.result.decision_ms as f64)
            .collect();
        vals.sort_by(f64::total_cmp);
        for (j, v) in vals.iter().enumerate() {
            let jitter = ((j * 7919) % 21) as f64 - 10.0;
            let _ = writeln!(
                s,
                r##"<circle cx="{:.1}" cy="{:.1}" r="2.5" fill="#3366cc" fill-opacity="0.5"/>"##,
                xs(*v),
                y + jitter
            );
        }
        if let Some(m) = percentile(&vals, 0.5) {
            let _ = writeln!(
                s,
                r##"<line x1="{0:.1}" y1="{1}" x2="{0:.1}" y2="{2}" stroke="#cc3333" stroke-width="2"/>"##,
                xs(m),
                y - 14.0,
                y + 14.0
            );
        }
    }
    let yaxis = y0 + 40.0 + 5.0 * 60.0;
    for ms in (0..=6000).step_by(1000) {
        let x = xs(f64::from(ms));
        let _ = writeln!(
            s,
            r##"<line x1="{x:.1}" y1="{}" x2="{x:.1}" y2="{}" stroke="#999"/>"##,
            yaxis - 25.0,
            yaxis - 20.0
        );
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{}" text-anchor="middle">{ms}</text>"#,
            x,
            yaxis - 6.0
        );
    }
    let _ = writeln!(
        s,
        r#"<text x="{}" y="{}" text-anchor="middle">decision time, ms from answer (correct decisions; red: median)</text>"#,
        (x0 + x1) / 2.0,
        yaxis + 12.0
    );
    // Right: confusion matrix.
    let (cx, cy, cell) = (640.0, 80.0, 58.0);
    let truths = ["human", "machine", "fax", "sit", "silence"];
    let max = r
        .confusion
        .values()
        .flat_map(|m| m.values())
        .copied()
        .max()
        .unwrap_or(1)
        .max(1) as f64;
    for (j, c) in classes.iter().enumerate() {
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{}" text-anchor="middle">{c}</text>"#,
            cx + (j as f64 + 0.5) * cell,
            cy - 8.0
        );
    }
    for (i, t) in truths.iter().enumerate() {
        let y = cy + i as f64 * cell;
        let _ = writeln!(
            s,
            r#"<text x="{}" y="{:.1}" text-anchor="end">{t}</text>"#,
            cx - 6.0,
            y + cell / 2.0 + 4.0
        );
        for (j, c) in classes.iter().enumerate() {
            let n = r
                .confusion
                .get(*t)
                .and_then(|m| m.get(*c))
                .copied()
                .unwrap_or(0);
            let shade = 255 - (f64::from(n as u32) / max * 200.0) as u32;
            let _ = writeln!(
                s,
                r##"<rect x="{:.1}" y="{y:.1}" width="{cell}" height="{cell}" fill="rgb({shade},{shade},255)" stroke="#888"/>"##,
                cx + j as f64 * cell
            );
            let _ = writeln!(
                s,
                r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{n}</text>"#,
                cx + (j as f64 + 0.5) * cell,
                y + cell / 2.0 + 4.0
            );
        }
    }
    let _ = writeln!(
        s,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">confusion (rows truth, columns predicted)</text>"#,
        cx + 2.5 * cell,
        cy + 5.0 * cell + 22.0
    );
    s.push_str("</svg>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wilson_matches_known_values() {
        let r = wilson(0, 100);
        assert_eq!(r.rate, 0.0);
        assert!((r.ci95_high - 0.037).abs() < 0.001, "{}", r.ci95_high);
        let r = wilson(50, 100);
        assert!((r.ci95_low - 0.404).abs() < 0.001 && (r.ci95_high - 0.596).abs() < 0.001);
    }

    #[test]
    fn percentiles_use_nearest_rank() {
        let p = percentiles(vec![5.0, 1.0, 3.0, 2.0, 4.0]);
        assert_eq!((p.p50, p.p95, p.n), (Some(3.0), Some(5.0), 5));
        assert_eq!(percentiles(vec![]).p50, None);
    }
}
