//! The client's sender: a thread of its own with a current-thread runtime, so it never borrows
//! the caller's. It takes events from the queue into a batch, sends the batch when it is full or
//! old enough, and answers flushes and the shutdown.
//!
//! One batch is one request: the events as a JSON array, gzipped, to `{url}/v1/events`. A 5xx,
//! a 429 or no answer is retried (the same body, so the same event ids) after a wait that doubles
//! from `retry_min` up to `retry_max`, with jitter, and never shorter than a `Retry-After`. A
//! 413 splits the batch in two. Any other answer is final: a 200's per-event rejections and a
//! 4xx's whole batch are counted as rejected. The sender logs once when ingest becomes
//! unreachable and once when it is back, not once per attempt.

use std::io::Write;
use std::time::{Duration, Instant};

use flate2::write::GzEncoder;
use rand::Rng;
use tally_schemas::TraceCompletedV1;
use tokio::sync::{mpsc, oneshot};

use crate::{ClientError, Config, Counters, Outcome};

/// What the caller asks of the sender besides sending.
pub(crate) enum Control {
    Flush(Reply),
    Shutdown { deadline: Instant, reply: Option<Reply> },
}

/// How the sender says a flush or shutdown is done, to a blocked thread or to a future.
pub(crate) enum Reply {
    Blocking(std::sync::mpsc::Sender<()>),
    Async(oneshot::Sender<()>),
}

impl Reply {
    fn done(self) {
        match self {
            Reply::Blocking(tx) => drop(tx.send(())),
            Reply::Async(tx) => drop(tx.send(())),
        }
    }
}

pub(crate) fn spawn(
    config: Config,
    queue: mpsc::Receiver<TraceCompletedV1>,
    control: mpsc::UnboundedReceiver<Control>,
    counters: std::sync::Arc<Counters>,
) -> Result<std::thread::JoinHandle<()>, ClientError> {
    let http = reqwest::Client::builder()
        .timeout(config.request_timeout)
        .build()
        .map_err(|e| ClientError::Http(e.to_string()))?;
    let sender = Sender {
        ingest: Ingest {
            endpoint: format!("{}/v1/events", config.url),
            authorization: format!("Bearer {}", config.key),
            http,
        },
        config,
        counters,
        unreachable: false,
        commands: Commands {
            control,
            control_open: true,
            deadline: None,
            stopping: None,
            flushes: Vec::new(),
        },
    };
    std::thread::Builder::new()
        .name("tally-client".into())
        .spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a current-thread runtime builds");
            runtime.block_on(sender.run(queue));
        })
        .map_err(ClientError::Thread)
}

/// Where batches go.
struct Ingest {
    endpoint: String,
    authorization: String,
    http: reqwest::Client,
}

struct Sender {
    ingest: Ingest,
    config: Config,
    counters: std::sync::Arc<Counters>,
    /// Whether the last attempt failed: the state whose changes are logged.
    unreachable: bool,
    commands: Commands,
}

/// The caller's commands, taken also while a delivery is under way.
struct Commands {
    control: mpsc::UnboundedReceiver<Control>,
    control_open: bool,
    /// Once a shutdown is asked for (or the client is gone): when to stop trying.
    deadline: Option<Instant>,
    /// A shutdown asked for, with its reply if the caller waits for one.
    stopping: Option<Option<Reply>>,
    /// Flushes asked for and not yet answered.
    flushes: Vec<Reply>,
}

/// The end of one attempt.
enum Attempt {
    /// Ingest answered 200: how many of the batch it accepted and refused.
    Answered { accepted: u64, rejected: u64, first_error: Option<String> },
    /// Worth another try: a 5xx, a 429, or no answer; at the earliest after `retry_after`.
    Retry { reason: String, retry_after: Option<Duration> },
    /// The batch is too large for ingest.
    TooLarge,
    /// A final refusal of the whole batch (a bad key, a malformed request).
    Refused { status: u16, message: String },
}

#[derive(serde::Deserialize)]
struct BatchAnswer {
    accepted: u64,
    rejected: u64,
    #[serde(default)]
    results: Vec<EventAnswer>,
}

#[derive(serde::Deserialize)]
struct EventAnswer {
    #[serde(default)]
    event_id: Option<String>,
    #[serde(default)]
    error: Option<serde_json::Value>,
}

impl Sender {
    async fn run(mut self, mut queue: mpsc::Receiver<TraceCompletedV1>) {
        let mut batch: Vec<TraceCompletedV1> = Vec::with_capacity(self.config.batch_size);
        let mut opened = Instant::now();
        loop {
            if self.commands.stopping.is_some() || !self.commands.flushes.is_empty() {
                // Everything queued until now goes out (a shutdown's only until its deadline).
                if self.commands.stopping.is_some() {
                    queue.close();
                }
                while let Ok(event) = queue.try_recv() {
                    batch.push(event);
                }
                self.deliver_all(std::mem::take(&mut batch)).await;
                for reply in self.commands.flushes.drain(..) {
                    reply.done();
                }
                if let Some(reply) = self.commands.stopping.take() {
                    if let Some(reply) = reply {
                        reply.done();
                    }
                    return;
                }
                continue;
            }
            let due = opened + self.config.batch_age;
            tokio::select! {
                biased;
                command = self.commands.control.recv(), if self.commands.control_open => {
                    self.commands.take(command);
                }
                event = queue.recv() => {
                    let Some(event) = event else { continue };
                    if batch.is_empty() {
                        opened = Instant::now();
                    }
                    batch.push(event);
                    if batch.len() >= self.config.batch_size {
                        self.deliver_all(std::mem::take(&mut batch)).await;
                    }
                }
                () = tokio::time::sleep_until(due.into()), if !batch.is_empty() => {
                    self.deliver_all(std::mem::take(&mut batch)).await;
                }
            }
        }
    }

    /// Sends events in batches of at most `batch_size`, in order.
    async fn deliver_all(&mut self, events: Vec<TraceCompletedV1>) {
        let mut events = events.into_iter().peekable();
        while events.peek().is_some() {
            let batch: Vec<_> = events.by_ref().take(self.config.batch_size).collect();
            self.deliver(batch).await;
        }
    }

    /// Sends one batch until ingest has answered it for good, or until a shutdown's deadline
    /// passes (then the batch is dropped and counted).
    async fn deliver(&mut self, events: Vec<TraceCompletedV1>) {
        let mut pending = vec![events];
        while let Some(events) = pending.pop() {
            let body = match encode(&events) {
                Ok(body) => body,
                Err(e) => {
                    tracing::error!(error = %e, events = events.len(), "tally-client: cannot encode events");
                    self.counters.add(Outcome::Rejected, events.len() as u64);
                    continue;
                }
            };
            let mut wait = self.config.retry_min;
            loop {
                let Some(attempt) = self.commands.within(self.ingest.attempt(&body)).await else {
                    self.counters.add(Outcome::Dropped, events.len() as u64);
                    break;
                };
                match attempt {
                    Attempt::Answered { accepted, rejected, first_error } => {
                        self.reachable();
                        self.counters.add(Outcome::Accepted, accepted);
                        self.counters.add(Outcome::Rejected, rejected);
                        if let Some(error) = first_error {
                            tracing::warn!(rejected, first = %error, "tally-client: ingest refused events");
                        }
                        break;
                    }
                    Attempt::TooLarge if events.len() > 1 => {
                        self.reachable();
                        let mut first = events;
                        let second = first.split_off(first.len() / 2);
                        pending.push(second);
                        pending.push(first);
                        break;
                    }
                    Attempt::TooLarge => {
                        self.reachable();
                        tracing::error!("tally-client: ingest refused an event as too large");
                        self.counters.add(Outcome::Rejected, 1);
                        break;
                    }
                    Attempt::Refused { status, message } => {
                        self.reachable();
                        tracing::error!(status, %message, events = events.len(), "tally-client: ingest refused a batch");
                        self.counters.add(Outcome::Rejected, events.len() as u64);
                        break;
                    }
                    Attempt::Retry { reason, retry_after } => {
                        if !self.unreachable {
                            self.unreachable = true;
                            tracing::warn!(%reason, "tally-client: ingest unreachable; queueing and retrying");
                        }
                        self.counters.add(Outcome::Retried, 1);
                        let jittered =
                            wait / 2 + rand::rng().random_range(Duration::ZERO..=wait / 2);
                        let pause = jittered.max(retry_after.unwrap_or_default());
                        if self.commands.within(tokio::time::sleep(pause)).await.is_none() {
                            self.counters.add(Outcome::Dropped, events.len() as u64);
                            break;
                        }
                        wait = (wait * 2).min(self.config.retry_max);
                    }
                }
            }
        }
    }

    fn reachable(&mut self) {
        if self.unreachable {
            self.unreachable = false;
            tracing::info!("tally-client: ingest reachable again");
        }
    }
}

impl Commands {
    /// Takes one command; a shutdown's deadline applies at once, also to a delivery under way.
    fn take(&mut self, command: Option<Control>) {
        let (deadline, reply) = match command {
            Some(Control::Flush(reply)) => return self.flushes.push(reply),
            Some(Control::Shutdown { deadline, reply }) => (deadline, reply),
            // The client is gone without a word: what is queued still goes out, for a while.
            None => {
                self.control_open = false;
                (Instant::now() + crate::DROP_DEADLINE, None)
            }
        };
        self.deadline = Some(self.deadline.map_or(deadline, |d| d.min(deadline)));
        match &mut self.stopping {
            Some(waiting) if waiting.is_none() => *waiting = reply,
            Some(_) => {}
            None => self.stopping = Some(reply),
        }
    }

    /// Runs `work` while taking commands; `None` when the shutdown's deadline came first.
    async fn within<T>(&mut self, work: impl std::future::Future<Output = T>) -> Option<T> {
        tokio::pin!(work);
        loop {
            let deadline = self.deadline;
            tokio::select! {
                out = &mut work => return Some(out),
                () = tokio::time::sleep_until(deadline.unwrap_or_else(Instant::now).into()), if deadline.is_some() => return None,
                command = self.control.recv(), if self.control_open => self.take(command),
            }
        }
    }
}

impl Ingest {
    async fn attempt(&self, body: &[u8]) -> Attempt {
        let response = self
            .http
            .post(&self.endpoint)
            .header("authorization", &self.authorization)
            .header("content-type", "application/json")
            .header("content-encoding", "gzip")
            .body(body.to_vec())
            .send()
            .await;
        let response = match response {
            Ok(response) => response,
            // The error names the URL, never the key (it is in a header).
            Err(e) => return Attempt::Retry { reason: e.to_string(), retry_after: None },
        };
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let text = match response.text().await {
            Ok(text) => text,
            Err(e) => return Attempt::Retry { reason: e.to_string(), retry_after },
        };
        match status {
            200 => match serde_json::from_str::<BatchAnswer>(&text) {
                Ok(answer) => Attempt::Answered {
                    accepted: answer.accepted,
                    rejected: answer.rejected,
                    first_error: answer.results.into_iter().find_map(|r| {
                        r.error.map(|e| format!("{}: {e}", r.event_id.unwrap_or_default()))
                    }),
                },
                Err(e) => Attempt::Retry { reason: format!("unreadable answer: {e}"), retry_after },
            },
            413 => Attempt::TooLarge,
            429 | 500..=599 => Attempt::Retry { reason: format!("HTTP {status}"), retry_after },
            _ => Attempt::Refused { status, message: text.chars().take(300).collect() },
        }
    }
}

fn encode(events: &[TraceCompletedV1]) -> Result<Vec<u8>, std::io::Error> {
    let mut gz = GzEncoder::new(Vec::new(), flate2::Compression::fast());
    serde_json::to_writer(&mut gz, events)?;
    gz.flush()?;
    gz.finish()
}
