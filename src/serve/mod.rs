//! `blast serve`: the long-running side of blast — the SMTP submission listener for
//! transactional mail ([`submission`], authenticating against [`users`]), the priority queue
//! and lane that deliver it ([`crate::lane::priority`], which also builds the DSNs), a control
//! socket for `blast queue` ([`control`]), the one-click unsubscribe endpoint ([`http`]), and
//! the process wiring with its two runtimes ([`run`]).

pub mod config;
pub mod control;
pub mod http;
pub mod inbox;
pub mod inbox_import;
pub mod run;
pub mod scheduler;
pub mod submission;
pub mod users;

pub use run::main;
