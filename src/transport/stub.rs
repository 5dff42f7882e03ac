//! An in-memory transport: records every message it is given and answers per recipient from
//! a rule. Lets lane tests and benches run the real scheduling code without sockets.

use std::sync::Mutex;

use super::{Envelope, RcptOutcome};
use crate::classify::{classify, Class, Stage};

/// The reply a recipient gets: `(code, text)`.
pub type Rule = Box<dyn Fn(&str) -> (u16, String) + Send + Sync>;

/// An in-memory destination.
pub struct Stub {
    rule: Rule,
    /// Every accepted message: (envelope, bytes).
    pub delivered: Mutex<Vec<(Envelope, Vec<u8>)>>,
}

impl Default for Stub {
    fn default() -> Self {
        Stub::new(Box::new(|_| (250, "2.0.0 ok".into())))
    }
}

impl Stub {
    /// A stub answering each recipient with `rule(address)`.
    pub fn new(rule: Rule) -> Self {
        Stub {
            rule,
            delivered: Mutex::new(Vec::new()),
        }
    }

    /// Messages accepted so far.
    pub fn count(&self) -> usize {
        self.delivered
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .len()
    }

    pub(super) fn accept(&self, env: &Envelope, msg: &[u8]) -> Vec<RcptOutcome> {
        let res: Vec<RcptOutcome> = env
            .rcpts
            .iter()
            .map(|r| {
                let (code, text) = (self.rule)(r);
                let reply = format!("{code} {text}");
                match classify(Stage::Rcpt, code, &text) {
                    Class::Success => RcptOutcome::Delivered(reply),
                    class => RcptOutcome::Refused { class, reply },
                }
            })
            .collect();
        if res.iter().any(|r| matches!(r, RcptOutcome::Delivered(_))) {
            self.delivered
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push((env.clone(), msg.to_vec()));
        }
        res
    }
}
