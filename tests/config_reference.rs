//! The README's configuration reference cannot drift from the code: every key the config
//! parsers accept (the fields of the `Raw*` structs serde reads campaign.toml and blast.toml
//! into) is named in the README as `` `key` ``.

use std::path::Path;

/// (struct, field) of every `struct Raw…` in `file`.
fn raw_fields(file: &Path) -> Vec<(String, String)> {
    let src = std::fs::read_to_string(file).unwrap();
    let mut out = Vec::new();
    let mut current: Option<String> = None;
    for line in src.lines() {
        let t = line.trim();
        if let Some(rest) = t
            .strip_prefix("struct Raw")
            .or_else(|| t.strip_prefix("pub(crate) struct Raw"))
            .or_else(|| t.strip_prefix("pub struct Raw"))
        {
            if rest.ends_with('{') {
                current = Some(format!("Raw{}", rest.trim_end_matches('{').trim()));
            }
            continue;
        }
        let Some(name) = &current else { continue };
        if t == "}" {
            current = None;
            continue;
        }
        if t.starts_with("//") || t.starts_with('#') {
            continue;
        }
        let t = t
            .strip_prefix("pub(crate) ")
            .or_else(|| t.strip_prefix("pub "))
            .unwrap_or(t);
        if let Some((field, _)) = t.split_once(':') {
            if field
                .chars()
                .all(|c| c.is_ascii_lowercase() || c == '_' || c.is_ascii_digit())
            {
                out.push((name.clone(), field.to_string()));
            }
        }
    }
    out
}

#[test]
fn every_config_key_is_in_the_readme() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let mut missing = Vec::new();
    let mut seen = 0;
    for f in [
        "src/config.rs",
        "src/config/dkim.rs",
        "src/config/pool.rs",
        "src/config/schedule.rs",
        "src/config/shaping.rs",
        "src/config/warmup.rs",
        "src/serve/config.rs",
    ] {
        for (st, field) in raw_fields(&root.join(f)) {
            seen += 1;
            // The file-level structs' fields are the tables themselves (`[lane]`, `[serve]`).
            let named = readme.contains(&format!("`{field}`"))
                || readme.contains(&format!("[{field}]"))
                || readme.contains(&format!("[{field}."))
                || readme.contains(&format!(".{field}]"))
                || readme.contains(&format!("\n{field} = "))
                || readme.contains(&format!("# {field} = "));
            if !named {
                missing.push(format!("{f}: {st}.{field}"));
            }
        }
    }
    assert!(
        seen > 60,
        "the parser found only {seen} keys: has the config code moved?"
    );
    assert!(
        missing.is_empty(),
        "keys the README does not document: {missing:#?}"
    );
}
