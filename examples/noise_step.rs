// scratch: never commit
use dialgate::audio::{AudioFrame, FRAME_SAMPLES, synth};
use dialgate::detect::amd::{Amd, AmdConfig, AmdEvent};
fn main() {
    let a: Vec<f64> = std::env::args()
        .skip(1)
        .map(|x| x.parse::<f64>().unwrap_or(0.0))
        .collect();
    let seed: u64 = std::env::args().nth(1).unwrap().parse().unwrap();
    let mut rng = synth::Rng::new(seed);
    let mut pcm = Vec::new();
    pcm.extend(synth::noise(&mut rng, a[1], a[2] as u64));
    pcm.extend(synth::noise(&mut rng, a[3], a[4] as u64));
    let mut amd = Amd::new(AmdConfig::default()).unwrap();
    for (i, chunk) in pcm.chunks(FRAME_SAMPLES).enumerate() {
        let mut frame = AudioFrame::silence(i as u64 * 20);
        frame.pcm[..chunk.len()].copy_from_slice(chunk);
        amd.push_frame(&frame).unwrap();
        let ft = amd.frontend().features();
        println!(
            "{:5} lvl={:6.1} sp={} segs={} speech={} voiced={} cur={} floor={:?} p={:.2}",
            frame.end_ms(),
            frame.rms_dbfs(),
            ft.in_speech() as u8,
            ft.segments(),
            ft.speech_ms(),
            ft.voiced_ms(),
            ft.current_segment_ms(),
            ft.floor_rise_db().map(|x| (x * 10.0).round() / 10.0),
            amd.p_machine()
        );
        while let Some(ev) = amd.poll_event() {
            if let AmdEvent::Decision(d) = ev {
                println!("DECISION {d:?}");
            }
        }
    }
    amd.finish();
    while let Some(ev) = amd.poll_event() {
        if let AmdEvent::Decision(d) = ev {
            println!("FINISH DECISION {d:?}");
        }
    }
}
