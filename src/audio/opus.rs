//! Opus at the SIP/WebRTC boundary: 20 ms frames at 48 kHz mono, the
//! `opus/48000/2` RTP payload most trunks and browsers offer.
//!
//! Backed by `opus-rs`, a pure-Rust port of libopus 1.6, so `cargo build`
//! needs neither cmake nor a system libopus. The crate is young: it is pinned
//! in `Cargo.toml` and used only through this module. Wire packets are
//! untrusted; a decoder panic inside the crate is caught and reported as an
//! error so one bad packet cannot take a call's task down.

use std::panic::{AssertUnwindSafe, catch_unwind};

/// Opus's sample rate here.
pub const OPUS_RATE: u32 = 48_000;
/// Samples in one 20 ms frame at 48 kHz.
pub const OPUS_FRAME: usize = 960;
/// The largest packet we emit (RFC 6716 caps a frame at 1275 bytes).
pub const MAX_PACKET: usize = 1275;

/// Version string of the Opus implementation (for `dialgate doctor`).
pub const IMPLEMENTATION: &str =
    "opus-rs 0.1.39 (pure Rust port of libopus 1.6, statically linked)";

/// Errors from the Opus codec.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpusError {
    /// The codec refused its configuration or a call.
    #[error("opus {op}: {reason}")]
    Codec {
        op: &'static str,
        reason: &'static str,
    },
    /// `encode` was given the wrong number of samples.
    #[error("opus encoder takes {expected} samples per frame, got {actual}")]
    WrongFrameLength { expected: usize, actual: usize },
    /// The packet could not be decoded.
    #[error("malformed opus packet of {len} bytes")]
    Malformed { len: usize },
}

/// An encoder for 20 ms mono frames at 48 kHz.
pub struct OpusEncoder {
    inner: opus_rs::OpusEncoder,
}

impl OpusEncoder {
    /// A VoIP-tuned encoder at `bitrate_bps` (e.g. 24_000).
    pub fn new(bitrate_bps: i32) -> Result<Self, OpusError> {
        let mut inner = opus_rs::OpusEncoder::new(OPUS_RATE as i32, 1, opus_rs::Application::Voip)
            .map_err(|reason| OpusError::Codec {
                op: "encoder",
                reason,
            })?;
        inner.bitrate_bps = bitrate_bps;
        Ok(Self { inner })
    }

    /// Encodes one frame of [`OPUS_FRAME`] samples into `out`; returns the
    /// packet length.
    pub fn encode(&mut self, pcm: &[i16], out: &mut [u8]) -> Result<usize, OpusError> {
        if pcm.len() != OPUS_FRAME {
            return Err(OpusError::WrongFrameLength {
                expected: OPUS_FRAME,
                actual: pcm.len(),
            });
        }
        self.inner
            .encode_i16(pcm, OPUS_FRAME, out)
            .map_err(|reason| OpusError::Codec {
                op: "encode",
                reason,
            })
    }
}

/// A decoder producing 20 ms mono frames at 48 kHz.
pub struct OpusDecoder {
    inner: opus_rs::OpusDecoder,
    scratch: Vec<f32>,
}

impl OpusDecoder {
    /// A mono 48 kHz decoder.
    pub fn new() -> Result<Self, OpusError> {
        let inner =
            opus_rs::OpusDecoder::new(OPUS_RATE as i32, 1).map_err(|reason| OpusError::Codec {
                op: "decoder",
                reason,
            })?;
        Ok(Self {
            inner,
            // 120 ms: the longest frame a packet may describe
            scratch: vec![0.0; OPUS_FRAME * 6],
        })
    }

    /// Decodes one packet into `out` (at least [`OPUS_FRAME`] samples);
    /// returns the samples written. An empty packet conceals a lost frame.
    pub fn decode(&mut self, packet: &[u8], out: &mut [i16]) -> Result<usize, OpusError> {
        let frame = out.len().min(self.scratch.len());
        let inner = &mut self.inner;
        let scratch = &mut self.scratch[..frame];
        let result = catch_unwind(AssertUnwindSafe(|| inner.decode(packet, frame, scratch)));
        let n = match result {
            Ok(Ok(n)) => n.min(frame),
            Ok(Err(_)) | Err(_) => {
                // A panic may leave the decoder inconsistent: start afresh.
                if result.is_err()
                    && let Ok(fresh) = opus_rs::OpusDecoder::new(OPUS_RATE as i32, 1)
                {
                    self.inner = fresh;
                }
                return Err(OpusError::Malformed { len: packet.len() });
            }
        };
        for (o, &v) in out[..n].iter_mut().zip(&self.scratch[..n]) {
            *o = (v * 32768.0).round().clamp(-32768.0, 32767.0) as i16;
        }
        Ok(n)
    }
}

/// Encodes and decodes one frame of a tone: the self-test `doctor` runs.
pub fn self_test() -> Result<usize, OpusError> {
    let mut enc = OpusEncoder::new(24_000)?;
    let mut dec = OpusDecoder::new()?;
    let pcm: Vec<i16> = (0..OPUS_FRAME)
        .map(|n| (8000.0 * (2.0 * std::f64::consts::PI * 440.0 * n as f64 / 48_000.0).sin()) as i16)
        .collect();
    let mut packet = [0u8; MAX_PACKET];
    let len = enc.encode(&pcm, &mut packet)?;
    let mut out = [0i16; OPUS_FRAME];
    dec.decode(&packet[..len], &mut out)?;
    Ok(len)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tone(freq: f64, frames: usize) -> Vec<i16> {
        (0..OPUS_FRAME * frames)
            .map(|n| {
                (8000.0 * (2.0 * std::f64::consts::PI * freq * n as f64 / 48_000.0).sin()) as i16
            })
            .collect()
    }

    #[test]
    fn tone_survives_encode_decode() {
        let mut enc = OpusEncoder::new(32_000).unwrap();
        let mut dec = OpusDecoder::new().unwrap();
        let input = tone(440.0, 50);
        let mut output = Vec::new();
        let mut packet = [0u8; MAX_PACKET];
        let mut frame = [0i16; OPUS_FRAME];
        for chunk in input.chunks_exact(OPUS_FRAME) {
            let len = enc.encode(chunk, &mut packet).unwrap();
            assert!(len > 2 && len < 400, "packet {len} bytes");
            let n = dec.decode(&packet[..len], &mut frame).unwrap();
            assert_eq!(n, OPUS_FRAME);
            output.extend_from_slice(&frame);
        }
        // Compare levels and pitch over the second half (past codec delay).
        let tail = &output[output.len() / 2..];
        let level = crate::audio::rms_dbfs(tail);
        let expected = crate::audio::rms_dbfs(&input[input.len() / 2..]);
        assert!((level - expected).abs() < 2.0, "{level} vs {expected}");
        let crossings = tail.windows(2).filter(|w| (w[0] < 0) != (w[1] < 0)).count();
        let freq = crossings as f64 / 2.0 / (tail.len() as f64 / 48_000.0);
        assert!((freq - 440.0).abs() < 10.0, "{freq}");
    }

    #[test]
    fn garbage_packets_are_errors_or_audio_never_panics() {
        let mut dec = OpusDecoder::new().unwrap();
        let mut out = [0i16; OPUS_FRAME];
        let mut x: u32 = 7;
        for len in 0..300 {
            let packet: Vec<u8> = (0..len)
                .map(|_| {
                    x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                    (x >> 24) as u8
                })
                .collect();
            let _ = dec.decode(&packet, &mut out);
        }
        // still usable afterwards
        assert!(self_test().is_ok());
    }

    #[test]
    fn wrong_frame_length_is_an_error() {
        let mut enc = OpusEncoder::new(24_000).unwrap();
        let mut packet = [0u8; MAX_PACKET];
        assert!(matches!(
            enc.encode(&[0; 100], &mut packet),
            Err(OpusError::WrongFrameLength {
                expected: 960,
                actual: 100
            })
        ));
    }
}
