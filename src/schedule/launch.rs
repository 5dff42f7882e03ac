//! How a claimed slot becomes a run: [`run_settings`] derives the run's settings (own id and
//! state, global suppression list), [`Launch`] starts it. [`SendLauncher`] is `blast send`;
//! tests may substitute a recorder.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use chrono::{DateTime, Utc};

use super::clock::BoxFuture;
use crate::config::schedule::run_id;
use crate::config::Settings;
use crate::error::Result;
use crate::send::{self, SendOptions};
use crate::shutdown::Shutdown;
use crate::token::TokenSettings;

/// What one launch of a run did.
#[derive(Debug, Clone, Default)]
pub struct RunResult {
    /// Recipients per state after this launch.
    pub counts: BTreeMap<String, u64>,
    /// Every recipient reached a final state.
    pub complete: bool,
    /// Stopped by the shutdown (state saved; resumes on the next start).
    pub interrupted: bool,
    /// Why it stopped early (lane failure), if it did.
    pub problem: Option<String>,
}

/// Starts runs. Object-safe so the scheduler can hold `Arc<dyn Launch>`.
pub trait Launch: Send + Sync {
    /// Runs (or resumes) the run described by `run` until it completes, stops or fails.
    fn launch(
        &self,
        run: Settings,
        shutdown: Arc<Shutdown>,
    ) -> BoxFuture<'static, Result<RunResult>>;
}

/// Launches runs with [`send::send`] (quiet): the same lane, throttles and resume rules as
/// `blast send`.
#[derive(Debug, Default, Clone, Copy)]
pub struct SendLauncher;

impl Launch for SendLauncher {
    fn launch(
        &self,
        run: Settings,
        shutdown: Arc<Shutdown>,
    ) -> BoxFuture<'static, Result<RunResult>> {
        Box::pin(async move {
            let opts = SendOptions {
                quiet: true,
                ..Default::default()
            };
            let summary = send::send(&run, &opts, shutdown).await?;
            Ok(RunResult {
                counts: summary
                    .counts
                    .by_state
                    .iter()
                    .map(|(k, v)| (k.to_string(), *v))
                    .collect(),
                complete: summary.status() == crate::run_status::RunStatus::Complete,
                interrupted: summary.interrupted,
                problem: summary.fatal.clone(),
            })
        })
    }
}

/// The settings of one run of `base` at `slot`: id `<campaign>@<slot>`, its store under
/// `<serve_state>/runs/<campaign>/`, the suppression list of `serve_state` (global), and
/// serve's token keys when given (`None` keeps `base`'s).
pub fn run_settings(
    base: &Settings,
    serve_state: &Path,
    slot: DateTime<Utc>,
    tokens: Option<&Arc<TokenSettings>>,
) -> Settings {
    let mut s = base.clone();
    s.id = run_id(&base.id, slot);
    s.state_dir = serve_state.join("runs").join(&base.id);
    s.suppression_dir = Some(serve_state.to_path_buf());
    if let Some(t) = tokens {
        s.tokens = Some(t.clone());
    }
    s
}
