//! AMD features: what the classifier sees, computed incrementally from VAD
//! segments as audio arrives.
//!
//! Timing only: when speech started, how long the first utterance was, how
//! long the silence after it is, how many segments, how much speech. Timing
//! is what separates a person ("Hello?" then waiting) from a recording (a long
//! greeting) whoever is speaking. An earlier version also fed levels (speech
//! and noise dBFS, level variance) and VAD confidence: on voices the model had
//! not heard they described the voice rather than the situation, and held-out
//! humans were called machines, so they were dropped.
//!
//! The training script reads these very numbers, dumped by
//! `dialgate amd features`, so Rust and Python cannot disagree about a
//! feature; `tests/amd_features.rs` re-extracts them and compares with the
//! table the committed model was trained on.

use super::vad::{SegmentEvent, Segmenter, SegmenterConfig, VadChunk};

/// Feature names, in model-input order.
pub const FEATURE_NAMES: [&str; 12] = [
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
];

/// Number of features.
pub const N_FEATURES: usize = FEATURE_NAMES.len();

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

    /// True while inside a speech segment.
    pub fn in_speech(&self) -> bool {
        self.seg.in_speech()
    }

    /// Whether any speech was heard.
    pub fn has_speech(&self) -> bool {
        self.first_start.is_some()
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
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds 20 ms frames and 32 ms chunks from a script of (ms, speech?).
    fn drive(script: &[(u64, bool)]) -> FeatureTracker {
        let mut f = FeatureTracker::default();
        let total: u64 = script.iter().map(|s| s.0).sum();
        let speech_at = |t: u64| {
            let mut acc = 0;
            for &(ms, sp) in script {
                if t < acc + ms {
                    return sp;
                }
                acc += ms;
            }
            false
        };
        let mut next_chunk = 0;
        let mut frame_end = 20;
        while frame_end <= total {
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
                });
                next_chunk += 32;
            }
            f.advance(frame_end);
            frame_end += 20;
        }
        f
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

    #[test]
    fn no_speech_has_neutral_features() {
        let f = drive(&[(3000, false)]);
        let v = f.snapshot();
        assert_eq!(get(&v, "has_speech"), 0.0);
        assert_eq!(get(&v, "first_speech_ms"), 3000.0);
        assert_eq!(get(&v, "current_silence_ms"), 3000.0);
    }
}
