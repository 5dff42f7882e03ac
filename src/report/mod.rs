//! What the user sees: live progress ([`progress`]), the end-of-run summary and status
//! snapshots ([`summary`]), and `blast status` / `blast report` from one pass over the
//! store ([`gather`], [`campaign`], [`html`]).

pub mod campaign;
pub mod gather;
pub mod html;
pub mod progress;
pub mod summary;
