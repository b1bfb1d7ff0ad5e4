//! SIP trunk carrier: outbound calls placed with INVITE over UDP, and
//! inbound calls taken on the gateway's SIP port.
//!
//! - [`uac`]: the sans-IO outbound call (INVITE transaction and dialog),
//!   mapping final responses and Q.850 causes to the dialer's outcomes;
//! - [`uas`]: the sans-IO inbound call (INVITE server transaction and
//!   dialog);
//! - [`inbound`]: the listener that demultiplexes the SIP port by Call-ID;
//! - [`rtp`]: allocation-free RTP, RFC 4733 digits, latching, reordering;
//! - [`call`]: the driver of one call, either direction: signalling, then
//!   its media through the same `CallSession` as Twilio (AMD, agent
//!   bridge, voicemail rules, lifecycle);
//! - [`load`]: `dialgate sip-load`.
//!
//! Not here yet: TCP, an outbound proxy, sending re-INVITE or OPTIONS
//! (both are answered), RTCP, Opus, sending RFC 4733.

pub mod call;
pub mod inbound;
pub mod load;
pub mod rtp;
pub mod uac;
pub mod uas;
