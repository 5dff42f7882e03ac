//! What the user sees: live progress ([`progress`]: one [`frame`] of figures, drawn as
//! terminal or plain [`lines`] or as [`json`] lines), the end-of-run summary and status
//! snapshots ([`summary`]), and `blast status` / `blast report` from one pass over the
//! store ([`gather`], [`campaign`], [`html`]).

pub mod campaign;
pub mod frame;
pub mod gather;
pub mod html;
pub mod json;
pub mod lines;
pub mod progress;
pub mod summary;
