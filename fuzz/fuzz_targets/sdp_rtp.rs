//! SDP answers and RTP packets from the far end: errors, never a panic.
#![no_main]

use dialgate::carrier::sip::{call, rtp};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = call::negotiate(data);
    if let Ok((h, payload)) = rtp::parse(data) {
        let _ = rtp::TelephoneEvent::parse(payload);
        let mut jb = rtp::JitterBuffer::<160>::default();
        jb.push(h.seq, payload);
        let _ = jb.pop();
    }
});
