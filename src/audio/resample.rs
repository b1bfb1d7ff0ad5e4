//! Sample-rate conversion at the boundaries of the data path: 8 kHz carrier
//! audio up to what an agent asked for (16 or 24 kHz L16) and back, and
//! 48 kHz Opus down to 8/16 kHz.
//!
//! A thin wrapper over rubato's synchronous FFT resampler with both chunk
//! sizes fixed to 20 ms, so one carrier frame in is exactly one frame out.
//! FFT rather than polynomial interpolation because downsampling 48→8 kHz
//! needs a real anti-aliasing filter; the price is a fixed delay (about
//! 10 ms at 8→16 kHz), which [`Resampler::delay_samples`] reports so callers
//! can account for it (AMD timing, agent lip-sync).
//!
//! All buffers are sized at construction: [`Resampler::process`] never
//! allocates.

use rubato::audioadapter_buffers::direct::InterleavedSlice;
use rubato::{Fft, FixedSync, Resampler as _};

/// Errors from building or running a [`Resampler`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ResampleError {
    /// The rate pair is not one 20 ms frames can express.
    #[error("unsupported resampling {from_hz} Hz -> {to_hz} Hz: {reason}")]
    Unsupported {
        from_hz: u32,
        to_hz: u32,
        reason: String,
    },
    /// `process` was given a slice of the wrong length.
    #[error("resampler expects {expected} input samples per frame, got {actual}")]
    WrongInputLength { expected: usize, actual: usize },
    /// `process` was given an output slice that is too short.
    #[error("resampler output needs {needed} samples, buffer holds {actual}")]
    OutputTooShort { needed: usize, actual: usize },
    /// rubato refused the call (should not happen with the sizes we pick).
    #[error("rubato: {0}")]
    Rubato(String),
}

/// A mono PCM16 resampler that turns one 20 ms frame at `from_hz` into one
/// 20 ms frame at `to_hz`.
pub struct Resampler {
    inner: Fft<f32>,
    from_hz: u32,
    to_hz: u32,
    input: Vec<f32>,
    output: Vec<f32>,
}

impl std::fmt::Debug for Resampler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resampler")
            .field("from_hz", &self.from_hz)
            .field("to_hz", &self.to_hz)
            .field("delay_samples", &self.delay_samples())
            .finish()
    }
}

impl Resampler {
    /// A resampler for 20 ms frames; both rates must be multiples of 50 Hz.
    pub fn new(from_hz: u32, to_hz: u32) -> Result<Self, ResampleError> {
        Self::with_frame_ms(from_hz, to_hz, 20)
    }

    /// A resampler whose frames last `frame_ms` milliseconds.
    pub fn with_frame_ms(from_hz: u32, to_hz: u32, frame_ms: u32) -> Result<Self, ResampleError> {
        let unsupported = |reason: &str| ResampleError::Unsupported {
            from_hz,
            to_hz,
            reason: reason.to_string(),
        };
        if from_hz == 0 || to_hz == 0 || frame_ms == 0 {
            return Err(unsupported("rates and frame length must be positive"));
        }
        if !(from_hz * frame_ms).is_multiple_of(1000) || !(to_hz * frame_ms).is_multiple_of(1000) {
            return Err(unsupported("a frame must hold a whole number of samples"));
        }
        let in_len = (from_hz * frame_ms / 1000) as usize;
        let inner = Fft::<f32>::new(from_hz as usize, to_hz as usize, in_len, 1, FixedSync::Both)
            .map_err(|e| unsupported(&e.to_string()))?;
        let input = vec![0.0; inner.input_frames_max()];
        let output = vec![0.0; inner.output_frames_max()];
        if inner.input_frames_next() != in_len {
            return Err(unsupported("rubato would not take whole frames"));
        }
        Ok(Self {
            inner,
            from_hz,
            to_hz,
            input,
            output,
        })
    }

    /// Input rate in Hz.
    pub fn from_hz(&self) -> u32 {
        self.from_hz
    }

    /// Output rate in Hz.
    pub fn to_hz(&self) -> u32 {
        self.to_hz
    }

    /// Samples [`process`](Self::process) takes per call.
    pub fn input_len(&self) -> usize {
        self.inner.input_frames_next()
    }

    /// Samples [`process`](Self::process) writes per call.
    pub fn output_len(&self) -> usize {
        self.inner.output_frames_next()
    }

    /// The resampler's delay, in output samples: output sample `n + delay`
    /// corresponds to input time `n / to_hz`.
    pub fn delay_samples(&self) -> usize {
        self.inner.output_delay()
    }

    /// The delay in milliseconds.
    pub fn delay_ms(&self) -> f64 {
        self.delay_samples() as f64 * 1000.0 / f64::from(self.to_hz)
    }

    /// Resamples one frame. `input` must hold exactly
    /// [`input_len`](Self::input_len) samples and `out` at least
    /// [`output_len`](Self::output_len); returns the samples written.
    pub fn process(&mut self, input: &[i16], out: &mut [i16]) -> Result<usize, ResampleError> {
        let in_len = self.input_len();
        if input.len() != in_len {
            return Err(ResampleError::WrongInputLength {
                expected: in_len,
                actual: input.len(),
            });
        }
        let out_len = self.output_len();
        if out.len() < out_len {
            return Err(ResampleError::OutputTooShort {
                needed: out_len,
                actual: out.len(),
            });
        }
        for (dst, &s) in self.input[..in_len].iter_mut().zip(input) {
            *dst = f32::from(s) * (1.0 / 32768.0);
        }
        let adapter_in = InterleavedSlice::new(&self.input[..in_len], 1, in_len)
            .map_err(|e| ResampleError::Rubato(e.to_string()))?;
        let mut adapter_out = InterleavedSlice::new_mut(&mut self.output[..out_len], 1, out_len)
            .map_err(|e| ResampleError::Rubato(e.to_string()))?;
        let (_, written) = self
            .inner
            .process_into_buffer(&adapter_in, &mut adapter_out, None)
            .map_err(|e| ResampleError::Rubato(e.to_string()))?;
        for (dst, &v) in out[..written].iter_mut().zip(&self.output[..written]) {
            *dst = (v * 32768.0).round().clamp(-32768.0, 32767.0) as i16;
        }
        Ok(written)
    }

    /// Forgets all history (a new call).
    pub fn reset(&mut self) {
        self.inner.reset();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::f64::consts::PI;

    /// Runs `seconds` of a sine at `freq` through the resampler and returns
    /// the output with the resampler's delay removed.
    fn run_sine(r: &mut Resampler, freq: f64, seconds: f64, amp: f64) -> Vec<i16> {
        let total = (f64::from(r.from_hz()) * seconds) as usize;
        let input: Vec<i16> = (0..total)
            .map(|n| (amp * (2.0 * PI * freq * n as f64 / f64::from(r.from_hz())).sin()) as i16)
            .collect();
        let mut out = Vec::new();
        let mut buf = vec![0i16; r.output_len()];
        for chunk in input.chunks_exact(r.input_len()) {
            let n = r.process(chunk, &mut buf).unwrap();
            out.extend_from_slice(&buf[..n]);
        }
        out.split_off(r.delay_samples())
    }

    /// Amplitude of `freq` in `x` (sample rate `sr`) by a single-bin DFT over
    /// a window of whole periods, skipping the edges.
    fn tone_amplitude(x: &[i16], sr: f64, freq: f64) -> f64 {
        let skip = x.len() / 4;
        let x = &x[skip..x.len() - skip];
        let (mut re, mut im) = (0.0, 0.0);
        for (n, &s) in x.iter().enumerate() {
            let ph = 2.0 * PI * freq * n as f64 / sr;
            re += f64::from(s) * ph.cos();
            im += f64::from(s) * ph.sin();
        }
        2.0 * (re * re + im * im).sqrt() / x.len() as f64
    }

    /// Dominant frequency by zero crossings (good enough for one clean tone).
    fn zero_crossing_freq(x: &[i16], sr: f64) -> f64 {
        let skip = x.len() / 4;
        let x = &x[skip..x.len() - skip];
        let crossings = x.windows(2).filter(|w| (w[0] < 0) != (w[1] < 0)).count();
        crossings as f64 / 2.0 / (x.len() as f64 / sr)
    }

    const PAIRS: [(u32, u32); 6] = [
        (8_000, 16_000),
        (16_000, 8_000),
        (8_000, 24_000),
        (24_000, 8_000),
        (48_000, 8_000),
        (48_000, 16_000),
    ];

    #[test]
    fn sweep_preserves_frequency_and_level_in_band() {
        for (from, to) in PAIRS {
            let nyquist = f64::from(from.min(to)) / 2.0;
            let mut f = 200.0;
            while f < nyquist * 0.8 {
                let mut r = Resampler::new(from, to).unwrap();
                let out = run_sine(&mut r, f, 0.5, 10_000.0);
                let measured = zero_crossing_freq(&out, f64::from(to));
                assert!(
                    (measured - f).abs() < f * 0.01 + 2.0,
                    "{from}->{to}: {f} Hz came out at {measured} Hz"
                );
                let amp = tone_amplitude(&out, f64::from(to), f);
                assert!(
                    (amp / 10_000.0 - 1.0).abs() < 0.05,
                    "{from}->{to}: {f} Hz level {amp}"
                );
                f *= 1.5;
            }
        }
    }

    #[test]
    fn downsampling_rejects_tones_above_the_new_nyquist() {
        // A tone above the output Nyquist must not fold back into the band.
        for (from, to, tone) in [
            (16_000, 8_000, 5_000.0),
            (48_000, 8_000, 6_000.0),
            (48_000, 8_000, 12_000.0),
            (48_000, 16_000, 11_000.0),
            (24_000, 8_000, 7_000.0),
        ] {
            let mut r = Resampler::new(from, to).unwrap();
            let out = run_sine(&mut r, tone, 0.5, 10_000.0);
            let alias = f64::from(to) - tone % f64::from(to);
            let alias = if alias > f64::from(to) / 2.0 {
                f64::from(to) - alias
            } else {
                alias
            };
            let level = tone_amplitude(&out, f64::from(to), alias.abs());
            // at least 40 dB of rejection
            assert!(level < 100.0, "{from}->{to}: {tone} Hz aliased at {level}");
        }
    }

    #[test]
    fn stated_delay_matches_measured_delay() {
        for (from, to) in PAIRS {
            let mut r = Resampler::new(from, to).unwrap();
            // An impulse-like click in the middle of otherwise silent audio.
            let frames = 20;
            let mut input = vec![0i16; r.input_len() * frames];
            let click_at = input.len() / 2;
            // a short band-limited burst: 3 samples
            input[click_at] = 20_000;
            let mut out = Vec::new();
            let mut buf = vec![0i16; r.output_len()];
            for chunk in input.chunks_exact(r.input_len()) {
                let n = r.process(chunk, &mut buf).unwrap();
                out.extend_from_slice(&buf[..n]);
            }
            let peak = out
                .iter()
                .enumerate()
                .max_by_key(|(_, s)| s.unsigned_abs())
                .map(|(i, _)| i)
                .unwrap();
            let expected =
                click_at as f64 * f64::from(to) / f64::from(from) + r.delay_samples() as f64;
            assert!(
                (peak as f64 - expected).abs() <= 1.5,
                "{from}->{to}: peak at {peak}, stated delay puts it at {expected}"
            );
        }
    }

    #[test]
    fn wrong_sizes_are_errors() {
        let mut r = Resampler::new(8_000, 16_000).unwrap();
        assert_eq!((r.input_len(), r.output_len()), (160, 320));
        let mut out = vec![0i16; 320];
        assert!(matches!(
            r.process(&[0; 100], &mut out),
            Err(ResampleError::WrongInputLength {
                expected: 160,
                actual: 100
            })
        ));
        assert!(matches!(
            r.process(&[0; 160], &mut out[..10]),
            Err(ResampleError::OutputTooShort { .. })
        ));
        assert!(Resampler::new(0, 8_000).is_err());
        assert!(Resampler::new(8_000, 11_025).is_err());
    }
}
