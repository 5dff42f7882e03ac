//! `blast user add`: adds (or replaces) a submission user in the users file.
//!
//! The password never comes from the command line (it would show in `ps` and shell
//! history) and is never printed: it is read from `--password-file`, else the
//! `BLAST_PASSWORD` environment variable, else one line of standard input.

use std::io::BufRead;
use std::path::Path;

use crate::cli::UserAction;
use crate::error::{Error, Result};
use crate::serve::users::{self, UsersError};

/// The environment variable `blast user add` reads the password from.
pub const PASSWORD_ENV: &str = "BLAST_PASSWORD";

/// Runs a `blast user` action with the process's environment and standard input.
pub fn run(action: UserAction) -> Result<i32> {
    let env = std::env::var(PASSWORD_ENV).ok();
    run_with(action, env, &mut std::io::stdin().lock())
}

/// Runs a `blast user` action; `env_password` stands for `$BLAST_PASSWORD` and `stdin` for
/// standard input (tests pass their own).
pub fn run_with(
    action: UserAction,
    env_password: Option<String>,
    stdin: &mut dyn BufRead,
) -> Result<i32> {
    match action {
        UserAction::Add {
            name,
            domains,
            password_file,
            users: path,
        } => {
            let password = read_password(password_file.as_deref(), env_password, stdin)?;
            let replaced =
                users::add_user(&path, &name, &password, &domains).map_err(|e| match e {
                    UsersError::Io { path, source } => {
                        Error::io(path.display().to_string(), source)
                    }
                    other => Error::Config(other.to_string()),
                })?;
            let verb = if replaced { "replaced" } else { "added" };
            eprintln!(
                "{verb} user {name} ({}) in {}",
                domains.join(", "),
                path.display()
            );
            Ok(0)
        }
    }
}

/// The password from the file (first line), the environment, or a stdin line.
fn read_password(
    file: Option<&Path>,
    env: Option<String>,
    stdin: &mut dyn BufRead,
) -> Result<String> {
    let line = match file {
        Some(f) => std::fs::read_to_string(f)
            .map_err(|e| Error::io(format!("password file {}", f.display()), e))?
            .lines()
            .next()
            .unwrap_or("")
            .to_string(),
        None => match env {
            Some(p) => p,
            None => {
                let mut l = String::new();
                stdin
                    .read_line(&mut l)
                    .map_err(|e| Error::io("reading the password from stdin", e))?;
                l
            }
        },
    };
    let password = line.trim_end_matches(['\r', '\n']).to_string();
    if password.is_empty() {
        return Err(Error::Config(format!(
            "no password: give --password-file FILE, set {PASSWORD_ENV}, or write it on stdin"
        )));
    }
    Ok(password)
}
