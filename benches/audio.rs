//! Per-frame costs of the audio core: G.711, each resampling pair, Opus, and
//! Silero VAD per chunk. Run with `cargo bench --bench audio`.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use dialgate::audio::opus::{MAX_PACKET, OPUS_FRAME, OpusDecoder, OpusEncoder};
use dialgate::audio::resample::Resampler;
use dialgate::audio::{g711, synth};
use dialgate::detect::vad::{SileroVad, VadRate};

fn g711_benches(c: &mut Criterion) {
    let pcm = synth::tones(&[440.0, 1300.0], -12.0, 20);
    let mut ulaw = [0u8; 160];
    g711::ulaw_encode_into(&pcm, &mut ulaw);
    let mut out = [0i16; 160];
    c.bench_function("g711/ulaw_decode_160B", |b| {
        b.iter(|| g711::ulaw_decode_into(black_box(&ulaw), &mut out))
    });
    c.bench_function("g711/ulaw_encode_160", |b| {
        b.iter(|| g711::ulaw_encode_into(black_box(&pcm), &mut ulaw))
    });
}

fn resample_benches(c: &mut Criterion) {
    for (from, to) in [
        (8_000, 16_000),
        (16_000, 8_000),
        (8_000, 24_000),
        (24_000, 8_000),
        (48_000, 8_000),
        (48_000, 16_000),
    ] {
        let mut r = Resampler::new(from, to).unwrap();
        let input: Vec<i16> = (0..r.input_len())
            .map(|n| ((n * 37) % 2000) as i16)
            .collect();
        let mut out = vec![0i16; r.output_len()];
        c.bench_function(
            &format!("resample/{}k_to_{}k_20ms", from / 1000, to / 1000),
            |b| b.iter(|| r.process(black_box(&input), &mut out).unwrap()),
        );
    }
}

fn opus_benches(c: &mut Criterion) {
    let pcm: Vec<i16> = (0..OPUS_FRAME)
        .map(|n| (6000.0 * (n as f64 * 0.0575).sin()) as i16)
        .collect();
    let mut enc = OpusEncoder::new(24_000).unwrap();
    let mut packet = [0u8; MAX_PACKET];
    c.bench_function("opus/encode_20ms_48k", |b| {
        b.iter(|| enc.encode(black_box(&pcm), &mut packet).unwrap())
    });
    let len = enc.encode(&pcm, &mut packet).unwrap();
    let mut dec = OpusDecoder::new().unwrap();
    let mut out = [0i16; OPUS_FRAME];
    c.bench_function("opus/decode_20ms_48k", |b| {
        b.iter(|| dec.decode(black_box(&packet[..len]), &mut out).unwrap())
    });
}

fn vad_benches(c: &mut Criterion) {
    let mut rng = synth::Rng::new(3);
    let chunk = synth::noise(&mut rng, -20.0, 32);
    let mut vad = SileroVad::new(VadRate::Hz8000).unwrap();
    c.bench_function("vad/silero_8k_chunk_256", |b| {
        b.iter(|| vad.process_chunk(black_box(&chunk[..256])).unwrap())
    });
    let chunk16 = synth::noise(&mut rng, -20.0, 64);
    let mut vad16 = SileroVad::new(VadRate::Hz16000).unwrap();
    c.bench_function("vad/silero_16k_chunk_512", |b| {
        b.iter(|| vad16.process_chunk(black_box(&chunk16[..512])).unwrap())
    });
}

criterion_group!(
    benches,
    g711_benches,
    resample_benches,
    opus_benches,
    vad_benches
);
criterion_main!(benches);
