//! What ingest knows of the org registry: which orgs exist and which ingest keys are valid.
//!
//! Read from PostgreSQL (the api writes it) into memory, refreshed every few seconds, and also
//! when a request names an org or key not yet known, so an org or key created a moment ago works
//! at once. Misses are coalesced: a request waits for one reload that started after it arrived,
//! so a storm of unknown keys costs one query per reload round, not one per request. Ingest
//! never writes the registry.

use std::collections::HashSet;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use sqlx::PgPool;
use tally_common::shutdown::Shutdown;
use tokio::sync::Mutex;

const REFRESH_EVERY: Duration = Duration::from_secs(5);

#[derive(Default)]
struct Snapshot {
    orgs: HashSet<String>,
    ingest_key_hashes: HashSet<String>,
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
        let snapshot = Snapshot {
            orgs: tally_store::orgs::ids(&self.pool).await?.into_iter().collect(),
            ingest_key_hashes: tally_store::keys::live_ingest_hashes(&self.pool)
                .await?
                .into_iter()
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

    fn has_key(&self, key_hash: &str) -> bool {
        self.snapshot.read().expect("registry lock").ingest_key_hashes.contains(key_hash)
    }

    /// Whether `key_hash` is a valid ingest key, refreshing once on a miss.
    pub async fn is_ingest_key(&self, key_hash: &str) -> bool {
        if self.has_key(key_hash) {
            return true;
        }
        self.reload_since(Instant::now()).await;
        self.has_key(key_hash)
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
