//! `blast serve` parts: the SMTP submission listener ([`submission`]) and the users file
//! it authenticates against ([`users`]).

pub mod submission;
pub mod users;
