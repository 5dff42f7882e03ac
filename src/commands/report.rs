//! `blast report CAMPAIGN [--format html|csv|json] [-o FILE] [--recipients] [--config F]`:
//! the campaign's report ([`crate::report::campaign`]) in the form asked for. Its numbers
//! are the ones `blast status --json` gives: both come from one pass over the store.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::report::{campaign, gather, html};

/// Runs `blast report`.
pub fn run(
    campaign_file: &Path,
    format: &str,
    output: Option<&Path>,
    recipients: bool,
    server: Option<&Path>,
) -> Result<i32> {
    let s = super::status::settings(campaign_file, server)?;
    let st = super::status::open_finished(campaign_file, &s)?;
    let g = gather::gather(&s, &st)?;
    let r = campaign::build(&s, &g, &st, recipients)?;
    let text = match format {
        "json" => serde_json::to_string_pretty(&r)
            .map_err(|e| Error::io("json", std::io::Error::other(e)))?,
        "csv" => campaign::to_csv(&r),
        _ => html::render(&r),
    };
    let path: Option<PathBuf> = match (output, format) {
        (Some(p), _) => Some(p.to_path_buf()),
        (None, "html") => Some(crate::send::campaign_dir(&s).join("report.html")),
        _ => None,
    };
    match path {
        None => print!("{text}"),
        Some(p) => {
            std::fs::write(&p, text.as_bytes())
                .map_err(|e| Error::io(format!("cannot write {}", p.display()), e))?;
            eprintln!("blast: report written to {}", p.display());
        }
    }
    Ok(0)
}
