//! `amd bench` on the eight held-out sets and on three copies of
//! `heldout8/`, each changed in one thing (`heldout8_clean/`: greetings
//! without a room of their own; `heldout8_prompt/`: people who speak at
//! once; `heldout8_late/`: greetings that start late): guards the figures
//! measured on them (see models/amd.md). These are regression floors, not
//! the targets of issue 3, which are not all met. Every committed set has
//! guided a change since its first run; the honest figures are those of a
//! fresh draw run once (`heldout12` in models/amd.md, not committed).
//!
//! Retraining moves these figures even when nothing else changes: the old
//! table trained with two other seeds called up to one more person of a
//! set a machine and moved a set's human median by up to 51 ms, which is
//! why the model is now an average over five seeds. Floors moved with the
//! onset gate's table and that model (2026-12-06): one more person called
//! a machine in `heldout3` (a business answer, p 0.92) and in `heldout7`
//! (a long sentence, p 0.90), two more recordings called people in
//! `heldout3` (a personal greeting and one after hold music) so its
//! accuracy floor is 0.96, and the machine medians of `heldout`,
//! `heldout2` and `heldout4` 40-80 ms later. Over every held-out set and
//! copy (2,996 clips, crowd and TV copies aside) it calls 17 people
//! machines against 18, 92 recordings people against 89, and the median
//! of the sets' machine medians is 3240 ms against 3340 (models/amd.md,
//! "Voices behind the person").

mod common;

use dialgate::detect::amd::AmdConfig;
use dialgate::detect::bench::{BenchError, Detector, Report, bench};

/// What a set holds: its size, and floors at the figures measured on it.
struct Floor {
    clips: usize,
    accuracy: f64,
    humans_as_machine: usize,
    /// `None` for a set of machines only.
    human_p50_ms: Option<f64>,
    /// `None` for a set of people only.
    machine_p50_ms: Option<f64>,
}

/// The human latency bar, which some sets hold.
const BAR_HUMAN_P50_MS: f64 = 600.0;

/// `amd bench DIR` with the default detector, on two threads.
fn bench_dir(dir: &std::path::Path, per_file: bool) -> Result<Report, BenchError> {
    bench(
        dir,
        Detector::Dialgate(&AmdConfig::default(), None),
        2,
        per_file,
        Default::default(),
        &|_, _| {},
    )
}

fn holds(name: &str, floor: Floor) {
    let dir = common::corpus_dir().join(name);
    let r = bench_dir(&dir, true).unwrap();
    eprintln!(
        "{name}: accuracy {:.3}, humans as machine {}/{}, machines as human {}/{}, human p50 {:?} ms, machine p50 {:?} ms, beep lag p50 {:?} ms",
        r.accuracy,
        r.human_as_machine.k,
        r.human_as_machine.n,
        r.machine_as_human.k,
        r.machine_as_human.n,
        r.human_decision_ms.p50,
        r.machine_decision_ms.p50,
        r.beep_lag_ms.p50
    );
    // what the issue asks on any set
    assert_eq!(r.silence_as_machine, 0, "silence is never called machine");
    assert_eq!(r.false_beeps, Some(0));
    if let Some(human_p50_ms) = floor.human_p50_ms {
        assert!(r.human_decision_ms.p50.unwrap() <= human_p50_ms);
    }
    if let Some(machine_p50_ms) = floor.machine_p50_ms {
        assert!(r.machine_decision_ms.p50.unwrap() <= machine_p50_ms);
        assert!(r.beep_lag_ms.p50.unwrap() <= 150.0);
    }
    // fax and SIT are all recognised
    for class in ["fax", "sit"] {
        let Some(row) = r.confusion.get(class) else {
            continue;
        };
        assert_eq!(
            row.get(class).copied().unwrap_or(0),
            row.values().sum::<usize>(),
            "{class}: {row:?}"
        );
    }
    // A short greeting called a person (its beep came after the fast human
    // path's wait) is still caught: its beep follows within the late-beep
    // window, and the call gets `machine_end_beep` at the beep's end.
    for f in r.files.as_ref().unwrap() {
        if f.scenario == "short_greeting_beep" && f.predicted == "human" {
            let late = f
                .result
                .timeline
                .iter()
                .filter(|t| t.trigger == "late_beep");
            assert_eq!(late.count(), 2, "{}: {:?}", f.file, f.result.timeline);
            assert_eq!(
                f.result.machine_end.as_deref(),
                Some("machine_end_beep"),
                "{}",
                f.file
            );
        }
    }
    assert!(r.late_beep_corrections <= r.machine_as_human.k);
    assert_eq!(r.total, floor.clips);
    assert!(r.accuracy >= floor.accuracy, "accuracy {}", r.accuracy);
    assert!(
        r.human_as_machine.k <= floor.humans_as_machine,
        "humans called machine: {}",
        r.human_as_machine.k
    );
}

#[test]
fn heldout_figures_do_not_regress() {
    holds(
        "heldout",
        Floor {
            clips: 128,
            accuracy: 0.97,
            humans_as_machine: 0,
            human_p50_ms: Some(BAR_HUMAN_P50_MS),
            machine_p50_ms: Some(3150.0),
        },
    );
}

#[test]
fn second_heldout_figures_do_not_regress() {
    holds(
        "heldout2",
        Floor {
            clips: 149,
            accuracy: 0.97,
            humans_as_machine: 1,
            human_p50_ms: Some(BAR_HUMAN_P50_MS),
            machine_p50_ms: Some(2900.0),
        },
    );
}

/// `heldout3/` was generated after the policy of 1483823 was frozen. Both
/// latency medians miss the bar here: more of this draw's people
/// said a first sentence of a second or more, after which the detector
/// waits 1200 ms for a greeting to go on (the median sits on a cliff
/// between that wait and the 450 ms after a short hello). See
/// models/amd.md.
#[test]
fn third_heldout_figures_do_not_regress() {
    holds(
        "heldout3",
        Floor {
            clips: 153,
            accuracy: 0.96,
            humans_as_machine: 1,
            human_p50_ms: Some(750.0),
            machine_p50_ms: Some(3250.0),
        },
    );
}

/// `heldout4/` was generated after 0023a5b was frozen; its misses were read
/// while the noise-floor feature was built, so it no longer gives the
/// honest figure either.
#[test]
fn fourth_heldout_figures_do_not_regress() {
    holds(
        "heldout4",
        Floor {
            clips: 153,
            accuracy: 0.96,
            humans_as_machine: 1,
            human_p50_ms: Some(BAR_HUMAN_P50_MS),
            machine_p50_ms: Some(3000.0),
        },
    );
}

/// `heldout5/` was generated after 435cb3d (the noise-floor feature) was
/// frozen; these are its first figures. Its draw has
/// more people whose hello lasts a second or more, so its human median sits
/// on the far side of the 1200 ms wait (951 ms); the timing-only detector
/// of 98ebb12 scored 91.7 % here with 10/76 humans called machine. The
/// machine median's floor was 3250 ms until a deadline machine needed some
/// voice (2026-12-06): a greeting after hold music, called a machine on the
/// music alone at 2560 ms, now waits for its voice (4880 ms), and the
/// median moved from 3180 to 3340 ms.
#[test]
fn fifth_heldout_figures_do_not_regress() {
    holds(
        "heldout5",
        Floor {
            clips: 156,
            accuracy: 0.97,
            humans_as_machine: 1,
            human_p50_ms: Some(650.0),
            machine_p50_ms: Some(3350.0),
        },
    );
}

/// `heldout6/` was generated after a2e1748 was frozen. Its first run was of
/// a candidate that was not kept (see models/amd.md); this detector's run
/// on it came second, and nothing was changed after it. A hard draw: more
/// people who say a second or more, and short greeting lines whose beep
/// comes late. The machine median's floor moved from 2600 to 2650 ms with
/// the speech-contrast rule (`AmdConfig::speech_contrast_min_db`): the
/// greeting after hold music it turned from a machine into a person had
/// been called a machine at 2000 ms on the music alone, before the
/// greeting began; without it the median is 2640 ms.
#[test]
fn sixth_heldout_figures_do_not_regress() {
    holds(
        "heldout6",
        Floor {
            clips: 145,
            accuracy: 0.97,
            humans_as_machine: 0,
            human_p50_ms: Some(750.0),
            machine_p50_ms: Some(2650.0),
        },
    );
}

/// `heldout7/` was generated after a2e1748 was frozen and after
/// `heldout6/` had been looked at. a2e1748 scored 98.5 % here, 2440 ms at
/// the machine median; the clean-greeting model that followed scores the
/// same, 2660 ms (its threshold of 0.9), and 98.5 % instead of 93.3 % on
/// the same machines with clean greetings (not committed).
#[test]
fn seventh_heldout_figures_do_not_regress() {
    holds(
        "heldout7",
        Floor {
            clips: 135,
            accuracy: 0.97,
            humans_as_machine: 3,
            human_p50_ms: Some(BAR_HUMAN_P50_MS),
            machine_p50_ms: Some(3050.0),
        },
    );
}

/// `heldout8/` was generated at the start of 2026-12-05's work and first
/// run when the clean-greeting model (threshold 0.9) was frozen: 2720 ms at
/// the machine median, against the 2.5 s. The onset copies that
/// followed (people who speak at once, greetings that start late) took the
/// model off when speech began, and the median to 2960 ms.
#[test]
fn eighth_heldout_figures_do_not_regress() {
    holds(
        "heldout8",
        Floor {
            clips: 138,
            accuracy: 0.99,
            humans_as_machine: 0,
            human_p50_ms: Some(BAR_HUMAN_P50_MS),
            machine_p50_ms: Some(3150.0),
        },
    );
}

/// `heldout8/`'s machines again, with greetings that carry no room of
/// their own (`generate.py --clean-greetings`): a carrier's or an IVR's
/// studio prompt, or a phone's noise suppression. The floor then says
/// nothing, and timing must. The detector before the clean training copies
/// called 9 of these 60 recordings people.
#[test]
fn eighth_heldout_clean_greetings_do_not_regress() {
    holds(
        "heldout8_clean",
        Floor {
            clips: 60,
            accuracy: 0.96,
            humans_as_machine: 0,
            human_p50_ms: None,
            machine_p50_ms: Some(4050.0),
        },
    );
}

/// `heldout8/`'s people again, speaking 50-280 ms after answer instead of
/// 250-1400 ms (`generate.py --prompt-humans`): one who answers with the
/// phone at the ear, or a recording trimmed to the pickup. Every training
/// greeting started within 900 ms and no training person within 250 ms, so
/// the model of 0722120 took prompt speech for a recording and called 22 of
/// these 62 people machines (245 of 621 on prompt copies of
/// `heldout2`-`heldout10`). The model now trains on prompt copies of its
/// people too (`train_prompt/`).
#[test]
fn eighth_heldout_prompt_people_do_not_regress() {
    holds(
        "heldout8_prompt",
        Floor {
            clips: 62,
            accuracy: 0.98,
            humans_as_machine: 1,
            human_p50_ms: Some(BAR_HUMAN_P50_MS),
            machine_p50_ms: None,
        },
    );
}

/// `heldout8/`'s machines again, with the greeting starting 900-2500 ms
/// after answer instead of 80-900 ms (`generate.py --late-greetings`): a
/// voicemail system that takes its time, or plays a short silence first.
/// The model trained before `train_late/` took late speech for a person and
/// called 13 of these 60 recordings people (115 of 504 on late copies of
/// `heldout2`-`heldout10`), at a machine median of 6.6 s.
#[test]
fn eighth_heldout_late_greetings_do_not_regress() {
    holds(
        "heldout8_late",
        Floor {
            clips: 60,
            accuracy: 0.915,
            humans_as_machine: 0,
            human_p50_ms: None,
            machine_p50_ms: Some(4200.0),
        },
    );
}

/// One unreadable file among many recordings is listed with its reason and
/// left out of the figures; the other clips still count. A corpus of which
/// nothing can be read is an error that says why.
#[test]
fn an_unreadable_clip_is_skipped_and_named() {
    let src = common::corpus_dir().join("heldout");
    let dir = tempfile::tempdir().unwrap();
    let (human, machine) = ("hello_pause_hello_0003.wav", "greeting_pauses_0002.wav");
    for f in [human, machine] {
        std::fs::copy(src.join(f), dir.path().join(f)).unwrap();
    }
    std::fs::write(dir.path().join("notes.wav"), b"not audio at all").unwrap();
    std::fs::write(
        dir.path().join("labels.csv"),
        format!(
            "file,label,speech_end_ms,scenario\n{human},human,1722,a\nnotes.wav,human,800,a\n\
             {machine},machine,,b\ngone.wav,machine,,b\n"
        ),
    )
    .unwrap();
    let run = || bench_dir(dir.path(), false);
    let r = run().unwrap();
    assert_eq!(r.total, 2);
    assert_eq!(r.accuracy, 1.0);
    assert_eq!((r.human_as_machine.n, r.machine_as_human.n), (1, 1));
    let skipped: Vec<(&str, &str)> = r
        .skipped
        .iter()
        .map(|s| (s.file.as_str(), s.error.as_str()))
        .collect();
    assert_eq!(skipped.len(), 2, "{skipped:?}");
    assert_eq!(skipped[0].0, "notes.wav");
    assert!(skipped[0].1.contains("not a WAV file"), "{skipped:?}");
    assert_eq!(skipped[1].0, "gone.wav");
    assert!(skipped[1].1.contains("gone.wav"), "{skipped:?}");

    std::fs::write(
        dir.path().join("labels.csv"),
        "file,label\nnotes.wav,human\ngone.wav,machine\n",
    )
    .unwrap();
    let err = run().unwrap_err().to_string();
    assert!(
        err.contains("none of its 2 clips") && err.contains("not a WAV file"),
        "{err}"
    );
}

/// Recordings labelled only human or machine say nothing about beeps: a
/// beep found on one of their voicemails is neither false nor missed, and
/// the bench says so instead of counting it. An empty `beep_end_ms` cell
/// still means "no beep" (AMD.md).
#[test]
fn beeps_are_not_scored_without_a_beep_column() {
    let src = common::corpus_dir().join("heldout");
    let dir = tempfile::tempdir().unwrap();
    let vm = "personal_vm_beep_0050.wav";
    std::fs::copy(src.join(vm), dir.path().join(vm)).unwrap();
    let run = |labels: String| {
        std::fs::write(dir.path().join("labels.csv"), labels).unwrap();
        bench_dir(dir.path(), false).unwrap()
    };
    let r = run(format!("file,label\n{vm},machine\n"));
    assert_eq!(r.accuracy, 1.0);
    assert_eq!((r.missed_beeps, r.false_beeps), (None, None));
    assert_eq!(r.beep_lag_ms.n, 0);
    let text = dialgate::detect::bench::format_report(&r, &[]);
    assert!(text.contains("not labelled"), "{text}");
    let json = serde_json::to_value(&r).unwrap();
    assert!(json["false_beeps"].is_null() && json["missed_beeps"].is_null());

    let r = run(format!("file,label,beep_end_ms\n{vm},machine,\n"));
    assert_eq!((r.missed_beeps, r.false_beeps), (Some(0), Some(1)));
    let r = run(format!("file,label,beep_end_ms\n{vm},machine,6226\n"));
    assert_eq!((r.missed_beeps, r.false_beeps), (Some(0), Some(0)));
    assert_eq!(r.beep_lag_ms.n, 1);
}
