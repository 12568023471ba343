//! Ticks: records that carry only a timestamp, written to every partition of the trace-event log
//! and of the billing-event log.
//!
//! The aggregator closes a period when its partition's log time passes the period's end plus the
//! grace, and finalizes its invoice once the billing log's time has passed the period's end.
//! Ticks make log time advance in partitions whose orgs are silent, so their periods close and
//! their invoices are issued on time. Several ingest instances may all tick: extra ticks are
//! harmless.
//!
//! The ticks are also ingest's readiness: ingest is ready while Kafka acknowledges them, and not
//! ready from the first tick Kafka did not take until the next one it does.

use std::time::Duration;

use tally_common::health::Health;
use tally_common::shutdown::Shutdown;

use crate::metrics;
use crate::publish::Publisher;

pub async fn run(publisher: Publisher, every: Duration, health: Health, shutdown: Shutdown) {
    let mut interval = tokio::time::interval(every);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = interval.tick() => {}
            _ = shutdown.clone().requested() => return,
        }
        match publisher.tick_all_partitions().await {
            Ok(n) => {
                metrics::TICKS.inc_by(n as u64);
                health.committed();
                health.up();
            }
            // The health logs the change, once.
            Err(e) => health.down(format!("Kafka does not take writes: {e}")),
        }
    }
}
