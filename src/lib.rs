//! # dialgate
//!
//! Outbound call campaigns for AI voice agents: a dialer, a real-time media
//! gateway and an answering-machine detector in one binary.
//!
//! ## The data path
//!
//! ```text
//! carrier frame ──► carrier codec ──► AudioFrame (PCM i16, 8 kHz, 20 ms)
//!  (Twilio JSON,     (sans-IO:          │
//!   RTP packet)       decode, G.711)    ▼
//!                                CallSession (sans-IO, one per call)
//!                                  ├─► Amd: VAD ─► tones ─► features ─► ONNX ─► policy ─► [LLM]
//!                                  ├─► agent audio gated by the AMD decision
//!                                  └─► lifecycle events ─► outbox ─► actions
//! ```
//!
//! Where the code lives:
//!
//! - [`audio`]: the audio currency ([`audio::AudioFrame`]), G.711, resampling,
//!   SPSC rings, WAV and Opus.
//! - [`onnx`]: finding (or fetching, once) the ONNX Runtime library and
//!   opening models.
//! - [`detect`]: voice activity, tones and answering-machine detection
//!   (features, ONNX classifier, policy, LLM verification, benchmarks).
//! - [`agent`]: the agent bridge (Twilio's protocol toward the agent) and
//!   the built-in echo agent.
//! - [`server`]: `dialgate serve`, the `/twilio/stream` endpoint.
//! - [`call`]: the call session (AMD, voicemail rules, pacing, lifecycle).
//! - [`carrier`]: carrier wire formats (Twilio Media Streams, signatures).
//! - [`campaign`]: the campaign model, validation, number routing, calling windows.
//! - [`store`]: the durable call queue and outbox (SQLite).
//! - [`dialer`]: the dialer's decisions (sans-IO); [`engine`] drives it and
//!   applies carrier callbacks and call facts.
//! - [`events`]: the seed's six lifecycle events, their delivery, post-call analysis.
//! - [`api`], [`app`]: the HTTP API and `dialgate serve`; [`demo`]: `dialgate demo`.
//! - [`doctor`]: checks everything loaded at run time.
//!
//! Cores are sans-IO: they are told the time and never read a clock, open a
//! socket or spawn. Drivers (tokio tasks) own sockets and timers.

pub mod agent;
pub mod api;
pub mod app;
pub mod audio;
pub mod call;
pub mod campaign;
pub mod carrier;
pub mod demo;
pub mod detect;
pub mod dialer;
pub mod doctor;
pub mod engine;
pub mod events;
pub mod loadtest;
pub mod onnx;
pub mod server;
pub mod store;
pub mod verifier;
