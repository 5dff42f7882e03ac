//! The users file the submission listener authenticates against.
//!
//! One user per line: `name:<argon2 PHC hash>:domain1,domain2`. `#` starts a comment line;
//! blank lines are ignored. Errors name `file:line`.
//!
//! Domains (what a user may send as, RFC 6409 §6.1, checked for the envelope sender and the
//! `From:` header): matched case-insensitively; `example.com` matches exactly that domain,
//! `.example.com` matches any subdomain of it (`a.example.com`, `b.a.example.com`) but not
//! `example.com` itself — list both to allow both. User names are matched exactly (they are
//! login names, not addresses).
//!
//! Passwords are checked with argon2 off the reactor, at most [`VERIFY_CONCURRENCY`] at a
//! time, so a flood of AUTH attempts costs a bounded amount of CPU and memory. An unknown
//! user is checked against a dummy hash, so it takes as long as a wrong password.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use tokio::sync::Semaphore;

/// Password checks running at once (each costs its hash's memory parameter and a core).
pub const VERIFY_CONCURRENCY: usize = 2;
/// argon2id memory cost for new hashes. With [`ITERATIONS`] and one lane a check takes
/// about 20 ms on an idle core here (OWASP's 19 MiB / t=2 measured ~33 ms, over the
/// 10–30 ms budget for an AUTH; 12 MiB / t=2 trades a little memory hardness for that).
/// Existing hashes keep the parameters they were made with (they are in the PHC string).
const MEMORY_KIB: u32 = 12 * 1024;
/// argon2id time cost for new hashes.
const ITERATIONS: u32 = 2;

/// A users file problem, naming the file and (for content errors) the line.
#[derive(Debug, thiserror::Error)]
pub enum UsersError {
    /// The file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The users file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A line is malformed.
    #[error("{path}:{line}: {message}")]
    Line {
        /// The users file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// An argument (name, domain, password) is not acceptable.
    #[error("{0}")]
    Invalid(String),
}

/// One user's entry.
#[derive(Debug, Clone)]
struct Entry {
    hash: String,
    /// Lower-case; a leading `.` means "any subdomain of".
    domains: Vec<String>,
}

/// The loaded users file.
pub struct Users {
    users: HashMap<String, Entry>,
    /// Checked for unknown users so they cost as much as known ones.
    dummy_hash: String,
    limit: Arc<Semaphore>,
}

impl std::fmt::Debug for Users {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the hashes.
        f.debug_struct("Users")
            .field("users", &self.users.keys().collect::<Vec<_>>())
            .finish()
    }
}

fn hasher() -> Argon2<'static> {
    let params = Params::new(MEMORY_KIB, ITERATIONS, 1, None).expect("valid argon2 params");
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// Hashes a password as a PHC string (argon2id, random salt).
pub fn hash_password(password: &str) -> Result<String, UsersError> {
    let salt = SaltString::encode_b64(&rand::random::<[u8; 16]>())
        .map_err(|e| UsersError::Invalid(format!("cannot make a salt: {e}")))?;
    hasher()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| UsersError::Invalid(format!("cannot hash password: {e}")))
}

/// Checks a name: non-empty, printable ASCII without `:` or spaces (it is a field of the file).
fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() || !name.bytes().all(|b| b.is_ascii_graphic() && b != b':') {
        return Err(format!(
            "bad user name {name:?} (printable ASCII, no ':' or spaces)"
        ));
    }
    Ok(())
}

/// Normalises one domain entry (`example.com` or `.example.com`) to lower case.
fn check_domain(d: &str) -> Result<String, String> {
    let d = d.trim().to_ascii_lowercase();
    let bare = d.strip_prefix('.').unwrap_or(&d);
    let ok = !bare.is_empty()
        && bare
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
        && !bare.starts_with('.')
        && !bare.ends_with('.');
    if !ok {
        return Err(format!(
            "bad domain {d:?} (example.com, or .example.com for its subdomains)"
        ));
    }
    Ok(d)
}

/// Parses one non-comment line into `(name, entry)`.
fn parse_line(line: &str) -> Result<(String, Entry), String> {
    let fields: Vec<&str> = line.split(':').collect();
    let [name, hash, domains] = fields[..] else {
        return Err("expected name:<argon2 hash>:domain1,domain2".into());
    };
    check_name(name)?;
    PasswordHash::new(hash).map_err(|e| format!("bad password hash for {name}: {e}"))?;
    let domains = domains
        .split(',')
        .map(check_domain)
        .collect::<Result<Vec<_>, _>>()?;
    Ok((
        name.to_string(),
        Entry {
            hash: hash.to_string(),
            domains,
        },
    ))
}

/// The user name a line defines (`None` for comments and blank lines).
fn line_user(line: &str) -> Option<&str> {
    let t = line.trim();
    if t.is_empty() || t.starts_with('#') {
        return None;
    }
    t.split(':').next()
}

impl Users {
    /// Reads and checks the users file. Blocking (file I/O and one argon2 hash for the
    /// dummy): call it at startup or on `spawn_blocking`.
    pub fn load(path: &Path) -> Result<Users, UsersError> {
        let text = std::fs::read_to_string(path).map_err(|source| UsersError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Users::parse(path, &text)
    }

    /// Parses users file content (`path` is only used in error messages).
    pub fn parse(path: &Path, text: &str) -> Result<Users, UsersError> {
        let mut users = HashMap::new();
        for (i, raw) in text.lines().enumerate() {
            if line_user(raw).is_none() {
                continue;
            }
            let err = |message: String| UsersError::Line {
                path: path.to_path_buf(),
                line: i + 1,
                message,
            };
            let (name, entry) = parse_line(raw.trim()).map_err(err)?;
            if users.contains_key(&name) {
                return Err(err(format!("user {name} is defined twice")));
            }
            users.insert(name, entry);
        }
        Ok(Users {
            users,
            dummy_hash: hash_password("not a password: unknown users are checked against this")?,
            limit: Arc::new(Semaphore::new(VERIFY_CONCURRENCY)),
        })
    }

    /// How many users the file defines.
    pub fn len(&self) -> usize {
        self.users.len()
    }

    /// Whether the file defines no user.
    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }

    /// Checks a password. Runs argon2 on a blocking thread, at most [`VERIFY_CONCURRENCY`]
    /// at a time; an unknown user is checked against a dummy hash and fails.
    pub async fn verify(&self, name: &str, password: &str) -> bool {
        let (hash, known) = match self.users.get(name) {
            Some(e) => (e.hash.clone(), true),
            None => (self.dummy_hash.clone(), false),
        };
        let Ok(_permit) = self.limit.acquire().await else {
            return false;
        };
        let password = password.to_string();
        let ok = tokio::task::spawn_blocking(move || {
            PasswordHash::new(&hash)
                .map(|h| hasher().verify_password(password.as_bytes(), &h).is_ok())
                .unwrap_or(false)
        })
        .await
        .unwrap_or(false);
        ok && known
    }

    /// Whether `name` may send as `domain` (envelope sender or `From:` domain).
    pub fn may_send_as(&self, name: &str, domain: &str) -> bool {
        let Some(entry) = self.users.get(name) else {
            return false;
        };
        let domain = domain.trim_end_matches('.').to_ascii_lowercase();
        entry.domains.iter().any(|d| covers(d, &domain))
    }

    /// Every `(user, domain entry)` that lets a user send as `domain`, sorted by user name
    /// (`blast check` names them when a campaign's From domain is a transactional one).
    pub fn senders_as(&self, domain: &str) -> Vec<(&str, &str)> {
        let domain = domain.trim_end_matches('.').to_ascii_lowercase();
        let mut out: Vec<(&str, &str)> = self
            .users
            .iter()
            .flat_map(|(name, e)| {
                e.domains
                    .iter()
                    .filter(|d| covers(d, &domain))
                    .map(move |d| (name.as_str(), d.as_str()))
            })
            .collect();
        out.sort_unstable();
        out
    }
}

/// Whether domain entry `entry` (lower case; `.parent` = its subdomains) covers `domain`
/// (lower case, no trailing dot).
fn covers(entry: &str, domain: &str) -> bool {
    match entry.strip_prefix('.') {
        Some(parent) => domain
            .strip_suffix(parent)
            .is_some_and(|head| head.len() > 1 && head.ends_with('.')),
        None => entry == domain,
    }
}

/// Adds `name` to the users file (created if missing), or replaces its line if it is there;
/// comments and other lines are kept. Written atomically (temp file + rename) with mode
/// 0600. Returns whether an existing user was replaced.
pub fn add_user(
    path: &Path,
    name: &str,
    password: &str,
    domains: &[String],
) -> Result<bool, UsersError> {
    check_name(name).map_err(UsersError::Invalid)?;
    if password.is_empty() {
        return Err(UsersError::Invalid("empty password".into()));
    }
    if domains.is_empty() {
        return Err(UsersError::Invalid("at least one domain is needed".into()));
    }
    let domains = domains
        .iter()
        .map(|d| check_domain(d))
        .collect::<Result<Vec<_>, _>>()
        .map_err(UsersError::Invalid)?;
    let io = |source| UsersError::Io {
        path: path.to_path_buf(),
        source,
    };
    let old = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(io(e)),
    };
    // Refuse to rewrite a file we could not load: the error is better than a silent "fix".
    Users::parse(path, &old)?;
    let new_line = format!("{name}:{}:{}", hash_password(password)?, domains.join(","));
    let mut out = String::with_capacity(old.len() + new_line.len() + 1);
    let mut replaced = false;
    for line in old.lines() {
        if line_user(line) == Some(name) {
            out.push_str(&new_line);
            replaced = true;
        } else {
            out.push_str(line);
        }
        out.push('\n');
    }
    if !replaced {
        out.push_str(&new_line);
        out.push('\n');
    }
    write_private(path, out.as_bytes()).map_err(io)?;
    Ok(replaced)
}

/// Writes `path` atomically with owner-only permissions: a temp file beside it, fsync, rename.
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let file_name = path.file_name().unwrap_or_default().to_string_lossy();
    let tmp = dir.join(format!(".{file_name}.tmp{}", std::process::id()));
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let res = (|| {
        let mut f = opts.open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if res.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    fn users(text: &str) -> Result<Users, UsersError> {
        Users::parse(Path::new("users"), text)
    }

    #[test]
    fn domains_match_exactly_or_as_subdomains() {
        let h = hash_password("pw").unwrap();
        let u = users(&format!("# c\n\nann:{h}:Example.com,.sub.test\n")).unwrap();
        assert!(u.may_send_as("ann", "example.COM"));
        assert!(!u.may_send_as("ann", "a.example.com"));
        assert!(u.may_send_as("ann", "a.sub.test"));
        assert!(u.may_send_as("ann", "b.a.sub.test"));
        assert!(!u.may_send_as("ann", "sub.test"));
        assert!(!u.may_send_as("ann", "xsub.test"));
        assert!(!u.may_send_as("bob", "example.com"));
        assert_eq!(u.senders_as("A.Sub.test."), vec![("ann", ".sub.test")]);
        assert!(u.senders_as("sub.test").is_empty());
    }

    #[test]
    fn errors_name_the_line() {
        let h = hash_password("pw").unwrap();
        let e = users(&format!("ann:{h}:a.test\n\nbob:nothash:b.test\n")).unwrap_err();
        assert!(
            e.to_string().starts_with("users:3: bad password hash"),
            "{e}"
        );
        let e = users(&format!("ann:{h}:a.test\nann:{h}:a.test\n")).unwrap_err();
        assert_eq!(e.to_string(), "users:2: user ann is defined twice");
        let e = users("ann:x\n").unwrap_err();
        assert!(e.to_string().starts_with("users:1: expected"), "{e}");
        let e = users(&format!("ann:{h}:bad domain\n")).unwrap_err();
        assert!(e.to_string().starts_with("users:1: bad domain"), "{e}");
    }

    #[tokio::test]
    async fn add_verify_replace() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users");
        std::fs::write(&path, "# keep me\n").unwrap();
        assert!(!add_user(&path, "ann", "secret", &["a.test".into()]).unwrap());
        assert!(!add_user(&path, "bob", "other", &["b.test".into()]).unwrap());
        assert!(add_user(&path, "ann", "new", &[".a.test".into()]).unwrap());
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with("# keep me\nann:$argon2id$"), "{text}");
        assert_eq!(text.lines().count(), 3);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let u = Users::load(&path).unwrap();
        assert!(u.verify("ann", "new").await);
        assert!(!u.verify("ann", "secret").await);
        assert!(u.verify("bob", "other").await);
        assert!(!u.verify("nobody", "other").await);
        assert!(u.may_send_as("ann", "x.a.test"));
        assert!(add_user(&path, "a:b", "pw", &["a.test".into()]).is_err());
        assert!(add_user(&path, "c", "", &["a.test".into()]).is_err());
        assert!(add_user(&path, "c", "pw", &[]).is_err());
    }
}
