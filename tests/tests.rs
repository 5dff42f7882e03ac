//! The one integration test binary: real servers on 127.0.0.1:0, real stores on temp dirs.

mod bounce;
mod check_lanes;
mod commands;
mod corpus;
mod dkim;
mod durability;
mod inbox;
mod mx;
mod nice;
mod pipeline;
mod priority;
mod render_message;
mod schedule;
mod sender_rules;
mod serve;
mod sink;
mod submission;
mod tls;
mod transport;
mod unsubscribe;
