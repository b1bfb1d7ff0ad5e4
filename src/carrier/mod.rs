//! Carriers: where calls are placed and where their audio arrives. Each
//! carrier has a sans-IO codec that turns its wire format into
//! [`crate::audio::AudioFrame`]s and back.

pub mod sim;
pub mod sip;
pub mod twilio;
