//! `blast holds list|lift`: the response-rule holds of the global state (see
//! [`crate::lane::sites`]), through its one owner like `blast suppress`.

use std::path::Path;

use crate::cli::HoldsAction;
use crate::error::{Error, Result};
use crate::owner::Global;

/// Runs a `blast holds` action on the global state of `state_dir`.
pub fn run(state_dir: &Path, action: HoldsAction) -> Result<i32> {
    let g = Global::shared(state_dir);
    match action {
        HoldsAction::List { json } => {
            let holds = g.holds()?;
            if json {
                let v = serde_json::to_string(&holds)
                    .map_err(|e| Error::Lane(format!("holds as JSON: {e}")))?;
                println!("{v}");
            } else if holds.is_empty() {
                println!("no holds in force");
            } else {
                super::status::print_holds(&holds);
            }
            Ok(0)
        }
        HoldsAction::Lift { site, ip } => {
            let n = g.lift_holds(site.trim(), ip.as_deref())?;
            if n == 0 {
                eprintln!("blast: no hold on {site:?} (see `blast holds list`)");
                return Ok(1);
            }
            println!(
                "lifted {n} hold(s) on {site}; a running send picks this up on its next start"
            );
            Ok(0)
        }
    }
}
