//! Baselines for `amd bench --baseline`: the published default algorithms of
//! Asterisk's `app_amd` and Twilio's AMD thresholds, re-implemented from
//! their public descriptions so users can compare dialgate with them on the
//! same audio. Both decide only human / machine / unknown (neither finds the
//! end of a greeting by default) and neither is tuned here.

use super::amd::{AmdDecision, AmdOutcome, Trigger};
use super::vad::{SegmentEvent, Segmenter, SegmenterConfig, SileroVad, VadRate};
use crate::audio::AudioFrame;
use crate::onnx::OnnxError;

/// Which baseline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Baseline {
    /// Asterisk `app_amd` with its default `amd.conf`.
    Asterisk,
    /// Twilio AMD with its default thresholds.
    Twilio,
}

impl Baseline {
    /// The name used on the command line and in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Asterisk => "asterisk",
            Self::Twilio => "twilio",
        }
    }

    /// Parses `asterisk` or `twilio`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "asterisk" => Some(Self::Asterisk),
            "twilio" => Some(Self::Twilio),
            _ => None,
        }
    }
}

/// Asterisk `app_amd`, default `amd.conf`: energy-based silence detection
/// (mean absolute amplitude below 256), word counting, and these rules:
/// initial silence 2.5 s → MACHINE; a greeting (total voice) of 1.5 s →
/// MACHINE; more than 2 words → MACHINE; a word of 5 s → MACHINE; 800 ms of
/// silence after the greeting started → HUMAN; 5 s total → NOTSURE.
#[derive(Debug, Clone)]
pub struct AsteriskAmd {
    silence_ms: u64,
    voice_ms: u64,
    consecutive_voice_ms: u64,
    words: u32,
    in_word: bool,
    in_initial_silence: bool,
    in_greeting: bool,
    decision: Option<AmdDecision>,
}

impl Default for AsteriskAmd {
    fn default() -> Self {
        Self {
            silence_ms: 0,
            voice_ms: 0,
            consecutive_voice_ms: 0,
            words: 0,
            in_word: false,
            in_initial_silence: true,
            in_greeting: false,
            decision: None,
        }
    }
}

const AST_INITIAL_SILENCE: u64 = 2500;
const AST_GREETING: u64 = 1500;
const AST_AFTER_GREETING_SILENCE: u64 = 800;
const AST_TOTAL_ANALYSIS: u64 = 5000;
const AST_MIN_WORD: u64 = 100;
const AST_BETWEEN_WORDS_SILENCE: u64 = 50;
const AST_MAX_WORDS: u32 = 2;
const AST_MAX_WORD_LENGTH: u64 = 5000;
const AST_SILENCE_THRESHOLD: i64 = 256;

/// A baseline's decision: it has no probability, so p is 1 for a machine.
fn decision(outcome: AmdOutcome, at_ms: u64, trigger: Trigger) -> Option<AmdDecision> {
    Some(AmdDecision {
        outcome,
        at_ms,
        p_machine: if outcome.is_machine() { 1.0 } else { 0.0 },
        trigger,
        beep: None,
        escalated: false,
    })
}

impl AsteriskAmd {
    fn decide(&mut self, outcome: AmdOutcome, at_ms: u64, trigger: Trigger) {
        self.decision = decision(outcome, at_ms, trigger);
    }

    /// Pushes a frame; returns the decision once made.
    pub fn push_frame(&mut self, frame: &AudioFrame) -> Option<AmdDecision> {
        if self.decision.is_some() {
            return self.decision;
        }
        let t = frame.end_ms();
        let len = 20;
        let mean_abs =
            frame.pcm.iter().map(|&s| i64::from(s).abs()).sum::<i64>() / frame.pcm.len() as i64;
        if mean_abs < AST_SILENCE_THRESHOLD {
            self.silence_ms += len;
            if self.silence_ms >= AST_BETWEEN_WORDS_SILENCE {
                self.in_word = false;
                self.consecutive_voice_ms = 0;
            }
            if self.in_initial_silence && self.silence_ms >= AST_INITIAL_SILENCE {
                self.decide(AmdOutcome::MachineStart, t, Trigger::Silence);
            } else if self.in_greeting && self.silence_ms >= AST_AFTER_GREETING_SILENCE {
                self.decide(AmdOutcome::Human, t, Trigger::ShortUtterance);
            }
        } else {
            self.consecutive_voice_ms += len;
            self.voice_ms += len;
            if self.consecutive_voice_ms >= AST_MIN_WORD && !self.in_word {
                self.words += 1;
                self.in_word = true;
            }
            if self.words > AST_MAX_WORDS {
                self.decide(AmdOutcome::MachineStart, t, Trigger::Model);
            } else if self.consecutive_voice_ms >= AST_MAX_WORD_LENGTH
                || self.voice_ms >= AST_GREETING
            {
                // MAXWORDLENGTH or LONGGREETING
                self.decide(AmdOutcome::MachineStart, t, Trigger::LongSpeech);
            }
            self.silence_ms = 0;
            self.in_initial_silence = false;
            self.in_greeting = true;
        }
        if self.decision.is_none() && t >= AST_TOTAL_ANALYSIS {
            self.decide(AmdOutcome::Unknown, t, Trigger::Deadline);
        }
        self.decision
    }
}

/// Twilio AMD with default thresholds, over our VAD: an utterance (speech
/// until 1.2 s of silence) reaching 2.4 s → machine; an utterance that ends
/// shorter → human; 5 s of silence from the start → unknown.
pub struct TwilioAmd {
    vad: SileroVad,
    seg: Segmenter,
    utterance_start: Option<u64>,
    last_speech_end: Option<u64>,
    in_speech: bool,
    decision: Option<AmdDecision>,
}

const TW_SPEECH_THRESHOLD: u64 = 2400;
const TW_SPEECH_END: u64 = 1200;
const TW_SILENCE_TIMEOUT: u64 = 5000;

impl TwilioAmd {
    /// A detector (loads the VAD).
    pub fn new() -> Result<Self, OnnxError> {
        Ok(Self {
            vad: SileroVad::new(VadRate::Hz8000)?,
            seg: Segmenter::new(SegmenterConfig::default()),
            utterance_start: None,
            last_speech_end: None,
            in_speech: false,
            decision: None,
        })
    }

    fn decide(&mut self, outcome: AmdOutcome, at_ms: u64, trigger: Trigger) {
        self.decision = decision(outcome, at_ms, trigger);
    }

    /// Pushes a frame; returns the decision once made.
    pub fn push_frame(&mut self, frame: &AudioFrame) -> Result<Option<AmdDecision>, OnnxError> {
        if self.decision.is_some() {
            return Ok(self.decision);
        }
        let t = frame.end_ms();
        let seg = &mut self.seg;
        let mut events = [None; 2];
        let mut n = 0;
        self.vad.push(&frame.pcm, frame.media_ms, |c| {
            if let Some(e) = seg.push(c)
                && n < 2
            {
                events[n] = Some(e);
                n += 1;
            }
        })?;
        for e in events.into_iter().flatten() {
            match e {
                SegmentEvent::SpeechStart { at_ms } => {
                    self.in_speech = true;
                    if self.utterance_start.is_none() {
                        self.utterance_start = Some(at_ms);
                    }
                }
                SegmentEvent::SpeechEnd { at_ms, .. } => {
                    self.in_speech = false;
                    self.last_speech_end = Some(at_ms);
                }
            }
        }
        match self.utterance_start {
            None if t >= TW_SILENCE_TIMEOUT => {
                self.decide(AmdOutcome::Unknown, t, Trigger::Silence)
            }
            None => {}
            Some(start) => {
                let end = if self.in_speech {
                    t
                } else {
                    self.last_speech_end.unwrap_or(t)
                };
                if end.saturating_sub(start) >= TW_SPEECH_THRESHOLD {
                    self.decide(AmdOutcome::MachineStart, t, Trigger::LongSpeech);
                } else if !self.in_speech
                    && self
                        .last_speech_end
                        .is_some_and(|e| t.saturating_sub(e) >= TW_SPEECH_END)
                {
                    self.decide(AmdOutcome::Human, t, Trigger::ShortUtterance);
                }
            }
        }
        Ok(self.decision)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audio::synth;

    fn asterisk(samples: &[i16]) -> Option<AmdDecision> {
        let mut a = AsteriskAmd::default();
        let mut last = None;
        for (i, c) in samples.chunks(160).enumerate() {
            last = a.push_frame(&AudioFrame::from_pcm(c, i as u64 * 20));
        }
        last
    }

    #[test]
    fn asterisk_rules() {
        // silence → MACHINE at 2.5 s (Asterisk's known behaviour)
        let d = asterisk(&synth::silence(4000)).unwrap();
        assert_eq!((d.outcome, d.at_ms), (AmdOutcome::MachineStart, 2500));
        // one 400 ms "word" then silence → HUMAN 800 ms later
        let mut x = synth::silence(500);
        x.extend(synth::tones(&[300.0, 700.0], -20.0, 400));
        x.extend(synth::silence(2000));
        let d = asterisk(&x).unwrap();
        assert_eq!((d.outcome, d.at_ms), (AmdOutcome::Human, 1700));
        // three words → MACHINE at the third
        let mut x = synth::silence(300);
        for _ in 0..3 {
            x.extend(synth::tones(&[300.0, 700.0], -20.0, 200));
            x.extend(synth::silence(200));
        }
        let d = asterisk(&x).unwrap();
        assert_eq!(d.outcome, AmdOutcome::MachineStart);
        assert_eq!(d.at_ms, 300 + 400 * 2 + 100);
    }
}
