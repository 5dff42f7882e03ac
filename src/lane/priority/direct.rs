//! Direct delivery (`transport = "mx"`) of one queued message: its open recipients grouped by
//! domain, one transaction per domain on a session to one of that domain's MX hosts (from
//! the lane's per-host pool, or new). A domain's MX lookup waits only for this message — the
//! other workers go on — and is cached for every later one.

use std::time::Duration;

use super::deliver::Ctx;
use crate::transport::mx::{Mx, Route};
use crate::transport::{Broken, Envelope, RcptOutcome, Session};

/// Idle MX sessions are kept this long.
const POOL_IDLE: Duration = super::deliver::IDLE;

/// The outcome of each of `env`'s recipients, in order.
pub async fn attempt(ctx: &Ctx, mx: &Mx, env: &Envelope, data: &[u8]) -> Vec<RcptOutcome> {
    let mut groups: Vec<(String, Vec<usize>)> = Vec::new();
    for (i, r) in env.rcpts.iter().enumerate() {
        let d = domain_of(r);
        match groups.iter_mut().find(|g| g.0 == d) {
            Some(g) => g.1.push(i),
            None => groups.push((d, vec![i])),
        }
    }
    let mut out: Vec<Option<RcptOutcome>> = vec![None; env.rcpts.len()];
    for (domain, idx) in groups {
        let sub = Envelope {
            rcpts: idx.iter().map(|&i| env.rcpts[i].clone()).collect(),
            ..env.clone()
        };
        let res = to_domain(ctx, mx, &domain, &sub, data).await;
        for (&i, o) in idx.iter().zip(res) {
            out[i] = Some(o);
        }
    }
    // Transactional volumes are small and a postmaster reads the file while serve runs:
    // each message's lines reach it at once (written, not fsynced).
    if let Some(a) = &mx.accounting {
        a.flush();
    }
    out.into_iter()
        .map(|o| o.unwrap_or_else(|| Broken::Lost("no result".into()).not_sent()))
        .collect()
}

/// The recipient's domain as DNS knows it (A-label, lower case).
fn domain_of(rcpt: &str) -> String {
    let d = rcpt.rsplit_once('@').map_or(rcpt, |(_, d)| d);
    idna::domain_to_ascii(d).unwrap_or_else(|_| d.to_ascii_lowercase())
}

async fn to_domain(
    ctx: &Ctx,
    mx: &Mx,
    domain: &str,
    env: &Envelope,
    data: &[u8],
) -> Vec<RcptOutcome> {
    let n = env.rcpts.len();
    let set = match Route::of(domain, Some(mx.resolver.resolve(domain).await)) {
        Route::Hosts(set) => set,
        Route::Refuse { class, reply } => {
            return finish(
                mx,
                env,
                None,
                vec![RcptOutcome::Refused { class, reply }; n],
            );
        }
        Route::Wait(why) => {
            let o = RcptOutcome::NotSent {
                why,
                throttled: false,
            };
            return finish(mx, env, None, vec![o; n]);
        }
    };
    let s = &ctx.settings;
    // A pooled session the host closed while idle gets one more try on a new connection.
    for round in 0..2 {
        let mut sess: Session<()> = match ctx.mx_pool.take(&set) {
            Some(c) => c,
            None => match ctx.mx_pool.open(mx, &set).await {
                Ok(c) => c,
                Err(e) => {
                    let o = RcptOutcome::NotSent {
                        why: format!("no MX host of {domain} took a connection: {e}"),
                        throttled: e.class() == crate::classify::Class::Throttling,
                    };
                    return finish(mx, env, None, vec![o; n]);
                }
            },
        };
        let fresh = sess.used() == 0;
        sess.submit((), env, data.to_vec()).await;
        let res = sess
            .next_result()
            .await
            .map(|(_, r)| r)
            .unwrap_or_else(|| vec![Broken::Lost("no result".into()).not_sent(); n]);
        let lost_idle = matches!(sess.broken(), Some(Broken::Lost(_)))
            && res.iter().all(|r| {
                matches!(
                    r,
                    RcptOutcome::NotSent {
                        throttled: false,
                        ..
                    }
                )
            });
        let peer = sess.peer().cloned();
        if sess.reusable(s.max_messages_per_connection, s.max_connection_age) {
            for old in ctx.mx_pool.put(sess, POOL_IDLE) {
                old.close().await;
            }
        } else {
            sess.close().await;
        }
        if lost_idle && !fresh && round == 0 {
            continue;
        }
        return finish(mx, env, peer.as_ref(), res);
    }
    vec![Broken::Lost("connection lost twice".into()).not_sent(); n]
}

/// Writes the attempt of each recipient to the accounting file; returns the outcomes.
fn finish(
    mx: &Mx,
    env: &Envelope,
    peer: Option<&crate::transport::Peer>,
    res: Vec<RcptOutcome>,
) -> Vec<RcptOutcome> {
    for (r, o) in env.rcpts.iter().zip(&res) {
        mx.account(r, peer, o.text());
    }
    res
}
