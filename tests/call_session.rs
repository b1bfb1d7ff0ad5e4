//! The call session on virtual time: AMD-gated agent start, stop speaking,
//! end call and leave message on real corpus clips; pacing, marks, clear,
//! DTMF, transcripts and every way a call ends.

mod common;

use dialgate::audio::AudioFrame;
use dialgate::audio::wav::WavReader;
use dialgate::call::session::{
    AgentMode, AgentOut, AgentStart, CallSession, CarrierOut, EndType, Lifecycle, MachineAction,
    Output, SessionConfig,
};
use dialgate::detect::amd::AmdOutcome;

fn clip(scenario: &str, pick: impl Fn(&common::Label) -> bool) -> (common::Label, Vec<AudioFrame>) {
    let dir = common::corpus_dir().join("heldout");
    let row = common::labels(&dir)
        .into_iter()
        .find(|r| r.scenario == scenario && pick(r))
        .unwrap();
    let mut r = WavReader::open(&row.path).unwrap();
    let frames = std::iter::from_fn(|| r.next_frame().unwrap()).collect();
    (row, frames)
}

/// The first held-out clip of `scenario` on which the detector's own result
/// satisfies `want` (the session tests are about the session, not about
/// AMD's accuracy, which `amd_bench` measures).
fn detected_clip(
    scenario: &str,
    want: impl Fn(&dialgate::detect::bench::Classification) -> bool,
) -> (common::Label, Vec<AudioFrame>) {
    let dir = common::corpus_dir().join("heldout");
    let row = common::labels(&dir)
        .into_iter()
        .filter(|r| r.scenario == scenario)
        .find(|r| {
            let c = dialgate::detect::bench::classify_file(
                &r.path,
                dialgate::detect::amd::AmdConfig::default(),
                None,
                Default::default(),
            )
            .unwrap();
            want(&c)
        })
        .expect("a clip the detector gets right");
    clip(scenario, |r| r.file == row.file)
}

fn drain(s: &mut CallSession, log: &mut Vec<(u64, Output)>, now: u64) {
    while let Some(o) = s.poll_output() {
        log.push((now, o));
    }
}

/// Plays `frames` into a fresh session, answering at t=0, 20 ms per frame;
/// `each` runs after every frame (to inject agent behaviour).
fn play(
    cfg: SessionConfig,
    frames: &[AudioFrame],
    mut each: impl FnMut(&mut CallSession, u64),
) -> (CallSession, Vec<(u64, Output)>) {
    let mut s = CallSession::new(cfg).unwrap();
    let mut log = Vec::new();
    s.handle_carrier_start(0);
    drain(&mut s, &mut log, 0);
    for f in frames {
        let now = f.end_ms();
        s.handle_carrier_media(now, f).unwrap();
        each(&mut s, now);
        drain(&mut s, &mut log, now);
        if s.is_ended() {
            break;
        }
    }
    (s, log)
}

fn lifecycle(log: &[(u64, Output)]) -> Vec<&Lifecycle> {
    log.iter()
        .filter_map(|(_, o)| match o {
            Output::Lifecycle(l) => Some(l),
            _ => None,
        })
        .collect()
}

fn position(log: &[(u64, Output)], f: impl Fn(&Output) -> bool) -> Option<usize> {
    log.iter().position(|(_, o)| f(o))
}

#[test]
fn a_person_gets_the_agent_after_amd_with_its_parameters() {
    let (row, frames) = clip("hello_silence", |_| true);
    let mut cfg = SessionConfig::default();
    cfg.agent_params
        .insert("call_queue_id".into(), "q-1".into());
    let (s, log) = play(cfg, &frames, |_, _| {});
    assert_eq!(
        s.decision().unwrap().outcome,
        AmdOutcome::Human,
        "{}",
        row.file
    );
    let connect = position(&log, |o| {
        matches!(o, Output::Agent(AgentOut::Connect { .. }))
    })
    .unwrap();
    let decided = position(&log, |o| {
        matches!(o, Output::Lifecycle(Lifecycle::AmdDecided(_)))
    })
    .unwrap();
    assert!(
        decided < connect,
        "after_amd: the agent starts after the decision"
    );
    let Output::Agent(AgentOut::Connect { mode, params }) = &log[connect].1 else {
        unreachable!()
    };
    assert_eq!(*mode, AgentMode::Conversation);
    assert_eq!(params["mode"], "conversation");
    assert_eq!(params["answered_by"], "human");
    assert_eq!(params["call_queue_id"], "q-1");
    // the agent hears the callee only once connected
    let first_media = position(&log, |o| matches!(o, Output::Agent(AgentOut::Media(_)))).unwrap();
    assert!(first_media > connect);
    assert!(matches!(lifecycle(&log)[0], Lifecycle::Answered { at: 0 }));
}

#[test]
fn immediate_agent_hears_everything_and_a_machine_is_cleared_then_hung_up() {
    let (row, frames) = detected_clip("personal_vm_beep", |c| c.answered_by == "machine_start");
    let cfg = SessionConfig {
        agent_start: AgentStart::Immediate,
        stop_speaking: true,
        machine_action: MachineAction::EndCall,
        ..SessionConfig::default()
    };
    // the agent talks from the start: 100 ms of audio every 100 ms
    let (s, log) = play(cfg, &frames, |s, now| {
        if now % 100 == 0 {
            s.handle_agent_media(now, &[0x55; 800]);
        }
    });
    let decision = s.decision().unwrap();
    assert!(decision.outcome.is_machine(), "{}: {decision:?}", row.file);
    assert!(matches!(
        log[1].1,
        Output::Lifecycle(Lifecycle::AgentConnecting(AgentMode::Conversation))
    ));
    let sent = log
        .iter()
        .filter(|(_, o)| matches!(o, Output::Carrier(CarrierOut::Media(_))))
        .count();
    assert!(
        sent > 10,
        "agent audio reached the carrier before the decision ({sent} frames)"
    );
    let decided = position(&log, |o| {
        matches!(o, Output::Lifecycle(Lifecycle::AmdDecided(_)))
    })
    .unwrap();
    let clear = position(&log, |o| matches!(o, Output::Carrier(CarrierOut::Clear))).unwrap();
    let hangup = position(&log, |o| matches!(o, Output::Carrier(CarrierOut::Hangup))).unwrap();
    assert!(
        decided < clear && clear < hangup,
        "clear at once, then hang up"
    );
    assert!(
        !log[clear..]
            .iter()
            .any(|(_, o)| matches!(o, Output::Carrier(CarrierOut::Media(_)))),
        "no agent audio after the clear"
    );
    assert!(matches!(
        lifecycle(&log).last().unwrap(),
        Lifecycle::Ended {
            end_type: EndType::VoicemailEnded,
            ..
        }
    ));
}

#[test]
fn leave_message_starts_the_voicemail_agent_after_the_beep() {
    let (row, frames) = detected_clip("personal_vm_beep", |c| {
        c.machine_end.as_deref() == Some("machine_end_beep")
    });
    let cfg = SessionConfig {
        agent_start: AgentStart::AfterAmd,
        machine_action: MachineAction::LeaveMessage {
            voicemail_script: "scripts/voicemail".into(),
        },
        ..SessionConfig::default()
    };
    let mut hung_up = false;
    let (s, log) = play(cfg, &frames, |s, now| {
        // the voicemail agent speaks for a second, then hangs up
        if let Some(end) = row.beep_end_ms
            && now > end + 1000
            && !hung_up
            && s.decision().is_some()
        {
            s.handle_agent_hangup(now);
            hung_up = true;
        }
    });
    let _ = s;
    let connect = log
        .iter()
        .find_map(|(t, o)| match o {
            Output::Agent(AgentOut::Connect { mode, params }) => Some((*t, *mode, params.clone())),
            _ => None,
        })
        .expect("voicemail agent connected");
    assert_eq!(connect.1, AgentMode::Voicemail);
    assert_eq!(connect.2["mode"], "voicemail");
    assert_eq!(connect.2["script"], "scripts/voicemail");
    assert!(
        connect.0 >= row.beep_end_ms.unwrap(),
        "after the beep: {} vs {:?}",
        connect.0,
        row.beep_end_ms
    );
    let outcomes: Vec<AmdOutcome> = lifecycle(&log)
        .iter()
        .filter_map(|l| match l {
            Lifecycle::AmdDecided(d) => Some(d.outcome),
            _ => None,
        })
        .collect();
    assert_eq!(
        outcomes,
        vec![AmdOutcome::MachineStart, AmdOutcome::MachineEndBeep]
    );
    assert!(matches!(
        lifecycle(&log).last().unwrap(),
        Lifecycle::Ended {
            end_type: EndType::VoicemailEnded,
            ..
        }
    ));
}

fn no_amd() -> SessionConfig {
    SessionConfig {
        amd: None,
        ..SessionConfig::default()
    }
}

#[test]
fn agent_audio_is_paced_in_whole_frames_with_a_small_lead() {
    let mut s = CallSession::new(no_amd()).unwrap();
    let mut log = Vec::new();
    s.handle_carrier_start(0);
    drain(&mut s, &mut log, 0);
    // one second of agent audio arrives in one burst, in an odd size
    let dropped = s.handle_agent_media(0, &[0x11; 8000 + 70]);
    assert_eq!(dropped, 0);
    drain(&mut s, &mut log, 0);
    let mut now = 0;
    while let Some(t) = s.poll_timeout() {
        if t > 2000 {
            break;
        }
        now = t.max(now);
        s.tick(now);
        drain(&mut s, &mut log, now);
        now += 1;
    }
    let sends: Vec<u64> = log
        .iter()
        .filter(|(_, o)| matches!(o, Output::Carrier(CarrierOut::Media(f)) if f.len() == 160))
        .map(|(t, _)| *t)
        .collect();
    assert_eq!(sends.len(), 50, "whole frames only; the 70-byte tail waits");
    for (k, t) in sends.iter().enumerate() {
        // frame k plays at k*20 ms; it is sent no more than 80 ms early
        // and never late
        let play = k as u64 * 20;
        assert!(
            *t + 80 >= play && *t <= play,
            "frame {k} sent at {t}, plays at {play}"
        );
    }
}

#[test]
fn audio_arriving_frame_by_frame_in_a_burst_is_still_paced() {
    // Agents send one 20 ms message at a time, often much faster than real
    // time: the buffer runs dry between messages, the clock must not reset.
    let mut s = CallSession::new(no_amd()).unwrap();
    let mut log = Vec::new();
    s.handle_carrier_start(0);
    for i in 0..40u64 {
        s.handle_agent_media(i / 10, &[0x44; 160]); // 40 frames within 4 ms
    }
    drain(&mut s, &mut log, 4);
    let mut now = 4;
    while let Some(t) = s.poll_timeout() {
        if t > 2000 {
            break;
        }
        now = t.max(now);
        s.tick(now);
        drain(&mut s, &mut log, now);
        now += 1;
    }
    let sends: Vec<u64> = log
        .iter()
        .filter(|(_, o)| matches!(o, Output::Carrier(CarrierOut::Media(_))))
        .map(|(t, _)| *t)
        .collect();
    assert_eq!(sends.len(), 40);
    for (k, t) in sends.iter().enumerate() {
        let play = k as u64 * 20;
        assert!(
            *t + 80 >= play,
            "frame {k} sent at {t}, plays at {play}: too early"
        );
    }
    // and a pause in the agent's audio restarts the clock at the next audio
    s.handle_agent_media(5000, &[0x44; 160]);
    drain(&mut s, &mut log, 5000);
    assert!(matches!(
        log.last().unwrap(),
        (5000, Output::Carrier(CarrierOut::Media(_)))
    ));
}

#[test]
fn marks_follow_their_audio_and_come_back_to_the_agent() {
    let mut s = CallSession::new(no_amd()).unwrap();
    let mut log = Vec::new();
    s.handle_carrier_start(0);
    s.handle_agent_media(0, &[0x22; 1600]); // 200 ms
    s.handle_agent_mark(0, "m1");
    s.handle_agent_media(0, &[0x22; 1600]);
    s.handle_agent_mark(0, "m2");
    drain(&mut s, &mut log, 0);
    for now in (0..=600).step_by(20) {
        s.tick(now);
        drain(&mut s, &mut log, now);
    }
    let carrier: Vec<String> = log
        .iter()
        .filter_map(|(_, o)| match o {
            Output::Carrier(CarrierOut::Media(_)) => Some("F".to_string()),
            Output::Carrier(CarrierOut::Mark(m)) => Some(m.clone()),
            _ => None,
        })
        .collect();
    let m1 = carrier.iter().position(|x| x == "m1").unwrap();
    let m2 = carrier.iter().position(|x| x == "m2").unwrap();
    assert_eq!(m1, 10, "m1 after the first 10 frames: {carrier:?}");
    assert_eq!(m2, 21, "m2 after the next 10: {carrier:?}");
    s.handle_carrier_mark(600, "m1");
    s.handle_carrier_mark(600, "unknown-mark");
    drain(&mut s, &mut log, 600);
    assert!(matches!(&log.last().unwrap().1, Output::Agent(AgentOut::Mark(m)) if m == "m1"));
}

#[test]
fn clear_drops_queued_audio_and_returns_pending_marks() {
    let mut s = CallSession::new(no_amd()).unwrap();
    let mut log = Vec::new();
    s.handle_carrier_start(0);
    s.handle_agent_media(0, &[0x33; 8000]);
    s.handle_agent_mark(0, "end-of-sentence");
    drain(&mut s, &mut log, 0);
    s.handle_agent_clear(40);
    drain(&mut s, &mut log, 40);
    let tail: Vec<&Output> = log.iter().rev().take(2).map(|(_, o)| o).collect();
    assert!(matches!(tail[0], Output::Agent(AgentOut::Mark(m)) if m == "end-of-sentence"));
    assert!(matches!(tail[1], Output::Carrier(CarrierOut::Clear)));
    let before = log.len();
    for now in (60..=400).step_by(20) {
        s.tick(now);
    }
    drain(&mut s, &mut log, 400);
    assert_eq!(log.len(), before, "nothing more is sent after a clear");
}

#[test]
fn dtmf_transcripts_and_every_ending() {
    // DTMF and transcripts
    let mut s = CallSession::new(no_amd()).unwrap();
    let mut log = Vec::new();
    s.handle_carrier_start(0);
    s.handle_carrier_dtmf(100, '5');
    s.handle_agent_transcript("agent", "Hello, this is Ava.", Some(0.1), Some(1.2));
    s.handle_agent_transcript("user", "Hi.", Some(1.5), Some(1.8));
    drain(&mut s, &mut log, 100);
    assert!(
        log.iter()
            .any(|(_, o)| matches!(o, Output::Agent(AgentOut::Dtmf('5'))))
    );
    assert_eq!(s.turns().len(), 2);
    assert_eq!(s.turns()[1].role, "user");
    // the callee hangs up
    s.handle_carrier_stop(2000);
    drain(&mut s, &mut log, 2000);
    assert!(matches!(
        lifecycle(&log).last().unwrap(),
        Lifecycle::Ended {
            end_type: EndType::UserHangup,
            at: 2000,
            ..
        }
    ));
    assert!(matches!(
        log.iter().rev().nth(1).unwrap().1,
        Output::Agent(AgentOut::Stop)
    ));

    let ending = |f: &dyn Fn(&mut CallSession)| {
        let mut s = CallSession::new(SessionConfig {
            max_duration_ms: 10_000,
            ..no_amd()
        })
        .unwrap();
        s.handle_carrier_start(0);
        f(&mut s);
        let mut log = Vec::new();
        drain(&mut s, &mut log, 0);
        let hung_up = log
            .iter()
            .any(|(_, o)| matches!(o, Output::Carrier(CarrierOut::Hangup)));
        match lifecycle(&log).last() {
            Some(Lifecycle::Ended {
                end_type, reason, ..
            }) => (*end_type, reason.clone(), hung_up),
            other => panic!("{other:?}"),
        }
    };
    assert_eq!(
        ending(&|s| s.handle_agent_hangup(500)),
        (EndType::AgentHangup, None, true)
    );
    assert_eq!(ending(&|s| s.tick(10_000)), (EndType::Timeout, None, true));
    let (t, reason, hung_up) = ending(&|s| s.handle_agent_closed(700, "connection reset"));
    assert_eq!(t, EndType::Failed);
    assert!(hung_up);
    assert!(reason.unwrap().contains("connection reset"));
}

/// The call ends (here at its maximum duration) while the detector is still
/// listening to a long first sentence: the detector settles on what it heard,
/// so the call still says who answered, and nothing else happens on account
/// of that late decision (no agent is connected to a call that is over).
#[test]
fn a_call_that_ends_before_amd_decides_still_reports_who_answered() {
    let (row, frames) = clip("long_sentence", |r| r.speech_end_ms > Some(6000));
    let cfg = SessionConfig {
        max_duration_ms: 4000,
        ..SessionConfig::default()
    };
    let (mut s, mut log) = play(cfg, &frames[..200], |s, now| s.tick(now));
    assert!(s.is_ended(), "{}", row.file);
    drain(&mut s, &mut log, 4000);
    let decided: Vec<_> = lifecycle(&log)
        .into_iter()
        .filter_map(|l| match l {
            Lifecycle::AmdDecided(d) => Some(*d),
            _ => None,
        })
        .collect();
    assert_eq!(decided.len(), 1, "{}: {decided:?}", row.file);
    assert_eq!(s.decision(), Some(decided[0]));
    assert_eq!(decided[0].trigger.as_str(), "end_of_audio");
    assert!(decided[0].at_ms <= 4000);
    assert_eq!(s.end_type(), Some(EndType::Timeout));
    assert!(
        position(&log, |o| matches!(
            o,
            Output::Agent(AgentOut::Connect { .. })
        ))
        .is_none(),
        "no agent for a call that is over"
    );
}

/// A short greeting ("Hello.") whose beep comes 900 ms after it: AMD calls
/// a person first, the conversation agent starts talking, and the beep
/// overturns the decision (`late_beep`). The agent is cut off and the
/// campaign's voicemail action runs: the voicemail agent after the beep,
/// or a hang-up recorded as `voicemail_ended`.
#[test]
fn a_beep_after_a_human_decision_switches_to_the_voicemail_action() {
    let hello = {
        let mut r = WavReader::open(
            &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/speech/hello.wav"),
        )
        .unwrap();
        std::iter::from_fn(|| r.next_frame().unwrap())
            .flat_map(|f| f.pcm)
            .collect::<Vec<i16>>()
    };
    let mut rng = dialgate::audio::synth::Rng::new(5);
    let mut pcm = dialgate::audio::synth::noise(&mut rng, -60.0, 6000);
    dialgate::audio::synth::mix_into(&mut pcm, &hello, 2400);
    let beep_at = 2400 + hello.len() + 8 * 900;
    let beep_end_ms = (beep_at / 8 + 400) as u64;
    let beep = dialgate::audio::synth::tones(&[1000.0], -14.0, 400);
    dialgate::audio::synth::mix_into(&mut pcm, &beep, beep_at);
    let frames: Vec<AudioFrame> = pcm
        .chunks(160)
        .enumerate()
        .map(|(i, c)| AudioFrame::from_pcm(c, i as u64 * 20))
        .collect();

    // leave a message: the conversation agent stops, the voicemail agent
    // starts once the beep has ended
    let cfg = SessionConfig {
        agent_start: AgentStart::AfterAmd,
        machine_action: MachineAction::LeaveMessage {
            voicemail_script: "scripts/voicemail".into(),
        },
        ..SessionConfig::default()
    };
    let (s, log) = play(cfg, &frames, |_, _| {});
    let connects: Vec<(u64, AgentMode)> = log
        .iter()
        .filter_map(|(t, o)| match o {
            Output::Agent(AgentOut::Connect { mode, .. }) => Some((*t, *mode)),
            _ => None,
        })
        .collect();
    assert_eq!(connects.len(), 2, "{connects:?}");
    assert_eq!(connects[0].1, AgentMode::Conversation);
    assert!(connects[0].0 + 400 < beep_end_ms, "{connects:?}");
    assert_eq!(connects[1].1, AgentMode::Voicemail);
    assert!(
        connects[1].0 >= beep_end_ms,
        "{connects:?} vs {beep_end_ms}"
    );
    let stop = position(&log, |o| matches!(o, Output::Agent(AgentOut::Stop))).unwrap();
    let clear = position(&log, |o| matches!(o, Output::Carrier(CarrierOut::Clear))).unwrap();
    let voicemail = position(&log, |o| {
        matches!(
            o,
            Output::Agent(AgentOut::Connect {
                mode: AgentMode::Voicemail,
                ..
            })
        )
    })
    .unwrap();
    assert!(clear < voicemail && stop < voicemail);
    let outcomes: Vec<(AmdOutcome, &str)> = lifecycle(&log)
        .iter()
        .filter_map(|l| match l {
            Lifecycle::AmdDecided(d) => Some((d.outcome, d.trigger.as_str())),
            _ => None,
        })
        .collect();
    assert_eq!(
        outcomes,
        [
            (AmdOutcome::Human, "short_utterance"),
            (AmdOutcome::MachineStart, "late_beep"),
            (AmdOutcome::MachineEndBeep, "late_beep"),
        ]
    );
    // the call's first answer stays what the agent was connected on
    assert_eq!(s.decision().unwrap().outcome, AmdOutcome::Human);

    // end call: hung up at the beep, recorded as a voicemail
    let (s, log) = play(SessionConfig::default(), &frames, |_, _| {});
    assert!(s.is_ended());
    let hangup = log
        .iter()
        .find(|(_, o)| matches!(o, Output::Carrier(CarrierOut::Hangup)))
        .expect("hung up");
    assert!(hangup.0 > connects[0].0, "{hangup:?}");
    assert!(matches!(
        lifecycle(&log).last().unwrap(),
        Lifecycle::Ended {
            end_type: EndType::VoicemailEnded,
            ..
        }
    ));
}
