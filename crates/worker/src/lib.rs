//! The part of ReleaseDesk that does what cannot be undone: executes approved
//! releases exactly once, sends every email through the durable outbox, and runs
//! the schedules (cooling-off, stuck-work recovery).

pub mod carrier;
pub mod mail;
