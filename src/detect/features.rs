//! AMD features: what the classifier sees, computed incrementally from VAD
//! segments and frame levels as audio arrives.
//!
//! Mostly timing: when speech started, how long the first utterance was, how
//! long the silence after it is, how many segments, how much speech. Timing
//! is what separates a person ("Hello?" then waiting) from a recording (a long
//! greeting) whoever is speaking.
//!
//! One feature is about sound, and it is relative: how much the noise floor in
//! the pauses after speech began rose above the floor of the line before
//! anyone spoke (`floor_rise_db`). A person speaks from the room the call was
//! answered into, so their pauses sit on the same floor; a voicemail plays a
//! recording that carries its own room, which starts with the playback.
//! Absolute levels are deliberately not features: an earlier version fed
//! speech and noise dBFS, level variance and VAD confidence, and on voices
//! the model had not heard they described the voice rather than the
//! situation, so held-out humans were called machines.
//!
//! The training script reads these very numbers, dumped by
//! `dialgate amd features`, so Rust and Python cannot disagree about a
//! feature; `tests/amd_features.rs` re-extracts them and compares with the
//! table the committed model was trained on.

use super::vad::{SegmentEvent, Segmenter, SegmenterConfig, VadChunk};
use crate::audio::FRAME_SAMPLES;

/// Feature names, in model-input order.
pub const FEATURE_NAMES: [&str; 14] = [
    "t_ms",
    "has_speech",
    "first_speech_ms",
    "first_utt_ms",
    "first_utt_closed",
    "gap_after_first_ms",
    "n_segments",
    "speech_ms",
    "speech_ratio",
    "longest_seg_ms",
    "current_seg_ms",
    "current_silence_ms",
    "floor_known",
    "floor_rise_db",
];

/// Number of features.
pub const N_FEATURES: usize = FEATURE_NAMES.len();
/// Where `floor_known` and `floor_rise_db` sit in a [`FeatureVector`].
pub const FLOOR_FEATURES: std::ops::Range<usize> = 12..14;

/// A feature vector.
pub type FeatureVector = [f32; N_FEATURES];

/// What the tracker knows about the speech so far.
#[derive(Debug, Clone)]
pub struct FeatureTracker {
    seg: Segmenter,
    first_start: Option<u64>,
    first_end: Option<u64>,
    second_start: Option<u64>,
    closed_segments: u32,
    closed_speech_ms: u64,
    longest_closed_ms: u64,
    last_end: Option<u64>,
    now_ms: u64,
    /// Frame levels before the first speech (the line as answered)…
    pre_levels: LevelHistogram,
    /// …and in the pauses after it.
    pause_levels: LevelHistogram,
    /// The loudest frame inside speech, no tone in or beside it (dBFS,
    /// pre-emphasised like the floors): what the speech stands on its
    /// pauses by. Exact, not the 1 dB bin of `speech_levels` it also falls
    /// in: the 3 dB voice rule was measured on it. Not the segmenter's
    /// loudest chunk: that level is not pre-emphasised, and against a
    /// pre-emphasised floor a voice would lose 5-12 dB and a hiss gain 3.
    speech_peak_dbfs: f32,
    /// The levels of the frames inside speech (as the peak): how far a
    /// voice swings between its syllables and the gaps between them.
    speech_levels: LevelHistogram,
    /// The last frame inside speech (not digital silence), held until the
    /// next one shows no tone began beside it: its level, and whether it or
    /// the frame before it was a tone.
    held_speech: Option<(f32, bool)>,
    /// Whether the last frame was a tone.
    last_tonal: bool,
    /// The last sample of the previous frame (pre-emphasis state).
    last_sample: f32,
}

/// Frame levels in 1 dB bins, for a low percentile without storing frames.
#[derive(Debug, Clone)]
struct LevelHistogram {
    bins: [u16; LEVEL_BINS],
    n: u32,
    /// Frames of digital silence, which have no level to bin.
    silent: u32,
}

/// Bins from [`LEVEL_MIN_DBFS`] to 0 dBFS.
const LEVEL_BINS: usize = 97;
const LEVEL_MIN_DBFS: f32 = -96.0;
/// A frame whose samples all stay within this many steps of zero is digital
/// silence (a lost packet zero-filled, a muted line): it says nothing about
/// the room. (Any real noise floor, even -75 dBFS, spans a few dozen steps.)
const DIGITAL_SILENCE_PEAK: u16 = 2;
/// Pre-emphasis coefficient of the floor level.
const PRE_EMPHASIS: f32 = 0.95;
/// Frames before the first speech that a floor needs: a greeting may start
/// 80 ms after answer.
const PRE_FLOOR_MIN_FRAMES: u32 = 3;
/// Frames of pause that a floor needs: the first frames of a pause are
/// often the quiet end of a word the VAD no longer calls speech. (Five, a
/// comma's pause, was tried on 2026-12-05 and not kept: what sounds in a
/// comma's pause is breath and the tail of the word, not the room, and a
/// floor that is usually heard early makes "not heard yet" a clue the
/// model learns from; see models/amd.md.)
const PAUSE_FLOOR_MIN_FRAMES: u32 = 10;
/// Frames of speech its swing needs (200 ms, a syllable or two).
const SPEECH_SWING_MIN_FRAMES: u32 = 10;

impl LevelHistogram {
    const fn new() -> Self {
        Self {
            bins: [0; LEVEL_BINS],
            n: 0,
            silent: 0,
        }
    }

    fn add(&mut self, dbfs: f32) {
        let bin = ((dbfs - LEVEL_MIN_DBFS).max(0.0) as usize).min(LEVEL_BINS - 1);
        self.bins[bin] = self.bins[bin].saturating_add(1);
        self.n += 1;
    }

    /// The level a tenth of the frames are at or below: the noise floor,
    /// robust to a stray quiet frame and to the speech that shares a pause's
    /// first frames.
    ///
    /// `None` when mostly digital silence was heard: a phone's noise
    /// suppression or a line without comfort noise zeroes its floor, and the
    /// few frames that pass are the edges of words, not a room.
    fn floor(&self, min_frames: u32) -> Option<f32> {
        if self.n < min_frames || self.silent > self.n {
            return None;
        }
        self.percentile(10)
    }

    /// How far the 30th percentile sits above the 10th, dB: about one for
    /// a steady noise, several for one that swings.
    fn low_spread_db(&self, min_frames: u32) -> Option<f32> {
        Some(self.percentile(30)? - self.floor(min_frames)?)
    }

    /// The level `pct` % of the frames are at or below (1 dB bins).
    fn percentile(&self, pct: u32) -> Option<f32> {
        let want = (self.n * pct / 100).max(1);
        let mut seen = 0;
        for (i, &c) in self.bins.iter().enumerate() {
            seen += u32::from(c);
            if seen >= want {
                return Some(LEVEL_MIN_DBFS + i as f32);
            }
        }
        None
    }
}

impl Default for FeatureTracker {
    fn default() -> Self {
        Self::new(SegmenterConfig::default())
    }
}

impl FeatureTracker {
    /// A tracker whose segments come from a segmenter with `cfg`.
    pub fn new(cfg: SegmenterConfig) -> Self {
        Self {
            seg: Segmenter::new(cfg),
            first_start: None,
            first_end: None,
            second_start: None,
            closed_segments: 0,
            closed_speech_ms: 0,
            longest_closed_ms: 0,
            last_end: None,
            now_ms: 0,
            pre_levels: LevelHistogram::new(),
            pause_levels: LevelHistogram::new(),
            speech_peak_dbfs: LEVEL_MIN_DBFS,
            speech_levels: LevelHistogram::new(),
            held_speech: None,
            last_tonal: false,
            last_sample: 0.0,
        }
    }

    /// Feeds a VAD chunk; returns the segment event it caused, if any.
    pub fn push_chunk(&mut self, chunk: VadChunk) -> Option<SegmentEvent> {
        let event = self.seg.push(chunk);
        match event {
            Some(SegmentEvent::SpeechStart { at_ms }) => {
                if self.first_start.is_none() {
                    self.first_start = Some(at_ms);
                } else if self.second_start.is_none() {
                    self.second_start = Some(at_ms);
                }
            }
            Some(SegmentEvent::SpeechEnd { started_ms, at_ms }) => {
                let len = at_ms.saturating_sub(started_ms);
                if self.first_end.is_none() {
                    self.first_end = Some(at_ms);
                }
                self.closed_segments += 1;
                self.closed_speech_ms += len;
                self.longest_closed_ms = self.longest_closed_ms.max(len);
                self.last_end = Some(at_ms);
            }
            None => {}
        }
        event
    }

    /// Advances the clock to `end_ms`, the end of the frame just processed
    /// (after any VAD chunk that frame completed).
    pub fn advance(&mut self, end_ms: u64) {
        self.now_ms = end_ms;
    }

    /// Records the frame just processed: its level before any speech
    /// describes the line as answered, in a pause after speech the room the
    /// speech comes from, inside speech how far the speech stands above
    /// that room. `tonal`: the tone bank heard a tone in it (a key press,
    /// a beep), which is not a voice, nor are the frames beside one (a
    /// key's first and last frames carry part of it).
    ///
    /// The level is taken after pre-emphasis (a first-order high-pass, about
    /// -20 dB at 100 Hz, -2.5 dB at 1 kHz): rumble below the voice band
    /// (handling, wind, an unfiltered line) swings a 20 ms frame's level by
    /// many dB and would make two stretches of the same room differ.
    pub fn observe_frame(&mut self, pcm: &[i16; FRAME_SAMPLES], tonal: bool) {
        let mut prev = self.last_sample;
        self.last_sample = f32::from(pcm[FRAME_SAMPLES - 1]) / 32768.0;
        let mut energy = 0.0f32;
        let mut peak = 0u16;
        for &s in pcm {
            peak = peak.max(s.unsigned_abs());
            let x = f32::from(s) / 32768.0;
            let y = x - PRE_EMPHASIS * prev;
            energy += y * y;
            prev = x;
        }
        let dbfs = 10.0 * (energy / FRAME_SAMPLES as f32).max(1e-10).log10();
        // (a lost frame zeroed, a muted line: not the room's noise, nor a
        // voice)
        let level = (peak > DIGITAL_SILENCE_PEAK).then_some(dbfs);
        if let Some((level, near_tone)) = self.held_speech.take()
            && !near_tone
            && !tonal
        {
            self.speech_peak_dbfs = self.speech_peak_dbfs.max(level);
            self.speech_levels.add(level);
        }
        let near_tone = tonal || self.last_tonal;
        self.last_tonal = tonal;
        let levels = if self.first_start.is_none() {
            &mut self.pre_levels
        } else if !self.seg.in_speech() || self.seg.paused_since().is_some() {
            &mut self.pause_levels
        } else {
            // speech says nothing about the room, only how far it stands
            // above it
            self.held_speech = level.map(|level| (level, near_tone));
            return;
        };
        match level {
            Some(dbfs) => levels.add(dbfs),
            None => levels.silent = levels.silent.saturating_add(1),
        }
    }

    /// How much louder the pauses between utterances are than the line was
    /// before anyone spoke, dB; `None` until both were heard. A person's
    /// pauses are the same room the call was answered into (about 0 dB); a
    /// recorded greeting carries the noise of the room it was recorded in,
    /// which starts with the playback.
    pub fn floor_rise_db(&self) -> Option<f32> {
        Some(
            self.pause_levels.floor(PAUSE_FLOOR_MIN_FRAMES)?
                - self.pre_levels.floor(PRE_FLOOR_MIN_FRAMES)?,
        )
    }

    /// How far the loudest frame of speech stands above the floor of the
    /// pauses after it, dB; `None` until a pause's floor was heard. A voice
    /// stands 20-50 dB above the room it speaks in; what Silero takes for
    /// speech when a line's noise steps up (the step itself, the edges of
    /// zero-filled packets in it) stands no higher than the noise after it.
    pub fn speech_contrast_db(&self) -> Option<f32> {
        let floor = self.pause_levels.floor(PAUSE_FLOOR_MIN_FRAMES)?;
        (self.speech_peak_dbfs > LEVEL_MIN_DBFS).then_some(self.speech_peak_dbfs - floor)
    }

    /// How far the speech's levels swing, dB: the 90th percentile of its
    /// frames' levels less their 10th; `None` under 10 frames (200 ms) of
    /// it. A voice swings between its
    /// syllables and the gaps between its words by 10-30 dB; a steady hiss
    /// that Silero takes for speech (lost packets chop it like syllables)
    /// by 1-2.
    pub fn speech_swing_db(&self) -> Option<f32> {
        if self.speech_levels.n < SPEECH_SWING_MIN_FRAMES {
            return None;
        }
        Some(self.speech_levels.percentile(90)? - self.speech_levels.percentile(10)?)
    }

    /// How much the line's level swung before anyone spoke: the 30th
    /// percentile of those frames' levels less their 10th (the floor), dB;
    /// `None` while the floor before speech is unknown. About 1 dB on a
    /// line's steady noise; several with a crowd talking behind the person,
    /// where the floor is a lull (see `AmdConfig::floor_swing_max_db`).
    pub fn pre_floor_swing_db(&self) -> Option<f32> {
        self.pre_levels.low_spread_db(PRE_FLOOR_MIN_FRAMES)
    }

    /// True while inside a speech segment.
    pub fn in_speech(&self) -> bool {
        self.seg.in_speech()
    }

    /// Whether any speech was heard.
    pub fn has_speech(&self) -> bool {
        self.first_start.is_some()
    }

    /// Start of the first utterance, once speech was heard.
    pub fn first_speech_start(&self) -> Option<u64> {
        self.first_start
    }

    /// End of the first utterance, once it ended.
    pub fn first_utterance_end(&self) -> Option<u64> {
        self.first_end
    }

    /// Utterances so far, the one in progress included.
    pub fn segments(&self) -> u32 {
        self.closed_segments + u32::from(self.seg.in_speech())
    }

    /// Media time of the last processed frame's end.
    pub fn now_ms(&self) -> u64 {
        self.now_ms
    }

    /// Length of the segment in progress (0 when silent).
    pub fn current_segment_ms(&self) -> u64 {
        self.seg
            .segment_start()
            .map_or(0, |s| self.now_ms.saturating_sub(s))
    }

    /// Silence since the last segment ended, or since the start when there
    /// was no speech; 0 while speaking.
    pub fn current_silence_ms(&self) -> u64 {
        if self.seg.in_speech() {
            0
        } else {
            self.now_ms.saturating_sub(self.last_end.unwrap_or(0))
        }
    }

    /// The silence before the segment in progress, when it is not the
    /// first: how long the callee paused before speaking again.
    pub fn pause_before_current_ms(&self) -> Option<u64> {
        let start = self.seg.segment_start()?;
        self.last_end.map(|end| start.saturating_sub(end))
    }

    /// Total speech so far, including the segment in progress.
    pub fn speech_ms(&self) -> u64 {
        self.closed_speech_ms + self.current_segment_ms()
    }

    /// Total speech up to the last speech heard: [`speech_ms`](Self::speech_ms)
    /// less a pause in progress that is still too short to end the segment.
    /// The segment grows through such a pause (it may be a breath), but the
    /// speech may also have just ended.
    pub fn voiced_ms(&self) -> u64 {
        let pause = self
            .seg
            .paused_since()
            .map_or(0, |from| self.now_ms.saturating_sub(from));
        self.speech_ms().saturating_sub(pause)
    }

    /// The features at the current time.
    pub fn snapshot(&self) -> FeatureVector {
        let t = self.now_ms;
        let current = self.current_segment_ms();
        let has = self.first_start.is_some();
        let first_start = self.first_start.unwrap_or(t);
        let first_utt = match (self.first_start, self.first_end) {
            (Some(s), Some(e)) => e.saturating_sub(s),
            (Some(_), None) => current,
            _ => 0,
        };
        let gap_after_first = self
            .first_end
            .map_or(0, |e| self.second_start.unwrap_or(t).saturating_sub(e));
        let speech = self.speech_ms();
        let span = t.saturating_sub(first_start).max(1);
        let n_segments = self.segments();
        let floor_rise = self.floor_rise_db();
        [
            t as f32,
            f32::from(u8::from(has)),
            first_start as f32,
            first_utt as f32,
            f32::from(u8::from(self.first_end.is_some())),
            gap_after_first as f32,
            n_segments as f32,
            speech as f32,
            if has {
                (speech as f64 / span as f64).min(1.0) as f32
            } else {
                0.0
            },
            self.longest_closed_ms.max(current) as f32,
            current as f32,
            self.current_silence_ms() as f32,
            f32::from(u8::from(floor_rise.is_some())),
            floor_rise.unwrap_or(0.0),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds 20 ms frames and 32 ms chunks from a script of (ms, speech?)
    /// on a quiet line.
    fn drive(script: &[(u64, bool)]) -> FeatureTracker {
        let parts: Vec<Part> = script
            .iter()
            .map(|&(ms, speech)| {
                if speech {
                    talk(ms, -70.0)
                } else {
                    pause(ms, -70.0)
                }
            })
            .collect();
        drive_audio(&parts)
    }

    fn get(v: &FeatureVector, name: &str) -> f32 {
        v[FEATURE_NAMES.iter().position(|n| *n == name).unwrap()]
    }

    #[test]
    fn hello_then_silence() {
        let f = drive(&[(512, false), (640, true), (1600, false)]);
        let v = f.snapshot();
        assert_eq!(get(&v, "has_speech"), 1.0);
        assert!((get(&v, "first_speech_ms") - 512.0).abs() <= 32.0);
        assert!(
            (get(&v, "first_utt_ms") - 640.0).abs() <= 64.0,
            "{}",
            get(&v, "first_utt_ms")
        );
        assert_eq!(get(&v, "first_utt_closed"), 1.0);
        assert_eq!(get(&v, "n_segments"), 1.0);
        assert!(get(&v, "current_silence_ms") >= 1400.0);
    }

    #[test]
    fn long_greeting_in_progress() {
        let f = drive(&[(256, false), (2000, true), (320, false), (1500, true)]);
        let v = f.snapshot();
        assert_eq!(get(&v, "n_segments"), 2.0);
        assert!(get(&v, "current_seg_ms") > 1000.0);
        assert!((get(&v, "gap_after_first_ms") - 320.0).abs() <= 64.0);
        assert!(get(&v, "speech_ratio") > 0.8);
        assert!(get(&v, "longest_seg_ms") >= 1900.0);
    }

    #[test]
    fn voiced_speech_leaves_out_a_pause_not_yet_ended() {
        // 1.4 s of speech, then 128 ms of silence: less than the 160 ms the
        // segmenter needs to end the segment, which still counts it.
        let f = drive(&[(704, false), (1408, true), (128, false)]);
        assert!(f.in_speech());
        assert!(f.speech_ms() >= 1500, "{}", f.speech_ms());
        assert!(
            (f.voiced_ms() as i64 - 1408).abs() <= 32,
            "{}",
            f.voiced_ms()
        );
        // while speaking, the two agree
        let f = drive(&[(704, false), (1600, true)]);
        assert_eq!(f.voiced_ms(), f.speech_ms());
        // once the segment has ended, too
        let f = drive(&[(704, false), (1408, true), (600, false)]);
        assert!(!f.in_speech());
        assert_eq!(f.voiced_ms(), f.speech_ms());
    }

    /// One stretch of a synthetic call: speech (a loud 300 Hz tone, unless
    /// `mute`: the VAD says speech over the noise alone) or not, over white
    /// noise at `noise_dbfs`, plus a 40 Hz hum at `hum_dbfs` peak, if any;
    /// every `lost_every`-th frame of it zero-filled, as a lost packet (0:
    /// none); `tonal`: the tone bank says its frames are a tone.
    #[derive(Clone, Copy)]
    struct Part {
        ms: u64,
        speech: bool,
        mute: bool,
        tonal: bool,
        noise_dbfs: f64,
        hum_dbfs: Option<f64>,
        lost_every: usize,
    }

    fn pause(ms: u64, noise_dbfs: f64) -> Part {
        Part {
            ms,
            speech: false,
            mute: false,
            tonal: false,
            noise_dbfs,
            hum_dbfs: None,
            lost_every: 0,
        }
    }

    fn talk(ms: u64, noise_dbfs: f64) -> Part {
        Part {
            speech: true,
            ..pause(ms, noise_dbfs)
        }
    }

    /// The audio of a script, from the project's test-signal generators.
    fn script_audio(script: &[Part]) -> Vec<i16> {
        use crate::audio::synth;
        let mut rng = synth::Rng::new(7);
        let mut out = Vec::new();
        for p in script {
            let mut mix: Vec<i32> = synth::noise(&mut rng, p.noise_dbfs, p.ms)
                .into_iter()
                .map(i32::from)
                .collect();
            let voice = (p.speech && !p.mute).then(|| synth::tones(&[300.0], -12.0, p.ms));
            let hum = p.hum_dbfs.map(|db| synth::tones(&[40.0], db, p.ms));
            for layer in voice.iter().chain(hum.iter()) {
                for (m, &v) in mix.iter_mut().zip(layer) {
                    *m += i32::from(v);
                }
            }
            let lost =
                |i: usize| p.lost_every > 0 && (i / FRAME_SAMPLES).is_multiple_of(p.lost_every);
            out.extend(mix.into_iter().enumerate().map(|(i, m)| {
                if lost(i) {
                    0
                } else {
                    m.clamp(-32768, 32767) as i16
                }
            }));
        }
        out
    }

    /// Like [`drive`], with audio, and the VAD chunks saying what the script
    /// says.
    fn drive_audio(script: &[Part]) -> FeatureTracker {
        let mut f = FeatureTracker::default();
        let part_at = |t: u64| {
            let mut acc = 0;
            for p in script {
                if t < acc + p.ms {
                    return Some(p);
                }
                acc += p.ms;
            }
            None
        };
        let speech_at = |t: u64| part_at(t).is_some_and(|p| p.speech);
        let audio = script_audio(script);
        let mut next_chunk = 0;
        for (index, frame) in audio.chunks_exact(FRAME_SAMPLES).enumerate() {
            let frame_end = 20 * (index as u64 + 1);
            let pcm: &[i16; FRAME_SAMPLES] = frame.try_into().unwrap();
            while next_chunk + 32 <= frame_end {
                let prob = if speech_at(next_chunk + 16) {
                    0.9
                } else {
                    0.05
                };
                f.push_chunk(VadChunk {
                    start_ms: next_chunk,
                    end_ms: next_chunk + 32,
                    prob,
                    level_dbfs: -30.0,
                });
                next_chunk += 32;
            }
            f.advance(frame_end);
            f.observe_frame(pcm, part_at(frame_end - 20).is_some_and(|p| p.tonal));
        }
        f
    }

    fn rise(script: &[Part]) -> f32 {
        drive_audio(script)
            .floor_rise_db()
            .expect("both floors heard")
    }

    #[test]
    fn a_person_pauses_on_the_floor_the_call_was_answered_into() {
        let script = [pause(600, -55.0), talk(1500, -55.0), pause(800, -55.0)];
        let r = rise(&script);
        assert!(r.abs() <= 1.5, "{r}");
        let v = drive_audio(&script).snapshot();
        assert_eq!(get(&v, "floor_known"), 1.0);
        assert_eq!(get(&v, "floor_rise_db"), r);
    }

    #[test]
    fn a_recording_brings_its_own_room() {
        // the line is quiet until the greeting starts; the greeting's pauses
        // carry the noise of the room it was recorded in
        let script = [
            pause(300, -70.0),
            talk(1200, -55.0),
            pause(500, -55.0),
            talk(800, -55.0),
        ];
        let r = rise(&script);
        assert!((r - 15.0).abs() <= 2.0, "{r}");
    }

    #[test]
    fn a_voice_stands_above_its_pauses_and_a_step_in_the_noise_does_not() {
        let f = drive_audio(&[pause(300, -60.0), talk(1000, -60.0), pause(600, -60.0)]);
        let c = f.speech_contrast_db().unwrap();
        assert!(c >= 25.0, "{c}");
        // the line's noise steps up 30 dB and the VAD hears the step as
        // speech: its loudest frame is the noise that follows
        let step = Part {
            mute: true,
            ..talk(300, -30.0)
        };
        let f = drive_audio(&[pause(600, -60.0), step, pause(1000, -30.0)]);
        let c = f.speech_contrast_db().unwrap();
        assert!(c < 3.0, "{c}");
        // (and it looks like a recording's room: the rule is the policy's)
        assert!(f.floor_rise_db().unwrap() >= 25.0);
        // no pause heard yet: nothing to stand above
        let f = drive_audio(&[pause(300, -60.0), talk(1000, -60.0)]);
        assert_eq!(f.speech_contrast_db(), None);
    }

    #[test]
    fn a_voice_swings_and_a_hiss_does_not() {
        // "syllables": the VAD's speech rising and falling by 25 dB
        let mut script = vec![pause(300, -60.0)];
        for _ in 0..6 {
            script.push(Part {
                mute: true,
                ..talk(120, -30.0)
            });
            script.push(Part {
                mute: true,
                ..talk(80, -55.0)
            });
        }
        let swing = drive_audio(&script).speech_swing_db().unwrap();
        assert!(swing >= 20.0, "{swing}");
        // a steady hiss the VAD takes for speech, every 12th frame lost
        let hiss = Part {
            mute: true,
            lost_every: 12,
            ..talk(1200, -49.0)
        };
        let swing = drive_audio(&[pause(300, -70.0), hiss]).speech_swing_db();
        assert!(swing.unwrap() <= 3.0, "{swing:?}");
        // key presses in it, 30 dB louder, are a tone and not a syllable
        let key = Part {
            tonal: true,
            ..talk(500, -49.0)
        };
        let swing = drive_audio(&[pause(300, -70.0), hiss, key, hiss]).speech_swing_db();
        assert!(swing.unwrap() <= 3.0, "{swing:?}");
        let untold = Part {
            tonal: false,
            ..key
        };
        let swing = drive_audio(&[pause(300, -70.0), hiss, untold, hiss]).speech_swing_db();
        assert!(swing.unwrap() >= 20.0, "{swing:?}");
        // too little speech to tell
        let short = Part { ms: 160, ..hiss };
        assert_eq!(
            drive_audio(&[pause(300, -70.0), short]).speech_swing_db(),
            None
        );
    }

    #[test]
    fn the_floor_features_are_where_the_policy_withholds_them() {
        assert_eq!(
            FEATURE_NAMES[FLOOR_FEATURES],
            ["floor_known", "floor_rise_db"]
        );
    }

    #[test]
    fn a_line_that_swings_before_anyone_speaks_has_no_floor_to_trust() {
        // a crowd behind the person: lulls and bursts before they speak
        let mut script = Vec::new();
        for _ in 0..4 {
            script.push(pause(40, -70.0));
            script.push(pause(120, -48.0));
        }
        script.extend([talk(1000, -55.0), pause(800, -55.0)]);
        let f = drive_audio(&script);
        let swing = f.pre_floor_swing_db().unwrap();
        assert!(swing >= 15.0, "{swing}");
        // (the table the model trains on still has the rise: the policy
        // withholds it)
        assert!(f.floor_rise_db().is_some());
        // the same length of steady noise swings by a dB at most
        let steady = [pause(640, -55.0), talk(1000, -55.0), pause(800, -55.0)];
        let swing = drive_audio(&steady).pre_floor_swing_db().unwrap();
        assert!(swing <= 1.0, "{swing}");
    }

    #[test]
    fn the_floor_is_unknown_until_a_pause_was_heard() {
        // speech from the start of the call: no floor before it
        let f = drive_audio(&[pause(40, -55.0), talk(2000, -55.0)]);
        assert_eq!(f.floor_rise_db(), None);
        let v = f.snapshot();
        assert_eq!(get(&v, "floor_known"), 0.0);
        assert_eq!(get(&v, "floor_rise_db"), 0.0);
        // continuous speech: no pause yet
        let f = drive_audio(&[pause(500, -55.0), talk(2500, -55.0)]);
        assert_eq!(f.floor_rise_db(), None);
    }

    #[test]
    fn lost_frames_are_not_the_floor() {
        // every fifth frame of the pause zero-filled (20 % loss): without
        // the digital silence check the pause's floor would be the zeroed
        // frames
        let lossy = Part {
            lost_every: 5,
            ..pause(800, -45.0)
        };
        let r = rise(&[pause(600, -55.0), talk(1500, -55.0), lossy]);
        assert!((r - 10.0).abs() <= 2.0, "{r}");
    }

    #[test]
    fn a_line_of_digital_silence_has_no_floor() {
        // noise suppression zeroes the line; what passes is the edge of
        // speech (here: a few frames before the VAD hears it, and a word's
        // tail), which is not a room
        let zero = -200.0;
        let f = drive_audio(&[
            pause(500, zero),
            pause(60, -50.0),
            talk(1500, zero),
            pause(240, -40.0),
            pause(800, zero),
        ]);
        assert_eq!(f.floor_rise_db(), None);
        assert_eq!(get(&f.snapshot(), "floor_known"), 0.0);
    }

    #[test]
    fn rumble_below_the_voice_band_does_not_move_the_floor() {
        // the same white floor, with a 40 Hz hum at -30 dBFS (25 dB over
        // the floor before emphasis) only in the pause
        let hum = Part {
            hum_dbfs: Some(-30.0),
            ..pause(800, -55.0)
        };
        let r = rise(&[pause(600, -55.0), talk(1200, -55.0), hum]);
        assert!(r.abs() <= 3.0, "{r}");
    }

    #[test]
    fn no_speech_has_neutral_features() {
        let f = drive(&[(3000, false)]);
        let v = f.snapshot();
        assert_eq!(get(&v, "has_speech"), 0.0);
        assert_eq!(get(&v, "first_speech_ms"), 3000.0);
        assert_eq!(get(&v, "current_silence_ms"), 3000.0);
    }
}
