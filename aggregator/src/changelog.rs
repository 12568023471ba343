//! The aggregator's changelog: how a partition's state is written to and restored from
//! `tally.aggregator-changelog.v1` (compacted; partition `p` holds input partition `p`'s state).
//!
//! Keys (org ids cannot contain `/`):
//! - `w`: the partition's watermarks, `{"watermark": RFC 3339, "billing_watermark": RFC 3339}`
//!   (the trace log's and the billing log's).
//! - `t/<org>`: an org's subscription history, `[[effective RFC 3339, tier], ...]`.
//! - `s/<org>/<period>`: a period's [`PeriodSnapshot`] and its live dedup chunk range, JSON.
//! - `d/<org>/<period>/<n>`: dedup chunk `n`, at most [`CHUNK_FINGERPRINTS`] fingerprints of
//!   16 bytes. A chunk is written once; when its period closes, the chunks are deleted with
//!   tombstones and compaction reclaims them.
//!
//! Every write happens inside the batch's transaction, so the state read back is exactly the
//! state as of the committed input offsets.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::{Message, Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};
use tally_metering::{
    dedup, Fold, FoldConfig, PeriodChange, PeriodKey, PeriodSnapshot, TierHistory, Watermarks,
};
use tally_schemas::Topic;

/// The most fingerprints in one chunk record (64 KiB), well below Kafka's message size limit.
pub const CHUNK_FINGERPRINTS: usize = 4096;

const WATERMARK_KEY: &str = "w";

#[derive(Debug, thiserror::Error)]
pub enum ChangelogError {
    #[error("changelog record with key {key:?} is invalid: {reason}")]
    Invalid { key: String, reason: String },
    #[error("reading the changelog: {0}")]
    Kafka(#[from] KafkaError),
    #[error("the changelog of partition {partition} did not reach its end within {timeout:?}")]
    Timeout { partition: i32, timeout: Duration },
    #[error("the changelog reader failed for good: {0}")]
    Fatal(String),
}

/// The live dedup chunks of a period: `first..next`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkRange {
    pub first: u64,
    pub next: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateRecord {
    pub snapshot: PeriodSnapshot,
    pub chunks: ChunkRange,
}

#[derive(Serialize, Deserialize)]
struct WatermarkRecord {
    #[serde(default)]
    watermark: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    billing_watermark: Option<DateTime<Utc>>,
}

/// One decoded changelog record.
#[derive(Debug, PartialEq)]
pub enum Entry {
    Watermark(Watermarks),
    Subscription(String, Option<TierHistory>),
    State(PeriodKey, Option<StateRecord>),
    Chunk(PeriodKey, u64, Option<Vec<u128>>),
}

fn state_key(key: &PeriodKey) -> String {
    format!("s/{}/{}", key.org_id, key.period)
}

fn chunk_key(key: &PeriodKey, n: u64) -> String {
    format!("d/{}/{}/{}", key.org_id, key.period, n)
}

/// A record to write: key and value (`None` is a tombstone).
pub type Write = (String, Option<Vec<u8>>);

/// The changelog writes for one partition's drained changes, keeping `chunks` up to date.
pub fn writes_for(
    changes: &[PeriodChange],
    subscriptions: &[(String, TierHistory)],
    chunks: &mut HashMap<PeriodKey, ChunkRange>,
    watermarks: Watermarks,
) -> Vec<Write> {
    let mut writes = Vec::new();
    for (org, history) in subscriptions {
        writes.push((
            format!("t/{org}"),
            Some(serde_json::to_vec(history).expect("history serialises")),
        ));
    }
    for change in changes {
        let range = chunks.entry(change.key.clone()).or_default();
        if change.fingerprints_cleared || change.purged {
            for n in range.first..range.next {
                writes.push((chunk_key(&change.key, n), None));
            }
            range.first = range.next;
        }
        if !change.purged {
            for part in change.new_fingerprints.chunks(CHUNK_FINGERPRINTS) {
                writes.push((
                    chunk_key(&change.key, range.next),
                    Some(dedup::encode_fingerprints(part)),
                ));
                range.next += 1;
            }
        }
        if change.purged {
            writes.push((state_key(&change.key), None));
            chunks.remove(&change.key);
        } else {
            let record = StateRecord { snapshot: change.snapshot.clone(), chunks: *range };
            writes.push((
                state_key(&change.key),
                Some(serde_json::to_vec(&record).expect("state serialises")),
            ));
        }
    }
    if watermarks != Watermarks::default() {
        let record =
            WatermarkRecord { watermark: watermarks.trace, billing_watermark: watermarks.billing };
        writes.push((
            WATERMARK_KEY.to_string(),
            Some(serde_json::to_vec(&record).expect("serialises")),
        ));
    }
    writes
}

fn parse_period_key(key: &str, org: &str, period: &str) -> Result<PeriodKey, ChangelogError> {
    let period = period.parse().map_err(|e: tally_metering::period::ParsePeriodError| {
        ChangelogError::Invalid { key: key.to_string(), reason: e.to_string() }
    })?;
    Ok(PeriodKey { org_id: org.to_string(), period })
}

/// Decodes one changelog record.
pub fn decode_entry(key: &[u8], value: Option<&[u8]>) -> Result<Entry, ChangelogError> {
    let key = std::str::from_utf8(key)
        .map_err(|e| ChangelogError::Invalid { key: format!("{key:?}"), reason: e.to_string() })?;
    let invalid = |reason: String| ChangelogError::Invalid { key: key.to_string(), reason };
    let parts: Vec<&str> = key.split('/').collect();
    match parts.as_slice() {
        [WATERMARK_KEY] => {
            let value = value.ok_or_else(|| invalid("tombstone for the watermark".into()))?;
            let record: WatermarkRecord =
                serde_json::from_slice(value).map_err(|e| invalid(e.to_string()))?;
            Ok(Entry::Watermark(Watermarks {
                trace: record.watermark,
                billing: record.billing_watermark,
            }))
        }
        ["t", org] => {
            let history = value
                .map(|v| {
                    serde_json::from_slice::<TierHistory>(v).map_err(|e| invalid(e.to_string()))
                })
                .transpose()?;
            Ok(Entry::Subscription(org.to_string(), history))
        }
        ["s", org, period] => {
            let pk = parse_period_key(key, org, period)?;
            let record = value
                .map(|v| {
                    serde_json::from_slice::<StateRecord>(v).map_err(|e| invalid(e.to_string()))
                })
                .transpose()?;
            Ok(Entry::State(pk, record))
        }
        ["d", org, period, n] => {
            let pk = parse_period_key(key, org, period)?;
            let n = n.parse().map_err(|_| invalid("chunk number".into()))?;
            let fps = value
                .map(|v| {
                    dedup::decode_fingerprints(v)
                        .ok_or_else(|| invalid("length is not a multiple of 16".into()))
                })
                .transpose()?;
            Ok(Entry::Chunk(pk, n, fps))
        }
        _ => Err(invalid("unknown key".into())),
    }
}

/// A partition's state as restored: the fold and its chunk ranges.
pub struct Restored {
    pub fold: Fold,
    pub chunks: HashMap<PeriodKey, ChunkRange>,
}

/// Rebuilds a partition's state from its changelog entries in log order (last write wins, as
/// compaction would leave it).
pub fn restore(config: FoldConfig, entries: impl IntoIterator<Item = Entry>) -> Restored {
    let mut watermarks = Watermarks::default();
    let mut subscriptions: BTreeMap<String, TierHistory> = BTreeMap::new();
    let mut states: BTreeMap<PeriodKey, StateRecord> = BTreeMap::new();
    let mut chunk_data: HashMap<(PeriodKey, u64), Vec<u128>> = HashMap::new();
    for entry in entries {
        match entry {
            Entry::Watermark(w) => watermarks = w,
            Entry::Subscription(org, Some(h)) => {
                subscriptions.insert(org, h);
            }
            Entry::Subscription(org, None) => {
                subscriptions.remove(&org);
            }
            Entry::State(k, Some(s)) => {
                states.insert(k, s);
            }
            Entry::State(k, None) => {
                states.remove(&k);
            }
            Entry::Chunk(k, n, Some(f)) => {
                chunk_data.insert((k, n), f);
            }
            Entry::Chunk(k, n, None) => {
                chunk_data.remove(&(k, n));
            }
        }
    }
    let mut chunks = HashMap::new();
    let periods: Vec<_> = states
        .into_iter()
        .map(|(key, record)| {
            let mut fingerprints = Vec::new();
            for n in record.chunks.first..record.chunks.next {
                if let Some(f) = chunk_data.remove(&(key.clone(), n)) {
                    fingerprints.extend(f);
                }
            }
            chunks.insert(key.clone(), record.chunks);
            (key, record.snapshot, fingerprints)
        })
        .collect();
    Restored { fold: Fold::restore_all(config, watermarks, subscriptions, periods), chunks }
}

/// Reads changelog partition `partition` from its start to its end (under `read_committed`, so
/// only committed state) and restores the state from it.
pub fn load_partition(
    reader: &BaseConsumer,
    config: FoldConfig,
    partition: i32,
    timeout: Duration,
) -> Result<Restored, ChangelogError> {
    let topic = Topic::AggregatorChangelog.name();
    let (low, high) = reader.fetch_watermarks(topic, partition, Duration::from_secs(10))?;
    let mut entries = Vec::new();
    if high > low {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(topic, partition, Offset::Beginning)?;
        reader.assign(&tpl)?;
        let deadline = Instant::now() + timeout;
        loop {
            if Instant::now() > deadline {
                return Err(ChangelogError::Timeout { partition, timeout });
            }
            match reader.poll(Duration::from_millis(20)) {
                Some(Ok(message)) => {
                    let key = message.key().unwrap_or_default();
                    entries.push(decode_entry(key, message.payload())?);
                }
                Some(Err(KafkaError::PartitionEOF(_))) | None => {}
                Some(Err(e)) if e.rdkafka_error_code() == Some(RDKafkaErrorCode::PartitionEOF) => {}
                // librdkafka's consumer errors are reports (a broker went away, all brokers are
                // down; some queued since an outage long over) and it retries by itself; only a
                // fatal one ends the restore. The deadline bounds the rest.
                Some(Err(e)) => {
                    if let Some((code, reason)) = reader.client().fatal_error() {
                        return Err(ChangelogError::Fatal(format!(
                            "{code:?}: {reason} (after: {e})"
                        )));
                    }
                    tracing::debug!(partition, error = %e, "changelog reader error; still reading");
                }
            }
            let position = reader
                .position()?
                .find_partition(topic, partition)
                .and_then(|p| p.offset().to_raw())
                .unwrap_or(-1);
            if position >= high {
                break;
            }
        }
        reader.unassign()?;
    }
    Ok(restore(config, entries))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tally_schemas::{Operation, Status, TraceCompletedRecordV1};

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn event(id: usize, ended: &str) -> TraceCompletedRecordV1 {
        TraceCompletedRecordV1 {
            event_id: format!("e{id}"),
            org_id: "acme".into(),
            trace_id: "t".into(),
            span_id: "s".into(),
            parent_span_id: None,
            operation: Operation::Embedding,
            status: Status::Success,
            started_at: at(ended),
            ended_at: at(ended),
            payload_bytes: 3,
            attributes: None,
        }
    }

    /// Writes go through the codec and back, across closes and purges, and the restored fold
    /// deduplicates exactly like the live one.
    #[test]
    fn state_survives_the_changelog_round_trip() {
        let config = FoldConfig::default();
        let mut fold = Fold::new(config.clone());
        let mut chunks = HashMap::new();
        let mut log: Vec<Write> = Vec::new();
        let mut persist = |fold: &mut Fold, log: &mut Vec<Write>| {
            let changes = fold.drain_changes();
            let subscriptions = fold.drain_subscription_changes();
            log.extend(writes_for(&changes, &subscriptions, &mut chunks, fold.watermarks()));
        };
        for i in 0..(CHUNK_FINGERPRINTS + 10) {
            fold.apply_event(&event(i, "2026-10-30T00:00:00Z"), at("2026-10-30T00:00:01Z"));
        }
        fold.apply_event(&event(1, "2026-11-01T00:00:00Z"), at("2026-11-01T00:00:01Z"));
        persist(&mut fold, &mut log);
        assert_eq!(log.iter().filter(|(k, _)| k.starts_with("d/acme/2026-10/")).count(), 2);

        let replay = |log: &[Write]| {
            restore(
                config.clone(),
                log.iter().map(|(k, v)| decode_entry(k.as_bytes(), v.as_deref()).unwrap()),
            )
        };
        let mut restored = replay(&log).fold;
        assert_eq!(restored.periods(), fold.periods());
        assert_eq!(restored.fingerprint_count(), CHUNK_FINGERPRINTS + 11);
        assert_eq!(
            restored.apply_event(&event(7, "2026-10-30T00:00:00Z"), at("2026-10-30T00:00:02Z")),
            tally_metering::Decision::Duplicate
        );

        // A subscription in the billing log survives the round trip.
        fold.apply_subscription(
            &tally_schemas::SubscriptionChangedV1 {
                change_id: "c1".into(),
                org_id: "acme".into(),
                tier: tally_schemas::Tier::Business,
                source: tally_schemas::SubscriptionSource::AdminApi,
                requested_at: at("2026-11-01T00:00:00Z"),
                stripe_event_id: None,
            },
            at("2026-11-01T00:00:02Z"),
        );
        persist(&mut fold, &mut log);
        let restored = replay(&log).fold;
        assert_eq!(restored.subscription("acme"), fold.subscription("acme"));
        assert_eq!(restored.watermarks(), fold.watermarks());
        assert_eq!(restored.periods(), fold.periods());

        // October closes: its chunks are deleted, its state stays (closed).
        fold.apply_tick(at("2026-11-03T00:00:00Z"));
        persist(&mut fold, &mut log);
        let restored = replay(&log).fold;
        assert_eq!(restored.fingerprint_count(), 1);
        assert!(restored.get("acme", "2026-10".parse().unwrap()).unwrap().closed_at.is_some());

        // Finalized once the billing log passes its end; 35 days after October's end: purged,
        // tombstoned.
        fold.apply_billing_tick(at("2026-11-03T00:00:00Z"));
        persist(&mut fold, &mut log);
        assert!(replay(&log).fold.get("acme", "2026-10".parse().unwrap()).unwrap().finalized);
        fold.apply_tick(at("2026-12-06T00:00:00Z"));
        persist(&mut fold, &mut log);
        let restored = replay(&log);
        assert!(restored.fold.get("acme", "2026-10".parse().unwrap()).is_none());
        assert_eq!(restored.fold.watermark(), Some(at("2026-12-06T00:00:00Z")));
    }

    #[test]
    fn bad_records_are_errors_not_silence() {
        assert!(decode_entry(b"x/y", Some(b"{}")).is_err());
        assert!(decode_entry(b"d/acme/2026-10/0", Some(&[0u8; 15])).is_err());
        assert!(decode_entry(b"s/acme/2026-13", Some(b"{}")).is_err());
        assert!(matches!(decode_entry(b"s/acme/2026-10", None), Ok(Entry::State(_, None))));
    }
}
