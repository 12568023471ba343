//! `GET /v1/pipeline` (admin): the operator's view of the pipeline (docs/page.md).
//!
//! Each stage is asked what it says of itself (`/readyz`, `/metrics`, 1 s each, all at once);
//! consumer lag comes from Kafka (the aggregator's committed offsets) and from PostgreSQL (the
//! projector's stored offsets, its source of truth); the rest from the read models. A stage that
//! does not answer is shown down with the reason, never left out.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::Json;
use chrono::{DateTime, Utc};
use rdkafka::consumer::{BaseConsumer, Consumer};
use serde::Serialize;
use tally_schemas::Topic;

use crate::auth::Caller;
use crate::error::ApiError;
use crate::AppState;

const PROBE_TIMEOUT: Duration = Duration::from_secs(1);
const KAFKA_TIMEOUT: Duration = Duration::from_secs(2);
/// The most the lag figures may take in all; past it they are shown as unknown.
const LAG_TIMEOUT: Duration = Duration::from_secs(3);

#[derive(Debug, Serialize)]
struct StageStatus {
    name: String,
    ready: bool,
    reason: Option<String>,
    last_commit_age_seconds: Option<f64>,
    #[serde(skip)]
    metrics: String,
}

/// The samples of `name` in a Prometheus text exposition whose labels contain every `label`
/// (`key="value"`), summed; `None` when there is none.
pub fn metric_sum(text: &str, name: &str, labels: &[&str]) -> Option<f64> {
    let mut sum = None;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let (metric, series_labels) = match series.split_once('{') {
            Some((m, rest)) => (m, rest.trim_end_matches('}')),
            None => (series, ""),
        };
        if metric != name || !labels.iter().all(|l| series_labels.split(',').any(|s| s == *l)) {
            continue;
        }
        if let Ok(v) = value.parse::<f64>() {
            *sum.get_or_insert(0.0) += v;
        }
    }
    sum
}

async fn probe(client: &reqwest::Client, name: &str, base: &str) -> StageStatus {
    let base = base.trim_end_matches('/');
    // Both at once: a stage answers within the 1 s timeout, or is shown down.
    let (ready, metrics) = tokio::join!(client.get(format!("{base}/readyz")).send(), async {
        match client.get(format!("{base}/metrics")).send().await {
            Ok(r) if r.status().is_success() => r.text().await.unwrap_or_default(),
            _ => String::new(),
        }
    });
    let (ready, reason) = match ready {
        Ok(r) if r.status().is_success() => (true, None),
        Ok(r) => {
            let status = r.status().as_u16();
            let body = r.text().await.unwrap_or_default();
            let reason = body.trim().trim_start_matches("not ready: ").to_string();
            (
                false,
                Some(if reason.is_empty() { format!("/readyz answered {status}") } else { reason }),
            )
        }
        Err(e) if e.is_timeout() => (false, Some("/readyz did not answer within 1 s".to_string())),
        Err(_) => (false, Some("not running (no answer on its address)".to_string())),
    };
    let label = format!("stage=\"{name}\"");
    let last_commit_age_seconds =
        metric_sum(&metrics, "tally_stage_last_commit_age_seconds", &[&label]);
    StageStatus { name: name.to_string(), ready, reason, last_commit_age_seconds, metrics }
}

/// A consumer group's lag on one topic; `null`s, with the reason, when Kafka did not say.
#[derive(Debug, Serialize)]
struct ConsumerLag {
    group: String,
    topic: Option<String>,
    lag: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'static str>,
}

impl ConsumerLag {
    fn known(group: &str, topic: &str, lag: i64) -> ConsumerLag {
        ConsumerLag {
            group: group.to_string(),
            topic: Some(topic.to_string()),
            lag: Some(lag),
            error: None,
        }
    }

    fn unknown(group: &str, error: &'static str) -> ConsumerLag {
        ConsumerLag { group: group.to_string(), topic: None, lag: None, error: Some(error) }
    }
}

/// Lag of the aggregator's group on its two input topics, by asking Kafka (blocking: run off the
/// async threads).
fn aggregator_lag(brokers: &str) -> Result<Vec<ConsumerLag>, rdkafka::error::KafkaError> {
    let group = tally_schemas::namespaced("tally-aggregator");
    let client: BaseConsumer =
        tally_common::kafka::base_config(brokers).set("group.id", &group).create()?;
    let mut lags = Vec::new();
    for topic in [Topic::TraceEvents, Topic::BillingEvents] {
        let metadata = client.fetch_metadata(Some(topic.name()), KAFKA_TIMEOUT)?;
        let count = metadata.topics().first().map_or(0, |t| t.partitions().len());
        let partitions: Vec<(String, i32)> =
            (0..count as i32).map(|p| (topic.name().to_string(), p)).collect();
        let ends = tally_common::kafka::end_offsets(&client, &partitions, KAFKA_TIMEOUT)?;
        let committed =
            tally_common::kafka::committed_offsets(&client, &partitions, KAFKA_TIMEOUT)?;
        let lag: i64 = ends.iter().zip(&committed).map(|(e, c)| (e - c).max(0)).sum();
        lags.push(ConsumerLag::known(&group, topic.name(), lag));
    }
    Ok(lags)
}

/// Lag of the projector: the log's end minus the offsets it stored in PostgreSQL.
async fn projector_lag(state: &AppState) -> Result<Vec<ConsumerLag>, ApiError> {
    let stored = tally_store::pipeline::projector_offsets(&mut *state.db.all_orgs().await?).await?;
    let brokers = state.settings.common.kafka_brokers.clone();
    let partitions: Vec<(String, i32)> =
        stored.iter().map(|o| (o.topic.clone(), o.partition)).collect();
    let ends =
        tokio::task::spawn_blocking(move || -> Result<Vec<i64>, rdkafka::error::KafkaError> {
            let client: BaseConsumer = tally_common::kafka::base_config(&brokers).create()?;
            tally_common::kafka::end_offsets(&client, &partitions, KAFKA_TIMEOUT)
        })
        .await
        .expect("the lag query does not panic");
    let group = tally_schemas::namespaced("tally-projector");
    let Ok(ends) = ends else {
        return Ok(vec![ConsumerLag::unknown(&group, "Kafka did not answer")]);
    };
    let mut by_topic: std::collections::BTreeMap<String, i64> = std::collections::BTreeMap::new();
    // The usage log is written in transactions: each ends with a commit marker after the last
    // record the projector stores, so a partition at rest stands one offset behind its end.
    for (offset, end) in stored.iter().zip(ends) {
        *by_topic.entry(offset.topic.clone()).or_default() += (end - offset.next_offset - 1).max(0);
    }
    Ok(by_topic.into_iter().map(|(topic, lag)| ConsumerLag::known(&group, &topic, lag)).collect())
}

/// The billing reporter's state.
#[derive(Serialize)]
struct BillingReporterStatus {
    failed_rows: i64,
    pending_rows: i64,
    ahead_rows: Option<i64>,
    last_success_at: Option<DateTime<Utc>>,
}

/// The answer of `GET /v1/pipeline`.
#[derive(Serialize)]
pub struct PipelineStatus {
    period: String,
    stages: Vec<StageStatus>,
    consumer_lag: Vec<ConsumerLag>,
    last_record_at: Option<DateTime<Utc>>,
    late_events: i64,
    /// `null` when ingest did not answer.
    rejected_events: Option<i64>,
    billing_reporter: BillingReporterStatus,
}

/// `GET /v1/pipeline` (admin).
pub async fn pipeline(
    State(state): State<Arc<AppState>>,
    caller: Caller,
) -> Result<Json<PipelineStatus>, ApiError> {
    caller.require_admin()?;
    let client =
        reqwest::Client::builder().timeout(PROBE_TIMEOUT).build().expect("an http client builds");
    let stages = probe_all(&client, &state.settings.pipeline_stages).await;
    let brokers = state.settings.common.kafka_brokers.clone();
    let aggregator = tokio::time::timeout(
        LAG_TIMEOUT,
        tokio::task::spawn_blocking(move || aggregator_lag(&brokers)),
    );
    let projector = tokio::time::timeout(LAG_TIMEOUT, projector_lag(&state));
    let (aggregator, projector) = tokio::join!(aggregator, projector);
    let unknown = |group: &str| {
        ConsumerLag::unknown(&tally_schemas::namespaced(group), "Kafka did not answer in time")
    };
    let mut consumer_lag = match aggregator {
        Ok(Ok(Ok(lags))) => lags,
        Ok(Ok(Err(e))) => {
            tracing::warn!(error = %e, "cannot read the aggregator's lag");
            vec![unknown("tally-aggregator")]
        }
        _ => vec![unknown("tally-aggregator")],
    };
    match projector {
        Ok(lags) => consumer_lag.extend(lags?),
        Err(_) => consumer_lag.push(unknown("tally-projector")),
    }
    let period = tally_metering::Period::containing(Utc::now());
    // Late events belong to periods that had closed; these are the ones that arrived this period.
    // The operator's view of the pipeline: every org.
    let mut db = state.db.all_orgs().await?;
    let activity =
        tally_store::pipeline::period_activity(&mut db, &period.to_string(), period.start())
            .await?;
    let newest = tally_store::pipeline::newest_usage_update(&mut db).await?;
    let ledger = tally_store::pipeline::meter_ledger_counts(&mut db).await?;
    drop(db);
    let metrics_of = |name: &str| {
        stages.iter().find(|s| s.name == name).map(|s| s.metrics.as_str()).unwrap_or("")
    };
    let ingest = metrics_of("ingest");
    // Every outcome but `accepted` is a rejection code.
    let rejected = metric_sum(ingest, "tally_ingest_events_total", &[]).unwrap_or(0.0)
        - metric_sum(ingest, "tally_ingest_events_total", &["outcome=\"accepted\""]).unwrap_or(0.0);
    let reporter = metrics_of("billing-reporter");
    let last_success =
        metric_sum(reporter, "tally_billing_reporter_last_success_timestamp_seconds", &[])
            .filter(|s| *s > 0.0)
            .and_then(|s| DateTime::<Utc>::from_timestamp(s as i64, 0));
    let billing_reporter = BillingReporterStatus {
        failed_rows: ledger.failed_rows,
        pending_rows: ledger.pending_rows,
        ahead_rows: metric_sum(reporter, "tally_billing_reporter_ahead_rows", &[])
            .map(|v| v as i64),
        last_success_at: last_success,
    };
    let rejected_events = if ingest.is_empty() { None } else { Some(rejected.max(0.0) as i64) };
    Ok(Json(PipelineStatus {
        period: period.to_string(),
        last_record_at: activity.last_record_at.or(newest),
        late_events: activity.late_events,
        rejected_events,
        billing_reporter,
        stages,
        consumer_lag,
    }))
}

/// Probes every stage at once.
async fn probe_all(client: &reqwest::Client, stages: &[(String, String)]) -> Vec<StageStatus> {
    let handles: Vec<_> = stages
        .iter()
        .map(|(name, url)| {
            let (client, name, url) = (client.clone(), name.clone(), url.clone());
            tokio::spawn(async move { probe(&client, &name, &url).await })
        })
        .collect();
    let mut out = Vec::with_capacity(handles.len());
    for handle in handles {
        out.push(handle.await.expect("a probe does not panic"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_are_summed_by_name_and_labels() {
        let text = "# HELP x\n# TYPE tally_ingest_events_total counter\n\
                    tally_ingest_events_total{outcome=\"accepted\"} 10\n\
                    tally_ingest_events_total{outcome=\"invalid_field\"} 2\n\
                    tally_ingest_events_total{outcome=\"payload_too_large\"} 1\n\
                    tally_stage_last_commit_age_seconds{stage=\"projector\"} 0.25\n\
                    tally_ingest_events_totalx 99\n";
        assert_eq!(metric_sum(text, "tally_ingest_events_total", &[]), Some(13.0));
        assert_eq!(
            metric_sum(text, "tally_ingest_events_total", &["outcome=\"accepted\""]),
            Some(10.0)
        );
        assert_eq!(
            metric_sum(text, "tally_stage_last_commit_age_seconds", &["stage=\"projector\""]),
            Some(0.25)
        );
        assert_eq!(
            metric_sum(text, "tally_stage_last_commit_age_seconds", &["stage=\"api\""]),
            None
        );
        assert_eq!(metric_sum("", "x", &[]), None);
    }
}
