//! What ingest knows of the org registry: which orgs exist, which keys may send, and for which
//! orgs (an org's ingest key for its org; a service key for the orgs it lists, or all).
//!
//! Read from PostgreSQL (the api writes it) into memory, refreshed every few seconds, and also
//! when a request names an org or key not yet known, so an org or key created a moment ago works
//! at once, and a revoked one stops within a refresh. Misses are coalesced: a request waits for
//! one reload that started after it arrived, so a storm of unknown keys costs one query per
//! reload round, not one per request. The only thing ingest writes is when each key was last
//! used, once per refresh for the keys that sent since the last.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use sqlx::PgPool;
use tally_common::shutdown::Shutdown;
use tokio::sync::Mutex;

const REFRESH_EVERY: Duration = Duration::from_secs(5);

#[derive(Default)]
struct Snapshot {
    orgs: HashSet<String>,
    /// Live keys that send, by hash.
    keys: HashMap<String, Arc<Grant>>,
}

/// What one key may send for.
#[derive(Debug)]
pub struct Grant {
    pub key_id: String,
    orgs: Allowed,
    /// Sent since the last refresh (for `last_used_at`).
    used: AtomicBool,
}

#[derive(Debug)]
enum Allowed {
    /// An org's ingest key.
    Own(String),
    /// A service key's list.
    Listed(HashSet<String>),
    /// A service key for all orgs.
    All,
}

impl Grant {
    fn of(key: tally_store::keys::LiveKey) -> Grant {
        let orgs = match (key.org_id, key.orgs) {
            (Some(own), _) => Allowed::Own(own),
            (None, Some(listed)) => Allowed::Listed(listed.into_iter().collect()),
            (None, None) => Allowed::All,
        };
        Grant { key_id: key.key_id, orgs, used: AtomicBool::new(false) }
    }

    /// Whether this key may send events for `org_id`.
    pub fn allows(&self, org_id: &str) -> bool {
        match &self.orgs {
            Allowed::Own(own) => own == org_id,
            Allowed::Listed(orgs) => orgs.contains(org_id),
            Allowed::All => true,
        }
    }
}

#[derive(Clone)]
pub struct Registry {
    pool: PgPool,
    snapshot: Arc<RwLock<Snapshot>>,
    /// Serialises reloads and remembers when the last one started.
    last_reload: Arc<Mutex<Instant>>,
}

impl Registry {
    pub async fn load(pool: PgPool) -> Result<Registry, sqlx::Error> {
        let registry = Registry {
            pool,
            snapshot: Arc::default(),
            last_reload: Arc::new(Mutex::new(Instant::now())),
        };
        registry.reload().await?;
        Ok(registry)
    }

    async fn reload(&self) -> Result<(), sqlx::Error> {
        let used: Vec<String> = {
            let snapshot = self.snapshot.read().expect("registry lock");
            snapshot
                .keys
                .values()
                .filter(|g| g.used.swap(false, Ordering::Relaxed))
                .map(|g| g.key_id.clone())
                .collect()
        };
        let mut db = self.pool.acquire().await?;
        if !used.is_empty() {
            if let Err(e) = tally_store::keys::mark_used(&mut db, &used).await {
                tracing::debug!(error = %e, "could not record when keys were last used");
            }
        }
        let snapshot = Snapshot {
            orgs: tally_store::orgs::ids(&mut db).await?.into_iter().collect(),
            keys: tally_store::keys::live_sending_keys(&mut db)
                .await?
                .into_iter()
                .map(|(hash, key)| (hash, Arc::new(Grant::of(key))))
                .collect(),
        };
        *self.snapshot.write().expect("registry lock") = snapshot;
        Ok(())
    }

    /// Makes sure a reload that started at or after `since` has completed.
    async fn reload_since(&self, since: Instant) {
        let mut last = self.last_reload.lock().await;
        if *last >= since {
            return;
        }
        *last = Instant::now();
        if let Err(e) = self.reload().await {
            tracing::warn!(error = %e, "registry refresh failed; keeping the previous one");
        }
    }

    pub async fn refresh_forever(self, shutdown: Shutdown) {
        while !shutdown.is_requested() {
            tokio::time::sleep(REFRESH_EVERY).await;
            self.reload_since(Instant::now()).await;
        }
    }

    fn grant(&self, key_hash: &str) -> Option<Arc<Grant>> {
        self.snapshot.read().expect("registry lock").keys.get(key_hash).cloned()
    }

    /// What the key of `key_hash` may send for, if it is a live key that sends; refreshes once
    /// on a miss. Marks the key used.
    pub async fn sending_key(&self, key_hash: &str) -> Option<Arc<Grant>> {
        let grant = match self.grant(key_hash) {
            Some(grant) => grant,
            None => {
                self.reload_since(Instant::now()).await;
                self.grant(key_hash)?
            }
        };
        grant.used.store(true, Ordering::Relaxed);
        Some(grant)
    }

    /// Which of `org_ids` do not exist, after one reload if some seemed unknown. Usually empty,
    /// and then allocation-free.
    pub async fn unknown_orgs<'a>(
        &self,
        org_ids: impl Iterator<Item = &'a str> + Clone,
    ) -> HashSet<String> {
        let unknown = |ids: &mut dyn Iterator<Item = &'a str>| -> HashSet<String> {
            let snapshot = self.snapshot.read().expect("registry lock");
            ids.filter(|o| !snapshot.orgs.contains(*o)).map(str::to_string).collect()
        };
        if unknown(&mut org_ids.clone()).is_empty() {
            return HashSet::new();
        }
        self.reload_since(Instant::now()).await;
        unknown(&mut org_ids.clone())
    }
}
