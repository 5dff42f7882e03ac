//! `blast bounces parse FILE [--json]`: what one received message says about its recipients
//! (the results of [`crate::bounce::parse`]), printed and nothing else — no store is opened,
//! so it is safe on any message, any time.

use std::io::Read;

use crate::bounce::{self, Bounce};
use crate::cli::BouncesAction;
use crate::error::{Error, Result};

/// Largest message read: far above any bounce, and it bounds a mistaken `-` on a huge pipe.
const MAX_MESSAGE: u64 = 64 * 1024 * 1024;

/// Runs a `blast bounces` action.
pub fn run(action: BouncesAction) -> Result<i32> {
    match action {
        BouncesAction::Parse { file, json } => {
            let mut raw = Vec::new();
            let name = file.display().to_string();
            let read = if name == "-" {
                std::io::stdin().take(MAX_MESSAGE).read_to_end(&mut raw)
            } else {
                std::fs::File::open(&file).and_then(|f| f.take(MAX_MESSAGE).read_to_end(&mut raw))
            };
            read.map_err(|e| Error::io(format!("cannot read {name}"), e))?;
            let results = bounce::parse(&raw);
            if json {
                let text = serde_json::to_string_pretty(&results)
                    .map_err(|e| Error::io("json", std::io::Error::other(e)))?;
                println!("{text}");
            } else {
                print_table(&name, &results);
            }
            Ok(0)
        }
    }
}

fn print_table(name: &str, results: &[Bounce]) {
    if results.is_empty() {
        println!("{name}: not a bounce, a complaint or an auto-reply (no results)");
        return;
    }
    println!(
        "{:<36} {:<9} {:<20} {:<20} {:<7} reason",
        "recipient", "class", "category", "action", "status"
    );
    for b in results {
        let action = serde_json::to_value(b.action)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        println!(
            "{:<36} {:<9} {:<20} {:<20} {:<7} {}",
            b.recipient.as_deref().unwrap_or("(unknown)"),
            b.class.as_str(),
            format!("{:?}", b.category),
            action,
            b.status.as_deref().unwrap_or("-"),
            crate::bounce::scan::one_line(&b.reason, 120),
        );
    }
    if let Some(id) = results
        .iter()
        .find_map(|b| b.original_message_id.as_deref())
    {
        println!("original Message-ID: {id}");
    }
    if let Some(t) = results.iter().find_map(|b| b.verp_token.as_deref()) {
        println!("token candidate: {t}");
    }
}
