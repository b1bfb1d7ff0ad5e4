//! SDP from the far end (answers, offers, re-INVITEs) and RTP packets:
//! errors, never a panic.
#![no_main]

use dialgate::carrier::sip::{rtp, sdp};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(neg) = sdp::negotiate(data) {
        let ours = sdp::LocalSdp::answer("127.0.0.1".parse().unwrap(), 4000, &neg);
        let _ = sdp::negotiate(&ours.to_bytes());
    }
    let _ = sdp::direction(data);
    let mut ours = sdp::LocalSdp::offer("127.0.0.1".parse().unwrap(), 4000);
    let _ = ours.reanswer(data);
    if let Ok((h, payload)) = rtp::parse(data) {
        let _ = rtp::TelephoneEvent::parse(payload);
        let mut jb = rtp::JitterBuffer::<160>::default();
        jb.push(h.seq, payload);
        let _ = jb.pop();
    }
});
