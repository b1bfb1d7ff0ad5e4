//! Calls: the per-call state machine every carrier drives.

pub mod agent_side;
pub mod session;
