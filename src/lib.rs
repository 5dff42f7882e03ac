//! # blast — bulk email campaigns through a throttled blast lane, transactional mail through a
//! separate priority lane
//!
//! # Layout
//!
//! - [`cli`]        clap definitions of every command
//! - [`clock`]      the wall clock durable times are read from; `BLAST_NOW` (a testing aid)
//! - [`commands`]   `check` (every row validated, lanes compared), `status`, `suppress`, `bounces`,
//!   `preview` (and `send --proof`), `queue`, `schedule`, `user`: what `main` runs
//! - [`config`]     campaign.toml → raw structs (strict serde) → validated [`config::Settings`];
//!   `config::schedule`: the `[schedule]` table and its slots; `config::duration`: `30s`, `5m`;
//!   `config::pool`: `[lane] source_ips` and `relays`
//! - [`error`]      typed errors with exit-code predicates (`main` maps them)
//! - [`run_status`] how a command ended → the one place exit codes are written
//! - [`list`]       `reader` streams CSV lists; `hygiene` validates and normalises addresses
//! - [`render`]     handlebars registries (HTML-escaping and plain), strict mode
//! - [`message`]    RFC 5322 + MIME message building, header sanitising
//! - [`classify`]   SMTP replies → address-permanent | sender-permanent | transient | throttling;
//!   the bounce categories (KumoMTA's names) and the one category → action mapping
//! - [`bounce`]     one received message → bounce results: RFC 3464 DSNs, RFC 5965 complaints,
//!   MTAs' plain-text bounces, auto-replies (`blast bounces parse`)
//! - [`store`]      sled stores: per-campaign recipients and claim markers (+ the import's
//!   writer threads), global suppression, priority queue
//! - [`owner`]      the one owner of global state (the suppression list): serve's control
//!   socket when it runs, else the store opened briefly
//! - [`niceness`]   `blast send` yields CPU and I/O priority to the priority lane (`[lane] nice`)
//! - [`pool`]       threads for CPU-bound work (render + DKIM sign) off the reactor
//! - [`control`]    the control socket's protocol and clients (server side: `serve::control`)
//! - [`import`]     lists → store (hygiene, suppression, dedupe, prune report); reconcile after
//!   a previous run
//! - [`sign`]       DKIM signing (RSA-SHA256 + optional Ed25519-SHA256, relaxed/relaxed,
//!   oversigned), keys parsed once; per From domain for the priority lane
//! - [`token`]      recipient tokens (VERP, mailto and one-click unsubscribe): HMAC keys with
//!   rotation, recipient ids, lowercase base32
//! - [`dns`]        MX resolution for `transport = "mx"`: the `[dns]` resolver, a TTL cache with
//!   a floor and negative caching, NXDOMAIN confirmation, the resolver-fault tally
//! - [`transport`]  the seam both lanes send through: `Connector` → `Session` (one SMTP
//!   transaction, pipelined across messages), smtp client (STARTTLS, AUTH), direct-to-MX
//!   (host order, per-host pools, the accounting file), outbox (.eml files), an in-memory
//!   stub, wire encoding, TLS configs (client and server)
//! - [`lane`]       the blast lane: throttles, dispatcher, connection workers, result writer,
//!   destination health (421 backoff, stalled relay), retry schedule, warm-up caps (`lane::warmup`);
//!   `lane::pool` (which IP a recipient leaves from, relay failover) and `lane::worker_pool`
//!   (a pool's workers);
//!   `lane::priority`: the priority lane (queue writer, scheduler, workers, DSNs)
//! - [`sender_rules`] DKIM alignment, one-click unsubscribe covered by DKIM, https URL: what
//!   `check` and `send` both refuse or warn about
//! - [`send`]       the `blast send` orchestration (import → lane → summary)
//! - [`shard`]      `blast send --shard K/N`: which recipients a shard holds (SHA-256 of the
//!   normalised address), and the shard's state directory
//! - [`cluster`]    a fleet through Redis (`[cluster] redis`): shared GCRA rates, connection
//!   leases per site, the suppression stream and this state dir's outbox of changes
//! - [`schedule`]   cron slots, durable claims and the scheduler loop `blast serve` runs
//! - [`report`]     live progress (one frame of figures → terminal lines, plain lines, JSON lines),
//!   the run's [`report::summary::Summary`]
//! - [`shutdown`]   [`shutdown::Shutdown`], the cooperative stop passed in to lanes and listeners;
//!   [`shutdown::signal`]: SIGINT or SIGTERM
//! - [`sink`]       a local SMTP sink with fault injection (`blast sink`, tests, benches)
//! - [`smtp_server`] server-side SMTP shared by sink and submission: connection, DATA reader, AUTH parsing
//! - [`serve`]      `blast serve`: blast.toml (with `[unsubscribe]`, `[bounces]`), submission
//!   listener, users file, control socket, the one-click unsubscribe endpoint (`serve::http`),
//!   and the wiring with its two runtimes

pub mod bounce;
pub mod classify;
pub mod cli;
pub mod clicks;
pub mod clock;
pub mod cluster;
pub mod commands;
pub mod config;
pub mod control;
pub mod dns;
pub mod doctor;
pub mod error;
pub mod import;
pub mod lane;
pub mod list;
pub mod message;
pub mod niceness;
pub mod owner;
pub mod pool;
pub mod render;
pub mod report;
pub mod run_status;
pub mod sched;
pub mod schedule;
pub mod send;
pub mod sender_rules;
pub mod serve;
pub mod shard;
pub mod shutdown;
pub mod sign;
pub mod sink;
pub mod smtp_server;
pub mod store;
pub mod token;
pub mod transport;
pub mod verbose;
