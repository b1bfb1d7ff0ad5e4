//! SDP from the far end (answers, offers, re-INVITEs), RTP and RTCP
//! packets: errors, never a panic.
#![no_main]

use dialgate::carrier::sip::{rtcp, rtp, sdp};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(neg) = sdp::negotiate(data) {
        let ours = sdp::LocalSdp::answer("127.0.0.1".parse().unwrap(), 4000, &neg);
        let _ = sdp::negotiate(&ours.to_bytes());
    }
    let _ = sdp::direction(data);
    let mut ours = sdp::LocalSdp::offer("127.0.0.1".parse().unwrap(), 4000);
    let _ = ours.reanswer(data);
    let mut r = rtcp::Rtcp::new(1, "fuzz", 0);
    let _ = r.on_packet(10, 1 << 40, data);
    let mut out = [0u8; 1500];
    let _ = r.report(20, 1 << 40, &mut out);
    if let Ok((h, payload)) = rtp::parse(data) {
        let _ = rtp::TelephoneEvent::parse(payload);
        let mut jb = rtp::JitterBuffer::<160>::default();
        jb.push(h.seq, payload);
        let _ = jb.pop();
    }
});
