//! The whole AMD pipeline per 20 ms frame (tone bank, Silero VAD every
//! 32 ms, features, the ONNX classifier on every VAD chunk, the policy), on
//! a voicemail clip from the corpus, and the memory one detector holds.
//! Run with `cargo bench --bench amd`.

use std::path::Path;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use dialgate::audio::AudioFrame;
use dialgate::audio::wav::WavReader;
use dialgate::detect::amd::{Amd, AmdConfig};
use dialgate::detect::tones::{ToneBank, ToneConfig};

fn frames(file: &str) -> Vec<AudioFrame> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/amd/train")
        .join(file);
    let mut r = WavReader::open(&path).unwrap();
    std::iter::from_fn(|| r.next_frame().unwrap()).collect()
}

fn amd_benches(c: &mut Criterion) {
    // A greeting that keeps the detector busy until its beep.
    let clip = frames("personal_vm_beep_0004.wav");
    // Never decide: measures the full per-frame cost, not the cheap
    // after-decision path.
    let cfg = AmdConfig {
        machine_threshold: 2.0,
        human_threshold: -1.0,
        deadline_human_threshold: -1.0,
        long_speech_ms: u64::MAX,
        no_speech_timeout_ms: u64::MAX,
        max_wait_ms: u64::MAX,
        ..AmdConfig::default()
    };
    for llm in [None, Some(1500)] {
        let amd = Amd::new(AmdConfig {
            llm_budget_ms: llm,
            ..cfg
        })
        .unwrap();
        eprintln!(
            "memory per detector, LLM {}: {} bytes ({:.1} KiB)",
            if llm.is_some() {
                "on (keeps 8 s of greeting)"
            } else {
                "off"
            },
            amd.memory_bytes(),
            amd.memory_bytes() as f64 / 1024.0
        );
    }
    c.bench_function("amd/pipeline_per_20ms_frame", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            let mut done = 0;
            while done < iters {
                let mut amd = Amd::new(cfg).unwrap();
                let n = (iters - done).min(clip.len() as u64) as usize;
                let start = Instant::now();
                for f in &clip[..n] {
                    amd.push_frame(f).unwrap();
                    while amd.poll_event().is_some() {}
                }
                total += start.elapsed();
                done += n as u64;
            }
            total
        })
    });
    let mut bank = ToneBank::new(ToneConfig::default());
    let mut i = 0;
    c.bench_function("amd/tone_bank_per_20ms_frame", |b| {
        b.iter(|| {
            bank.push_frame(&clip[i % clip.len()], |_| {});
            i += 1;
        })
    });
}

criterion_group!(benches, amd_benches);
criterion_main!(benches);
