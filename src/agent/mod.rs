//! The agent side: the bridge that speaks the Twilio Media Streams protocol
//! to the voice-agent engine *as if it were Twilio* (so Twilio-ready agents
//! such as Pipecat's work unchanged), and a built-in echo agent for trying a
//! setup and for tests; and [`side::AgentSide`], the agent half of a call's
//! driver that every carrier's call task owns.

pub mod bridge;
pub mod echo;
pub mod side;
