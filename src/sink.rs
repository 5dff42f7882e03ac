//! A local SMTP sink with fault injection: `blast sink`, and the server tests and benches use.
//!
//! OWNER: sink helper. API is fixed; implementation pending.
