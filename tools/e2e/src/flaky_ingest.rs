//! A proxy in front of ingest's `POST /v1/traces` that loses answers: for the first requests it
//! forwards, it lets ingest accept the spans and then answers the exporter 503 with
//! `Retry-After: 1`, as a load balancer that timed out would. The exporter retries, and every
//! span of those requests reaches ingest twice.

use std::io::Read;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use tally_formats::otlp::proto::collector::trace::v1::ExportTraceServiceRequest;
use tally_formats::otlp::Encoding;

struct Shared {
    ingest: String,
    http: reqwest::Client,
    /// How many more answers to lose.
    to_lose: Mutex<usize>,
    /// The requests whose answers were lost, as ingest accepted them.
    lost: Mutex<Vec<ExportTraceServiceRequest>>,
}

pub struct FlakyIngest {
    pub url: String,
    shared: Arc<Shared>,
    server: tokio::task::JoinHandle<()>,
}

impl FlakyIngest {
    /// Starts the proxy for `ingest_url`; it loses the answers to the first `lose` requests that
    /// ingest answered 200.
    pub async fn start(ingest_url: &str, lose: usize) -> anyhow::Result<FlakyIngest> {
        let shared = Arc::new(Shared {
            ingest: ingest_url.to_string(),
            http: reqwest::Client::new(),
            to_lose: Mutex::new(lose),
            lost: Mutex::new(Vec::new()),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr: SocketAddr = listener.local_addr()?;
        let router = Router::new().route("/v1/traces", post(forward)).with_state(shared.clone());
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        Ok(FlakyIngest { url: format!("http://{addr}"), shared, server })
    }

    /// The requests whose 200 the exporter never saw.
    pub fn lost(&self) -> Vec<ExportTraceServiceRequest> {
        self.shared.lost.lock().unwrap().clone()
    }
}

impl Drop for FlakyIngest {
    fn drop(&mut self) {
        self.server.abort();
    }
}

fn decode(headers: &HeaderMap, body: &[u8]) -> Option<ExportTraceServiceRequest> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("");
    let mut plain = Vec::new();
    let body = if header("content-encoding") == "gzip" {
        flate2::read::GzDecoder::new(body).read_to_end(&mut plain).ok()?;
        &plain[..]
    } else {
        body
    };
    let content_type = header("content-type").split(';').next().unwrap_or("").trim().to_string();
    tally_formats::otlp::decode_request(body, Encoding::from_content_type(&content_type)?).ok()
}

async fn forward(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    let mut request = shared.http.post(format!("{}/v1/traces", shared.ingest)).body(body.clone());
    for name in ["authorization", "content-type", "content-encoding"] {
        if let Some(value) = headers.get(name) {
            request = request.header(name, value.as_bytes());
        }
    }
    let Ok(answer) = request.send().await else {
        return StatusCode::BAD_GATEWAY.into_response();
    };
    let status = answer.status().as_u16();
    let content_type = answer.headers().get("content-type").cloned();
    let bytes = answer.bytes().await.unwrap_or_default();
    if status == 200 {
        let mut to_lose = shared.to_lose.lock().unwrap();
        if *to_lose > 0 {
            if let Some(decoded) = decode(&headers, &body) {
                *to_lose -= 1;
                shared.lost.lock().unwrap().push(decoded);
                return (StatusCode::SERVICE_UNAVAILABLE, [("retry-after", "1")]).into_response();
            }
        }
    }
    let mut response =
        (StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY), bytes).into_response();
    if let Some(content_type) = content_type {
        response.headers_mut().insert("content-type", content_type);
    }
    response
}
