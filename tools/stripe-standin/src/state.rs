//! The state file (`STRIPE_STANDIN_STATE_FILE`): what the stand-in remembers across restarts, as
//! Stripe never forgets. One JSON document: the [`Store`] whole (customers, products, prices,
//! meters, meter events with their identifiers and received times, Checkout Sessions,
//! subscriptions, invoices, events), the `Idempotency-Key` answers, the webhook deliveries, and
//! the webhook endpoint only when it was set at run time (`POST /_standin/webhook`; one from the
//! environment is set again from there at each start). Injected faults and the request log are
//! not kept.
//!
//! Written atomically: `<file>.tmp` (mode 0600, as it may hold a webhook secret), fsync, rename,
//! fsync of the directory. A file that cannot be read or parsed is an error, never an empty
//! start over someone's state.

use std::collections::HashMap;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::store::Store;
use crate::webhook::{Delivery, Endpoint};

/// The file's format; another one is refused.
pub const FORMAT: u32 = 1;

/// One `Idempotency-Key`'s first answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IdempotentAnswer {
    pub fingerprint: String,
    pub status: u16,
    pub body: Value,
}

/// A webhook endpoint set at run time, secret included (the file is 0600).
#[derive(Clone, Serialize, Deserialize)]
pub struct SavedEndpoint {
    pub url: String,
    pub secret: String,
}

/// The state file's contents.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SavedState {
    pub format: u32,
    /// When it was written (unix seconds), for people reading the file.
    pub saved_at: i64,
    pub store: Store,
    pub idempotency: HashMap<String, IdempotentAnswer>,
    pub deliveries: Vec<Delivery>,
    /// Only an endpoint set with `POST /_standin/webhook`.
    pub webhook: Option<SavedEndpoint>,
}

impl SavedEndpoint {
    pub fn from_endpoint(endpoint: &Endpoint) -> SavedEndpoint {
        SavedEndpoint { url: endpoint.url.clone(), secret: endpoint.secret.clone() }
    }

    pub fn endpoint(&self) -> Result<Endpoint, String> {
        Endpoint::new(&self.url, &self.secret)
    }
}

/// `<file>.tmp`, beside the file.
pub fn tmp_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".tmp");
    PathBuf::from(name)
}

/// Reads the state file: `Ok(None)` when there is none yet; an error naming the file when it
/// cannot be read or parsed.
pub fn load(path: &Path) -> anyhow::Result<Option<SavedState>> {
    let fail = |e: &dyn std::fmt::Display| anyhow::anyhow!("state file {}: {e}", path.display());
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(fail(&e)),
    };
    let saved: SavedState = serde_json::from_slice(&bytes).map_err(|e| fail(&e))?;
    if saved.format != FORMAT {
        return Err(fail(&format!(
            "format {} is not the one this stand-in reads ({FORMAT})",
            saved.format
        )));
    }
    if let Some(w) = &saved.webhook {
        w.endpoint().map_err(|e| fail(&e))?;
    }
    Ok(Some(saved))
}

/// Checks that the state file can be written where it is asked for (its directory exists).
pub fn check_writable(path: &Path) -> anyhow::Result<()> {
    let dir = parent(path);
    match std::fs::metadata(dir) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => Err(anyhow::anyhow!(
            "state file {}: {} is not a directory",
            path.display(),
            dir.display()
        )),
        Err(e) => {
            Err(anyhow::anyhow!("state file {}: directory {}: {e}", path.display(), dir.display()))
        }
    }
}

fn parent(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Writes `saved` to `path` atomically: `<path>.tmp` with mode 0600, fsync, rename, fsync of the
/// directory.
pub fn save(path: &Path, saved: &SavedState) -> anyhow::Result<()> {
    let bytes = serde_json::to_vec(saved)?;
    write_atomically(path, &bytes)
        .map_err(|e| anyhow::anyhow!("state file {}: {e}", path.display()))
}

fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = tmp_path(path);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    // `mode` applies only when the file is created: a leftover .tmp keeps its own otherwise.
    file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    file.write_all(bytes)?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&tmp, path)?;
    std::fs::File::open(parent(path))?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "standin-state-{name}-{}-{}",
            std::process::id(),
            crate::store::new_id("")
        ));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn empty() -> SavedState {
        SavedState {
            format: FORMAT,
            saved_at: 0,
            store: Store::default(),
            idempotency: HashMap::new(),
            deliveries: Vec::new(),
            webhook: None,
        }
    }

    #[test]
    fn saves_atomically_with_mode_0600_and_loads_back() {
        let dir = temp_dir("save");
        let path = dir.join("state.json");
        assert!(load(&path).unwrap().is_none(), "no file yet is an empty start");
        // A leftover .tmp with loose permissions is replaced.
        std::fs::write(tmp_path(&path), "junk").unwrap();
        std::fs::set_permissions(tmp_path(&path), std::fs::Permissions::from_mode(0o644)).unwrap();
        let mut saved = empty();
        saved.webhook =
            Some(SavedEndpoint { url: "http://127.0.0.1:1/hook".into(), secret: "whsec_x".into() });
        save(&path, &saved).unwrap();
        assert!(!tmp_path(&path).exists());
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        let back = load(&path).unwrap().unwrap();
        assert_eq!(back.webhook.unwrap().secret, "whsec_x");
        check_writable(&path).unwrap();
        assert!(check_writable(&dir.join("nope/state.json")).is_err());
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn unreadable_or_foreign_files_are_errors_naming_the_file() {
        let dir = temp_dir("bad");
        let path = dir.join("state.json");
        for content in [
            "{not json",
            "{}",
            &serde_json::to_string(&SavedState { format: 99, ..empty() }).unwrap(),
        ] {
            std::fs::write(&path, content).unwrap();
            let e = load(&path).err().unwrap().to_string();
            assert!(e.starts_with(&format!("state file {}: ", path.display())), "{e}");
            assert!(!e.contains('\n'), "{e}");
        }
        std::fs::remove_dir_all(dir).unwrap();
    }
}
