//! Live progress while `blast send` runs: on a terminal, indicatif lines (an overall bar, the
//! counts, the lane, the busiest domains) redrawn at most 10 times a second and left on the
//! screen when the run ends (never cleared); when stderr is not a terminal (CI, pipes, logs),
//! one plain line every [`PLAIN_EVERY`]; with `--json-progress`, one JSON object per second
//! on stdout. All three show the same [`Frame`]; the last frame's figures are the store's.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio::sync::oneshot;

use super::frame::{Baseline, Frame, Sampler};
use super::{json, lines};
use crate::lane::Stats;
use crate::store::campaign::{CampaignStore, Counts};

/// How often the terminal lines are updated (indicatif also caps its redraws at 10 per second).
const TICK: Duration = Duration::from_millis(200);
/// How often a plain line is written when stderr is not a terminal.
pub const PLAIN_EVERY: Duration = Duration::from_secs(3);
/// How often a JSON line is written.
const JSON_EVERY: Duration = Duration::from_secs(1);

/// What the display shows and where.
pub struct ProgressOptions {
    /// Campaign id.
    pub campaign: String,
    /// The lane's counters.
    pub stats: Arc<Stats>,
    /// No display on stderr.
    pub quiet: bool,
    /// JSON lines on stdout.
    pub json: bool,
    /// `status.json`, rewritten every couple of seconds so `blast status` works while this
    /// process holds the store: the store's counts per state and this run's counters.
    pub snapshot: PathBuf,
    /// The campaign's store.
    pub store: Arc<CampaignStore>,
    /// The store's counts when the run started.
    pub base: Baseline,
    /// The lane's global rate as configured.
    pub limit: String,
}

/// A running progress display.
pub struct Progress {
    stop: oneshot::Sender<Option<Counts>>,
    task: tokio::task::JoinHandle<()>,
}

impl Progress {
    /// Stops the display after a last frame from `counts` (the store's final counts), which
    /// stays on the terminal above the summary.
    pub async fn finish(self, counts: Option<&Counts>) {
        let _ = self.stop.send(counts.cloned());
        let _ = self.task.await;
    }
}

/// The terminal's lines: one indicatif bar in a `MultiProgress` whose message is every
/// display line. One message per tick means one redraw per tick (a bar per line would
/// redraw the block once per line changed: 8 draws a tick, beyond the 10-a-second cap).
struct Screen {
    _multi: MultiProgress,
    bar: ProgressBar,
    /// Lines shown so far at most: the block never shrinks (blank lines pad it), so nothing
    /// below it is drawn over.
    height: usize,
}

impl Screen {
    fn new() -> Screen {
        let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr_with_hz(10));
        let bar = multi.add(ProgressBar::new_spinner());
        bar.set_style(ProgressStyle::with_template("{msg}").expect("a valid template"));
        Screen {
            _multi: multi,
            bar,
            height: 0,
        }
    }

    fn show(&mut self, mut text: Vec<String>) {
        self.height = self.height.max(text.len());
        text.resize(self.height, String::new());
        self.bar.set_message(text.join("\n"));
    }

    fn finish(self) {
        self.bar.finish();
    }
}

/// Starts the display.
pub fn spawn(o: ProgressOptions) -> Progress {
    let (stop, mut stopped) = oneshot::channel::<Option<Counts>>();
    let task = tokio::spawn(async move {
        let mut sampler = Sampler::new(o.base, o.limit.clone());
        let mut screen = (!o.quiet && std::io::stderr().is_terminal()).then(Screen::new);
        let plain = !o.quiet && screen.is_none();
        let mut last_plain = Instant::now();
        let mut last_json = Instant::now() - JSON_EVERY;
        let mut last_snap = Instant::now();
        // Counting reads every record: on a big store, count at most 5% of the time.
        let mut snap_every = Duration::from_secs(2);
        let counts = loop {
            tokio::select! {
                c = &mut stopped => break c.ok().flatten(),
                _ = tokio::time::sleep(TICK) => {}
            }
            let f = sampler.frame(&o.stats);
            if let Some(s) = screen.as_mut() {
                s.show(lines::terminal(
                    &o.campaign,
                    &f,
                    term_width().saturating_sub(1),
                ));
            }
            if plain && last_plain.elapsed() >= PLAIN_EVERY {
                eprintln!("{}", lines::plain(&o.campaign, &f));
                last_plain = Instant::now();
            }
            if o.json && last_json.elapsed() >= JSON_EVERY {
                json_line(&o.campaign, &f);
                last_json = Instant::now();
            }
            if last_snap.elapsed() >= snap_every {
                let t0 = Instant::now();
                let st = o.store.clone();
                let counts = tokio::task::spawn_blocking(move || st.counts().ok())
                    .await
                    .ok()
                    .flatten();
                snap_every = Duration::from_secs(2).max(t0.elapsed() * 20);
                super::summary::write_live_snapshot(
                    &o.snapshot,
                    &o.campaign,
                    &o.stats,
                    counts.as_ref(),
                );
                last_snap = Instant::now();
            }
        };
        let f = match &counts {
            Some(c) => sampler.last_frame(&o.stats, c),
            None => sampler.frame(&o.stats),
        };
        if let Some(mut s) = screen {
            s.show(lines::terminal(
                &o.campaign,
                &f,
                term_width().saturating_sub(1),
            ));
            s.finish();
        }
        if plain {
            eprintln!("{}", lines::plain(&o.campaign, &f));
        }
        if o.json {
            json_line(&o.campaign, &f);
        }
    });
    Progress { stop, task }
}

fn json_line(campaign: &str, f: &Frame) {
    let mut out = std::io::stdout().lock();
    // A closed pipe ends the dashboard, not the send.
    let _ = writeln!(out, "{}", json::object(campaign, f)).and_then(|_| out.flush());
}

/// The terminal's width in columns (stderr's), 80 when it cannot be told. Read every frame,
/// so a resized window gets lines of its new width.
fn term_width() -> usize {
    // SAFETY: TIOCGWINSZ writes a `winsize` into the struct we pass; fd 2 may be anything,
    // and a failure leaves the zeroed struct, which we treat as unknown.
    let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
    let r = unsafe { libc::ioctl(2, libc::TIOCGWINSZ, &mut ws) };
    if r == 0 && ws.ws_col > 0 {
        ws.ws_col as usize
    } else {
        80
    }
    .max(20)
}
