//! The audio core: the one currency every carrier and detector speaks.
//!
//! Carrier codecs turn wire audio (Twilio's base64 μ-law, RTP PCMU/PCMA/Opus)
//! into [`AudioFrame`]s at the carrier boundary; the agent boundary resamples
//! to what the agent asked for. Everything between (the call session, AMD,
//! the tone bank) sees only 8 kHz mono PCM16 in 20 ms frames.
//!
//! | module | role | allocation on the per-frame path |
//! |---|---|---|
//! | [`g711`] | μ-law / A-law, bit-exact with the ITU reference | none |
//! | [`resample`] | 8↔16/24 kHz, 48→8/16 kHz over rubato's FFT resampler | none (buffers sized at construction) |
//! | [`ring`] | lock-free SPSC hand-off of frames between threads | none |
//! | [`wav`] | streaming WAV reader (any rate/channels, PCM/float/μ-law/A-law) and writer | reader buffers sized once |
//! | [`opus`] | 20 ms Opus frames at 48 kHz | none |
//! | [`plc`] | packet-loss concealment: a hole in the audio filled from the last pitch period, fading out | none |

pub mod g711;
pub mod opus;
pub mod plc;
pub mod resample;
pub mod ring;
pub mod synth;
pub mod wav;

/// The internal sample rate: G.711's, and Silero VAD's native narrow-band rate.
pub const SAMPLE_RATE: u32 = 8_000;
/// Frame duration in milliseconds: Twilio's media chunk and the usual RTP ptime.
pub const FRAME_MS: u32 = 20;
/// Samples in one [`AudioFrame`].
pub const FRAME_SAMPLES: usize = (SAMPLE_RATE * FRAME_MS / 1000) as usize;

/// 20 ms of 8 kHz mono PCM16 with its position on the call's media clock.
///
/// A fixed-size array rather than a `Vec` so frames are `Copy`, live on the
/// stack or in pre-sized rings, and never allocate on the per-frame path.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct AudioFrame {
    /// The samples, oldest first.
    pub pcm: [i16; FRAME_SAMPLES],
    /// Media time of the first sample, in milliseconds since the stream
    /// started (for AMD: since the call was answered).
    pub media_ms: u64,
    /// Filled in for audio that never arrived (a lost packet, a pause the
    /// sender sent nothing in; see [`plc`]). It keeps the media clock and
    /// the tone bank whole, but it is no one's voice: the VAD and the
    /// noise-floor measure skip it, as a person's ear would.
    pub concealed: bool,
}

impl AudioFrame {
    /// A frame of digital silence at `media_ms`.
    pub const fn silence(media_ms: u64) -> Self {
        Self {
            pcm: [0; FRAME_SAMPLES],
            media_ms,
            concealed: false,
        }
    }

    /// Builds a frame from exactly [`FRAME_SAMPLES`] samples; a shorter slice
    /// is padded with silence and a longer one truncated (the caller decides
    /// whether that is an error; see the carrier codecs).
    pub fn from_pcm(samples: &[i16], media_ms: u64) -> Self {
        let mut pcm = [0; FRAME_SAMPLES];
        let n = samples.len().min(FRAME_SAMPLES);
        pcm[..n].copy_from_slice(&samples[..n]);
        Self {
            pcm,
            media_ms,
            concealed: false,
        }
    }

    /// Decodes 160 μ-law bytes (one Twilio media payload) into a frame.
    pub fn from_ulaw(bytes: &[u8], media_ms: u64) -> Self {
        let mut frame = Self::silence(media_ms);
        g711::ulaw_decode_into(bytes, &mut frame.pcm);
        frame
    }

    /// Root-mean-square level in dBFS (full scale = 32768); silence is -96.
    pub fn rms_dbfs(&self) -> f32 {
        rms_dbfs(&self.pcm)
    }

    /// Media time just past the last sample.
    pub const fn end_ms(&self) -> u64 {
        self.media_ms + FRAME_MS as u64
    }
}

impl Default for AudioFrame {
    fn default() -> Self {
        Self::silence(0)
    }
}

impl std::fmt::Debug for AudioFrame {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AudioFrame")
            .field("media_ms", &self.media_ms)
            .field("rms_dbfs", &self.rms_dbfs())
            .finish()
    }
}

/// RMS level of PCM16 samples in dBFS, floored at -96 dB.
pub fn rms_dbfs(samples: &[i16]) -> f32 {
    if samples.is_empty() {
        return -96.0;
    }
    let sum: f64 = samples.iter().map(|&s| f64::from(s) * f64::from(s)).sum();
    let rms = (sum / samples.len() as f64).sqrt() / 32768.0;
    if rms <= 1.585e-5 {
        -96.0
    } else {
        (20.0 * rms.log10()) as f32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_geometry() {
        assert_eq!(FRAME_SAMPLES, 160);
        let f = AudioFrame::silence(40);
        assert_eq!(f.end_ms(), 60);
        assert_eq!(f.rms_dbfs(), -96.0);
    }

    #[test]
    fn full_scale_square_is_zero_dbfs() {
        let pcm: Vec<i16> = (0..160)
            .map(|i| if i % 2 == 0 { i16::MAX } else { -i16::MAX })
            .collect();
        let f = AudioFrame::from_pcm(&pcm, 0);
        assert!(f.rms_dbfs().abs() < 0.01, "{}", f.rms_dbfs());
    }

    #[test]
    fn short_input_is_padded() {
        let f = AudioFrame::from_pcm(&[1000; 10], 0);
        assert_eq!(f.pcm[9], 1000);
        assert_eq!(f.pcm[10], 0);
    }
}
