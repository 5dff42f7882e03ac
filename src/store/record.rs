//! One recipient's durable record and its compact binary encoding.

use crate::classify::Class;

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
    /// How the last reply was classified (`None` before any attempt, or for a record
    /// written before classes were stored): what `status` counts and what a rerun re-adds to
    /// the suppression list if a crash came between the two writes.
    pub class: Option<Class>,
    /// Row values, in the file's column order.
    pub values: Vec<String>,
}

/// First byte of every encoded record: the record layout. Layout 1 (fixed-width integers,
/// the address and the email cell stored in full) is gone with campaign store format 1.
const LAYOUT: u8 = 2;

/// Flags byte: the address is the key itself (no local-part capitals), so it is not stored.
const ADDRESS_IS_KEY: u8 = 1;
/// Flags byte, bits 1–3: the class of the last reply (0 = none). Records written before
/// classes were stored have 0 there, so they read unchanged.
const CLASS_SHIFT: u8 = 1;
const CLASS_MASK: u8 = 0b1110;

fn class_code(c: Option<Class>) -> u8 {
    match c {
        None => 0,
        Some(Class::Success) => 1,
        Some(Class::AddressPermanent) => 2,
        Some(Class::OtherPermanent) => 3,
        Some(Class::Transient) => 4,
        Some(Class::Throttling) => 5,
    }
}

fn class_of(code: u8) -> Option<Option<Class>> {
    Some(match code {
        0 => None,
        1 => Some(Class::Success),
        2 => Some(Class::AddressPermanent),
        3 => Some(Class::OtherPermanent),
        4 => Some(Class::Transient),
        5 => Some(Class::Throttling),
        _ => return None,
    })
}

impl Record {
    /// A pending record of `address` (line 1 of file 0, first import): the tests' starting
    /// point.
    #[cfg(test)]
    pub(crate) fn pending(address: &str) -> Record {
        Record {
            state: State::Pending,
            attempts: 0,
            file_idx: 0,
            line: 1,
            import_gen: 1,
            first_attempt_ms: 0,
            retry_at_ms: 0,
            updated_ms: 0,
            address: address.into(),
            last_reply: String::new(),
            class: None,
            values: Vec::new(),
        }
    }

    /// Recipient domain (lower-case A-label).
    pub fn domain(&self) -> &str {
        self.address.rsplit_once('@').map(|(_, d)| d).unwrap_or("")
    }

    /// Serialises into `out` (cleared first). `key` is the record's store key (the normalised
    /// address): what can be rebuilt from it is not stored again.
    ///
    /// Layout 2 keeps a record small because the state dir is ~2.5 times the live data (sled
    /// keeps node copies until a segment is half free): layout byte, state, varint
    /// `retry_at_ms` (right after the state so scans read it without a full decode), the other
    /// integers as varints, a flags byte, the address only when it differs from the key, the
    /// last reply, then the values, each as varint (len + 1) — 0 meaning "the address", which
    /// the email cell of a clean list is. ~35 bytes for a typical row instead of ~130.
    pub fn encode_into(&self, key: &str, out: &mut Vec<u8>) {
        out.clear();
        out.push(LAYOUT);
        out.push(self.state as u8);
        put_var(out, self.retry_at_ms);
        put_var(out, u64::from(self.attempts));
        put_var(out, u64::from(self.file_idx));
        put_var(out, self.line);
        put_var(out, u64::from(self.import_gen));
        put_var(out, self.first_attempt_ms);
        put_var(out, self.updated_ms);
        let address_is_key = self.address == key;
        out.push(
            (u8::from(address_is_key) * ADDRESS_IS_KEY) | (class_code(self.class) << CLASS_SHIFT),
        );
        if !address_is_key {
            put_str(out, &self.address);
        }
        put_str(out, &self.last_reply);
        put_var(out, self.values.len() as u64);
        for v in &self.values {
            if *v == self.address {
                out.push(0);
            } else {
                put_var(out, v.len() as u64 + 1);
                out.extend_from_slice(v.as_bytes());
            }
        }
    }

    /// Serialises to a new vector (see [`Record::encode_into`]).
    pub fn encode(&self, key: &str) -> Vec<u8> {
        let mut v = Vec::with_capacity(
            32 + self.last_reply.len() + self.values.iter().map(|s| s.len() + 1).sum::<usize>(),
        );
        self.encode_into(key, &mut v);
        v
    }

    /// Decodes the record stored under `key`; `None` if the bytes are not a record this
    /// version understands.
    pub fn decode(key: &str, b: &[u8]) -> Option<Record> {
        let mut r = Reader { b, pos: 0 };
        if r.u8()? != LAYOUT {
            return None;
        }
        let state = State::from_u8(r.u8()?)?;
        let retry_at_ms = r.var()?;
        let attempts = u16::try_from(r.var()?).ok()?;
        let file_idx = u16::try_from(r.var()?).ok()?;
        let line = r.var()?;
        let import_gen = u32::try_from(r.var()?).ok()?;
        let first_attempt_ms = r.var()?;
        let updated_ms = r.var()?;
        let flags = r.u8()?;
        if flags & !(ADDRESS_IS_KEY | CLASS_MASK) != 0 {
            return None;
        }
        let class = class_of((flags & CLASS_MASK) >> CLASS_SHIFT)?;
        let address = if flags & ADDRESS_IS_KEY != 0 {
            key.to_string()
        } else {
            r.str()?
        };
        let last_reply = r.str()?;
        let n = usize::try_from(r.var()?).ok()?;
        let mut values = Vec::with_capacity(n.min(256));
        for _ in 0..n {
            let len = usize::try_from(r.var()?).ok()?;
            values.push(match len.checked_sub(1) {
                None => address.clone(),
                Some(len) => String::from_utf8(r.take(len)?.to_vec()).ok()?,
            });
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
            class,
            values,
        })
    }

    /// The last reply said the address itself is bad (so it belongs on the suppression
    /// list). Records without a stored class are classified from the reply text.
    pub fn is_address_bounce(&self) -> bool {
        if self.state != State::Bounced {
            return false;
        }
        match self.class {
            Some(c) => c == Class::AddressPermanent,
            None => crate::classify::is_address_level_reply(&self.last_reply),
        }
    }

    /// Reads just the state byte without decoding the rest (fast scans).
    pub fn peek_state(b: &[u8]) -> Option<State> {
        if b.first() != Some(&LAYOUT) {
            return None;
        }
        State::from_u8(*b.get(1)?)
    }

    /// Reads just the retry time without decoding the rest (scans for due deferred rows).
    pub fn peek_retry_at(b: &[u8]) -> Option<u64> {
        Self::peek_state(b)?;
        Reader { b, pos: 2 }.var()
    }
}

/// LEB128: 7 bits per byte, low bits first; a timestamp in ms takes 6 bytes, a count 1.
fn put_var(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    put_var(out, s.len() as u64);
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
    fn var(&mut self) -> Option<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.u8()?;
            v |= u64::from(b & 0x7f).checked_shl(shift)?;
            if b & 0x80 == 0 {
                return Some(v);
            }
        }
        None
    }
    fn str(&mut self) -> Option<String> {
        let n = usize::try_from(self.var()?).ok()?;
        String::from_utf8(self.take(n)?.to_vec()).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(address: &str, values: &[&str]) -> Record {
        Record {
            state: State::Deferred,
            attempts: 3,
            file_idx: 1,
            line: 42,
            import_gen: 7,
            first_attempt_ms: 1_764_000_000_000,
            retry_at_ms: 1_764_000_600_000,
            updated_ms: u64::MAX,
            address: address.into(),
            last_reply: "451 4.7.1 greylisted".into(),
            class: Some(Class::Transient),
            values: values.iter().map(|v| v.to_string()).collect(),
        }
    }

    #[test]
    fn round_trip() {
        // Address differs from the key (local-part capitals): stored in full.
        let r = rec("Ann@example.com", &["Ann@example.com", "Ann", ""]);
        let b = r.encode("ann@example.com");
        assert_eq!(Record::decode("ann@example.com", &b), Some(r.clone()));
        assert_eq!(Record::peek_state(&b), Some(State::Deferred));
        assert_eq!(Record::peek_retry_at(&b), Some(r.retry_at_ms));
        assert_eq!(Record::decode("ann@example.com", &b[..b.len() - 1]), None);
    }

    #[test]
    fn address_and_email_cell_are_not_stored_twice() {
        let r = rec("ann@example.com", &["ann@example.com", "Ann", "Lyon"]);
        let b = r.encode("ann@example.com");
        assert_eq!(Record::decode("ann@example.com", &b), Some(r.clone()));
        assert!(!b.windows(3).any(|w| w == b"ann"), "{b:?}");
        // A raw cell that differs from the address (spaces kept as given) stays verbatim.
        let r = rec("ann@example.com", &[" ann@example.com", "Ann"]);
        let b = r.encode("ann@example.com");
        assert_eq!(Record::decode("ann@example.com", &b), Some(r));
    }

    #[test]
    fn class_round_trips_and_old_records_have_none() {
        for c in [None, Some(Class::AddressPermanent), Some(Class::Throttling)] {
            let mut r = rec("ann@example.com", &["Ann"]);
            r.class = c;
            let b = r.encode("ann@example.com");
            assert_eq!(Record::decode("ann@example.com", &b).unwrap().class, c);
        }
        let mut r = rec("ann@example.com", &[]);
        r.class = None;
        r.state = State::Bounced;
        r.last_reply = "550 5.1.1 user unknown".into();
        assert!(r.is_address_bounce(), "classified from the text");
        r.last_reply = "550 5.7.1 listed on a DNSBL".into();
        assert!(!r.is_address_bounce());
        r.class = Some(Class::AddressPermanent);
        assert!(r.is_address_bounce(), "the stored class wins");
    }

    #[test]
    fn old_layout_is_refused() {
        let mut b = rec("a@b.example", &[]).encode("a@b.example");
        b[0] = 1;
        assert_eq!(Record::decode("a@b.example", &b), None);
        assert_eq!(Record::peek_state(&b), None);
    }
}
