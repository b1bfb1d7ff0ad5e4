//! Deterministic test signals at 8 kHz: tones, dual tones, cadences and
//! seeded noise. Used by tests, benches and the AMD corpus generator, so
//! every "ringback" or "beep" in the repo comes from one place.

use super::SAMPLE_RATE;
use std::f64::consts::TAU;

/// Samples in `ms` milliseconds at 8 kHz.
pub const fn samples(ms: u64) -> usize {
    (ms * SAMPLE_RATE as u64 / 1000) as usize
}

/// A sum of sines (`freqs`), each at `dbfs` peak level, lasting `ms`.
pub fn tones(freqs: &[f64], dbfs: f64, ms: u64) -> Vec<i16> {
    let amp = 32767.0 * 10f64.powf(dbfs / 20.0);
    (0..samples(ms))
        .map(|n| {
            let t = n as f64 / f64::from(SAMPLE_RATE);
            let v: f64 = freqs.iter().map(|f| (TAU * f * t).sin()).sum();
            (amp * v).round().clamp(-32768.0, 32767.0) as i16
        })
        .collect()
}

/// `ms` of digital silence.
pub fn silence(ms: u64) -> Vec<i16> {
    vec![0; samples(ms)]
}

/// A small, fast, seeded PRNG (xorshift64*), so generated audio is identical
/// on every machine.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator from `seed` (0 is remapped).
    pub fn new(seed: u64) -> Self {
        Self(seed.max(1).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in [0, 1).
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in [lo, hi).
    pub fn range(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.uniform()
    }

    /// Standard normal (Box–Muller).
    pub fn normal(&mut self) -> f64 {
        let u1 = self.uniform().max(1e-12);
        let u2 = self.uniform();
        (-2.0 * u1.ln()).sqrt() * (TAU * u2).cos()
    }
}

/// White Gaussian noise at `dbfs` RMS.
pub fn noise(rng: &mut Rng, dbfs: f64, ms: u64) -> Vec<i16> {
    let sigma = 32768.0 * 10f64.powf(dbfs / 20.0);
    (0..samples(ms))
        .map(|_| (sigma * rng.normal()).round().clamp(-32768.0, 32767.0) as i16)
        .collect()
}

/// Repeats `on_ms` of `freqs` then `off_ms` of silence until `total_ms`.
pub fn cadence(freqs: &[f64], dbfs: f64, on_ms: u64, off_ms: u64, total_ms: u64) -> Vec<i16> {
    let on = tones(freqs, dbfs, on_ms);
    let mut out = Vec::with_capacity(samples(total_ms));
    while out.len() < samples(total_ms) {
        out.extend_from_slice(&on);
        out.extend(std::iter::repeat_n(0, samples(off_ms)));
    }
    out.truncate(samples(total_ms));
    out
}

/// North American ringback: 440 + 480 Hz, 2 s on, 4 s off.
pub fn ringback(total_ms: u64) -> Vec<i16> {
    cadence(&[440.0, 480.0], -16.0, 2000, 4000, total_ms)
}

/// North American busy: 480 + 620 Hz, 0.5 s on, 0.5 s off.
pub fn busy(total_ms: u64) -> Vec<i16> {
    cadence(&[480.0, 620.0], -16.0, 500, 500, total_ms)
}

/// The DTMF pair for `digit`, if it is one.
pub fn dtmf_freqs(digit: char) -> Option<[f64; 2]> {
    const ROWS: [f64; 4] = [697.0, 770.0, 852.0, 941.0];
    const COLS: [f64; 4] = [1209.0, 1336.0, 1477.0, 1633.0];
    const KEYS: [&str; 4] = ["123A", "456B", "789C", "*0#D"];
    KEYS.iter().enumerate().find_map(|(r, row)| {
        row.chars()
            .position(|c| c == digit.to_ascii_uppercase())
            .map(|c| [ROWS[r], COLS[c]])
    })
}

/// DTMF digits, 100 ms tone and 100 ms gap each.
pub fn dtmf(digits: &str) -> Vec<i16> {
    let mut out = Vec::new();
    for d in digits.chars() {
        if let Some(f) = dtmf_freqs(d) {
            out.extend(tones(&f, -10.0, 100));
            out.extend(silence(100));
        }
    }
    out
}

/// Mixes `b` into `a` at offset `at` (samples), saturating.
pub fn mix_into(a: &mut Vec<i16>, b: &[i16], at: usize) {
    if a.len() < at + b.len() {
        a.resize(at + b.len(), 0);
    }
    for (x, &y) in a[at..].iter_mut().zip(b) {
        *x = x.saturating_add(y);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_and_lengths() {
        let t = tones(&[1000.0], -6.0, 500);
        assert_eq!(t.len(), 4000);
        let peak = t.iter().map(|s| s.unsigned_abs()).max().unwrap();
        assert!((f64::from(peak) / 32767.0 - 0.501).abs() < 0.01);
        let mut rng = Rng::new(1);
        let n = noise(&mut rng, -20.0, 1000);
        assert!((super::super::rms_dbfs(&n) + 20.0).abs() < 0.5);
        assert_eq!(Rng::new(7).next_u64(), Rng::new(7).next_u64());
        assert_eq!(dtmf_freqs('5'), Some([770.0, 1336.0]));
        assert_eq!(dtmf_freqs('x'), None);
        assert_eq!(ringback(6000).len(), 48_000);
    }
}
