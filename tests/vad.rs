//! Silero VAD on real recorded speech (Asterisk prompts, CC-BY-SA-3.0) and
//! on signals that are not speech.

use std::path::Path;

use dialgate::audio::synth::{self, Rng};
use dialgate::audio::wav;
use dialgate::detect::vad::{
    SegmentEvent, Segmenter, SegmenterConfig, SileroVad, VadChunk, VadRate,
};

fn fixture(name: &str) -> Vec<i16> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/speech")
        .join(name);
    wav::read_8k_mono(&path, None).unwrap().1
}

/// Runs VAD + segmenter over 8 kHz audio; returns chunks and events.
fn run(samples: &[i16]) -> (Vec<VadChunk>, Vec<SegmentEvent>) {
    let mut vad = SileroVad::new(VadRate::Hz8000).unwrap();
    let mut seg = Segmenter::new(SegmenterConfig::default());
    let mut chunks = Vec::new();
    let mut events = Vec::new();
    for (i, frame) in samples.chunks(160).enumerate() {
        vad.push(frame, i as u64 * 20, |c| {
            chunks.push(c);
            if let Some(e) = seg.push(c) {
                events.push(e);
            }
        })
        .unwrap();
    }
    (chunks, events)
}

/// Start of audible energy: first 20 ms window above -45 dBFS.
fn energy_onset_ms(samples: &[i16]) -> u64 {
    samples
        .chunks(160)
        .position(|w| dialgate::audio::rms_dbfs(w) > -45.0)
        .unwrap() as u64
        * 20
}

#[test]
fn speech_is_found_where_the_voice_is() {
    for name in ["hello.wav", "agent-newlocation.wav", "vm-intro.wav"] {
        let mut audio = synth::silence(500);
        let speech = fixture(name);
        audio.extend_from_slice(&speech);
        audio.extend(synth::silence(1000));
        let (chunks, events) = run(&audio);
        let onset = energy_onset_ms(&audio);
        let first = events.iter().find_map(|e| match e {
            SegmentEvent::SpeechStart { at_ms } => Some(*at_ms),
            _ => None,
        });
        let first = first.unwrap_or_else(|| panic!("{name}: no speech found"));
        assert!(
            first + 100 >= onset && first <= onset + 150,
            "{name}: speech start {first} ms, energy onset {onset} ms"
        );
        // the segment ends once the clip is over, not long after
        let speech_end = 500 + speech.len() as u64 / 8;
        let last_end = events
            .iter()
            .rev()
            .find_map(|e| match e {
                SegmentEvent::SpeechEnd { at_ms, .. } => Some(*at_ms),
                _ => None,
            })
            .unwrap_or_else(|| panic!("{name}: speech never ended"));
        assert!(
            last_end <= speech_end + 200,
            "{name}: ended {last_end}, clip ends {speech_end}"
        );
        // most chunks inside the voiced part score as speech
        let voiced: Vec<&VadChunk> = chunks
            .iter()
            .filter(|c| c.start_ms >= onset && c.end_ms <= last_end)
            .collect();
        let speechy = voiced.iter().filter(|c| c.prob >= 0.5).count();
        eprintln!(
            "{name}: onset {onset} ms, start {first} ms, end {last_end} ms (clip ends {speech_end} ms), {speechy}/{} voiced chunks speech",
            voiced.len()
        );
        assert!(
            speechy * 10 >= voiced.len() * 7,
            "{name}: only {speechy} of {} voiced chunks scored as speech",
            voiced.len()
        );
        // the leading silence is not speech
        assert!(
            chunks
                .iter()
                .filter(|c| c.end_ms <= 450)
                .all(|c| c.prob < 0.35)
        );
    }
}

#[test]
fn non_speech_never_opens_a_segment() {
    let mut rng = Rng::new(42);
    let cases: Vec<(&str, Vec<i16>)> = vec![
        ("digital silence", synth::silence(5000)),
        ("white noise -40 dBFS", synth::noise(&mut rng, -40.0, 5000)),
        ("white noise -25 dBFS", synth::noise(&mut rng, -25.0, 5000)),
        ("1 kHz tone", synth::tones(&[1000.0], -12.0, 3000)),
        ("ringback", synth::ringback(8000)),
        ("busy", synth::busy(4000)),
        ("dial tone", synth::tones(&[350.0, 440.0], -16.0, 4000)),
    ];
    for (name, audio) in cases {
        let (chunks, events) = run(&audio);
        let max = chunks.iter().map(|c| c.prob).fold(0.0f32, f32::max);
        assert!(
            events.is_empty(),
            "{name}: segments {events:?} (max p {max:.2})"
        );
    }
}

#[test]
fn state_resets_between_calls() {
    let speech = fixture("hello.wav");
    let mut vad = SileroVad::new(VadRate::Hz8000).unwrap();
    let mut first = Vec::new();
    vad.push(&speech, 0, |c| first.push(c.prob)).unwrap();
    vad.reset();
    let mut second = Vec::new();
    vad.push(&speech, 0, |c| second.push(c.prob)).unwrap();
    assert_eq!(
        first, second,
        "reset must make the detector forget the call"
    );
}

#[test]
fn sixteen_khz_mode_agrees_with_eight() {
    let speech8 = fixture("agent-newlocation.wav");
    // upsample to 16 kHz through the resampler
    let mut r = dialgate::audio::resample::Resampler::new(8000, 16_000).unwrap();
    let mut speech16 = Vec::new();
    let mut buf = vec![0i16; r.output_len()];
    let mut padded = speech8.clone();
    padded.resize(speech8.len().div_ceil(160) * 160 + 160, 0);
    for c in padded.chunks_exact(160) {
        let n = r.process(c, &mut buf).unwrap();
        speech16.extend_from_slice(&buf[..n]);
    }
    let mut vad16 = SileroVad::new(VadRate::Hz16000).unwrap();
    let mut probs16 = Vec::new();
    vad16.push(&speech16, 0, |c| probs16.push(c.prob)).unwrap();
    let (chunks8, _) = run(&speech8);
    let frac = |p: &[f32]| p.iter().filter(|&&x| x >= 0.5).count() as f64 / p.len() as f64;
    let p8: Vec<f32> = chunks8.iter().map(|c| c.prob).collect();
    assert!(
        frac(&probs16) > 0.5 && frac(&p8) > 0.5,
        "16k {} 8k {}",
        frac(&probs16),
        frac(&p8)
    );
    assert!((frac(&probs16) - frac(&p8)).abs() < 0.2);
}

#[test]
fn wrong_chunk_size_is_an_error() {
    let mut vad = SileroVad::new(VadRate::Hz8000).unwrap();
    assert!(vad.process_chunk(&[0; 100]).is_err());
}

/// A frame concealed on the SIP leg (a lost packet filled in) is not heard
/// by the VAD, but media time passes: the chunk after the hole is stretched
/// over it, so chunks still tile the media clock and speech with holes in
/// it is about as long as without them.
#[test]
fn concealed_frames_are_skipped_but_the_chunks_tile_the_clock() {
    let speech = fixture("vm-intro.wav");
    let (_, whole) = run(&speech);
    let mut vad = SileroVad::new(VadRate::Hz8000).unwrap();
    let mut seg = Segmenter::new(SegmenterConfig::default());
    let (mut chunks, mut events) = (Vec::new(), Vec::new());
    for (i, frame) in speech.chunks(160).enumerate() {
        if i % 10 == 5 {
            vad.skip(20); // lost: one in ten
            continue;
        }
        vad.push(frame, i as u64 * 20, |c| {
            chunks.push(c);
            if let Some(e) = seg.push(c) {
                events.push(e);
            }
        })
        .unwrap();
    }
    for pair in chunks.windows(2) {
        assert_eq!(pair[0].end_ms, pair[1].start_ms, "no gap, no overlap");
    }
    let end = chunks.last().unwrap().end_ms;
    let total = speech.len() as u64 / 8;
    assert!(end <= total && end + 52 >= total, "{end} of {total} ms");
    // the same speech: where it starts, and how much of it there is
    // (a pause of exactly the segmenter's 160 ms may close or not)
    let speech_ms = |events: &[SegmentEvent]| {
        let mut open = None;
        let mut sum = 0;
        for e in events {
            match *e {
                SegmentEvent::SpeechStart { at_ms } => open = Some(at_ms),
                SegmentEvent::SpeechEnd { at_ms, .. } => {
                    sum += at_ms - open.take().unwrap_or(at_ms)
                }
            }
        }
        sum + open.map_or(0, |s| total - s)
    };
    assert_eq!(events.first(), whole.first(), "{events:?} vs {whole:?}");
    let (a, b) = (speech_ms(&events), speech_ms(&whole));
    assert!(a.abs_diff(b) * 10 <= b, "{a} vs {b} ms of speech");
}
