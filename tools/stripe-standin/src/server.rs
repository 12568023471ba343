//! The stand-in as a server: its shared state behind one lock, the routes, the state file
//! (loaded at start, saved every [`SAVE_INTERVAL`] when something changed and once at stop),
//! and the hand-over of new events to the webhook sender.

use std::collections::HashMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use crate::control;
use crate::faults::Faults;
use crate::http::{handle_api_request, RequestLogEntry};
use crate::routes::unix_now;
use crate::state::{self, IdempotentAnswer, SavedEndpoint, SavedState};
use crate::store::{Event, Store};
use crate::webhook::{self, Delivery, DeliveryQueue, Endpoint, Job};
use crate::Config;

/// How often the state file is written when something changed.
pub const SAVE_INTERVAL: Duration = Duration::from_secs(2);

/// Everything behind the stand-in's lock.
pub(crate) struct SharedState {
    pub(crate) store: Store,
    /// Each `Idempotency-Key`'s first answer.
    pub(crate) idempotency: HashMap<String, IdempotentAnswer>,
    /// Every API request answered, oldest first.
    pub(crate) log: Vec<RequestLogEntry>,
    pub(crate) faults: Faults,
    pub(crate) webhook: Option<Endpoint>,
    /// The endpoint was set with `POST /_standin/webhook` (the state file keeps it then).
    pub(crate) webhook_set_at_run_time: bool,
    pub(crate) deliveries: Vec<Delivery>,
    /// Something the state file keeps changed since it was last written.
    dirty: bool,
}

impl SharedState {
    /// What the state file keeps, cloned (the caller writes it outside the lock).
    fn snapshot(&self) -> SavedState {
        SavedState {
            format: state::FORMAT,
            saved_at: unix_now(),
            store: self.store.clone(),
            idempotency: self.idempotency.clone(),
            deliveries: self.deliveries.clone(),
            webhook: self
                .webhook
                .as_ref()
                .filter(|_| self.webhook_set_at_run_time)
                .map(SavedEndpoint::from_endpoint),
        }
    }
}

/// A stand-in: cheap to clone, every clone the same server.
#[derive(Clone)]
pub struct StandIn {
    pub(crate) config: Arc<Config>,
    pub(crate) shared: Arc<Mutex<SharedState>>,
    deliveries: Arc<DeliveryQueue>,
    /// The state file, when this stand-in was opened with one ([`StandIn::open`]).
    state_file: Option<Arc<StateFile>>,
}

struct StateFile {
    path: PathBuf,
    /// One write at a time, each from a snapshot taken after the previous one's.
    writing: Mutex<()>,
}

/// The webhook sender's reports, into the stand-in's state.
struct DeliveryRecorder(Arc<Mutex<SharedState>>);

impl webhook::Record for DeliveryRecorder {
    fn attempted(
        &self,
        delivery: usize,
        attempt: u32,
        status: Option<u16>,
        error: Option<String>,
        delivered: bool,
    ) {
        let mut shared = self.0.lock().expect("stand-in state lock");
        shared.dirty = true;
        if let Some(d) = shared.deliveries.get_mut(delivery) {
            d.attempts = attempt;
            d.last_status = status;
            d.last_error = error;
            d.delivered = delivered;
        }
    }

    fn delivered(&self, event_id: &str) {
        let mut shared = self.0.lock().expect("stand-in state lock");
        shared.dirty = true;
        shared.store.webhook_delivered(event_id);
    }
}

impl StandIn {
    /// A fresh, empty stand-in that neither reads nor writes `config.state_file` (see
    /// [`StandIn::open`]).
    pub fn new(config: Config) -> StandIn {
        let webhook = config.webhook.clone();
        StandIn {
            config: Arc::new(config),
            shared: Arc::new(Mutex::new(SharedState {
                store: Store::default(),
                idempotency: HashMap::new(),
                log: Vec::new(),
                faults: Faults::default(),
                webhook,
                webhook_set_at_run_time: false,
                deliveries: Vec::new(),
                dirty: false,
            })),
            deliveries: Arc::new(DeliveryQueue::default()),
            state_file: None,
        }
    }

    /// The stand-in `config` asks for: with a state file, what it holds (empty if there is no
    /// file yet), kept there from now on when served with [`StandIn::serve`]. A file that cannot
    /// be read or parsed, or a directory that does not exist, is an error naming the file.
    /// The webhook endpoint from `config` wins over one the file kept.
    pub fn open(config: Config) -> anyhow::Result<StandIn> {
        let Some(path) = config.state_file.clone() else { return Ok(StandIn::new(config)) };
        let loaded = state::load(&path)?;
        state::check_writable(&path)?;
        let mut standin = StandIn::new(config);
        if let Some(saved) = loaded {
            let mut shared = standin.lock();
            tracing::info!(
                file = %path.display(),
                saved_at = saved.saved_at,
                "stripe stand-in state loaded: {}",
                saved.store.summary()
            );
            shared.store = saved.store;
            shared.idempotency = saved.idempotency;
            shared.deliveries = saved.deliveries;
            if shared.webhook.is_none() {
                if let Some(w) = saved.webhook {
                    let endpoint = w
                        .endpoint()
                        .map_err(|e| anyhow::anyhow!("state file {}: {e}", path.display()))?;
                    shared.webhook = Some(endpoint);
                    shared.webhook_set_at_run_time = true;
                }
            }
        } else {
            tracing::info!(file = %path.display(), "no stripe stand-in state yet: starting empty");
        }
        standin.state_file = Some(Arc::new(StateFile { path, writing: Mutex::new(()) }));
        Ok(standin)
    }

    /// Serves on `listener` until `stop` resolves, then waits for the requests in flight. With a
    /// state file: deliveries cut short by the last stop are resumed, the state is written every
    /// [`SAVE_INTERVAL`] when something changed, and once more after the server stopped.
    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
        stop: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let saver = self.state_file.as_ref().map(|_| {
            self.resume_deliveries();
            tokio::spawn(self.clone().save_periodically())
        });
        let served =
            axum::serve(listener, self.clone().router()).with_graceful_shutdown(stop).await;
        let saved = match saver {
            Some(saver) => {
                saver.abort();
                let _ = saver.await;
                let app = self.clone();
                tokio::task::spawn_blocking(move || app.save(false)).await?.map(|_| ())
            }
            None => Ok(()),
        };
        served?;
        saved
    }

    /// Writes the state file (if any) from a snapshot taken under the lock, outside it; with
    /// `only_if_changed`, only when something changed since the last write. Blocking.
    fn save(&self, only_if_changed: bool) -> anyhow::Result<bool> {
        let Some(state_file) = &self.state_file else { return Ok(false) };
        let _writing = state_file.writing.lock().expect("state file lock");
        let snapshot = {
            let mut shared = self.lock();
            if only_if_changed && !shared.dirty {
                return Ok(false);
            }
            shared.dirty = false;
            shared.snapshot()
        };
        let result = state::save(&state_file.path, &snapshot);
        if result.is_err() {
            self.lock().dirty = true;
        }
        result.map(|_| true)
    }

    async fn save_periodically(self) {
        let mut failing = false;
        loop {
            tokio::time::sleep(SAVE_INTERVAL).await;
            let app = self.clone();
            match tokio::task::spawn_blocking(move || app.save(true)).await {
                Ok(Ok(saved)) => {
                    if failing && saved {
                        tracing::info!("stripe stand-in state saved again");
                    }
                    failing = failing && !saved;
                }
                Ok(Err(e)) => {
                    // Logged once until a write succeeds again.
                    if !failing {
                        tracing::error!(
                            "stripe stand-in state not saved (retrying every {SAVE_INTERVAL:?}): \
                             {e:#}"
                        );
                    }
                    failing = true;
                }
                Err(e) => tracing::error!("stripe stand-in state saver: {e}"),
            }
        }
    }

    /// Queues again the deliveries the last stop cut short (not delivered, attempts left), to
    /// the current endpoint if it is still the one they were for: Stripe keeps retrying.
    fn resume_deliveries(&self) {
        let shared = self.lock();
        let Some(endpoint) = shared.webhook.clone() else { return };
        let pending: Vec<(usize, String)> = shared
            .deliveries
            .iter()
            .enumerate()
            .filter(|(_, d)| {
                !d.delivered && d.attempts < webhook::ATTEMPTS && d.url == endpoint.url
            })
            .map(|(i, d)| (i, d.event_id.clone()))
            .collect();
        for (delivery, event_id) in pending {
            let Ok(event) = shared.store.find_event(&event_id) else { continue };
            let body = event.webhook_body();
            let job = Job { delivery, event_id, body, endpoint: endpoint.clone() };
            self.deliveries.push(job, DeliveryRecorder(self.shared.clone()));
        }
    }

    pub fn router(self) -> axum::Router {
        use axum::routing::{get, post};
        axum::Router::new()
            .route("/_standin/healthz", get(|| async { "ok" }))
            .route("/readyz", get(|| async { "ok" }))
            .route("/_standin/requests", get(control::requests))
            .route("/_standin/faults", get(control::get_faults).post(control::set_faults))
            .route(
                "/_standin/checkout/{id}",
                get(control::checkout_page).post(control::checkout_page_paid),
            )
            .route("/_standin/checkout/sessions/{id}/complete", post(control::complete_checkout))
            .route("/_standin/invoices", post(control::create_invoice))
            .route("/_standin/invoices/{id}/pay", post(control::pay_invoice))
            .route(
                "/_standin/webhook",
                get(control::get_webhook)
                    .post(control::set_webhook)
                    .delete(control::delete_webhook),
            )
            .route("/_standin/webhook/deliveries", get(control::deliveries))
            .route("/_standin/events/{id}/resend", post(control::resend_event))
            .fallback(handle_api_request)
            .with_state(self)
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, SharedState> {
        self.shared.lock().expect("stand-in state lock")
    }

    /// The lock, for a change the state file keeps.
    pub(crate) fn lock_mut(&self) -> MutexGuard<'_, SharedState> {
        let mut shared = self.lock();
        shared.dirty = true;
        shared
    }

    /// Queues the events created since the last call for the webhook endpoint, if one is set.
    pub(crate) fn dispatch(&self, shared: &mut SharedState) {
        let events = shared.store.take_new_events();
        let Some(endpoint) = shared.webhook.clone() else { return };
        for mut event in events {
            shared.store.set_pending_webhooks(&event.id, 1);
            event.pending_webhooks = 1;
            self.deliver(shared, &event, endpoint.clone(), false);
        }
    }

    /// Records a delivery of `event` to `endpoint` and queues it; answers its index.
    pub(crate) fn deliver(
        &self,
        shared: &mut SharedState,
        event: &Event,
        endpoint: Endpoint,
        resend: bool,
    ) -> usize {
        let delivery = shared.deliveries.len();
        shared.deliveries.push(Delivery {
            event_id: event.id.clone(),
            kind: event.kind.clone(),
            url: endpoint.url.clone(),
            attempts: 0,
            last_status: None,
            last_error: None,
            delivered: false,
            resend,
        });
        // Pretty-printed, as Stripe sends it: receivers must verify the raw bytes.
        let body = event.webhook_body();
        let job = Job { delivery, event_id: event.id.clone(), body, endpoint };
        self.deliveries.push(job, DeliveryRecorder(self.shared.clone()));
        delivery
    }
}
