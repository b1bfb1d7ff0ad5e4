//! The tone bank: voicemail beeps, SIT, fax (CED/CNG) and DTMF, on every
//! inbound frame, beside the VAD. It reports facts ("a 1000 Hz tone from
//! 3200 to 3610 ms"); the AMD policy decides what they mean in context.
//!
//! How a frame is judged a *pure tone* (all must hold):
//!
//! | test | why |
//! |---|---|
//! | level ≥ -42 dBFS | quiet frames carry no reliable tone |
//! | a 2nd-order linear predictor leaves < 3 % of the energy | one sinusoid is predicted almost exactly by `x[n] = a1·x[n-1] + a2·x[n-2]`, even ~20 dB above white noise; speech and tone pairs far apart (DTMF) are not |
//! | an order-4 predictor does not do more than 10× better | a tone in noise gains little from two more coefficients; two tones, speech and music gain a lot |
//! | the RMS of eight 2.5 ms sub-blocks varies < 1.6× | two close tones (ringback 440+480, busy 480+620, dial tone 350+440 Hz) beat: their envelope falls to zero every few ms, and a predictor of order 2 barely notices pairs under ~250 Hz apart |
//!
//! A *clipped* frame (a quarter of its samples at its own peak: a line
//! driven too hot) is judged differently, because the odd harmonics that
//! clipping adds defeat both predictor tests: it is a pure tone when its
//! zero crossings are evenly spaced (within 8 % or one sample) and its
//! envelope is steady, and the crossings give its frequency.
//!
//! The predictor also gives the frequency: `a1 = 2·cos(ω)`. Consecutive pure
//! frames at a steady frequency (±1.5 %) form a *run*; a run's start and end
//! are refined to 2.5 ms from the sub-blocks of the frames around it. When a run
//! ends it is classified: 350–2100 Hz lasting 120 ms–2.5 s is a beep (under
//! 200 ms only if its frame frequencies stay within 0.8 %: a sustained vowel
//! passes the frame tests that long, but its pitch wavers); the SIT
//! triple (913.8/985.2, 1370.6/1428.5, 1776.7 Hz, 200–450 ms each) is SIT;
//! 2100 Hz for 1.5 s is fax CED (reported while still sounding); 1100 Hz for
//! 0.4–0.7 s is fax CNG. DTMF uses Goertzel filters at the eight DTMF
//! frequencies.
//!
//! Cost: a few µs per frame, no allocation.

use crate::audio::{AudioFrame, FRAME_SAMPLES, SAMPLE_RATE};

/// A finished single-frequency tone.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Tone {
    /// Media time the tone started (2.5 ms resolution).
    pub start_ms: u64,
    /// Media time the tone ended.
    pub end_ms: u64,
    /// Its frequency in Hz.
    pub freq_hz: f32,
    /// Its level in dBFS (RMS).
    pub level_dbfs: f32,
}

impl Tone {
    /// Duration in ms.
    pub fn duration_ms(&self) -> u64 {
        self.end_ms.saturating_sub(self.start_ms)
    }
}

/// What the tone bank reports.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ToneEvent {
    /// A voicemail-style beep ended.
    Beep(Tone),
    /// Special information tones (number not in service, intercept).
    Sit {
        /// Start of the first tone.
        start_ms: u64,
        /// End of the third tone.
        end_ms: u64,
    },
    /// Fax answer tone (CED, 2100 Hz), reported once 1.5 s of it was heard.
    FaxCed {
        /// Start of the tone.
        start_ms: u64,
        /// When it was confirmed.
        at_ms: u64,
    },
    /// Fax calling tone (CNG, 1100 Hz, 0.5 s). A beep at 1100 Hz looks the
    /// same; the policy decides by context.
    FaxCng(Tone),
    /// A DTMF digit.
    Dtmf {
        /// `0`–`9`, `*`, `#`, `A`–`D`.
        digit: char,
        /// When it started.
        start_ms: u64,
        /// When it ended.
        end_ms: u64,
    },
}

/// Thresholds; the defaults are what the tests and the corpus were checked
/// with.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ToneConfig {
    /// Quietest frame considered, dBFS.
    pub min_level_dbfs: f32,
    /// Largest order-2 predictor residual, as a fraction of frame energy
    /// (3 % admits a tone about 20 dB above white noise).
    pub max_residual: f64,
    /// Largest ratio of the order-2 to the order-4 residual: a single tone
    /// in noise gains little from order 4, two tones gain a lot.
    pub max_order_gain: f64,
    /// Largest max/min ratio of the 5 ms sub-block RMS.
    pub max_envelope_ratio: f64,
    /// Beep band, Hz.
    pub beep_min_hz: f32,
    /// Beep band, Hz.
    pub beep_max_hz: f32,
    /// Shortest beep, ms.
    pub beep_min_ms: u64,
    /// Longest beep, ms.
    pub beep_max_ms: u64,
}

impl Default for ToneConfig {
    fn default() -> Self {
        Self {
            min_level_dbfs: -42.0,
            max_residual: 0.03,
            max_order_gain: 10.0,
            max_envelope_ratio: 1.6,
            beep_min_hz: 350.0,
            beep_max_hz: 2100.0,
            beep_min_ms: 120,
            beep_max_ms: 2500,
        }
    }
}

const SUB_BLOCKS: usize = 8;
const SUB_LEN: usize = FRAME_SAMPLES / SUB_BLOCKS;

/// The analysis of one frame.
#[derive(Debug, Clone, Copy)]
struct FrameTone {
    pure: bool,
    freq: f64,
    level_dbfs: f32,
    sub_rms: [f64; SUB_BLOCKS],
    rms: f64,
}

#[derive(Debug, Clone, Copy)]
struct Run {
    start_ms: u64,
    /// end of the last pure frame
    last_ms: u64,
    freq_sum: f64,
    frames: u32,
    rms: f64,
    level_sum: f32,
    /// CED was reported while this run sounded
    ced_reported: bool,
    /// lowest and highest frame frequency over the first [`STEADY_FRAMES`]
    first_min_hz: f64,
    first_max_hz: f64,
}

/// A tone shorter than this must be as steady as an oscillator to be a beep
/// (see [`Run::is_steady_enough`]).
const STEADY_BELOW_MS: u64 = 200;
/// Frames over which that steadiness is measured (200 ms).
const STEADY_FRAMES: u32 = 10;
/// Largest spread of the frame frequencies over those frames, as a fraction
/// of the tone's frequency.
const MAX_SPREAD: f64 = 0.008;

impl Run {
    fn new(ft: &FrameTone, start_ms: u64, end_ms: u64) -> Self {
        Self {
            start_ms,
            last_ms: end_ms,
            freq_sum: ft.freq,
            frames: 1,
            rms: ft.rms,
            level_sum: ft.level_dbfs,
            ced_reported: false,
            first_min_hz: ft.freq,
            first_max_hz: ft.freq,
        }
    }

    fn extend(&mut self, ft: &FrameTone, end_ms: u64) {
        self.last_ms = end_ms;
        self.freq_sum += ft.freq;
        self.frames += 1;
        self.rms = self.rms.max(ft.rms);
        self.level_sum += ft.level_dbfs;
        if self.frames <= STEADY_FRAMES {
            self.first_min_hz = self.first_min_hz.min(ft.freq);
            self.first_max_hz = self.first_max_hz.max(ft.freq);
        }
    }

    fn freq(&self) -> f64 {
        self.freq_sum / f64::from(self.frames)
    }

    /// Whether a tone of `dur_ms` is steady enough to be a beep. A beep is
    /// an oscillator: its frame frequencies over the first 200 ms spread
    /// 0.07 % (median) and at most 0.55 % on the corpus's beeps under 200 ms
    /// (0.88 % on its longer ones, with noise and lost frames). A sustained
    /// vowel with a strong fundamental, which passes every per-frame test
    /// for 120–160 ms, drifts: 1.0–3.1 % on the 17 such "beeps" a
    /// recorded-voice copy of the held-out sets and Allison's carrier
    /// prompts gave (generate.py --recorded-voices), one of them in a
    /// person's answer. Tones of 200 ms and more are not vowels.
    fn is_steady_enough(&self, dur_ms: u64) -> bool {
        dur_ms >= STEADY_BELOW_MS
            || self.first_max_hz - self.first_min_hz <= MAX_SPREAD * self.freq()
    }
}

/// SIT tone bands (Hz) per position, ±1.5 %.
const SIT_BANDS: [&[f64]; 3] = [&[913.8, 985.2], &[1370.6, 1428.5], &[1776.7]];

fn in_band(freq: f64, centres: &[f64], tol: f64) -> bool {
    centres.iter().any(|c| (freq - c).abs() <= c * tol)
}

/// DTMF row and column frequencies.
const DTMF_ROWS: [f64; 4] = [697.0, 770.0, 852.0, 941.0];
const DTMF_COLS: [f64; 4] = [1209.0, 1336.0, 1477.0, 1633.0];
const DTMF_KEYS: [[char; 4]; 4] = [
    ['1', '2', '3', 'A'],
    ['4', '5', '6', 'B'],
    ['7', '8', '9', 'C'],
    ['*', '0', '#', 'D'],
];

/// Goertzel coefficients for the DTMF frequencies, computed once.
#[derive(Debug, Clone, Copy)]
struct Goertzel {
    coeff: [f64; 8],
}

impl Goertzel {
    fn new() -> Self {
        let mut coeff = [0.0; 8];
        for (i, f) in DTMF_ROWS.iter().chain(&DTMF_COLS).enumerate() {
            coeff[i] = 2.0 * (std::f64::consts::TAU * f / f64::from(SAMPLE_RATE)).cos();
        }
        Self { coeff }
    }

    /// Power at each DTMF frequency, normalised so a full-scale sine at that
    /// frequency gives about 1.
    fn powers(&self, x: &[i16]) -> [f64; 8] {
        let mut out = [0.0; 8];
        let n = x.len() as f64;
        for (k, &c) in self.coeff.iter().enumerate() {
            let (mut s1, mut s2) = (0.0f64, 0.0f64);
            for &v in x {
                let s0 = f64::from(v) / 32768.0 + c * s1 - s2;
                s2 = s1;
                s1 = s0;
            }
            out[k] = (s1 * s1 + s2 * s2 - c * s1 * s2) * 4.0 / (n * n);
        }
        out
    }
}

#[derive(Debug, Clone, Copy)]
struct DtmfState {
    digit: char,
    start_ms: u64,
    frames: u32,
}

#[derive(Debug, Clone, Copy)]
struct SitProgress {
    start_ms: u64,
    last_end_ms: u64,
    matched: usize,
}

/// The tone bank for one call.
#[derive(Debug, Clone)]
pub struct ToneBank {
    cfg: ToneConfig,
    prev: Option<FrameTone>,
    run: Option<Run>,
    /// a run that just ended, held for 40 ms in case the same tone resumes
    /// (packet loss), with its end time
    ended: Option<(Run, u64)>,
    /// once a fax answer tone was heard, later V.21 bursts are not beeps
    fax_seen: bool,
    goertzel: Goertzel,
    dtmf: Option<DtmfState>,
    sit: Option<SitProgress>,
    /// a 900–1000 Hz tone that may be SIT's first tone or a beep; reported
    /// as a beep if no second SIT tone follows at once
    pending_beep: Option<Tone>,
    /// the last frame's level, dBFS
    level_dbfs: f32,
}

impl ToneBank {
    /// A tone bank with `cfg`.
    pub fn new(cfg: ToneConfig) -> Self {
        Self {
            cfg,
            prev: None,
            run: None,
            ended: None,
            fax_seen: false,
            goertzel: Goertzel::new(),
            dtmf: None,
            sit: None,
            pending_beep: None,
            level_dbfs: -96.0,
        }
    }

    /// Forgets the call.
    pub fn reset(&mut self) {
        *self = Self::new(self.cfg);
    }

    /// If a beep-like tone is sounding now and has lasted at least the
    /// minimum beep length, or has just ended and is not reported yet (its
    /// end is held 40 ms in case a lost frame split it, and a 900–1000 Hz
    /// tone 40 ms more in case SIT follows): its start and frequency. The
    /// policy takes no "the line went quiet" decision while this is `Some`.
    pub fn tone_in_progress(&self) -> Option<(u64, f32)> {
        if let Some(beep) = &self.pending_beep {
            return Some((beep.start_ms, beep.freq_hz));
        }
        let run = self.latest_run()?;
        self.may_be_beep(run, run.last_ms - run.start_ms)
            .then_some((run.start_ms, run.freq() as f32))
    }

    /// The run sounding now, or the one that just ended and is held in case
    /// a lost frame split it.
    fn latest_run(&self) -> Option<&Run> {
        self.run
            .as_ref()
            .or(self.ended.as_ref().map(|(run, _)| run))
    }

    /// The start of a key press sounding now (reported as
    /// [`ToneEvent::Dtmf`] when it ends).
    pub fn dtmf_in_progress(&self) -> Option<u64> {
        self.dtmf.map(|s| s.start_ms)
    }

    /// The RMS level of the last frame pushed, dBFS (-96 for digital
    /// silence).
    pub fn level_dbfs(&self) -> f32 {
        self.level_dbfs
    }

    /// Whether the last frame pushed was a tone (a key press's pair of
    /// frequencies, or a single pure one), whether or not it lasts long
    /// enough to be reported: not a voice.
    pub fn frame_is_tonal(&self) -> bool {
        self.prev.is_some_and(|ft| ft.pure) || self.dtmf.is_some()
    }

    /// The beep band, with the same 1 % tolerance frequencies are measured to.
    fn in_beep_band(&self, freq: f64) -> bool {
        freq >= f64::from(self.cfg.beep_min_hz) * 0.99
            && freq <= f64::from(self.cfg.beep_max_hz) * 1.01
    }

    /// Whether `run`, having sounded `dur_ms`, is a beep by every test but
    /// the longest beep's length: one place for what sounding (the policy's
    /// fast path) and ending (the report) both ask.
    fn may_be_beep(&self, run: &Run, dur_ms: u64) -> bool {
        dur_ms >= self.cfg.beep_min_ms
            && self.in_beep_band(run.freq())
            && run.is_steady_enough(dur_ms)
    }

    fn analyse(&mut self, pcm: &[i16; FRAME_SAMPLES]) -> FrameTone {
        let mut energy = 0.0;
        for &s in pcm.iter() {
            energy += f64::from(s) * f64::from(s);
        }
        let mut sub_rms = [0.0; SUB_BLOCKS];
        for (b, rms) in sub_rms.iter_mut().enumerate() {
            let e: f64 = pcm[b * SUB_LEN..(b + 1) * SUB_LEN]
                .iter()
                .map(|&s| f64::from(s) * f64::from(s))
                .sum();
            *rms = (e / SUB_LEN as f64).sqrt();
        }
        let rms = (energy / FRAME_SAMPLES as f64).sqrt();
        let level_dbfs = if rms < 0.5 {
            -96.0
        } else {
            (20.0 * (rms / 32768.0).log10()) as f32
        };
        let (lo, hi) = sub_rms
            .iter()
            .fold((f64::MAX, 0.0f64), |(lo, hi), &r| (lo.min(r), hi.max(r)));
        let steady = lo > 0.0 && hi / lo < self.cfg.max_envelope_ratio;
        let (pure, freq) = if level_dbfs < self.cfg.min_level_dbfs {
            (false, 0.0)
        } else if is_clipped(pcm) {
            // A line driven too hot flattens a beep's peaks. The odd
            // harmonics that grow defeat both predictor tests (order 4
            // follows a tone and its 3rd harmonic), but the crossings of
            // zero stay where the tone put them.
            match zero_crossing_freq(pcm) {
                Some(f) => (steady, f),
                None => (false, 0.0),
            }
        } else {
            let mut xf = [0.0f64; FRAME_SAMPLES];
            for (d, &s) in xf.iter_mut().zip(pcm.iter()) {
                *d = f64::from(s) / 32768.0;
            }
            let (res2, a) = predictor::<2>(&xf);
            let (res4, _) = predictor::<4>(&xf);
            let (a1, a2) = (a[0], a[1]);
            let mut freq = 0.0;
            if a2 < 0.0 {
                let c = (a1 / (2.0 * (-a2).sqrt())).clamp(-1.0, 1.0);
                freq = c.acos() * f64::from(SAMPLE_RATE) / std::f64::consts::TAU;
            }
            #[cfg(test)]
            if std::env::var_os("TONE_DEBUG").is_some() {
                eprintln!(
                    "lvl {level_dbfs:.1} res2 {res2:.5} res4 {res4:.5} a2 {a2:.3} f {freq:.1} env {:.2}",
                    hi / lo
                );
            }
            let pure = res2 < self.cfg.max_residual
                && res2 < self.cfg.max_order_gain * res4.max(1e-7)
                && a2 < -0.9
                && steady
                && freq > 100.0;
            (pure, freq)
        };
        FrameTone {
            pure,
            freq,
            level_dbfs,
            sub_rms,
            rms,
        }
    }

    /// Processes one frame; calls `out` for each event.
    pub fn push_frame(&mut self, frame: &AudioFrame, mut out: impl FnMut(ToneEvent)) {
        let ft = self.analyse(&frame.pcm);
        self.level_dbfs = ft.level_dbfs;
        let t0 = frame.media_ms;
        let t1 = frame.end_ms();

        // A deferred 900–1000 Hz tone is a beep unless SIT's second tone
        // started right after it.
        if let Some(beep) = self.pending_beep
            && t0 >= beep.end_ms + 40
        {
            // (the second tone may be held in `ended` across a lost frame)
            let continuing_sit = self
                .latest_run()
                .is_some_and(|r| in_band(r.freq(), SIT_BANDS[1], 0.015));
            if !continuing_sit {
                out(ToneEvent::Beep(beep));
                self.sit = None;
            }
            self.pending_beep = None;
        }

        self.dtmf_frame(&frame.pcm, t0, t1, &mut out);

        let same_freq = |run: &Run| (ft.freq - run.freq()).abs() <= (run.freq() * 0.015).max(8.0);
        match self.run.as_mut() {
            Some(run) if ft.pure && same_freq(run) => run.extend(&ft, t1),
            _ => {
                if let Some(run) = self.run.take() {
                    // the tone's end lies inside this frame
                    let end = run.last_ms + leading_active_ms(&ft.sub_rms, run.rms);
                    self.ended = Some((run, end));
                }
                if ft.pure {
                    match self.ended.take() {
                        // Up to two lost or damaged frames inside a tone do
                        // not split it: the same frequency resumes the run.
                        Some((mut old, _)) if same_freq(&old) && t0 <= old.last_ms + 40 => {
                            old.extend(&ft, t1);
                            self.run = Some(old);
                        }
                        held => {
                            if let Some((old, end)) = held {
                                self.finish_run(old, end, &mut out);
                            }
                            let lead = self
                                .prev
                                .map_or(0, |p| trailing_active_ms(&p.sub_rms, ft.rms));
                            self.run = Some(Run::new(&ft, t0.saturating_sub(lead), t1));
                        }
                    }
                }
            }
        }
        if let Some((old, end)) = self.ended
            && t1 > old.last_ms + 40
        {
            self.ended = None;
            self.finish_run(old, end, &mut out);
        }

        // Fax CED is reported while it sounds: no need to wait 3 s for its end.
        if let Some(run) = self.run.as_mut()
            && !run.ced_reported
            && (run.freq() - 2100.0).abs() <= 30.0
            && run.last_ms - run.start_ms >= 1500
        {
            run.ced_reported = true;
            self.fax_seen = true;
            out(ToneEvent::FaxCed {
                start_ms: run.start_ms,
                at_ms: run.last_ms,
            });
        }
        self.prev = Some(ft);
    }

    fn finish_run(&mut self, run: Run, end_ms: u64, out: &mut impl FnMut(ToneEvent)) {
        let freq = run.freq();
        let tone = Tone {
            start_ms: run.start_ms,
            end_ms,
            freq_hz: freq as f32,
            level_dbfs: run.level_sum / run.frames as f32,
        };
        let dur = tone.duration_ms();
        if run.ced_reported || self.fax_seen {
            return;
        }
        // SIT: three tones in order, each 200–450 ms, back to back.
        if (200..=450).contains(&dur) {
            let pos = match self.sit {
                Some(s) if tone.start_ms <= s.last_end_ms + 60 => s.matched,
                _ => 0,
            };
            if pos < 3 && in_band(freq, SIT_BANDS[pos], 0.015) {
                let start_ms = if pos == 0 {
                    tone.start_ms
                } else {
                    self.sit.map_or(tone.start_ms, |s| s.start_ms)
                };
                if pos == 2 {
                    self.sit = None;
                    self.pending_beep = None;
                    out(ToneEvent::Sit {
                        start_ms,
                        end_ms: tone.end_ms,
                    });
                    return;
                }
                self.sit = Some(SitProgress {
                    start_ms,
                    last_end_ms: tone.end_ms,
                    matched: pos + 1,
                });
                if pos == 0 {
                    // could still be a plain beep: decide shortly
                    self.pending_beep = Some(tone);
                } else {
                    self.pending_beep = None;
                }
                return;
            }
        }
        self.sit = None;
        if (400..=700).contains(&dur) && (freq - 1100.0).abs() <= 30.0 {
            out(ToneEvent::FaxCng(tone));
            return;
        }
        if dur <= self.cfg.beep_max_ms && self.may_be_beep(&run, dur) {
            out(ToneEvent::Beep(tone));
        }
    }

    fn dtmf_frame(&mut self, pcm: &[i16], t0: u64, t1: u64, out: &mut impl FnMut(ToneEvent)) {
        let p = self.goertzel.powers(pcm);
        let energy: f64 = pcm
            .iter()
            .map(|&s| (f64::from(s) / 32768.0).powi(2))
            .sum::<f64>()
            / pcm.len() as f64;
        let best = |range: std::ops::Range<usize>| {
            range
                .clone()
                .max_by(|&a, &b| p[a].total_cmp(&p[b]))
                .map(|i| (i, p[i]))
                .unwrap_or((range.start, 0.0))
        };
        let (r, pr) = best(0..4);
        let (c, pc) = best(4..8);
        let second_row = (0..4).filter(|&i| i != r).map(|i| p[i]).fold(0.0, f64::max);
        let second_col = (4..8).filter(|&i| i != c).map(|i| p[i]).fold(0.0, f64::max);
        // A sine of amplitude A has power A²/2 = its energy: the pair must
        // carry most of the frame, with twist ≤ 8 dB and rivals ≥ 10 dB down.
        let digit = (energy > 1e-5
            && (pr + pc) / 2.0 > 0.6 * energy
            && pr.max(pc) < 6.3 * pr.min(pc)
            && second_row * 10.0 < pr
            && second_col * 10.0 < pc)
            .then(|| DTMF_KEYS[r][c - 4]);
        match (self.dtmf, digit) {
            (Some(mut s), Some(d)) if s.digit == d => {
                s.frames += 1;
                self.dtmf = Some(s);
            }
            (prev, d) => {
                if let Some(s) = prev
                    && s.frames >= 2
                {
                    out(ToneEvent::Dtmf {
                        digit: s.digit,
                        start_ms: s.start_ms,
                        end_ms: t0,
                    });
                }
                self.dtmf = d.map(|digit| DtmfState {
                    digit,
                    start_ms: t0,
                    frames: 1,
                });
                let _ = t1;
            }
        }
    }
}

/// True when at least a quarter of the frame sits at its own peak (within
/// 0.5 %): hard clipping. An unclipped sine spends about 6 % of its time
/// that close to its peak.
fn is_clipped(x: &[i16; FRAME_SAMPLES]) -> bool {
    let peak = x.iter().map(|&s| i32::from(s).abs()).max().unwrap_or(0);
    if peak < 1000 {
        return false;
    }
    let near = x
        .iter()
        .filter(|&&s| (i32::from(s).abs() - peak).abs() * 200 <= peak)
        .count();
    near * 4 >= FRAME_SAMPLES
}

/// The frequency of a tone from its zero crossings, when they are evenly
/// spaced (every half-period within 8 % or one sample of the others) and
/// there are at least five of them; `None` otherwise (two tones, speech,
/// noise).
fn zero_crossing_freq(x: &[i16; FRAME_SAMPLES]) -> Option<f64> {
    let mut first: Option<f64> = None;
    let mut prev: Option<f64> = None;
    let (mut shortest, mut longest) = (f64::MAX, 0.0f64);
    let mut halves = 0u32;
    for i in 1..FRAME_SAMPLES {
        let (a, b) = (f64::from(x[i - 1]), f64::from(x[i]));
        if (a < 0.0) == (b < 0.0) {
            continue;
        }
        // linear interpolation between the two samples
        let t = (i - 1) as f64 + a / (a - b);
        if let Some(p) = prev {
            shortest = shortest.min(t - p);
            longest = longest.max(t - p);
            halves += 1;
        } else {
            first = Some(t);
        }
        prev = Some(t);
    }
    if halves < 4 {
        return None;
    }
    let mean = (prev? - first?) / f64::from(halves);
    // (a sample either side of a crossing may both be clipped, which puts
    // the interpolated crossing up to half a sample off: allow a sample)
    if longest - shortest > (0.08 * mean).max(1.0) {
        return None;
    }
    Some(f64::from(SAMPLE_RATE) / (2.0 * mean))
}

/// Least-squares (covariance method) linear predictor of order `P` over one
/// frame: returns the residual as a fraction of the predicted samples'
/// energy, and the coefficients `a` in `x[n] ≈ Σ a[k]·x[n-1-k]`.
// Index loops mirror the normal equations; iterators would hide them.
#[allow(clippy::needless_range_loop)]
fn predictor<const P: usize>(x: &[f64; FRAME_SAMPLES]) -> (f64, [f64; P]) {
    let mut phi = [[0.0f64; P]; P];
    let mut c = [0.0f64; P];
    let mut e0 = 0.0;
    for n in 4..FRAME_SAMPLES {
        e0 += x[n] * x[n];
        for i in 0..P {
            c[i] += x[n] * x[n - 1 - i];
            for j in i..P {
                phi[i][j] += x[n - 1 - i] * x[n - 1 - j];
            }
        }
    }
    for i in 0..P {
        for j in 0..i {
            phi[i][j] = phi[j][i];
        }
        // a whisker of regularisation keeps silence and clipping solvable
        phi[i][i] += 1e-9 + phi[i][i] * 1e-9;
    }
    // Gaussian elimination with partial pivoting on a P×P system.
    let mut m = phi;
    let mut a = c;
    for col in 0..P {
        let pivot = (col..P)
            .max_by(|&r1, &r2| m[r1][col].abs().total_cmp(&m[r2][col].abs()))
            .unwrap_or(col);
        m.swap(col, pivot);
        a.swap(col, pivot);
        let d = m[col][col];
        if d.abs() < 1e-18 {
            return (1.0, [0.0; P]);
        }
        for r in col + 1..P {
            let f = m[r][col] / d;
            for k in col..P {
                m[r][k] -= f * m[col][k];
            }
            a[r] -= f * a[col];
        }
    }
    for col in (0..P).rev() {
        let mut v = a[col];
        for k in col + 1..P {
            v -= m[col][k] * a[k];
        }
        a[col] = v / m[col][col];
    }
    let explained: f64 = a.iter().zip(&c).map(|(ai, ci)| ai * ci).sum();
    if e0 <= 0.0 {
        return (1.0, a);
    }
    (((e0 - explained) / e0).max(0.0), a)
}

/// How much of a frame's start still carries the tone:
/// sub-blocks at ≥ half the tone's RMS, counted from the frame's start.
/// (2.5 ms resolution)
fn leading_active_ms(sub: &[f64; SUB_BLOCKS], tone_rms: f64) -> u64 {
    blocks_to_ms(sub.iter().take_while(|&&r| r >= tone_rms * 0.5).count())
}

/// How much of a frame's end already carries the tone.
fn trailing_active_ms(sub: &[f64; SUB_BLOCKS], tone_rms: f64) -> u64 {
    blocks_to_ms(
        sub.iter()
            .rev()
            .take_while(|&&r| r >= tone_rms * 0.5)
            .count(),
    )
}

fn blocks_to_ms(blocks: usize) -> u64 {
    (blocks * SUB_LEN) as u64 * 1000 / u64::from(SAMPLE_RATE)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audio::synth::{self, Rng};

    fn run(samples: &[i16]) -> Vec<ToneEvent> {
        let mut bank = ToneBank::new(ToneConfig::default());
        let mut events = Vec::new();
        for (i, chunk) in samples.chunks(FRAME_SAMPLES).enumerate() {
            let frame = AudioFrame::from_pcm(chunk, i as u64 * 20);
            bank.push_frame(&frame, |e| events.push(e));
        }
        // flush with silence
        for i in 0..5 {
            let frame = AudioFrame::silence((samples.len() / FRAME_SAMPLES + i) as u64 * 20);
            bank.push_frame(&frame, |e| events.push(e));
        }
        events
    }

    fn beeps(events: &[ToneEvent]) -> Vec<Tone> {
        events
            .iter()
            .filter_map(|e| match e {
                ToneEvent::Beep(t) => Some(*t),
                _ => None,
            })
            .collect()
    }

    /// silence, then a tone starting at an odd sample offset, then silence
    fn beep_at(freq: f64, start_ms: u64, dur_ms: u64, dbfs: f64) -> Vec<i16> {
        let mut x = synth::silence(start_ms);
        x.extend(synth::tones(&[freq], dbfs, dur_ms));
        x.extend(synth::silence(500));
        x
    }

    #[test]
    fn beeps_across_the_band_are_found_with_their_edges() {
        for freq in [350.0, 425.0, 700.0, 1000.0, 1400.0, 1900.0, 2080.0] {
            for (start, dur) in [(1013, 150), (2000, 400), (777, 1000)] {
                let ev = run(&beep_at(freq, start, dur, -15.0));
                let b = beeps(&ev);
                assert_eq!(b.len(), 1, "{freq} Hz {dur} ms: {ev:?}");
                let b = b[0];
                assert!(
                    (f64::from(b.freq_hz) - freq).abs() < freq * 0.01,
                    "{freq}: {}",
                    b.freq_hz
                );
                assert!(
                    b.start_ms.abs_diff(start) <= 10,
                    "{freq}: start {} vs {start}",
                    b.start_ms
                );
                assert!(
                    b.end_ms.abs_diff(start + dur) <= 10,
                    "{freq}: end {} vs {}",
                    b.end_ms,
                    start + dur
                );
            }
        }
    }

    #[test]
    fn beep_in_noise_and_after_mulaw_is_found() {
        let mut rng = Rng::new(5);
        let mut x = beep_at(850.0, 1000, 300, -18.0);
        let n = synth::noise(&mut rng, -50.0, (x.len() / 8) as u64);
        synth::mix_into(&mut x, &n, 0);
        let x: Vec<i16> = x
            .iter()
            .map(|&s| crate::audio::g711::ulaw_decode(crate::audio::g711::ulaw_encode(s)))
            .collect();
        assert_eq!(beeps(&run(&x)).len(), 1);
    }

    /// Hard clipping, as on a line driven too hot: amplify by `gain_db`,
    /// then cut at `ceiling` of full scale.
    fn clip(x: &[i16], gain_db: f64, ceiling: f64) -> Vec<i16> {
        let g = 10f64.powf(gain_db / 20.0);
        let c = ceiling * 32767.0;
        x.iter()
            .map(|&s| (f64::from(s) * g).clamp(-c, c) as i16)
            .collect()
    }

    #[test]
    fn a_clipped_beep_is_found() {
        // A clipped sine grows odd harmonics, which a 4th-order predictor
        // follows far better than a 2nd-order one: the order-gain test
        // alone would take it for two tones.
        for freq in [440.0, 850.0, 1000.0, 1400.0] {
            for gain in [6.0, 12.0] {
                let x = clip(&beep_at(freq, 1000, 400, -8.0), gain, 0.7);
                let b = beeps(&run(&x));
                assert_eq!(b.len(), 1, "{freq} Hz +{gain} dB: {b:?}");
                assert!((f64::from(b[0].freq_hz) - freq).abs() < freq * 0.015);
                assert!(b[0].end_ms.abs_diff(1400) <= 10, "{b:?}");
            }
        }
    }

    #[test]
    fn clipped_call_progress_tones_dtmf_and_noise_are_not_beeps() {
        let mut rng = Rng::new(11);
        let cases: Vec<(&str, Vec<i16>)> = vec![
            ("ringback", synth::ringback(6_000)),
            ("busy", synth::busy(5_000)),
            ("dial tone", synth::tones(&[350.0, 440.0], -16.0, 4000)),
            ("dtmf", synth::dtmf("0123456789*#ABCD")),
            ("noise", synth::noise(&mut rng, -20.0, 4000)),
        ];
        for (name, x) in cases {
            for gain in [12.0, 20.0] {
                let ev = run(&clip(&x, gain, 0.7));
                assert!(beeps(&ev).is_empty(), "{name} +{gain} dB: {ev:?}");
            }
        }
    }

    #[test]
    fn short_or_out_of_band_tones_are_not_beeps() {
        assert!(beeps(&run(&beep_at(1000.0, 500, 80, -15.0))).is_empty());
        assert!(beeps(&run(&beep_at(250.0, 500, 400, -15.0))).is_empty());
        assert!(beeps(&run(&beep_at(2600.0, 500, 400, -15.0))).is_empty());
        assert!(beeps(&run(&beep_at(1000.0, 500, 400, -50.0))).is_empty());
    }

    #[test]
    fn call_progress_tones_and_dtmf_are_not_beeps() {
        let mut rng = Rng::new(9);
        let cases: Vec<(&str, Vec<i16>)> = vec![
            ("ringback", synth::ringback(12_000)),
            ("busy", synth::busy(5_000)),
            ("dial tone", synth::tones(&[350.0, 440.0], -16.0, 4000)),
            (
                "uk ringback",
                synth::cadence(&[400.0, 450.0], -16.0, 400, 200, 6000),
            ),
            ("dtmf", synth::dtmf("0123456789*#ABCD")),
            ("noise", synth::noise(&mut rng, -20.0, 4000)),
        ];
        for (name, x) in cases {
            let ev = run(&x);
            assert!(beeps(&ev).is_empty(), "{name}: {ev:?}");
        }
    }

    #[test]
    fn dtmf_digits_are_decoded() {
        let ev = run(&synth::dtmf("159#0*"));
        let digits: String = ev
            .iter()
            .filter_map(|e| match e {
                ToneEvent::Dtmf { digit, .. } => Some(*digit),
                _ => None,
            })
            .collect();
        assert_eq!(digits, "159#0*");
    }

    #[test]
    fn sit_is_recognised_and_not_reported_as_beeps() {
        for (f1, f2, d) in [
            (913.8, 1370.6, 274),
            (985.2, 1428.5, 380),
            (913.8, 1428.5, 380),
        ] {
            let mut x = synth::silence(300);
            for f in [f1, f2, 1776.7] {
                x.extend(synth::tones(&[f], -16.0, d));
            }
            x.extend(synth::silence(600));
            let ev = run(&x);
            assert!(
                ev.iter().any(
                    |e| matches!(e, ToneEvent::Sit { start_ms, .. } if start_ms.abs_diff(300) <= 10)
                ),
                "{f1}/{f2}: {ev:?}"
            );
            assert!(beeps(&ev).is_empty(), "{f1}/{f2}: {ev:?}");
        }
        // a lone 950 Hz beep of SIT length is still a beep
        let ev = run(&beep_at(950.0, 400, 300, -15.0));
        assert_eq!(beeps(&ev).len(), 1, "{ev:?}");
    }

    /// A lost frame just after SIT's second tone began (the frame that
    /// decides whether the first tone was a beep) must not turn the triple
    /// into three beeps. Found on a recorded-voice copy of `heldout5`
    /// (generate.py --recorded-voices), whose frame loss fell there.
    #[test]
    fn sit_survives_a_lost_frame_in_its_second_tone() {
        let mut x = synth::silence(500);
        for f in [913.8, 1428.5, 1776.7] {
            x.extend(synth::tones(&[f], -16.0, 274));
        }
        x.extend(synth::silence(600));
        // the tones start at 500, 774 and 1048 ms; lose each 20 ms frame
        // of the second one's first 60 ms in turn
        for lost_ms in [780u64, 800, 820] {
            let mut y = x.clone();
            let at = (lost_ms * 8) as usize;
            y[at..at + FRAME_SAMPLES].fill(0);
            let ev = run(&y);
            assert!(
                ev.iter().any(|e| matches!(e, ToneEvent::Sit { .. })),
                "lost {lost_ms} ms: {ev:?}"
            );
            assert!(beeps(&ev).is_empty(), "lost {lost_ms} ms: {ev:?}");
        }
    }

    #[test]
    fn fax_tones() {
        let ev = run(&beep_at(2100.0, 500, 3000, -12.0));
        assert!(
            ev.iter().any(
                |e| matches!(e, ToneEvent::FaxCed { at_ms, .. } if (1990..=2060).contains(at_ms))
            ),
            "{ev:?}"
        );
        assert!(beeps(&ev).is_empty());
        let ev = run(&beep_at(1100.0, 500, 500, -12.0));
        assert!(matches!(ev[..], [ToneEvent::FaxCng(_)]), "{ev:?}");
    }

    /// The policy takes no "the line went quiet" decision while a tone is
    /// in progress, so there must be no frame between the tone sounding and
    /// its report in which the bank says nothing: not while its end is held
    /// for a lost frame, nor while a 900–1000 Hz tone waits to rule out SIT.
    #[test]
    fn a_beep_is_in_progress_until_it_is_reported() {
        for freq in [1000.0, 950.0, 440.0] {
            let x = beep_at(freq, 1000, 400, -15.0);
            let mut bank = ToneBank::new(ToneConfig::default());
            let mut reported_at = None;
            let mut first_in_progress = None;
            for (i, chunk) in x.chunks(FRAME_SAMPLES).enumerate() {
                let t = i as u64 * 20;
                let mut beep = false;
                bank.push_frame(&AudioFrame::from_pcm(chunk, t), |e| {
                    beep |= matches!(e, ToneEvent::Beep(_))
                });
                if beep {
                    reported_at = Some(t);
                    break;
                }
                match bank.tone_in_progress() {
                    Some((start, f)) => {
                        first_in_progress.get_or_insert(t);
                        assert!(start.abs_diff(1000) <= 10, "{freq}: start {start}");
                        assert!((f64::from(f) - freq).abs() < freq * 0.01, "{freq}: {f}");
                    }
                    None => assert!(
                        first_in_progress.is_none(),
                        "{freq} Hz: nothing in progress at {t} ms, before the beep was reported"
                    ),
                }
            }
            let reported_at = reported_at.unwrap_or_else(|| panic!("{freq} Hz: no beep"));
            // in progress from the shortest beep's length on
            let first = first_in_progress.unwrap();
            assert!((1100..=1140).contains(&first), "{freq} Hz: from {first} ms");
            assert!(reported_at >= 1400, "{freq} Hz: reported at {reported_at}");
            assert!(
                bank.tone_in_progress().is_none(),
                "{freq} Hz: still in progress"
            );
        }
    }

    #[test]
    fn one_lost_frame_does_not_split_a_beep() {
        let mut x = beep_at(1000.0, 1000, 600, -15.0);
        // zero the 20 ms frame at 1200 ms (frame-aligned, as a packet loss)
        x[9600..9760].fill(0);
        let b = beeps(&run(&x));
        assert_eq!(b.len(), 1, "{b:?}");
        assert!(b[0].end_ms.abs_diff(1600) <= 10);
    }

    /// A sustained vowel with a strong fundamental is as pure as a beep,
    /// frame by frame, for 120–160 ms; its pitch wavers. An oscillator's
    /// does not.
    #[test]
    fn a_wavering_tone_of_a_vowels_length_is_not_a_beep() {
        let tone = |ms: u64, wobble_hz: f64| -> Vec<i16> {
            let mut x = synth::silence(500);
            let mut phase = 0.0f64;
            let amp = 10f64.powf(-12.0 / 20.0) * std::f64::consts::SQRT_2 * 32767.0;
            for n in 0..(ms * 8) {
                let t = n as f64 / 8000.0;
                // vibrato at 7 Hz, as a voice's pitch moves
                let f = 437.0 + wobble_hz * (std::f64::consts::TAU * 7.0 * t).sin();
                phase += std::f64::consts::TAU * f / 8000.0;
                x.push((amp * phase.sin()) as i16);
            }
            x.extend(synth::silence(500));
            x
        };
        for ms in [140, 180] {
            assert!(beeps(&run(&tone(ms, 0.0))).len() == 1, "steady {ms} ms");
            let ev = run(&tone(ms, 6.0));
            assert!(beeps(&ev).is_empty(), "wavering {ms} ms: {ev:?}");
        }
        // a beep of 200 ms or more is not a vowel: the per-frame tests decide
        assert_eq!(beeps(&run(&tone(400, 3.0))).len(), 1);
    }
}
