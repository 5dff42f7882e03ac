//! One recipient's durable record and its compact binary encoding.

/// A recipient's state (DESIGN.md, "Recipient states").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum State {
    /// Imported, not yet tried.
    Pending = 0,
    /// Durably claimed: its transaction may be open.
    InFlight = 1,
    /// Accepted by the server (250 after the final dot).
    Sent = 2,
    /// Transient failure; retried at `retry_at_ms`.
    Deferred = 3,
    /// Permanent failure for this run (`last_reply` says why).
    Bounced = 4,
    /// Retries ran out.
    Failed = 5,
    /// Not sent on purpose (suppressed, removed from the list…; reason in `last_reply`).
    Skipped = 6,
    /// Was in flight when a run died and the policy is `skip`: possibly sent, never resent.
    Unknown = 7,
}

impl State {
    /// All states, in display order.
    pub const ALL: [State; 8] = [
        State::Pending,
        State::InFlight,
        State::Sent,
        State::Deferred,
        State::Bounced,
        State::Failed,
        State::Skipped,
        State::Unknown,
    ];

    /// Snake-case name used in status output.
    pub fn name(self) -> &'static str {
        match self {
            State::Pending => "pending",
            State::InFlight => "in_flight",
            State::Sent => "sent",
            State::Deferred => "deferred",
            State::Bounced => "bounced",
            State::Failed => "failed",
            State::Skipped => "skipped",
            State::Unknown => "unknown",
        }
    }

    /// No further delivery attempt will be made.
    pub fn is_final(self) -> bool {
        !matches!(self, State::Pending | State::InFlight | State::Deferred)
    }

    fn from_u8(b: u8) -> Option<State> {
        State::ALL.get(b as usize).copied()
    }
}

/// A recipient as stored. Key: the normalised address (`Mailbox::key`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Current state.
    pub state: State,
    /// Delivery attempts that ended in a reply (or a lost connection).
    pub attempts: u16,
    /// Which list file (index into the store's file table).
    pub file_idx: u16,
    /// Line in that file.
    pub line: u64,
    /// Which import last saw this row (rows not seen by the latest import were removed).
    pub import_gen: u32,
    /// First delivery attempt (ms since epoch), 0 if none.
    pub first_attempt_ms: u64,
    /// Next retry (ms since epoch) when deferred.
    pub retry_at_ms: u64,
    /// Last change.
    pub updated_ms: u64,
    /// The address to send to (local part as given, A-label domain).
    pub address: String,
    /// Last SMTP reply or skip reason.
    pub last_reply: String,
    /// Row values, in the file's column order.
    pub values: Vec<String>,
}

impl Record {
    /// Recipient domain (lower-case A-label).
    pub fn domain(&self) -> &str {
        self.address.rsplit_once('@').map(|(_, d)| d).unwrap_or("")
    }

    /// Serialises into `out` (cleared first).
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        out.clear();
        out.push(1); // record layout version
        out.push(self.state as u8);
        out.extend_from_slice(&self.attempts.to_le_bytes());
        out.extend_from_slice(&self.file_idx.to_le_bytes());
        out.extend_from_slice(&self.line.to_le_bytes());
        out.extend_from_slice(&self.import_gen.to_le_bytes());
        out.extend_from_slice(&self.first_attempt_ms.to_le_bytes());
        out.extend_from_slice(&self.retry_at_ms.to_le_bytes());
        out.extend_from_slice(&self.updated_ms.to_le_bytes());
        put_str(out, &self.address);
        put_str(out, &self.last_reply);
        out.extend_from_slice(&(self.values.len() as u32).to_le_bytes());
        for v in &self.values {
            put_str(out, v);
        }
    }

    /// Serialises to a new vector.
    pub fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(
            64 + self.address.len() + self.values.iter().map(|s| s.len() + 4).sum::<usize>(),
        );
        self.encode_into(&mut v);
        v
    }

    /// Decodes; `None` if the bytes are not a record this version understands.
    pub fn decode(b: &[u8]) -> Option<Record> {
        let mut r = Reader { b, pos: 0 };
        if r.u8()? != 1 {
            return None;
        }
        let state = State::from_u8(r.u8()?)?;
        let attempts = u16::from_le_bytes(r.take(2)?.try_into().ok()?);
        let file_idx = u16::from_le_bytes(r.take(2)?.try_into().ok()?);
        let line = r.u64()?;
        let import_gen = u32::from_le_bytes(r.take(4)?.try_into().ok()?);
        let first_attempt_ms = r.u64()?;
        let retry_at_ms = r.u64()?;
        let updated_ms = r.u64()?;
        let address = r.str()?;
        let last_reply = r.str()?;
        let n = u32::from_le_bytes(r.take(4)?.try_into().ok()?) as usize;
        let mut values = Vec::with_capacity(n.min(256));
        for _ in 0..n {
            values.push(r.str()?);
        }
        Some(Record {
            state,
            attempts,
            file_idx,
            line,
            import_gen,
            first_attempt_ms,
            retry_at_ms,
            updated_ms,
            address,
            last_reply,
            values,
        })
    }

    /// Reads just the state byte without decoding the rest (fast scans).
    pub fn peek_state(b: &[u8]) -> Option<State> {
        if b.first() != Some(&1) {
            return None;
        }
        State::from_u8(*b.get(1)?)
    }
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u32).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

struct Reader<'a> {
    b: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let s = self.b.get(self.pos..self.pos.checked_add(n)?)?;
        self.pos += n;
        Some(s)
    }
    fn u8(&mut self) -> Option<u8> {
        Some(self.take(1)?[0])
    }
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
    fn str(&mut self) -> Option<String> {
        let n = u32::from_le_bytes(self.take(4)?.try_into().ok()?) as usize;
        String::from_utf8(self.take(n)?.to_vec()).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let r = Record {
            state: State::Deferred,
            attempts: 3,
            file_idx: 1,
            line: 42,
            import_gen: 7,
            first_attempt_ms: 1,
            retry_at_ms: 2,
            updated_ms: 3,
            address: "Ann@example.com".into(),
            last_reply: "451 4.7.1 greylisted".into(),
            values: vec!["Ann@example.com".into(), "Ann".into(), String::new()],
        };
        let b = r.encode();
        assert_eq!(Record::decode(&b), Some(r));
        assert_eq!(Record::peek_state(&b), Some(State::Deferred));
        assert_eq!(Record::decode(&b[..b.len() - 1]), None);
    }
}
