//! What travels through the lane: a claimed recipient ([`Job`]), how its attempt ended
//! ([`Outcome`]), and how to turn it into a message ([`MessageSpec`]).

use crate::classify::Class;
use crate::message::{self, NamedAddress, Parts};
use crate::render::{Row, Templates};
use crate::store::campaign::ListFile;
use crate::store::record::Record;

/// A recipient claimed (durably `in_flight`) for one delivery attempt.
#[derive(Debug, Clone)]
pub struct Job {
    /// Store key (normalised address).
    pub key: String,
    /// The record as claimed.
    pub rec: Record,
    /// Times this job came back after a lost connection in this run.
    pub requeues: u8,
    /// The claim marker it was claimed under (0 before the claim is durable).
    pub claim: u64,
    /// That claim's time: its result is written no earlier (so a rerun tells a committed
    /// result from a recipient still in flight under the marker).
    pub claim_ms: u64,
}

/// How an attempt ended.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// 250 after the final dot (or written to the outbox).
    Sent(String),
    /// A reply that is not success, classified.
    Failed {
        /// Classification.
        class: Class,
        /// The reply (code and text).
        reply: String,
    },
    /// The connection broke before a final reply: try again on a new connection.
    Requeue(String),
    /// The destination is unavailable (421, refused connection, backoff): back to pending,
    /// no attempt or requeue spent.
    Postponed(String),
    /// Taken from the queue but never started (stop requested): back to pending.
    Unclaimed,
    /// Could not be built (render error): skipped with this reason.
    Skipped(String),
}

/// A job and its outcome, on the way to the writer.
#[derive(Debug)]
pub struct Done {
    /// The job.
    pub job: Job,
    /// The outcome.
    pub outcome: Outcome,
}

/// Everything needed to build a recipient's message.
pub struct MessageSpec {
    /// Campaign id (outbox file names).
    pub campaign: String,
    /// Compiled templates.
    pub templates: Templates,
    /// The store's file table (columns per list file).
    pub files: Vec<ListFile>,
    /// From.
    pub from: NamedAddress,
    /// Reply-To.
    pub reply_to: Option<NamedAddress>,
    /// Domain for Message-IDs.
    pub message_id_domain: String,
}

impl MessageSpec {
    /// Renders and builds the message for a record (CRLF, not dot-stuffed).
    pub fn build(&self, rec: &Record) -> Result<Vec<u8>, String> {
        let columns = self
            .files
            .get(rec.file_idx as usize)
            .map(|f| f.columns.as_slice())
            .ok_or_else(|| format!("unknown list file #{}", rec.file_idx))?;
        let rendered = self
            .templates
            .render(Row {
                columns,
                values: &rec.values,
            })
            .map_err(|e| format!("render: {e}"))?;
        let parts = Parts {
            from: &self.from,
            reply_to: self.reply_to.as_ref(),
            to: &rec.address,
            subject: &rendered.subject,
            text: rendered.text.as_deref(),
            html: rendered.html.as_deref(),
            headers: &rendered.headers,
            message_id_domain: &self.message_id_domain,
            date: chrono::Utc::now().timestamp(),
        };
        Ok(message::build(&parts).0)
    }
}
