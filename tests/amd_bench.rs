//! `amd bench` on the four held-out sets: guards the figures measured on
//! them (see models/amd.md). These are regression floors, not the targets of
//! issue 3, which are not met. Each set was looked at after its first run;
//! `heldout4/`, generated after the detector was last frozen, gives the
//! honest figure.

mod common;

use dialgate::detect::amd::AmdConfig;
use dialgate::detect::bench::{Detector, Report, bench};

/// The latency medians each set holds (see the third set).
struct P50 {
    human_ms: f64,
    machine_ms: f64,
}

const BAR: P50 = P50 {
    human_ms: 600.0,
    machine_ms: 2500.0,
};

fn bench_dir(name: &str, p50: P50) -> Report {
    let dir = common::corpus_dir().join(name);
    let r = bench(
        &dir,
        Detector::Dialgate(AmdConfig::default(), None),
        2,
        false,
        60_000,
        &|_, _| {},
    )
    .unwrap();
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
    assert_eq!(r.false_beeps, 0);
    assert!(r.human_decision_ms.p50.unwrap() <= p50.human_ms);
    assert!(r.machine_decision_ms.p50.unwrap() <= p50.machine_ms);
    assert!(r.beep_lag_ms.p50.unwrap() <= 150.0);
    // fax and SIT are all recognised
    for class in ["fax", "sit"] {
        let row = &r.confusion[class];
        assert_eq!(
            row.get(class).copied().unwrap_or(0),
            row.values().sum::<usize>(),
            "{class}: {row:?}"
        );
    }
    r
}

#[test]
fn heldout_figures_do_not_regress() {
    let r = bench_dir("heldout", BAR);
    assert_eq!(r.total, 128);
    assert!(r.accuracy >= 0.98, "accuracy {}", r.accuracy);
    assert!(
        r.human_as_machine.k <= 1,
        "humans called machine: {}",
        r.human_as_machine.k
    );
}

#[test]
fn second_heldout_figures_do_not_regress() {
    // Machine p50 is 2540 ms here, over the 2.5 s: the machine
    // decisions are dense around the median, and waiting out a greeting's
    // pause (human_silence_long_ms) and a pause the VAD has not yet ended
    // (voiced speech) moved three of them past it. See models/amd.md.
    let r = bench_dir(
        "heldout2",
        P50 {
            machine_ms: 2600.0,
            ..BAR
        },
    );
    assert_eq!(r.total, 149);
    assert!(r.accuracy >= 0.96, "accuracy {}", r.accuracy);
    assert!(
        r.human_as_machine.k <= 3,
        "humans called machine: {}",
        r.human_as_machine.k
    );
}

/// `heldout3/` was generated after the policy of 1483823 was frozen; its
/// first figures were 94.8 %; 96.1 % since the tone bank reads clipped
/// beeps and music before a greeting is not dead air. Both latency medians
/// miss the bar here: more of this draw's people said a first
/// sentence of a second or more,
/// after which the detector waits 1200 ms for a greeting to go on (with the
/// 750 ms of before, the human median was 800 ms on this set; the median sits
/// on a cliff between the two waits). See models/amd.md.
#[test]
fn third_heldout_figures_do_not_regress() {
    let r = bench_dir(
        "heldout3",
        P50 {
            human_ms: 850.0,
            machine_ms: 2800.0,
        },
    );
    assert_eq!(r.total, 153);
    assert!(r.accuracy >= 0.96, "accuracy {}", r.accuracy);
    assert!(
        r.human_as_machine.k <= 3,
        "humans called machine: {}",
        r.human_as_machine.k
    );
}

/// `heldout4/` was generated after 0023a5b was frozen (heldout3's misses had
/// led to two fixes); these are its first figures, the ones to believe.
/// Both latency medians miss the bar here too (660 ms, 2640 ms).
#[test]
fn fourth_heldout_figures_do_not_regress() {
    let r = bench_dir(
        "heldout4",
        P50 {
            human_ms: 700.0,
            machine_ms: 2700.0,
        },
    );
    assert_eq!(r.total, 153);
    assert!(r.accuracy >= 0.94, "accuracy {}", r.accuracy);
    assert!(
        r.human_as_machine.k <= 3,
        "humans called machine: {}",
        r.human_as_machine.k
    );
}
