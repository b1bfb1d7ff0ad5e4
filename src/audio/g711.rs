//! G.711 μ-law and A-law: the codecs of Twilio Media Streams (μ-law) and of
//! most SIP trunks (PCMU/PCMA). Sits at the carrier boundary of the data path.
//!
//! Bit-exact with the ITU-T G.711 reference as implemented by CPython 3.11's
//! `audioop` (Sun's g711.c): μ-law encodes the top 14 bits of a PCM16 sample,
//! A-law the top 13. `tests` compares all 256 codes and all 65,536 PCM inputs
//! against `fixtures/g711/audioop_reference.bin`. Decoding goes through
//! 256-entry tables built at compile time, so the per-frame path is one load
//! per sample.

const ULAW_BIAS: i32 = 0x84;
const ULAW_CLIP: i32 = 8159;
/// Upper bounds of the eight μ-law segments, on the 14-bit biased magnitude.
const SEG_UEND: [i32; 8] = [0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF];
/// Upper bounds of the eight A-law segments, on the 13-bit magnitude.
const SEG_AEND: [i32; 8] = [0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF];

fn segment(value: i32, ends: &[i32; 8]) -> usize {
    ends.iter().position(|&end| value <= end).unwrap_or(8)
}

/// Encodes one PCM16 sample to μ-law.
#[inline]
pub fn ulaw_encode(sample: i16) -> u8 {
    let mut v = i32::from(sample) >> 2; // 14-bit
    let mask: i32 = if v < 0 {
        v = -v;
        0x7F
    } else {
        0xFF
    };
    v = v.min(ULAW_CLIP) + (ULAW_BIAS >> 2);
    let seg = segment(v, &SEG_UEND);
    if seg >= 8 {
        return (0x7F ^ mask) as u8;
    }
    let uval = ((seg as i32) << 4) | ((v >> (seg + 1)) & 0xF);
    (uval ^ mask) as u8
}

/// Encodes one PCM16 sample to A-law.
#[inline]
pub fn alaw_encode(sample: i16) -> u8 {
    let mut v = i32::from(sample) >> 3; // 13-bit
    let mask: i32 = if v >= 0 {
        0xD5
    } else {
        v = -v - 1;
        0x55
    };
    let seg = segment(v, &SEG_AEND);
    if seg >= 8 {
        return (0x7F ^ mask) as u8;
    }
    let mut aval = (seg as i32) << 4;
    aval |= if seg < 2 {
        (v >> 1) & 0xF
    } else {
        (v >> seg) & 0xF
    };
    (aval ^ mask) as u8
}

const fn ulaw_decode_slow(code: u8) -> i16 {
    let u = !code as i32;
    let mut t = ((u & 0x0F) << 3) + ULAW_BIAS;
    t <<= (u & 0x70) >> 4;
    (if u & 0x80 != 0 {
        ULAW_BIAS - t
    } else {
        t - ULAW_BIAS
    }) as i16
}

const fn alaw_decode_slow(code: u8) -> i16 {
    let a = (code ^ 0x55) as i32;
    let mut t = (a & 0x0F) << 4;
    let seg = (a & 0x70) >> 4;
    match seg {
        0 => t += 8,
        1 => t += 0x108,
        _ => {
            t += 0x108;
            t <<= seg - 1;
        }
    }
    (if a & 0x80 != 0 { t } else { -t }) as i16
}

static ULAW_TABLE: [i16; 256] = {
    let mut out = [0i16; 256];
    let mut i = 0;
    while i < 256 {
        out[i] = ulaw_decode_slow(i as u8);
        i += 1;
    }
    out
};

static ALAW_TABLE: [i16; 256] = {
    let mut out = [0i16; 256];
    let mut i = 0;
    while i < 256 {
        out[i] = alaw_decode_slow(i as u8);
        i += 1;
    }
    out
};

/// Decodes one μ-law code.
#[inline]
pub fn ulaw_decode(code: u8) -> i16 {
    ULAW_TABLE[code as usize]
}

/// Decodes one A-law code.
#[inline]
pub fn alaw_decode(code: u8) -> i16 {
    ALAW_TABLE[code as usize]
}

/// Decodes μ-law bytes into `out`; decodes `min(bytes, out)` samples and
/// returns that count. Never allocates.
#[inline]
pub fn ulaw_decode_into(bytes: &[u8], out: &mut [i16]) -> usize {
    let n = bytes.len().min(out.len());
    for (o, &b) in out[..n].iter_mut().zip(&bytes[..n]) {
        *o = ULAW_TABLE[b as usize];
    }
    n
}

/// Decodes A-law bytes into `out`; returns the samples written.
#[inline]
pub fn alaw_decode_into(bytes: &[u8], out: &mut [i16]) -> usize {
    let n = bytes.len().min(out.len());
    for (o, &b) in out[..n].iter_mut().zip(&bytes[..n]) {
        *o = ALAW_TABLE[b as usize];
    }
    n
}

/// Encodes PCM16 into μ-law bytes; returns the bytes written.
#[inline]
pub fn ulaw_encode_into(pcm: &[i16], out: &mut [u8]) -> usize {
    let n = pcm.len().min(out.len());
    for (o, &s) in out[..n].iter_mut().zip(&pcm[..n]) {
        *o = ulaw_encode(s);
    }
    n
}

/// Encodes PCM16 into A-law bytes; returns the bytes written.
#[inline]
pub fn alaw_encode_into(pcm: &[i16], out: &mut [u8]) -> usize {
    let n = pcm.len().min(out.len());
    for (o, &s) in out[..n].iter_mut().zip(&pcm[..n]) {
        *o = alaw_encode(s);
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    /// CPython 3.11 `audioop` output; see `fixtures/g711/make_reference.py`.
    const REFERENCE: &[u8] = include_bytes!("../../fixtures/g711/audioop_reference.bin");

    fn reference_decode(offset: usize, code: usize) -> i16 {
        let at = offset + code * 2;
        i16::from_le_bytes([REFERENCE[at], REFERENCE[at + 1]])
    }

    #[test]
    fn reference_has_expected_size() {
        assert_eq!(REFERENCE.len(), 65_536 * 2 + 256 * 2 * 2);
    }

    #[test]
    fn ulaw_encode_matches_audioop_for_every_pcm_value() {
        for (i, &expected) in REFERENCE[..65_536].iter().enumerate() {
            let s = (i as i32 - 32_768) as i16;
            assert_eq!(ulaw_encode(s), expected, "pcm {s}");
        }
    }

    #[test]
    fn alaw_encode_matches_audioop_for_every_pcm_value() {
        for (i, &expected) in REFERENCE[65_536..131_072].iter().enumerate() {
            let s = (i as i32 - 32_768) as i16;
            assert_eq!(alaw_encode(s), expected, "pcm {s}");
        }
    }

    #[test]
    fn decode_matches_audioop_for_every_code() {
        for code in 0..256 {
            assert_eq!(
                ulaw_decode(code as u8),
                reference_decode(131_072, code),
                "ulaw {code}"
            );
            assert_eq!(
                alaw_decode(code as u8),
                reference_decode(131_072 + 512, code),
                "alaw {code}"
            );
        }
    }

    #[test]
    fn round_trip_is_idempotent_on_codes() {
        // decode then encode returns the same code (except μ-law's two zeros).
        for code in 0..=255u8 {
            let u = ulaw_encode(ulaw_decode(code));
            assert!(
                u == code || (code == 0x7F && u == 0xFF),
                "ulaw {code:#x} -> {u:#x}"
            );
            assert_eq!(alaw_encode(alaw_decode(code)), code, "alaw {code:#x}");
        }
    }

    #[test]
    fn slice_helpers_stop_at_the_shorter_buffer() {
        let mut out = [0i16; 4];
        assert_eq!(ulaw_decode_into(&[0xFF; 10], &mut out), 4);
        let mut bytes = [0u8; 3];
        assert_eq!(alaw_encode_into(&[0; 8], &mut bytes), 3);
        assert_eq!(bytes, [0xD5; 3]);
    }
}
