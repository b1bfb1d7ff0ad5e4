//! The outbound SIP call fed arbitrary datagrams after its INVITE: errors
//! or state changes, never a panic.
#![no_main]

use dialgate::carrier::sip::uac::{Dial, TrunkConfig, Uac};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(mut uac) = Uac::new(
        TrunkConfig {
            host: "127.0.0.1".into(),
            port: 5060,
            username: Some("u".into()),
            password: Some("p".into()),
            from_domain: None,
        },
        Dial {
            to: "+15551230001".into(),
            from: "+15550009999".into(),
            local: "127.0.0.1:5070".parse().unwrap(),
            rtp_port: 40000,
            ring_timeout_ms: 30_000,
        },
        0,
    ) else {
        return;
    };
    // The fuzzer's bytes, and the same bytes with this call's Call-ID
    // spliced in, so responses get past the dialog match.
    let _ = uac.handle_datagram(1, data);
    let text = String::from_utf8_lossy(data).replace("CALLID", uac.call_id());
    let _ = uac.handle_datagram(2, text.as_bytes());
    let _ = uac.handle_timeout(40_000);
    while uac.poll_event().is_some() {}
});
