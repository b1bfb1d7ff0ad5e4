//! Packet-loss concealment for 8 kHz PCM: what the call hears in place of
//! audio that never arrived.
//!
//! On the SIP leg a lost RTP packet, or a sender that stops sending in a
//! pause (silence suppression), leaves a hole in the callee's audio. The
//! media clock must still run through it: AMD measures pauses and
//! utterances in media time, and a clock that skips holes makes a person's
//! pause too short and a greeting's sentence too short. Zeros would keep
//! the clock but sound like a click of digital silence, which the VAD can
//! take for the onset of speech. So the hole is filled the way G.711
//! Appendix I does it, simplified: repeat the last pitch period of what was
//! heard, at full level for 10 ms, then fading by a fifth every 10 ms to
//! silence at 60 ms; when audio returns, cross-fade into it over 4 ms.
//!
//! Sans-IO and allocation-free: a fixed history, samples in and out.

/// Shortest and longest pitch period searched, in samples (200 Hz and
/// 66.7 Hz at 8 kHz, as Appendix I).
const MIN_PERIOD: usize = 40;
const MAX_PERIOD: usize = 120;
/// Samples of history kept: the correlation window plus the longest lag.
const HISTORY: usize = 2 * MAX_PERIOD + MAX_PERIOD / 2;
/// Samples of a hole played at full level (10 ms)…
const HOLD: usize = 80;
/// …then the fade to silence (50 ms more).
const FADE: usize = 400;
/// How much of a hole is concealed (60 ms); the rest is silence. Codecs
/// that conceal their own holes (Opus) stop at the same point.
pub const CONCEALED_SAMPLES: usize = HOLD + FADE;
/// Samples over which returning audio is cross-faded from the concealment.
const BLEND: usize = 32;

/// Conceals holes in one stream of 8 kHz audio.
#[derive(Debug, Clone)]
pub struct Concealer {
    /// The last [`HISTORY`] samples heard, oldest first.
    history: [i16; HISTORY],
    /// The pitch period being repeated, once a hole began.
    period: usize,
    /// Samples of the current hole concealed so far.
    concealed: usize,
    /// True when the last samples were concealed: the next audio heard is
    /// cross-faded into.
    in_hole: bool,
}

impl Default for Concealer {
    fn default() -> Self {
        Self {
            history: [0; HISTORY],
            period: MIN_PERIOD,
            concealed: 0,
            in_hole: false,
        }
    }
}

impl Concealer {
    /// Audio that arrived: kept as history. After a hole its first 4 ms
    /// are cross-faded from the concealment's continuation (in place), so
    /// the seam does not click.
    pub fn heard(&mut self, pcm: &mut [i16]) {
        if self.in_hole {
            let n = BLEND.min(pcm.len());
            for (i, s) in pcm[..n].iter_mut().enumerate() {
                let w = (i + 1) as f32 / (n + 1) as f32;
                let c = f32::from(self.next_concealed());
                *s = (c * (1.0 - w) + f32::from(*s) * w) as i16;
            }
            self.in_hole = false;
            self.concealed = 0;
        }
        self.remember(pcm);
    }

    /// Fills `out` with the continuation of what was heard last; false
    /// once the hole has faded to silence before `out` began (then `out`
    /// is silence, to be heard as such).
    pub fn conceal(&mut self, out: &mut [i16]) -> bool {
        if !self.in_hole {
            self.period = self.pitch_period();
            self.concealed = 0;
            self.in_hole = true;
        }
        let fading = self.concealed < CONCEALED_SAMPLES;
        for s in out.iter_mut() {
            *s = self.next_concealed();
        }
        fading
    }

    /// The next sample of the hole: the last period heard before it,
    /// cycled, at the hole's gain.
    fn next_concealed(&mut self) -> i16 {
        let p = self.period;
        // cycle through the last period heard before the hole
        let k = self.concealed % p;
        let v = f32::from(self.history[HISTORY - p + k]);
        let g = gain(self.concealed);
        self.concealed += 1;
        (v * g) as i16
    }

    /// Appends heard samples to the history. Concealed ones are not
    /// added: a hole cycles the period found at its start.
    fn remember(&mut self, pcm: &[i16]) {
        if pcm.len() >= HISTORY {
            self.history.copy_from_slice(&pcm[pcm.len() - HISTORY..]);
        } else {
            self.history.copy_within(pcm.len().., 0);
            self.history[HISTORY - pcm.len()..].copy_from_slice(pcm);
        }
    }

    /// The lag in [`MIN_PERIOD`]..=[`MAX_PERIOD`] at which the last
    /// [`MAX_PERIOD`] samples best match the ones before them (normalised
    /// cross-correlation). For noise any lag will do: the fade ends it soon.
    fn pitch_period(&self) -> usize {
        let tail = &self.history[HISTORY - MAX_PERIOD..];
        let mut best = (MIN_PERIOD, f64::MIN);
        for lag in MIN_PERIOD..=MAX_PERIOD {
            let back = &self.history[HISTORY - MAX_PERIOD - lag..HISTORY - lag];
            let (mut xy, mut yy) = (0.0f64, 0.0f64);
            for (&x, &y) in tail.iter().zip(back) {
                xy += f64::from(x) * f64::from(y);
                yy += f64::from(y) * f64::from(y);
            }
            let score = if yy > 0.0 { xy / yy.sqrt() } else { 0.0 };
            if score > best.1 {
                best = (lag, score);
            }
        }
        best.0
    }
}

/// Gain at sample `n` of a hole: 1 for 10 ms, then down linearly to 0 at
/// 60 ms.
fn gain(n: usize) -> f32 {
    if n < HOLD {
        1.0
    } else {
        1.0 - ((n - HOLD) as f32 / FADE as f32).min(1.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sine(hz: f64, from: usize, n: usize) -> Vec<i16> {
        (from..from + n)
            .map(|i| (8000.0 * (2.0 * std::f64::consts::PI * hz * i as f64 / 8000.0).sin()) as i16)
            .collect()
    }

    #[test]
    fn a_voiced_sound_carries_on_through_a_short_hole() {
        // 100 Hz: a period of exactly 80 samples
        let mut c = Concealer::default();
        let mut heard = sine(100.0, 0, 320);
        c.heard(&mut heard);
        let mut hole = [0i16; 80];
        c.conceal(&mut hole);
        let want = sine(100.0, 320, 80);
        let err = hole
            .iter()
            .zip(&want)
            .map(|(&a, &b)| (i32::from(a) - i32::from(b)).abs())
            .max();
        assert!(
            err.unwrap() < 200,
            "the first 10 ms continue the tone: {err:?}"
        );
    }

    #[test]
    fn a_long_hole_fades_to_silence_at_60_ms() {
        let mut c = Concealer::default();
        let mut heard = sine(150.0, 0, 400);
        c.heard(&mut heard);
        let mut hole = [0i16; 640];
        for (i, chunk) in hole.chunks_mut(160).enumerate() {
            assert_eq!(c.conceal(chunk), i < 3, "fading for 60 ms, then silent");
        }
        let peak = |s: &[i16]| s.iter().map(|v| v.unsigned_abs()).max().unwrap();
        assert!(peak(&hole[..80]) > 7000, "full level for 10 ms");
        assert!(peak(&hole[240..320]) < peak(&hole[80..160]), "then fading");
        assert_eq!(peak(&hole[480..]), 0, "silent from 60 ms");
    }

    #[test]
    fn audio_after_a_hole_is_blended_in_and_the_next_hole_starts_afresh() {
        let mut c = Concealer::default();
        c.heard(&mut sine(200.0, 0, 160));
        let mut hole = [0i16; 160];
        c.conceal(&mut hole);
        let mut back = [1000i16; 160];
        c.heard(&mut back);
        assert!(
            back[0] != 1000 && back[BLEND] == 1000,
            "only the seam is blended"
        );
        let mut again = [0i16; 160];
        c.conceal(&mut again);
        assert!(
            again[..80].iter().all(|&v| v == 1000),
            "repeats what it heard last"
        );
    }

    #[test]
    fn a_hole_before_anything_was_heard_is_silence() {
        let mut c = Concealer::default();
        let mut hole = [7i16; 160];
        c.conceal(&mut hole);
        assert!(hole.iter().all(|&v| v == 0));
    }

    #[test]
    fn any_lengths_in_and_out() {
        let mut c = Concealer::default();
        for n in [0usize, 1, 7, 80, 160, 480, 1000] {
            let mut a = sine(120.0, 0, n);
            c.heard(&mut a);
            let mut b = vec![0i16; n];
            c.conceal(&mut b);
        }
    }
}
