//! `blast preview`: renders the first sendable row of the lists and prints the message.

use std::io::Write;
use std::path::Path;

use crate::config;
use crate::error::{Error, Result};
use crate::list::hygiene;
use crate::send;

/// Prints the first sendable row's message to stdout.
pub fn run(campaign: &Path) -> Result<i32> {
    let s = config::load(campaign)?;
    let (templates, mut reader, _) = send::load_inputs(&s)?;
    // The lane's own builder: the preview is the message as it goes out (List-Unsubscribe,
    // Message-ID, DKIM signature).
    let spec = crate::lane::MessageSpec::new(&s, templates, Vec::new());
    let all_columns: Vec<Vec<String>> = (0..reader.paths().len())
        .map(|i| reader.columns(i).to_vec())
        .collect();
    while let Some(row) = reader.next_row() {
        let Ok(row) = row else { continue };
        let Ok(mb) = hygiene::check(row.email, &s.policy) else {
            continue;
        };
        let values: Vec<String> = row.record.iter().map(str::to_string).collect();
        let columns = &all_columns[row.file_idx];
        let Ok(built) = spec.build_row(&mb.key, &mb.address, columns, &values) else {
            continue;
        };
        let msg = built.msg;
        let mut out = std::io::stdout().lock();
        out.write_all(String::from_utf8_lossy(&msg).as_bytes())
            .and_then(|_| out.flush())
            .map_err(|e| Error::io("writing to stdout", e))?;
        return Ok(0);
    }
    Err(Error::Config(format!(
        "{}: no sendable row in the lists",
        campaign.display()
    )))
}
