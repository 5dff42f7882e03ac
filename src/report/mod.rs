//! What the user sees: live progress ([`progress`]: one [`frame`] of figures, drawn as
//! terminal or plain [`lines`] or as [`json`] lines) and the end-of-run summary and status
//! snapshots ([`summary`]).

pub mod frame;
pub mod json;
pub mod lines;
pub mod progress;
pub mod summary;
