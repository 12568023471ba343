//! Event-id fingerprints for deduplication.
//!
//! The aggregator remembers every event id counted in an open period. It keeps a 128-bit XXH3
//! fingerprint instead of the id: 16 bytes per id whatever the id's length (about 20 bytes in a
//! hash set, about 16 in the changelog). Two distinct ids of one org and period collide with
//! probability about n²/2¹²⁹: for ten million events in a month, below 10⁻²³.
//!
//! The function is part of the log's contract: changing it would make restored state disagree
//! with new events. Never change it in place; version the changelog topic instead.

use std::collections::HashSet;
use std::hash::{BuildHasherDefault, Hasher};

use xxhash_rust::xxh3::xxh3_128;

/// A set of fingerprints. They are uniformly distributed already, so the set uses their low 64
/// bits as the hash instead of hashing them again.
pub type FingerprintSet = HashSet<u128, BuildHasherDefault<FingerprintHasher>>;

/// The identity hasher behind [`FingerprintSet`].
#[derive(Default)]
pub struct FingerprintHasher(u64);

impl Hasher for FingerprintHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only reached for keys other than u128; fold them in so the hasher stays correct.
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }

    fn write_u128(&mut self, value: u128) {
        self.0 = value as u64;
    }
}

/// The fingerprint under which an event id is remembered.
pub fn fingerprint(event_id: &str) -> u128 {
    xxh3_128(event_id.as_bytes())
}

/// Serialises fingerprints for the changelog: 16 little-endian bytes each.
pub fn encode_fingerprints(fingerprints: &[u128]) -> Vec<u8> {
    let mut out = Vec::with_capacity(fingerprints.len() * 16);
    for f in fingerprints {
        out.extend_from_slice(&f.to_le_bytes());
    }
    out
}

/// The inverse of [`encode`]; `None` when the length is not a multiple of 16.
pub fn decode_fingerprints(bytes: &[u8]) -> Option<Vec<u128>> {
    if !bytes.len().is_multiple_of(16) {
        return None;
    }
    Some(
        bytes
            .chunks_exact(16)
            .map(|c| u128::from_le_bytes(c.try_into().expect("chunk of 16")))
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stable_fingerprint() {
        // Pinned: a change here would corrupt restored aggregator state.
        assert_eq!(fingerprint("evt-1"), fingerprint("evt-1"));
        assert_ne!(fingerprint("evt-1"), fingerprint("evt-2"));
        assert_eq!(format!("{:032x}", fingerprint("")), "99aa06d3014798d86001c324468d497f");
    }

    #[test]
    fn encode_decode() {
        let f = vec![1u128, u128::MAX, fingerprint("x")];
        assert_eq!(decode_fingerprints(&encode_fingerprints(&f)).unwrap(), f);
        assert!(decode_fingerprints(&[0u8; 15]).is_none());
    }
}
