//! The campaigns directory as the scheduler sees it: every `*.toml` file with a `[schedule]`
//! table, reloaded when its bytes change. A file that stops validating is reported once per
//! version and its previous valid version keeps running; a removed file stops being scheduled.
//!
//! Editors and `cp` write files in place, so a scan can read a half-written file: invalid bytes
//! are reported only when a second scan reads the same bytes (a valid version applies at once).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::config::{self, Settings};

/// A loaded campaign file.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The valid settings in use (the last version that validated).
    pub settings: Arc<Settings>,
    /// Fingerprint of the bytes that produced `settings`.
    hash: u64,
    /// Fingerprint of the bytes last seen (differs from `hash` while the file is invalid).
    seen: u64,
    /// The current error, if the file on disk does not validate.
    pub error: Option<String>,
}

/// What a rescan found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// A new scheduled campaign.
    Added(String),
    /// A campaign's file changed and the new version validated.
    Changed(String),
    /// A campaign's file is gone (or lost its `[schedule]` table).
    Removed(String),
    /// A file does not validate: (file, error). The previous valid version, if any, stays.
    Invalid(PathBuf, String),
}

/// The scheduled campaigns of a directory, by file.
#[derive(Debug)]
pub struct CampaignDir {
    dir: PathBuf,
    files: BTreeMap<PathBuf, Loaded>,
    /// Files that never validated: the hash of the bytes already reported.
    broken: BTreeMap<PathBuf, u64>,
    /// Invalid bytes seen once, not reported yet (they may be a half-written file).
    unsettled: BTreeMap<PathBuf, u64>,
    /// Report invalid bytes only when seen twice (watching), or at once (a one-off listing).
    settle: bool,
}

fn hash(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf29ce484222325u64, |h, b| {
        (h ^ *b as u64).wrapping_mul(0x100000001b3)
    })
}

impl CampaignDir {
    /// Watches `dir` (nothing is read until [`CampaignDir::rescan`]).
    pub fn new(dir: &Path) -> CampaignDir {
        CampaignDir {
            dir: dir.to_path_buf(),
            files: BTreeMap::new(),
            broken: BTreeMap::new(),
            unsettled: BTreeMap::new(),
            settle: true,
        }
    }

    /// For one scan (`blast schedule list`): invalid files are reported at once.
    pub fn once(dir: &Path) -> CampaignDir {
        CampaignDir {
            settle: false,
            ..CampaignDir::new(dir)
        }
    }

    /// Scheduled campaigns in use, by campaign id.
    pub fn campaigns(&self) -> BTreeMap<String, Arc<Settings>> {
        self.files
            .values()
            .map(|l| (l.settings.id.clone(), l.settings.clone()))
            .collect()
    }

    /// Current errors by file (for the snapshot).
    pub fn errors(&self) -> BTreeMap<String, String> {
        let mut out: BTreeMap<String, String> = self
            .files
            .iter()
            .filter_map(|(p, l)| l.error.clone().map(|e| (p.display().to_string(), e)))
            .collect();
        for p in self.broken.keys() {
            out.entry(p.display().to_string())
                .or_insert_with(|| "does not validate (see the serve log)".into());
        }
        out
    }

    /// Re-reads the directory. A directory that cannot be read is one `Invalid` change and
    /// keeps everything as it was (a transient error must not unschedule every campaign).
    pub fn rescan(&mut self) -> Vec<Change> {
        let mut changes = Vec::new();
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) => {
                changes.push(Change::Invalid(
                    self.dir.clone(),
                    format!("cannot read campaigns dir: {e}"),
                ));
                return changes;
            }
        };
        let mut present: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "toml") && p.is_file())
            .collect();
        present.sort();
        for path in &present {
            let Ok(bytes) = std::fs::read(path) else {
                continue; // Vanished between listing and reading: the next scan sees it gone.
            };
            let h = hash(&bytes);
            if let Some(l) = self.files.get(path) {
                if l.seen == h {
                    continue;
                }
            } else if self.broken.get(path) == Some(&h) {
                continue;
            }
            let src = String::from_utf8_lossy(&bytes);
            match config::parse(path, &src) {
                Ok(s) if s.schedule.is_none() => {
                    // Not (or no longer) a scheduled campaign.
                    self.broken.remove(path);
                    if let Some(old) = self.files.remove(path) {
                        changes.push(Change::Removed(old.settings.id.clone()));
                    }
                }
                Ok(s) => {
                    let clash = self
                        .files
                        .iter()
                        .find(|(p, l)| *p != path && l.settings.id == s.id)
                        .map(|(p, _)| p.clone());
                    if let Some(other) = clash {
                        let msg = format!(
                            "campaign id {:?} is already used by {}; ignored",
                            s.id,
                            other.display()
                        );
                        self.note_invalid(path, h, msg, &mut changes);
                        continue;
                    }
                    self.broken.remove(path);
                    let id = s.id.clone();
                    let old = self.files.insert(
                        path.clone(),
                        Loaded {
                            settings: Arc::new(s),
                            hash: h,
                            seen: h,
                            error: None,
                        },
                    );
                    match old {
                        None => changes.push(Change::Added(id)),
                        Some(o) if o.settings.id != id => {
                            changes.push(Change::Removed(o.settings.id.clone()));
                            changes.push(Change::Added(id));
                        }
                        Some(o) if o.hash != h => changes.push(Change::Changed(id)),
                        Some(_) => {} // Back to the version in use after an invalid edit.
                    }
                }
                Err(e) => {
                    if self.settle && self.unsettled.get(path) != Some(&h) {
                        self.unsettled.insert(path.clone(), h);
                        continue;
                    }
                    self.unsettled.remove(path);
                    self.note_invalid(path, h, e.to_string(), &mut changes)
                }
            }
        }
        let gone: Vec<PathBuf> = self
            .files
            .keys()
            .filter(|p| !present.contains(p))
            .cloned()
            .collect();
        for p in gone {
            if let Some(old) = self.files.remove(&p) {
                changes.push(Change::Removed(old.settings.id.clone()));
            }
        }
        self.broken.retain(|p, _| present.contains(p));
        self.unsettled.retain(|p, _| present.contains(p));
        changes
    }

    fn note_invalid(&mut self, path: &Path, h: u64, msg: String, changes: &mut Vec<Change>) {
        match self.files.get_mut(path) {
            Some(l) => {
                l.seen = h;
                l.error = Some(msg.clone());
            }
            None => {
                self.broken.insert(path.to_path_buf(), h);
            }
        }
        changes.push(Change::Invalid(path.to_path_buf(), msg));
    }

    /// The settings to launch a run of `campaign` with: the file reloaded now (a fresh
    /// template render), or the version in use if the file no longer validates.
    pub fn fresh(&self, campaign: &str) -> Option<Arc<Settings>> {
        let (path, l) = self.files.iter().find(|(_, l)| l.settings.id == campaign)?;
        match config::load(path) {
            Ok(s) if s.id == campaign && s.schedule.is_some() => Some(Arc::new(s)),
            _ => Some(l.settings.clone()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn campaign(id: &str, cron: &str) -> String {
        format!(
            "[campaign]\nid = \"{id}\"\nfrom = \"a@b.example\"\nsubject = \"s\"\ntext = \"t.txt\"\nlists = [\"l.csv\"]\n\n[lane]\ntransport = \"outbox:out\"\n\n[schedule]\ncron = \"{cron}\"\n"
        )
    }

    #[test]
    fn add_change_invalid_clash_remove() {
        let d = tempfile::tempdir().unwrap();
        let p = |n: &str| d.path().join(n);
        std::fs::write(p("t.txt"), "hi").unwrap();
        std::fs::write(p("a.toml"), campaign("a", "0 9 * * *")).unwrap();
        std::fs::write(
            p("plain.toml"),
            campaign("p", "0 9 * * *").replace("[schedule]\ncron = \"0 9 * * *\"\n", ""),
        )
        .unwrap();
        let mut cd = CampaignDir::new(d.path());
        assert_eq!(cd.rescan(), vec![Change::Added("a".into())]);
        assert!(cd.rescan().is_empty(), "unchanged bytes are not reloaded");

        std::fs::write(p("a.toml"), campaign("a", "0 10 * * *")).unwrap();
        assert_eq!(cd.rescan(), vec![Change::Changed("a".into())]);

        // Invalid bytes: silent on first sight (maybe half written), reported on the second,
        // then not again; the valid version stays in use.
        std::fs::write(p("a.toml"), campaign("a", "0 99 * * *")).unwrap();
        assert!(cd.rescan().is_empty());
        let ch = cd.rescan();
        assert!(
            matches!(&ch[..], [Change::Invalid(f, e)] if *f == p("a.toml") && e.contains("schedule.cron")),
            "{ch:?}"
        );
        assert!(cd.rescan().is_empty());
        assert_eq!(
            cd.campaigns()["a"].schedule.as_ref().unwrap().expr,
            "0 10 * * *"
        );
        assert!(cd.errors().contains_key(&p("a.toml").display().to_string()));

        // A second file with the same id is refused.
        std::fs::write(p("b.toml"), campaign("a", "0 11 * * *")).unwrap();
        let ch = cd.rescan();
        assert!(
            matches!(&ch[..], [Change::Invalid(f, e)] if *f == p("b.toml") && e.contains("already used")),
            "{ch:?}"
        );

        std::fs::remove_file(p("a.toml")).unwrap();
        std::fs::remove_file(p("b.toml")).unwrap();
        assert_eq!(cd.rescan(), vec![Change::Removed("a".into())]);
        assert!(cd.campaigns().is_empty());
    }
}
