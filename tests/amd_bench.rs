//! `amd bench` on the two held-out sets: guards the figures measured on
//! them (see models/amd.md). These are regression floors, not the targets of
//! issue 3, which are not met: `heldout/` was looked at while the policy was
//! chosen, and `heldout2/`, generated after it was frozen, gives the lower
//! and more honest figure.

mod common;

use dialgate::detect::amd::AmdConfig;
use dialgate::detect::bench::{Detector, Report, bench};

fn bench_dir(name: &str, machine_p50_max_ms: f64) -> Report {
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
    // what the issue asks on any set, and holds on both (machine p50: see
    // the second set)
    assert_eq!(r.silence_as_machine, 0, "silence is never called machine");
    assert_eq!(r.false_beeps, 0);
    assert!(r.human_decision_ms.p50.unwrap() <= 600.0);
    assert!(r.machine_decision_ms.p50.unwrap() <= machine_p50_max_ms);
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
    let r = bench_dir("heldout", 2500.0);
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
    let r = bench_dir("heldout2", 2600.0);
    assert_eq!(r.total, 149);
    assert!(r.accuracy >= 0.95, "accuracy {}", r.accuracy);
    assert!(
        r.human_as_machine.k <= 3,
        "humans called machine: {}",
        r.human_as_machine.k
    );
}
