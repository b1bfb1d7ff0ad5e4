//! The AMD front end: everything computed from raw frames before a decision
//! is considered. Per 20 ms frame: the tone bank, Silero VAD (a chunk every
//! 32 ms), the feature tracker, and a copy of the audio into a fixed-size
//! buffer the LLM verifier may be sent.
//!
//! Shared by the live detector ([`super::amd::Amd`]), `amd features` (the
//! training data) and the benchmarks, so all three see identical numbers.

use super::features::{FeatureTracker, FeatureVector};
use super::tones::{ToneBank, ToneConfig, ToneEvent};
use super::vad::{SegmentEvent, SegmenterConfig, SileroVad, VadRate};
use crate::audio::{AudioFrame, FRAME_MS, FRAME_SAMPLES};
use crate::onnx::OnnxError;

/// How much audio the greeting buffer keeps (the start of the call).
pub const GREETING_BUFFER_MS: u64 = 8_000;
const GREETING_SAMPLES: usize = (GREETING_BUFFER_MS as usize) * 8;

/// What one frame produced.
#[derive(Debug, Default, Clone, Copy)]
pub struct FrameOutput {
    /// A VAD chunk completed with this frame (features changed).
    pub chunk: bool,
    /// A speech segment started or ended.
    pub segment: Option<SegmentEvent>,
}

/// VAD, tones and features for one call.
pub struct Frontend {
    vad: SileroVad,
    tones: ToneBank,
    features: FeatureTracker,
    greeting: Box<[i16]>,
    greeting_len: usize,
    last_sound_ms: Option<u64>,
}

/// A frame at least this loud is sound (music, tones, speech), not a quiet
/// line: well above a telephone line's noise floor (-70 to -50 dBFS).
const SOUND_DBFS: f32 = -45.0;

impl std::fmt::Debug for Frontend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Frontend")
            .field("now_ms", &self.features.now_ms())
            .finish()
    }
}

impl Frontend {
    /// A front end with default VAD, segmenter and tone settings that does
    /// not keep the greeting audio.
    pub fn new() -> Result<Self, OnnxError> {
        Self::with_config(SegmenterConfig::default(), ToneConfig::default(), false)
    }

    /// A front end with explicit settings; `keep_greeting` sizes the buffer
    /// the LLM verifier is sent (125 KiB), only needed when it is enabled.
    pub fn with_config(
        seg: SegmenterConfig,
        tones: ToneConfig,
        keep_greeting: bool,
    ) -> Result<Self, OnnxError> {
        Ok(Self {
            vad: SileroVad::new(VadRate::Hz8000)?,
            tones: ToneBank::new(tones),
            features: FeatureTracker::new(seg),
            greeting: vec![0; if keep_greeting { GREETING_SAMPLES } else { 0 }].into_boxed_slice(),
            greeting_len: 0,
            last_sound_ms: None,
        })
    }

    /// Processes one frame (media time from answer); tone events go to
    /// `on_tone`.
    pub fn push_frame(
        &mut self,
        frame: &AudioFrame,
        on_tone: impl FnMut(ToneEvent),
    ) -> Result<FrameOutput, OnnxError> {
        self.push_tones(frame, on_tone);
        let mut out = FrameOutput::default();
        if frame.concealed {
            // Time passes and the segmenter's state holds; Silero never
            // hears the seams and repeated periods of concealment (it took
            // them for pauses inside speech and for onsets in pauses), and
            // they are not the room's floor.
            self.vad.skip(FRAME_MS);
        } else {
            let features = &mut self.features;
            self.vad.push(&frame.pcm, frame.media_ms, |chunk| {
                out.chunk = true;
                if let Some(e) = features.push_chunk(chunk) {
                    out.segment = Some(e);
                }
            })?;
        }
        self.features.advance(frame.end_ms());
        if !frame.concealed {
            self.features
                .observe_frame(&frame.pcm, self.tones.frame_is_tonal());
        }
        if self.greeting_len + FRAME_SAMPLES <= self.greeting.len() {
            self.greeting[self.greeting_len..self.greeting_len + FRAME_SAMPLES]
                .copy_from_slice(&frame.pcm);
            self.greeting_len += FRAME_SAMPLES;
        }
        Ok(out)
    }

    /// Only the tone bank (and the sound clock) hears this frame: once a
    /// decision is made, a beep is all that can still change it, and the
    /// VAD's inference is the costly part of a frame.
    pub fn push_tones(&mut self, frame: &AudioFrame, on_tone: impl FnMut(ToneEvent)) {
        self.tones.push_frame(frame, on_tone);
        if self.tones.level_dbfs() >= SOUND_DBFS {
            self.last_sound_ms = Some(frame.end_ms());
        }
    }

    /// Heap bytes owned (the greeting buffer); the struct itself, with the
    /// VAD's and tone bank's fixed arrays, is counted by the caller.
    pub fn heap_bytes(&self) -> usize {
        std::mem::size_of_val(&*self.greeting)
    }

    /// The feature tracker (timing queries).
    pub fn features(&self) -> &FeatureTracker {
        &self.features
    }

    /// The current feature vector.
    pub fn snapshot(&self) -> FeatureVector {
        self.features.snapshot()
    }

    /// The end of the last frame louder than a quiet line (-45 dBFS).
    pub fn last_sound_ms(&self) -> Option<u64> {
        self.last_sound_ms
    }

    /// The tone bank (is a beep sounding now?).
    pub fn tones(&self) -> &ToneBank {
        &self.tones
    }

    /// The first [`GREETING_BUFFER_MS`] of the call, 8 kHz PCM.
    pub fn greeting_audio(&self) -> &[i16] {
        &self.greeting[..self.greeting_len]
    }
}
