//! Calls: the per-call state machine every carrier drives.

pub mod session;
