//! The Twilio Media Streams codec on arbitrary text: parsing, payload
//! decoding and re-encoding must return errors, never panic.
#![no_main]

use dialgate::carrier::twilio::stream::{self, StreamEvent};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut buf = [0u8; 4096];
    if let Ok(StreamEvent::Media { payload, .. }) = stream::parse(text) {
        if let Ok(n) = stream::decode_payload(&payload, &mut buf) {
            let mut out = String::new();
            stream::encode_media(&mut out, "MZfuzz", &buf[..n]);
            assert!(matches!(stream::parse(&out), Ok(StreamEvent::Media { .. })));
        }
    }
    // The payload decoder on its own, with a buffer too small on purpose.
    let mut small = [0u8; 16];
    let _ = stream::decode_payload(text, &mut small);
});
