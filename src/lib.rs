//! # blast — bulk email campaigns through a throttled blast lane, transactional mail through a
//! separate priority lane
//!
//! # Layout
//!
//! - [`cli`]        clap definitions of every command
//! - [`commands`]   `status`, `suppress`, `preview`, `queue`, `schedule`, `user`: what `main` runs
//! - [`config`]     campaign.toml → raw structs (strict serde) → validated [`config::Settings`];
//!   `config::schedule`: the `[schedule]` table and its slots; `config::duration`: `30s`, `5m`
//! - [`error`]      typed errors with exit-code predicates (`main` maps them)
//! - [`list`]       `reader` streams CSV lists; `hygiene` validates and normalises addresses
//! - [`render`]     handlebars registries (HTML-escaping and plain), strict mode
//! - [`message`]    RFC 5322 + MIME message building, header sanitising
//! - [`classify`]   SMTP replies → address-permanent | sender-permanent | transient | throttling
//! - [`store`]      sled stores: per-campaign recipients (+ the import's writer threads), global
//!   suppression, priority queue
//! - [`transport`]  SMTP client (pipelining, STARTTLS, AUTH), outbox (.eml files), wire encoding,
//!   TLS configs (client and server)
//! - [`lane`]       the blast lane: throttles, dispatcher, connection workers, retry schedule;
//!   `lane::priority`: the priority lane (queue writer, scheduler, workers, DSNs)
//! - [`send`]       the `blast send` / `blast check` orchestration (import → send → summary)
//! - [`schedule`]   cron slots, durable claims and the scheduler loop `blast serve` runs
//! - [`report`]     progress bars / plain progress lines, final summary
//! - [`shutdown`]   [`shutdown::Shutdown`], the cooperative stop passed in to lanes and listeners;
//!   [`shutdown::signal`]: SIGINT or SIGTERM
//! - [`sink`]       a local SMTP sink with fault injection (`blast sink`, tests, benches)
//! - [`smtp_server`] server-side SMTP shared by sink and submission: connection, DATA reader, AUTH parsing
//! - [`serve`]      `blast serve`: blast.toml, submission listener, users file, control
//!   socket, and the wiring with its two runtimes

pub mod classify;
pub mod cli;
pub mod commands;
pub mod config;
pub mod control;
pub mod error;
pub mod lane;
pub mod list;
pub mod message;
pub mod owner;
pub mod render;
pub mod report;
pub mod schedule;
pub mod send;
pub mod serve;
pub mod shutdown;
pub mod sink;
pub mod smtp_server;
pub mod store;
pub mod transport;
