//! The client's sender: a thread of its own with a current-thread runtime, so it never borrows
//! the caller's. It takes events from the queue into a batch, cuts the batch when it is full or
//! old enough, keeps up to `max_in_flight` batches in flight at once, and answers flushes and the
//! shutdown.
//!
//! One batch is one request: the events as a JSON array, gzipped, to `{url}/v1/events`. A 5xx,
//! a 429 or no answer is retried (the same body, so the same event ids) after a wait that doubles
//! from `retry_min` up to `retry_max`, with jitter, and never shorter than a `Retry-After`. A
//! 413 splits the batch in two. Any other answer is final: a 200's per-event rejections and a
//! 4xx's whole batch are counted as rejected. The sender logs once when ingest becomes
//! unreachable and once when it is back, not once per attempt.
//!
//! What the sender holds is bounded: the queue, the batches in flight, one full batch waiting
//! for a free slot and the batch being filled. While every slot is taken and a full batch waits,
//! the sender stops taking from the queue, so the queue fills and `record` drops the newest.
//!
//! A flush is answered once every event queued before it has been answered by ingest (or
//! dropped by a shutdown's deadline): the flush notes how many events had entered the queue by
//! then (its mark), and each batch knows where in that sequence it starts.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use flate2::write::GzEncoder;
use rand::Rng;
use tally_schemas::TraceCompletedV1;
use tokio::sync::mpsc::error::TryRecvError;
use tokio::sync::{mpsc, oneshot, watch, Notify};
use tokio::task::{JoinError, JoinSet};

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
    wake: Arc<Wake>,
    queue: mpsc::Receiver<TraceCompletedV1>,
    control: mpsc::UnboundedReceiver<Control>,
    counters: Arc<Counters>,
) -> Result<std::thread::JoinHandle<()>, ClientError> {
    let http = reqwest::Client::builder()
        .timeout(config.request_timeout)
        .build()
        .map_err(|e| ClientError::Http(e.to_string()))?;
    let (deadline, _) = watch::channel(None);
    let sender = Sender {
        wake,
        batches: Batches::new(config.batch_size),
        deliveries: Deliveries::default(),
        shared: Arc::new(Shared {
            ingest: Ingest {
                endpoint: format!("{}/v1/events", config.url),
                authorization: format!("Bearer {}", config.key),
                http,
            },
            config,
            counters,
            unreachable: AtomicBool::new(false),
        }),
        control,
        control_open: true,
        deadline,
        stopping: None,
        flushes: Vec::new(),
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

/// How `record` wakes the sender: only when it has something to do. Waking a parked thread is a
/// system call; doing it for every event made `record` cost microseconds instead of nanoseconds.
/// The sender is woken for the first event after it found the queue empty (it then times the
/// batch's age itself), and whenever a full batch is queued.
pub(crate) struct Wake {
    queued: Notify,
    /// The sender found the queue empty and waits for the next event.
    idle: AtomicBool,
    batch_size: usize,
}

impl Wake {
    pub(crate) fn new(batch_size: usize) -> Wake {
        Wake { queued: Notify::new(), idle: AtomicBool::new(false), batch_size }
    }

    /// Called by `record` after it queued an event, with the queue's length.
    pub(crate) fn queued(&self, length: usize) {
        let first = self.idle.load(Ordering::Relaxed) && self.idle.swap(false, Ordering::SeqCst);
        if first || length >= self.batch_size {
            // Without a waiting sender this only leaves a permit for its next wait.
            self.queued.notify_one();
        }
    }

    /// The sender is about to wait for the next event.
    fn announce_idle(&self) {
        self.idle.store(true, Ordering::SeqCst);
    }
}

/// What every delivery shares.
struct Shared {
    ingest: Ingest,
    config: Config,
    counters: Arc<Counters>,
    /// Whether the last attempt failed: the state whose changes are logged.
    unreachable: AtomicBool,
}

/// Where batches go.
struct Ingest {
    endpoint: String,
    authorization: String,
    http: reqwest::Client,
}

/// A batch cut from the stream of queued events: its place in that stream and its events.
struct Cut {
    /// How many events entered the sender before this batch's first.
    start: u64,
    events: Vec<TraceCompletedV1>,
}

/// The events the sender has taken from the queue and not yet handed to a delivery.
struct Batches {
    size: usize,
    /// Events taken from the queue so far.
    received: u64,
    /// The batch being filled, and when its first event came.
    filling: Vec<TraceCompletedV1>,
    opened: Instant,
    /// Full (or due) batches waiting for a free slot: at most one in normal running.
    cut: VecDeque<Cut>,
}

impl Batches {
    fn new(size: usize) -> Batches {
        Batches {
            size,
            received: 0,
            filling: Vec::with_capacity(size),
            opened: Instant::now(),
            cut: VecDeque::new(),
        }
    }

    fn push(&mut self, event: TraceCompletedV1) {
        if self.filling.is_empty() {
            self.opened = Instant::now();
        }
        self.filling.push(event);
        self.received += 1;
        if self.filling.len() >= self.size {
            self.cut_filling();
        }
    }

    fn cut_filling(&mut self) {
        if !self.filling.is_empty() {
            let events = std::mem::replace(&mut self.filling, Vec::with_capacity(self.size));
            let start = self.received - events.len() as u64;
            self.cut.push_back(Cut { start, events });
        }
    }

    fn is_filling(&self) -> bool {
        !self.filling.is_empty()
    }

    fn is_empty(&self) -> bool {
        self.filling.is_empty() && self.cut.is_empty()
    }

    /// Whether to take more from the queue: not while a full batch waits for a slot.
    fn has_room(&self) -> bool {
        self.cut.is_empty()
    }

    /// The first event not yet handed to a delivery.
    fn first_held(&self) -> u64 {
        match self.cut.front() {
            Some(cut) => cut.start,
            None => self.received - self.filling.len() as u64,
        }
    }

    /// Everything held, for a shutdown whose deadline passed.
    fn drop_all(&mut self) -> u64 {
        let n = self.filling.len() + self.cut.iter().map(|c| c.events.len()).sum::<usize>();
        self.filling.clear();
        self.cut.clear();
        n as u64
    }
}

/// The sender's loop and what it keeps between turns.
struct Sender {
    shared: Arc<Shared>,
    wake: Arc<Wake>,
    batches: Batches,
    deliveries: Deliveries,
    control: mpsc::UnboundedReceiver<Control>,
    control_open: bool,
    /// A shutdown's deadline, once one is asked for; every delivery watches it.
    deadline: watch::Sender<Option<Instant>>,
    /// A shutdown asked for, with its reply if the caller waits for one.
    stopping: Option<Option<Reply>>,
    /// Flushes not yet answered, each with its mark: how many events had entered the sender or
    /// its queue when the flush came.
    flushes: Vec<(u64, Reply)>,
}

impl Sender {
    async fn run(mut self, mut queue: mpsc::Receiver<TraceCompletedV1>) {
        let mut queue_open = true;
        let wake = self.wake.clone();
        loop {
            // Take what is queued, while there is room: one wake-up takes many events.
            let mut announced = false;
            while queue_open && self.batches.has_room() {
                match queue.try_recv() {
                    Ok(event) => self.batches.push(event),
                    Err(TryRecvError::Empty) => {
                        if self.batches.is_filling() || announced {
                            break;
                        }
                        // Nothing held: the next event must wake the sender. Say so, then look
                        // once more, for an event queued before `record` could see it.
                        wake.announce_idle();
                        announced = true;
                    }
                    Err(TryRecvError::Disconnected) => {
                        queue_open = false;
                        if self.stopping.is_none() {
                            self.take(None, &mut queue);
                        }
                    }
                }
            }
            while self.deliveries.len() < self.shared.config.max_in_flight {
                let Some(cut) = self.batches.cut.pop_front() else { break };
                self.deliveries.start(&self.shared, self.deadline.subscribe(), cut);
            }
            let answered =
                self.deliveries.first().unwrap_or(u64::MAX).min(self.batches.first_held());
            for (_, reply) in self.flushes.extract_if(.., |(mark, _)| *mark <= answered) {
                reply.done();
            }
            let deadline = *self.deadline.borrow();
            if self.stopping.is_some() {
                if deadline.is_some_and(|at| Instant::now() >= at) && queue_open {
                    // Too late for what has not gone out yet: dropped, and counted.
                    let mut dropped = self.batches.drop_all();
                    while queue.try_recv().is_ok() {
                        dropped += 1;
                    }
                    self.shared.counters.add(Outcome::Dropped, dropped);
                    queue_open = false;
                }
                if !queue_open && self.batches.is_empty() && self.deliveries.len() == 0 {
                    break;
                }
            }
            // A flush or a shutdown sends the batch being filled without waiting for its age.
            let due = if self.flushes.is_empty() && self.stopping.is_none() {
                self.batches.opened + self.shared.config.batch_age
            } else {
                Instant::now()
            };
            tokio::select! {
                biased;
                command = self.control.recv(), if self.control_open => self.take(command, &mut queue),
                Some(done) = self.deliveries.next(), if self.deliveries.len() > 0 => {
                    self.deliveries.finished(done, &self.shared.counters);
                }
                () = wake.queued.notified(), if queue_open && self.batches.has_room() => {}
                () = tokio::time::sleep_until(due.into()), if self.batches.is_filling() && self.batches.has_room() => {
                    self.batches.cut_filling();
                }
                () = tokio::time::sleep_until(deadline.unwrap_or_else(Instant::now).into()), if deadline.is_some() && queue_open => {}
                else => break,
            }
        }
        for (_, reply) in self.flushes.drain(..) {
            reply.done();
        }
        if let Some(Some(reply)) = self.stopping.take() {
            reply.done();
        }
    }

    /// Takes one command; a shutdown's deadline applies at once, also to deliveries under way.
    fn take(&mut self, command: Option<Control>, queue: &mut mpsc::Receiver<TraceCompletedV1>) {
        let (deadline, reply) = match command {
            Some(Control::Flush(reply)) => {
                let mark = self.batches.received + queue.len() as u64;
                return self.flushes.push((mark, reply));
            }
            Some(Control::Shutdown { deadline, reply }) => (deadline, reply),
            // The client is gone without a word: what is queued still goes out, for a while.
            None => {
                self.control_open = false;
                (Instant::now() + crate::DROP_DEADLINE, None)
            }
        };
        self.deadline.send_modify(|at| *at = Some(at.map_or(deadline, |d| d.min(deadline))));
        // Nothing more enters; what is queued still goes out until the deadline.
        queue.close();
        match &mut self.stopping {
            Some(waiting) if waiting.is_none() => *waiting = reply,
            Some(_) => {}
            None => self.stopping = Some(reply),
        }
    }
}

/// The deliveries under way, each known by where its batch starts and how many events it holds.
#[derive(Default)]
struct Deliveries {
    tasks: JoinSet<()>,
    by_task: HashMap<tokio::task::Id, (u64, usize)>,
    starts: BTreeMap<u64, tokio::task::Id>,
}

impl Deliveries {
    fn len(&self) -> usize {
        self.tasks.len()
    }

    /// Where the earliest batch under way starts.
    fn first(&self) -> Option<u64> {
        self.starts.keys().next().copied()
    }

    fn start(
        &mut self,
        shared: &Arc<Shared>,
        deadline: watch::Receiver<Option<Instant>>,
        cut: Cut,
    ) {
        let len = cut.events.len();
        let id = self.tasks.spawn(deliver(shared.clone(), deadline, cut.events)).id();
        self.by_task.insert(id, (cut.start, len));
        self.starts.insert(cut.start, id);
    }

    async fn next(&mut self) -> Option<Result<tokio::task::Id, JoinError>> {
        self.tasks.join_next_with_id().await.map(|done| done.map(|(id, ())| id))
    }

    fn finished(&mut self, done: Result<tokio::task::Id, JoinError>, counters: &Counters) {
        let id = match done {
            Ok(id) => id,
            Err(ref e) => e.id(),
        };
        let Some((start, len)) = self.by_task.remove(&id) else { return };
        self.starts.remove(&start);
        if let Err(e) = done {
            // Not expected; its events are counted, never silently lost.
            tracing::error!(error = %e, events = len, "tally-client: a delivery failed; its events are dropped");
            counters.add(Outcome::Dropped, len as u64);
        }
    }
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

/// Sends one batch until ingest has answered it for good, or until a shutdown's deadline passes
/// (then what is left of it is dropped and counted).
async fn deliver(
    shared: Arc<Shared>,
    mut deadline: watch::Receiver<Option<Instant>>,
    events: Vec<TraceCompletedV1>,
) {
    let counters = &shared.counters;
    let mut pending = vec![events];
    while let Some(events) = pending.pop() {
        let body = match encode(&events) {
            Ok(body) => body,
            Err(e) => {
                tracing::error!(error = %e, events = events.len(), "tally-client: cannot encode events");
                counters.add(Outcome::Rejected, events.len() as u64);
                continue;
            }
        };
        let mut wait = shared.config.retry_min;
        loop {
            let Some(attempt) = within(&mut deadline, shared.ingest.attempt(&body)).await else {
                counters.add(Outcome::Dropped, events.len() as u64);
                break;
            };
            match attempt {
                Attempt::Answered { accepted, rejected, first_error } => {
                    shared.reachable();
                    counters.add(Outcome::Accepted, accepted);
                    counters.add(Outcome::Rejected, rejected);
                    if let Some(error) = first_error {
                        tracing::warn!(rejected, first = %error, "tally-client: ingest refused events");
                    }
                    break;
                }
                Attempt::TooLarge if events.len() > 1 => {
                    shared.reachable();
                    let mut first = events;
                    let second = first.split_off(first.len() / 2);
                    pending.push(second);
                    pending.push(first);
                    break;
                }
                Attempt::TooLarge => {
                    shared.reachable();
                    tracing::error!("tally-client: ingest refused an event as too large");
                    counters.add(Outcome::Rejected, 1);
                    break;
                }
                Attempt::Refused { status, message } => {
                    shared.reachable();
                    tracing::error!(status, %message, events = events.len(), "tally-client: ingest refused a batch");
                    counters.add(Outcome::Rejected, events.len() as u64);
                    break;
                }
                Attempt::Retry { reason, retry_after } => {
                    if !shared.unreachable.swap(true, Ordering::Relaxed) {
                        tracing::warn!(%reason, "tally-client: ingest unreachable; queueing and retrying");
                    }
                    counters.add(Outcome::Retried, 1);
                    let jittered = wait / 2 + rand::rng().random_range(Duration::ZERO..=wait / 2);
                    let pause = jittered.max(retry_after.unwrap_or_default());
                    if within(&mut deadline, tokio::time::sleep(pause)).await.is_none() {
                        counters.add(Outcome::Dropped, events.len() as u64);
                        break;
                    }
                    wait = (wait * 2).min(shared.config.retry_max);
                }
            }
        }
    }
}

/// Runs `work` unless a shutdown's deadline passes first (`None` then), watching for a deadline
/// set while it runs. Once the deadline has passed, no new attempt starts.
async fn within<T>(
    deadline: &mut watch::Receiver<Option<Instant>>,
    work: impl std::future::Future<Output = T>,
) -> Option<T> {
    tokio::pin!(work);
    let mut watching = true;
    loop {
        let at = *deadline.borrow_and_update();
        tokio::select! {
            biased;
            () = tokio::time::sleep_until(at.unwrap_or_else(Instant::now).into()), if at.is_some() => return None,
            out = &mut work => return Some(out),
            changed = deadline.changed(), if watching => watching = changed.is_ok(),
        }
    }
}

impl Shared {
    fn reachable(&self) {
        if self.unreachable.swap(false, Ordering::Relaxed) {
            tracing::info!("tally-client: ingest reachable again");
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

/// The batch as a gzipped JSON array. The JSON is made whole first and compressed in one write:
/// flate2 (with its default backend) zeroes a 32 KiB buffer on every write it is given, and
/// serde_json writes token by token.
fn encode(events: &[TraceCompletedV1]) -> Result<Vec<u8>, std::io::Error> {
    let json = serde_json::to_vec(events)?;
    let mut gz = GzEncoder::new(Vec::with_capacity(json.len() / 4), flate2::Compression::fast());
    gz.write_all(&json)?;
    gz.finish()
}
