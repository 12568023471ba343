//! Tally's client, for services that send their events to ingest directly
//! (`POST /v1/events`). It can never slow or break the service that uses it:
//!
//! - [`Client::record`] never blocks, never fails and never waits for the network: it puts the
//!   event in a bounded queue and returns. When the queue is full it drops that event (the
//!   newest), counts it ([`Stats::dropped`], `tally_client_events_total{outcome="dropped"}`) and
//!   returns [`Recorded::Dropped`]; memory never grows beyond the queue.
//! - A sender on a thread of its own, with its own small runtime ([`sender`]), takes events from
//!   the queue, batches them by size and by age, gzips each batch, posts up to
//!   [`Config::max_in_flight`] batches at once, and retries what
//!   got a 5xx, a 429 or no answer, with capped exponential backoff and jitter, resending the
//!   same events with the same event ids (ingest counts each once). It never needs the caller's
//!   runtime, so the client works the same from `#[tokio::main]` services and from plain
//!   threads.
//! - [`Client::flush`] and [`Client::shutdown`] deliver what is queued, within a deadline.
//!
//! ```text
//! let client = Client::new("https://tally-ingest:4318", &key)?;
//! client.record(event);                 // from any thread, any runtime or none
//! client.shutdown(Duration::from_secs(5));
//! ```

mod metrics;
mod sender;

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tally_schemas::TraceCompletedV1;
use tokio::sync::{mpsc, oneshot};

use sender::{Control, Reply, Wake};

/// How the client sends. [`Config::new`] has the defaults.
#[derive(Clone)]
pub struct Config {
    /// Ingest's base URL (`https://tally-ingest:4318`); events go to `{url}/v1/events`.
    pub url: String,
    /// An ingest key. Never printed.
    pub key: String,
    /// Events waiting to be sent, at most. Default 10,000.
    pub queue_capacity: usize,
    /// Events per request, at most (ingest takes up to 10,000). Default 500.
    pub batch_size: usize,
    /// How long the first event of a batch waits for the batch to fill. Default 1 s.
    pub batch_age: Duration,
    /// How long one request may take. Default 10 s.
    pub request_timeout: Duration,
    /// Batches in flight at once, at most. Default 4: enough to keep up with about 60,000 events
    /// a second against a nearby ingest (BENCHMARKS.md), few enough never to swamp it.
    pub max_in_flight: usize,
    /// The first wait before a retry, doubled after each failure up to `retry_max`, with
    /// jitter. Defaults 100 ms and 30 s.
    pub retry_min: Duration,
    pub retry_max: Duration,
}

impl Config {
    pub fn new(url: &str, key: &str) -> Config {
        Config {
            url: url.trim_end_matches('/').to_string(),
            key: key.to_string(),
            queue_capacity: 10_000,
            batch_size: 500,
            batch_age: Duration::from_secs(1),
            request_timeout: Duration::from_secs(10),
            max_in_flight: 4,
            retry_min: Duration::from_millis(100),
            retry_max: Duration::from_secs(30),
        }
    }
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("url", &self.url)
            .field("key", &"<redacted>")
            .field("queue_capacity", &self.queue_capacity)
            .field("batch_size", &self.batch_size)
            .field("batch_age", &self.batch_age)
            .field("request_timeout", &self.request_timeout)
            .field("max_in_flight", &self.max_in_flight)
            .field("retry_min", &self.retry_min)
            .field("retry_max", &self.retry_max)
            .finish()
    }
}

/// Why a client could not be made. Once made, it never fails its caller.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("invalid setting: {0}")]
    Config(&'static str),
    #[error("cannot build the HTTP client: {0}")]
    Http(String),
    #[error("cannot start the sender thread: {0}")]
    Thread(std::io::Error),
}

/// What became of one recorded event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recorded {
    /// In the queue; the sender will deliver it.
    Queued,
    /// The queue was full (or the client shut down): dropped and counted.
    Dropped,
}

/// What the client did so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Calls to [`Client::record`].
    pub recorded: u64,
    /// Events dropped: the queue was full, or shutdown's deadline passed before they were sent.
    pub dropped: u64,
    /// Events ingest accepted (a re-delivery the client sent after an answer it did not get is
    /// accepted again and counted once by Tally).
    pub accepted: u64,
    /// Events ingest refused for good (an invalid event, an unknown org, a revoked key).
    pub rejected: u64,
    /// Requests retried.
    pub retries: u64,
}

#[derive(Default)]
pub(crate) struct Counters {
    recorded: AtomicU64,
    dropped: AtomicU64,
    accepted: AtomicU64,
    rejected: AtomicU64,
    retries: AtomicU64,
}

impl Counters {
    pub(crate) fn add(&self, outcome: Outcome, n: u64) {
        let counter = match outcome {
            Outcome::Recorded => &self.recorded,
            Outcome::Dropped => &self.dropped,
            Outcome::Accepted => &self.accepted,
            Outcome::Rejected => &self.rejected,
            Outcome::Retried => &self.retries,
        };
        counter.fetch_add(n, Ordering::Relaxed);
        metrics::count(outcome, n);
    }

    fn stats(&self) -> Stats {
        Stats {
            recorded: self.recorded.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
            accepted: self.accepted.load(Ordering::Relaxed),
            rejected: self.rejected.load(Ordering::Relaxed),
            retries: self.retries.load(Ordering::Relaxed),
        }
    }
}

/// The closed set of things the client counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    Recorded,
    Dropped,
    Accepted,
    Rejected,
    Retried,
}

/// The deadline a client dropped without [`Client::shutdown`] gives its sender.
const DROP_DEADLINE: Duration = Duration::from_secs(5);

pub struct Client {
    queue: mpsc::Sender<TraceCompletedV1>,
    wake: Arc<Wake>,
    control: mpsc::UnboundedSender<Control>,
    counters: Arc<Counters>,
    sender: Option<std::thread::JoinHandle<()>>,
}

/// [`Client::flush`] did not finish within its timeout (ingest is away); the events stay queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the queued events were not all delivered in time; they stay queued")]
pub struct FlushTimeout;

impl Client {
    /// A client with the default [`Config`].
    pub fn new(url: &str, key: &str) -> Result<Client, ClientError> {
        Client::with_config(Config::new(url, key))
    }

    pub fn with_config(config: Config) -> Result<Client, ClientError> {
        if config.queue_capacity == 0 {
            return Err(ClientError::Config("queue_capacity must be at least 1"));
        }
        if config.batch_size == 0 || config.batch_size > 10_000 {
            return Err(ClientError::Config("batch_size must be 1 to 10,000"));
        }
        if config.max_in_flight == 0 || config.max_in_flight > 64 {
            return Err(ClientError::Config("max_in_flight must be 1 to 64"));
        }
        if config.retry_min.is_zero() || config.retry_max < config.retry_min {
            return Err(ClientError::Config("retry_min must be positive and at most retry_max"));
        }
        let (queue, queued) = mpsc::channel(config.queue_capacity);
        let (control, commands) = mpsc::unbounded_channel();
        let counters = Arc::new(Counters::default());
        let wake = Arc::new(Wake::new(config.batch_size));
        let sender = sender::spawn(config, wake.clone(), queued, commands, counters.clone())?;
        Ok(Client { queue, wake, control, counters, sender: Some(sender) })
    }

    /// Queues one event and returns at once; never blocks, never fails the caller.
    pub fn record(&self, event: TraceCompletedV1) -> Recorded {
        self.counters.add(Outcome::Recorded, 1);
        match self.queue.try_send(event) {
            Ok(()) => {
                self.wake.queued(self.queue.max_capacity() - self.queue.capacity());
                Recorded::Queued
            }
            Err(_) => {
                self.counters.add(Outcome::Dropped, 1);
                Recorded::Dropped
            }
        }
    }

    pub fn stats(&self) -> Stats {
        self.counters.stats()
    }

    /// Delivers every event queued before the call; waits at most `timeout`. Blocks the calling
    /// thread: from async code use [`Client::flush_async`].
    pub fn flush(&self, timeout: Duration) -> Result<(), FlushTimeout> {
        let (reply, done) = std::sync::mpsc::channel();
        if self.control.send(Control::Flush(Reply::Blocking(reply))).is_err() {
            return Ok(());
        }
        done.recv_timeout(timeout).map_err(|_| FlushTimeout)
    }

    /// Delivers every event queued before the call.
    pub async fn flush_async(&self) {
        let (reply, done) = oneshot::channel();
        if self.control.send(Control::Flush(Reply::Async(reply))).is_ok() {
            let _ = done.await;
        }
    }

    /// Delivers what is queued until `deadline` from now, drops (and counts) the rest, and stops
    /// the sender. Blocks the calling thread up to the deadline: from async code use
    /// [`Client::shutdown_async`].
    pub fn shutdown(mut self, deadline: Duration) -> Stats {
        let _ = self
            .control
            .send(Control::Shutdown { deadline: Instant::now() + deadline, reply: None });
        if let Some(sender) = self.sender.take() {
            let _ = sender.join();
        }
        self.counters.stats()
    }

    /// [`Client::shutdown`] for async code.
    pub async fn shutdown_async(mut self, deadline: Duration) -> Stats {
        let (reply, done) = oneshot::channel();
        let shutdown = Control::Shutdown {
            deadline: Instant::now() + deadline,
            reply: Some(Reply::Async(reply)),
        };
        if self.control.send(shutdown).is_ok() {
            let _ = done.await;
        }
        // The sender replied as its last act; its thread ends on its own.
        self.sender.take();
        self.counters.stats()
    }
}

impl Drop for Client {
    /// A client dropped without [`Client::shutdown`] lets its sender deliver what is queued for a
    /// few seconds more, without blocking the caller.
    fn drop(&mut self) {
        if self.sender.is_some() {
            let _ = self
                .control
                .send(Control::Shutdown { deadline: Instant::now() + DROP_DEADLINE, reply: None });
        }
    }
}

/// A random event id (`evt-` and 32 hex digits) for services that have no id of their own to
/// give an event. An id made once and kept with the event is what makes a resend count once.
pub fn random_event_id() -> String {
    format!("evt-{:032x}", rand::random::<u128>())
}

#[cfg(test)]
mod tests;
