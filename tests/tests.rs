//! The one integration test binary: real servers on 127.0.0.1:0, real stores on temp dirs.

mod bounce;
mod bounce_effects;
mod check_lanes;
mod clicks;
mod commands;
mod corpus;
mod dkim;
mod durability;
mod errors;
mod inbox;
mod mx;
mod nice;
mod pipeline;
mod preview;
mod priority;
mod progress;
mod render_message;
mod report;
mod schedule;
mod sender_rules;
mod serve;
mod sink;
mod submission;
mod tls;
mod transport;
mod unsubscribe;
