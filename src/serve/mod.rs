//! `blast serve`: the long-running side of blast — the SMTP submission listener for
//! transactional mail, the priority queue and lane that deliver it, and a control socket
//! for `blast queue`.

pub mod config;
pub mod control;
pub mod dsn;
