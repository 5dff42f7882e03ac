//! What the user sees: live progress ([`progress`]) and the end-of-run summary and status
//! snapshots ([`summary`]).

pub mod progress;
pub mod summary;
