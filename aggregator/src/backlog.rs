//! The backlog watcher: whether input waits for this instance, for its readiness.
//!
//! Every few seconds it asks the broker for the end offsets of the input partitions this instance
//! holds and for the offsets the group has committed for them (the offsets each transaction
//! commits). Both input logs are written without transactions, so a partition whose committed
//! offset is below its end offset has records waiting. The judgement (waiting for longer than the
//! stall bound with no commit meanwhile: not ready) is [`tally_common::health::judge`]'s.
//!
//! It runs on a thread and a Kafka client of its own, so it keeps looking while the loop is
//! blocked or rebuilding its clients.

use std::time::Duration;

use anyhow::Context;
use rdkafka::consumer::BaseConsumer;
use tally_common::health::Health;
use tally_common::kafka::{base_config, committed_offsets, end_offsets, Assignment};
use tally_common::shutdown::Shutdown;

use crate::batch::GROUP_ID;
use crate::settings::Settings;

/// How often the watcher looks.
pub const EVERY: Duration = Duration::from_secs(5);
const TIMEOUT: Duration = Duration::from_secs(5);

/// Starts the watcher thread; it stops at shutdown.
pub fn spawn(
    settings: &Settings,
    assignment: Assignment,
    health: Health,
    shutdown: Shutdown,
) -> anyhow::Result<()> {
    let client: BaseConsumer = base_config(&settings.common.kafka_brokers)
        .set("group.id", tally_schemas::namespaced(GROUP_ID))
        // It only reads the group's offsets; it never joins and must never commit.
        .set("enable.auto.commit", "false")
        .create()
        .context("creating the backlog watcher's client")?;
    std::thread::Builder::new()
        .name("backlog".into())
        .spawn(move || {
            while !shutdown.is_requested() {
                look(&client, &assignment, &health);
                std::thread::sleep(EVERY);
            }
        })
        .context("starting the backlog watcher")?;
    Ok(())
}

fn look(client: &BaseConsumer, assignment: &Assignment, health: &Health) {
    // Without an assignment there is nothing of ours to wait; how long that lasts is the phase's
    // business (`Phase::Pending`).
    let Some(partitions) = assignment.get() else { return };
    let looked = committed_offsets(client, &partitions, TIMEOUT)
        .and_then(|committed| Ok((committed, end_offsets(client, &partitions, TIMEOUT)?)));
    match looked {
        Ok((committed, ends)) => {
            health.input_waiting(committed.iter().zip(&ends).any(|(done, end)| end > done))
        }
        Err(e) => health.check_failed(e),
    }
}
