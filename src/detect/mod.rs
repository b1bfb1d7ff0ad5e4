//! Detection on the inbound audio of a call: voice activity first, and (built
//! on it) answering-machine detection. Every detector here is sans-IO: it is
//! pushed frames stamped with media time and never reads a clock.

pub mod corpus;
pub mod tones;
pub mod vad;
