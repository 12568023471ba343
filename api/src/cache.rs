//! A small time-bounded cache of who a credential is, so that a busy dashboard does not cost a
//! database query per request. An entry lives [`TTL`]: a key revoked or a session ended in
//! PostgreSQL stops working within that time on every api instance (at once on the instance that
//! ended the session). Bounded: when full it starts again empty.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long an answer of PostgreSQL about a credential is reused.
pub const TTL: Duration = Duration::from_secs(5);
/// The most credentials remembered at once.
const CAPACITY: usize = 50_000;

pub struct TtlCache<V> {
    entries: Mutex<HashMap<String, (Instant, V)>>,
}

impl<V: Clone> Default for TtlCache<V> {
    fn default() -> Self {
        TtlCache { entries: Mutex::new(HashMap::new()) }
    }
}

impl<V: Clone> TtlCache<V> {
    /// The value remembered for `key`, if younger than [`TTL`] at `now`.
    pub fn get(&self, key: &str, now: Instant) -> Option<V> {
        let entries = self.entries.lock().expect("the cache lock is never poisoned");
        entries.get(key).filter(|(at, _)| now.duration_since(*at) < TTL).map(|(_, v)| v.clone())
    }

    pub fn put(&self, key: String, value: V, now: Instant) {
        let mut entries = self.entries.lock().expect("the cache lock is never poisoned");
        if entries.len() >= CAPACITY {
            entries.retain(|_, (at, _)| now.duration_since(*at) < TTL);
            if entries.len() >= CAPACITY {
                entries.clear();
            }
        }
        entries.insert(key, (now, value));
    }

    /// Forgets everything (a key was revoked: this instance stops honouring it at once).
    pub fn clear(&self) {
        self.entries.lock().expect("cache lock").clear();
    }

    pub fn forget(&self, key: &str) {
        self.entries.lock().expect("the cache lock is never poisoned").remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_expire_and_can_be_forgotten() {
        let cache = TtlCache::default();
        let t0 = Instant::now();
        cache.put("k".into(), 1, t0);
        assert_eq!(cache.get("k", t0 + Duration::from_secs(4)), Some(1));
        assert_eq!(cache.get("k", t0 + TTL), None);
        cache.put("k".into(), 2, t0);
        cache.forget("k");
        assert_eq!(cache.get("k", t0), None);
    }
}
