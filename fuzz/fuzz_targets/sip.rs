//! SIP from the far end, arbitrary bytes: to an outbound call after its
//! INVITE, to an inbound call after its 200 OK, as an INVITE to the
//! listener, to the trunk keep-alive, and as a TCP stream to frame. Errors or state changes,
//! never a panic.
#![no_main]

use dialgate::carrier::sip::framing::Framer;
use dialgate::carrier::sip::keepalive::Keepalive;
use dialgate::carrier::sip::sdp::LocalSdp;
use dialgate::carrier::sip::uac::{Dial, TrunkConfig, Uac};
use dialgate::carrier::sip::uas::{Uas, parse_invite};
use libfuzzer_sys::fuzz_target;

const INVITE: &str = "INVITE sip:+15550001111@127.0.0.1:5080 SIP/2.0\r\n\
    Via: SIP/2.0/UDP 127.0.0.1:5061;branch=z9hG4bKinv1\r\n\
    From: <sip:+15552223333@127.0.0.1>;tag=caller1\r\n\
    To: <sip:+15550001111@127.0.0.1>\r\n\
    Call-ID: CALLID\r\nCSeq: 1 INVITE\r\n\
    Contact: <sip:caller@127.0.0.1:5061>\r\nContent-Length: 0\r\n\r\n";

fn trunk() -> TrunkConfig {
    TrunkConfig {
        host: "127.0.0.1".into(),
        port: 5060,
        username: Some("u".into()),
        password: Some("p".into()),
        from_domain: None,
        transport: Default::default(),
        outbound_proxy: None,
    }
}

fuzz_target!(|data: &[u8]| {
    // The fuzzer's bytes, and the same bytes with the call's Call-ID
    // spliced in, so they get past the dialog match.
    let text = String::from_utf8_lossy(data);
    if let Ok(mut uac) = Uac::new(
        trunk(),
        Dial {
            to: "+15551230001".into(),
            from: "+15550009999".into(),
            local: "127.0.0.1:5070".parse().unwrap(),
            rtp_port: 40000,
            ring_timeout_ms: 30_000,
        },
        0,
    ) {
        let _ = uac.handle_datagram(1, data);
        let spliced = text.replace("CALLID", uac.call_id());
        let _ = uac.handle_datagram(2, spliced.as_bytes());
        let _ = uac.handle_timeout(40_000);
        while uac.poll_event().is_some() {}
    }

    let _ = parse_invite(data);
    let invite = parse_invite(INVITE.as_bytes()).expect("a good INVITE");
    let sdp = LocalSdp::offer("127.0.0.1".parse().unwrap(), 4000);
    if let Ok(mut uas) = Uas::new(invite, "127.0.0.1:5080".parse().unwrap(), sdp, 0, 0) {
        let _ = uas.handle_datagram(1, data);
        // the INVITE used Call-ID `CALLID`: the raw bytes already match it
        let _ = uas.handle_datagram(2, text.as_bytes());
        let _ = uas.hangup(3);
        let _ = uas.handle_timeout(40_000);
        while uas.poll_event().is_some() {}
    }

    // the bytes as a TCP stream, in two pieces
    let mut f = Framer::default();
    let (a, b) = data.split_at(data.len() / 2);
    f.push(a);
    while let Ok(Some(_)) = f.next_message() {}
    f.push(b);
    while let Ok(Some(_)) = f.next_message() {}

    let mut k = Keepalive::new(trunk(), "127.0.0.1:5070".parse().unwrap(), 1000, 0);
    let _ = k.handle_timeout(0);
    let _ = k.handle_datagram(1, data);
    while k.poll_event().is_some() {}
});
