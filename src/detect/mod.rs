//! Detection on the inbound audio of a call: voice activity, tones and (built
//! on both) answering-machine detection. Every detector here is sans-IO: it is
//! pushed frames stamped with media time and never reads a clock.
//!
//! ```text
//! AudioFrame ─► tones (beep, SIT, fax, DTMF) ───────────────┐
//!            └► Silero VAD ─► segmenter ─► features ─► ONNX ─┴► policy ─► AmdDecision
//! ```

pub mod amd;
pub mod baseline;
pub mod bench;
pub mod classifier;
pub mod corpus;
pub mod dataset;
pub mod features;
pub mod frontend;
pub mod llm;
pub mod tones;
pub mod vad;
