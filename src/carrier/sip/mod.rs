//! SIP trunk carrier: outbound calls placed with INVITE over UDP.
//!
//! - [`uac`]: the sans-IO call (INVITE transaction and dialog), mapping
//!   final responses and Q.850 causes to the dialer's outcomes;
//! - [`rtp`]: allocation-free RTP, RFC 4733 digits, latching, reordering;
//! - [`call`]: the driver of one call: signalling, then its media through
//!   the same `CallSession` as Twilio (AMD, agent bridge, voicemail rules,
//!   lifecycle);
//! - [`load`]: `dialgate sip-load`.
//!
//! Not here yet: TCP, re-INVITE (hold, session refresh), OPTIONS
//! keep-alive, RTCP, Opus, inbound calls and the dialer's routing to it.

pub mod call;
pub mod load;
pub mod rtp;
pub mod uac;
