//! The tone bank over the whole labelled corpus: beeps found where the
//! labels say and nowhere else (not on hold music, ringback, busy, DTMF or
//! speech); SIT and fax recognised.

mod common;

use dialgate::audio::wav::WavReader;
use dialgate::detect::tones::{ToneBank, ToneConfig, ToneEvent};

fn events(path: &std::path::Path) -> Vec<ToneEvent> {
    let mut r = WavReader::open(path).unwrap();
    let mut bank = ToneBank::new(ToneConfig::default());
    let mut out = Vec::new();
    let mut last = 0;
    while let Some(frame) = r.next_frame().unwrap() {
        last = frame.end_ms();
        bank.push_frame(&frame, |e| out.push(e));
    }
    for i in 0..5 {
        bank.push_frame(&dialgate::audio::AudioFrame::silence(last + i * 20), |e| {
            out.push(e)
        });
    }
    out
}

#[test]
fn tone_bank_on_the_corpus() {
    // train and heldout (the top-level labels), the later held-out sets and
    // the clean-greeting copies (the beeps are the same, the rooms are gone)
    // and the prompt-human copies (people: no beep may be found), and the
    // late-greeting copies (the same beeps, later), and two clips of real
    // recorded voices that once fooled the bank (a vowel taken for a beep, a
    // lost frame that split SIT)
    let mut rows = common::labels(&common::corpus_dir());
    for later in [
        "heldout2",
        "heldout3",
        "heldout4",
        "heldout5",
        "heldout6",
        "heldout7",
        "heldout8",
        "train_clean",
        "heldout8_clean",
        "train_prompt",
        "heldout8_prompt",
        "train_late",
        "heldout8_late",
        "recorded_voices",
    ] {
        rows.extend(common::labels(&common::corpus_dir().join(later)));
    }
    assert!(rows.len() >= 1000);
    let mut lags = Vec::new();
    let mut failures = Vec::new();
    let mut missed = Vec::new();
    let mut beep_clips = 0;
    for row in &rows {
        let ev = events(&row.path);
        let beeps: Vec<_> = ev
            .iter()
            .filter_map(|e| match e {
                ToneEvent::Beep(t) => Some(*t),
                _ => None,
            })
            .collect();
        match row.beep_end_ms {
            Some(end) => {
                beep_clips += 1;
                match beeps.last() {
                    Some(b) if b.end_ms.abs_diff(end) <= 60 => {
                        lags.push(b.end_ms as i64 - end as i64)
                    }
                    _ => missed.push(format!(
                        "{}: beep ending {end} not found: {beeps:?}",
                        row.file
                    )),
                }
            }
            None => {
                if !beeps.is_empty() {
                    failures.push(format!(
                        "{} ({}): false beep {beeps:?}",
                        row.file, row.scenario
                    ));
                }
            }
        }
        if row.label == "sit" && !ev.iter().any(|e| matches!(e, ToneEvent::Sit { .. })) {
            failures.push(format!("{}: SIT not recognised: {ev:?}", row.file));
        }
        if row.label == "fax" && !ev.iter().any(|e| matches!(e, ToneEvent::FaxCed { .. })) {
            failures.push(format!("{}: fax not recognised", row.file));
        }
    }
    lags.sort();
    eprintln!(
        "beeps found: {}, lag min/median/max {:?}/{:?}/{:?} ms",
        lags.len(),
        lags.first(),
        lags.get(lags.len() / 2),
        lags.last()
    );
    eprintln!(
        "missed beeps: {} of {beep_clips}\n{}",
        missed.len(),
        missed.join("\n")
    );
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
    // (clipped beeps included: the bank reads a clipped frame's frequency
    // from its zero crossings)
    assert!(missed.is_empty(), "{} beeps missed", missed.len());
}
