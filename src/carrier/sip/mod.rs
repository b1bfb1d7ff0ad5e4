//! SIP trunk carrier: outbound calls placed with INVITE over UDP, and
//! inbound calls taken on the gateway's SIP port.
//!
//! - [`uac`]: the sans-IO outbound call (INVITE transaction and dialog),
//!   mapping final responses and Q.850 causes to the dialer's outcomes;
//! - [`uas`]: the sans-IO inbound call (INVITE server transaction and
//!   dialog);
//! - [`inbound`]: the listener that demultiplexes the SIP port by Call-ID;
//! - [`keepalive`]: OPTIONS toward the trunk, so the dialer holds calls
//!   while it is down;
//! - [`sdp`]: reading the far end's SDP, writing ours, hold and resume;
//! - [`framing`]: SIP messages out of a TCP stream;
//! - [`rtcp`]: minimal RTCP: our reports, the far end's view of us;
//! - [`rtp`]: allocation-free RTP, RFC 4733 digits, latching, reordering;
//! - [`call`]: the driver of one call, either direction: signalling, then
//!   its media through the same `CallSession` as Twilio (AMD, agent
//!   bridge, voicemail rules, lifecycle);
//! - [`load`]: `dialgate sip-load`.
//!
//! Not here yet: inbound calls and keep-alives over TCP, TLS, sending
//! re-INVITE (theirs are answered).

pub mod call;
pub mod framing;
pub mod inbound;
pub mod keepalive;
pub mod load;
pub mod rtcp;
pub mod rtp;
pub mod sdp;
pub mod uac;
pub mod uas;
