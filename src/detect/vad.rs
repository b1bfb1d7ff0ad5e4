//! Voice activity detection: Silero VAD v6 through ONNX Runtime, plus a
//! hysteresis segmenter that turns per-chunk probabilities into speech
//! segments. AMD's timing features (delay to first speech, utterance lengths,
//! pauses) are read off these segments.
//!
//! Silero runs natively at 8 kHz on 256-sample chunks (32 ms) with the
//! previous chunk's last 32 samples prepended as context; at 16 kHz it takes
//! 512 + 64. Its recurrent state (2 × 1 × 128 floats) is the only per-call
//! model state, so [`SileroVad`] holds just that and its buffers; the ORT
//! session itself is shared per worker thread (sessions take several MB and
//! `run` needs `&mut`, so one per call would not scale to hundreds of calls).
//!
//! The model is embedded in the binary from `models/silero_vad.onnx` (MIT,
//! see `models/silero_vad.md`).

use std::cell::RefCell;

use ort::session::Session;
use ort::value::TensorRef;

use crate::audio::{AudioFrame, FRAME_SAMPLES};
use crate::onnx::{self, OnnxError};

/// The Silero VAD v6 model, embedded.
pub const MODEL: &[u8] = include_bytes!("../../models/silero_vad.onnx");
/// Its file name under `models/`.
pub const MODEL_FILE: &str = "silero_vad.onnx";

/// Sample rates Silero supports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VadRate {
    /// 8 kHz: 256-sample chunks, 32 of context.
    Hz8000,
    /// 16 kHz: 512-sample chunks, 64 of context.
    Hz16000,
}

impl VadRate {
    /// Samples per chunk.
    pub const fn chunk(self) -> usize {
        match self {
            Self::Hz8000 => 256,
            Self::Hz16000 => 512,
        }
    }

    /// Samples of context prepended to each chunk.
    pub const fn context(self) -> usize {
        match self {
            Self::Hz8000 => 32,
            Self::Hz16000 => 64,
        }
    }

    /// The rate in Hz.
    pub const fn hz(self) -> u32 {
        match self {
            Self::Hz8000 => 8_000,
            Self::Hz16000 => 16_000,
        }
    }

    /// Chunk duration in milliseconds (32 ms at either rate).
    pub const fn chunk_ms(self) -> u64 {
        (self.chunk() as u64 * 1000) / self.hz() as u64
    }
}

const STATE_LEN: usize = 2 * 128;
const MAX_INPUT: usize = 512 + 64;

thread_local! {
    /// One session per worker thread; see the module docs.
    static SESSION: RefCell<Option<Session>> = const { RefCell::new(None) };
}

fn with_session<T>(f: impl FnOnce(&mut Session) -> Result<T, OnnxError>) -> Result<T, OnnxError> {
    SESSION.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.is_none() {
            *slot = Some(onnx::session_from_memory(MODEL_FILE, MODEL)?);
        }
        match slot.as_mut() {
            Some(session) => f(session),
            None => Err(OnnxError::model(MODEL_FILE, "session missing")),
        }
    })
}

/// One VAD result: the speech probability of a chunk and where it lies.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct VadChunk {
    /// Media time of the chunk's first sample, in ms.
    pub start_ms: u64,
    /// Media time just past its last sample.
    pub end_ms: u64,
    /// Speech probability, 0 to 1.
    pub prob: f32,
    /// The chunk's RMS level, dBFS (-100 for digital silence).
    pub level_dbfs: f32,
}

/// Speech does not begin in a chunk quieter than this, whatever the model
/// says. Silero scales its input, and faint noise that steps up from
/// digital silence or a quieter floor (a line's comfort noise coming on, a
/// muted phone unmuted), or that comes and goes at a syllable's rate (every
/// sixth 20 ms frame lost and zero-filled), reached p 0.5-0.9 for up to a
/// second at -75 to -60 dBFS: a "hello" that made a dead line a person, and
/// once, with the floor's rise, a machine (found by
/// `tests/amd_properties.rs`). Speech is louder: the quietest in the corpus
/// (quiet people turned down by 8 dB) is about -46 dBFS, a normal
/// telephone talker about -20. At -55 dBFS no training feature changes and
/// two decisions of 2,965 held-out clips move by 60 and 640 ms; at -60 the
/// stepped, lossy noise still passed. Only the start is gated: a word's
/// tail fades below it, and ending segments sooner would change every pause
/// the model was trained on.
pub const MIN_SPEECH_DBFS: f32 = -55.0;

/// RMS level of `pcm` in dBFS (-100 for digital silence).
fn rms_dbfs(pcm: &[i16]) -> f32 {
    let energy: f64 = pcm.iter().map(|&s| f64::from(s) * f64::from(s)).sum();
    let ms = energy / pcm.len().max(1) as f64 / (32768.0 * 32768.0);
    if ms <= 0.0 {
        -100.0
    } else {
        (10.0 * ms.log10()) as f32
    }
}

/// Streaming Silero VAD for one call.
pub struct SileroVad {
    rate: VadRate,
    state: [f32; STATE_LEN],
    /// context followed by the chunk, as the model wants it
    input: [f32; MAX_INPUT],
    /// samples waiting for a full chunk
    pending: [i16; 512],
    pending_len: usize,
    /// media time of `pending[0]`
    pending_start_ms: u64,
    /// Media time not heard (concealed) since the last chunk: the next
    /// chunk spans it.
    unheard_ms: u64,
    /// samples consumed since reset (for media time when none is given)
    started: bool,
}

impl std::fmt::Debug for SileroVad {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SileroVad")
            .field("rate", &self.rate)
            .field("pending", &self.pending_len)
            .finish()
    }
}

impl SileroVad {
    /// A detector at `rate`, loading ONNX Runtime on first use in the process.
    pub fn new(rate: VadRate) -> Result<Self, OnnxError> {
        // Open the session now so a missing runtime fails at call set-up,
        // not on the first frame.
        with_session(|_| Ok(()))?;
        Ok(Self {
            rate,
            state: [0.0; STATE_LEN],
            input: [0.0; MAX_INPUT],
            pending: [0; 512],
            pending_len: 0,
            pending_start_ms: 0,
            unheard_ms: 0,
            started: false,
        })
    }

    /// The rate this detector runs at.
    pub fn rate(&self) -> VadRate {
        self.rate
    }

    /// Forgets the call: model state, context and pending samples.
    pub fn reset(&mut self) {
        self.state = [0.0; STATE_LEN];
        self.input = [0.0; MAX_INPUT];
        self.pending_len = 0;
        self.unheard_ms = 0;
        self.started = false;
    }

    /// Runs the model on exactly one chunk ([`VadRate::chunk`] samples) and
    /// returns its speech probability.
    pub fn process_chunk(&mut self, chunk: &[i16]) -> Result<f32, OnnxError> {
        let (n, ctx) = (self.rate.chunk(), self.rate.context());
        if chunk.len() != n {
            return Err(OnnxError::model(
                MODEL_FILE,
                format!("chunk of {} samples, expected {n}", chunk.len()),
            ));
        }
        // input = [last `ctx` samples of the previous chunk | this chunk]
        self.input.copy_within(n..n + ctx, 0);
        for (dst, &s) in self.input[ctx..ctx + n].iter_mut().zip(chunk) {
            *dst = f32::from(s) / 32768.0;
        }
        let sr = [i64::from(self.rate.hz())];
        let input = &self.input[..ctx + n];
        let state = &mut self.state;
        with_session(|session| {
            let model = |e: ort::Error| OnnxError::model(MODEL_FILE, e);
            let outputs = session
                .run(ort::inputs![
                    TensorRef::from_array_view(([1usize, ctx + n], input)).map_err(model)?,
                    TensorRef::from_array_view(([2usize, 1, 128], &state[..])).map_err(model)?,
                    TensorRef::from_array_view(([0usize; 0], &sr[..])).map_err(model)?,
                ])
                .map_err(model)?;
            let (_, prob) = outputs[0].try_extract_tensor::<f32>().map_err(model)?;
            let (_, next) = outputs[1].try_extract_tensor::<f32>().map_err(model)?;
            if next.len() != STATE_LEN || prob.is_empty() {
                return Err(OnnxError::model(MODEL_FILE, "unexpected output shape"));
            }
            state.copy_from_slice(next);
            Ok(prob[0])
        })
    }

    /// Pushes 8 kHz samples starting at `media_ms`; calls `out` for every
    /// chunk completed. At most one chunk completes per 20 ms frame.
    pub fn push(
        &mut self,
        samples: &[i16],
        media_ms: u64,
        mut out: impl FnMut(VadChunk),
    ) -> Result<(), OnnxError> {
        let n = self.rate.chunk();
        let hz = u64::from(self.rate.hz());
        if !self.started || (self.pending_len == 0 && self.unheard_ms == 0) {
            self.pending_start_ms = media_ms.saturating_sub(self.pending_len as u64 * 1000 / hz);
            self.started = true;
        }
        let mut rest = samples;
        while !rest.is_empty() {
            let take = (n - self.pending_len).min(rest.len());
            self.pending[self.pending_len..self.pending_len + take].copy_from_slice(&rest[..take]);
            self.pending_len += take;
            rest = &rest[take..];
            if self.pending_len == n {
                let chunk = self.pending;
                let prob = self.process_chunk(&chunk[..n])?;
                let start_ms = self.pending_start_ms;
                // a chunk that spans concealed audio covers it: to the
                // segmenter the speech (or pause) went on through the hole
                let end_ms = start_ms + self.rate.chunk_ms() + std::mem::take(&mut self.unheard_ms);
                out(VadChunk {
                    start_ms,
                    end_ms,
                    prob,
                    level_dbfs: rms_dbfs(&chunk[..n]),
                });
                self.pending_len = 0;
                self.pending_start_ms = end_ms;
            }
        }
        Ok(())
    }

    /// `ms` of media time passed that the VAD does not hear (concealed
    /// audio): the next chunk is stretched over it, so chunks still tile
    /// the media clock.
    pub fn skip(&mut self, ms: u32) {
        if self.started {
            self.unheard_ms += u64::from(ms);
        }
    }

    /// Pushes one 8 kHz frame (the detector must run at 8 kHz).
    pub fn push_frame(&mut self, frame: &AudioFrame) -> Result<Option<VadChunk>, OnnxError> {
        debug_assert_eq!(self.rate, VadRate::Hz8000);
        let mut result = None;
        self.push(&frame.pcm[..FRAME_SAMPLES], frame.media_ms, |c| {
            result = Some(c)
        })?;
        Ok(result)
    }
}

/// Hysteresis settings for [`Segmenter`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SegmenterConfig {
    /// Probability at or above which a chunk counts as speech.
    pub on_threshold: f32,
    /// Probability below which a chunk counts as silence (hysteresis gap).
    pub off_threshold: f32,
    /// Speech must last this long before a segment starts.
    pub min_speech_ms: u64,
    /// Silence must last this long before a segment ends.
    pub min_silence_ms: u64,
    /// Speech does not begin in a chunk this far below the loudest speech
    /// heard on the call so far. The callee speaks into the phone; a TV or
    /// a crowd behind them reaches it 25-40 dB lower, and Silero hears
    /// those voices as speech too, so every lull in a person's answer
    /// became a segment of "speech" with the pauses of a recording: of 192
    /// held-out people with one voice behind them (`generate.py
    /// --babble-talkers 1`), 55 were called machines. 20 dB is above the
    /// swing of one talker's own words (a stressed syllable and a trailing
    /// one lie 10-15 dB apart) and below how far a voice across a room
    /// falls. Until someone has spoken there is nothing to be under, so a
    /// TV heard before the callee's first word still starts a segment.
    /// Only the start is gated, as with [`MIN_SPEECH_DBFS`].
    pub onset_below_loudest_db: f32,
}

impl Default for SegmenterConfig {
    fn default() -> Self {
        Self {
            on_threshold: 0.5,
            off_threshold: 0.35,
            min_speech_ms: 64,
            min_silence_ms: 160,
            onset_below_loudest_db: 20.0,
        }
    }
}

/// What the segmenter reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SegmentEvent {
    /// Speech started at `at_ms` (backdated to its first speech chunk).
    SpeechStart { at_ms: u64 },
    /// Speech ended at `at_ms` (backdated to the end of its last speech
    /// chunk); `started_ms` is the segment's start.
    SpeechEnd { started_ms: u64, at_ms: u64 },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SegState {
    Quiet,
    Starting { since_ms: u64 },
    Speaking { since_ms: u64 },
    Stopping { since_ms: u64, silent_from_ms: u64 },
}

/// A four-state hysteresis machine (quiet, starting, speaking, stopping)
/// over VAD chunks, separate from the model so it can be tested with
/// synthetic probabilities.
#[derive(Debug, Clone)]
pub struct Segmenter {
    cfg: SegmenterConfig,
    state: SegState,
    /// The loudest chunk of speech so far (dBFS); see
    /// [`SegmenterConfig::onset_below_loudest_db`].
    loudest_dbfs: f32,
}

impl Segmenter {
    /// A segmenter with `cfg`.
    pub fn new(cfg: SegmenterConfig) -> Self {
        Self {
            cfg,
            state: SegState::Quiet,
            loudest_dbfs: -100.0,
        }
    }

    /// True while inside a speech segment (speaking or stopping).
    pub fn in_speech(&self) -> bool {
        matches!(
            self.state,
            SegState::Speaking { .. } | SegState::Stopping { .. }
        )
    }

    /// When a segment's speech stopped, while it is not yet known whether
    /// it ended (the pause is shorter than `min_silence_ms`) or will resume.
    pub fn paused_since(&self) -> Option<u64> {
        match self.state {
            SegState::Stopping { silent_from_ms, .. } => Some(silent_from_ms),
            _ => None,
        }
    }

    /// Start of the current segment, if inside one.
    pub fn segment_start(&self) -> Option<u64> {
        match self.state {
            SegState::Speaking { since_ms } | SegState::Stopping { since_ms, .. } => Some(since_ms),
            _ => None,
        }
    }

    /// Feeds one chunk; returns an event when a segment starts or ends.
    pub fn push(&mut self, chunk: VadChunk) -> Option<SegmentEvent> {
        let speech = chunk.prob >= self.cfg.on_threshold;
        let silence = chunk.prob < self.cfg.off_threshold;
        // (a segment starts only on chunks loud enough to be speech, and
        // near enough to the loudest speech so far to be the callee's)
        let onset = speech
            && chunk.level_dbfs >= MIN_SPEECH_DBFS
            && chunk.level_dbfs >= self.loudest_dbfs - self.cfg.onset_below_loudest_db;
        if onset || (speech && !matches!(self.state, SegState::Quiet)) {
            self.loudest_dbfs = self.loudest_dbfs.max(chunk.level_dbfs);
        }
        match self.state {
            SegState::Quiet => {
                if onset {
                    self.state = SegState::Starting {
                        since_ms: chunk.start_ms,
                    };
                    return self.confirm_start(chunk.end_ms);
                }
                None
            }
            SegState::Starting { .. } => {
                if onset {
                    self.confirm_start(chunk.end_ms)
                } else {
                    self.state = SegState::Quiet;
                    None
                }
            }
            SegState::Speaking { since_ms } => {
                if silence {
                    self.state = SegState::Stopping {
                        since_ms,
                        silent_from_ms: chunk.start_ms,
                    };
                    return self.confirm_stop(chunk.end_ms);
                }
                None
            }
            SegState::Stopping { since_ms, .. } => {
                if silence {
                    self.confirm_stop(chunk.end_ms)
                } else {
                    // Speech (or the hysteresis band) resumes the segment.
                    self.state = SegState::Speaking { since_ms };
                    None
                }
            }
        }
    }

    fn confirm_start(&mut self, now_ms: u64) -> Option<SegmentEvent> {
        if let SegState::Starting { since_ms } = self.state
            && now_ms - since_ms >= self.cfg.min_speech_ms
        {
            self.state = SegState::Speaking { since_ms };
            return Some(SegmentEvent::SpeechStart { at_ms: since_ms });
        }
        None
    }

    fn confirm_stop(&mut self, now_ms: u64) -> Option<SegmentEvent> {
        if let SegState::Stopping {
            since_ms,
            silent_from_ms,
        } = self.state
            && now_ms - silent_from_ms >= self.cfg.min_silence_ms
        {
            self.state = SegState::Quiet;
            return Some(SegmentEvent::SpeechEnd {
                started_ms: since_ms,
                at_ms: silent_from_ms,
            });
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(i: u64, prob: f32) -> VadChunk {
        VadChunk {
            start_ms: i * 32,
            end_ms: (i + 1) * 32,
            prob,
            level_dbfs: -30.0,
        }
    }

    #[test]
    fn speech_does_not_begin_below_the_level_of_speech() {
        let mut s = Segmenter::new(SegmenterConfig::default());
        let faint = |i| VadChunk {
            level_dbfs: MIN_SPEECH_DBFS - 1.0,
            ..chunk(i, 0.9)
        };
        // the model sure of speech in faint noise: no segment
        for i in 0..20 {
            assert_eq!(s.push(faint(i)), None);
        }
        assert!(!s.in_speech());
        // real speech starts one, and its faint tail does not end it early
        assert_eq!(s.push(chunk(20, 0.9)), None);
        assert_eq!(
            s.push(chunk(21, 0.9)),
            Some(SegmentEvent::SpeechStart { at_ms: 640 })
        );
        assert_eq!(s.push(faint(22)), None);
        assert!(s.in_speech() && s.paused_since().is_none());
    }

    #[test]
    fn voices_far_under_the_callee_do_not_begin_speech() {
        let mut s = Segmenter::new(SegmenterConfig::default());
        let at = |i, level_dbfs, prob| VadChunk {
            level_dbfs,
            ..chunk(i, prob)
        };
        // before anyone has spoken, a distant voice (-52 dBFS) is speech
        assert_eq!(s.push(at(0, -52.0, 0.9)), None);
        assert_eq!(
            s.push(at(1, -52.0, 0.9)),
            Some(SegmentEvent::SpeechStart { at_ms: 0 })
        );
        for i in 2..8 {
            s.push(at(i, -100.0, 0.0));
        }
        assert!(!s.in_speech());
        // the callee says hello at -22 dBFS, then pauses
        assert_eq!(
            (s.push(at(8, -22.0, 0.9)), s.push(at(9, -25.0, 0.9))),
            (None, Some(SegmentEvent::SpeechStart { at_ms: 256 }))
        );
        for i in 10..16 {
            s.push(at(i, -60.0, 0.1));
        }
        assert!(!s.in_speech());
        // now the same distant voice, 30 dB under the hello, is not speech
        for i in 16..30 {
            assert_eq!(s.push(at(i, -52.0, 0.9)), None);
        }
        assert!(!s.in_speech());
        // the callee speaking 18 dB softer than their hello still is
        assert_eq!(s.push(at(30, -40.0, 0.9)), None);
        assert_eq!(
            s.push(at(31, -40.0, 0.9)),
            Some(SegmentEvent::SpeechStart { at_ms: 960 })
        );
        // and a segment, once begun, is not cut by a quieter syllable
        assert_eq!(s.push(at(32, -52.0, 0.9)), None);
        assert!(s.in_speech() && s.paused_since().is_none());
    }

    #[test]
    fn segmenter_needs_sustained_speech_and_silence() {
        let mut s = Segmenter::new(SegmenterConfig::default());
        // one speech chunk then silence: a click, no segment
        assert_eq!(s.push(chunk(0, 0.9)), None);
        assert_eq!(s.push(chunk(1, 0.1)), None);
        assert!(!s.in_speech());
        // two speech chunks: start, backdated to the first
        assert_eq!(s.push(chunk(2, 0.9)), None);
        assert_eq!(
            s.push(chunk(3, 0.8)),
            Some(SegmentEvent::SpeechStart { at_ms: 64 })
        );
        // the hysteresis band keeps speaking
        assert_eq!(s.push(chunk(4, 0.4)), None);
        assert!(s.in_speech());
        // a short dip does not end it
        assert_eq!(s.push(chunk(5, 0.1)), None);
        assert_eq!(s.push(chunk(6, 0.9)), None);
        // five silent chunks (160 ms) end it, backdated to the first
        for i in 7..11 {
            assert_eq!(s.push(chunk(i, 0.05)), None, "chunk {i}");
        }
        assert_eq!(
            s.push(chunk(11, 0.05)),
            Some(SegmentEvent::SpeechEnd {
                started_ms: 64,
                at_ms: 224
            })
        );
        assert!(!s.in_speech());
    }
}
