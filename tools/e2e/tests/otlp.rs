//! OpenTelemetry in: spans exported to ingest's `POST /v1/traces`, in protobuf and in OTLP's JSON,
//! are metered exactly as Tally's rules say (docs/otlp.md), an exporter's retry is counted once,
//! and bad OTLP input is refused with the right status and harms nothing.

use std::io::Write;
use std::time::Duration;

use flate2::write::GzEncoder;
use prost::Message;
use reqwest::StatusCode;
use tally_e2e::{assert_usage_eventually, unique, Stack};
use tally_formats::otlp::proto::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use tally_formats::otlp::Encoding;
use tally_loadgen::otlp::{Ids, TraceSet, TraceSetSpec};

/// `google.rpc.Status` as OTLP/HTTP answers a refused request (its `details` unused).
#[derive(Clone, PartialEq, Message)]
struct RpcStatus {
    #[prost(int32, tag = "1")]
    code: i32,
    #[prost(string, tag = "2")]
    message: String,
}

/// What an OTLP/HTTP exporter does: one POST per request, nothing else.
struct Exporter {
    http: reqwest::Client,
    url: String,
    key: String,
}

/// An answer, decoded in the encoding it came in.
#[derive(Debug)]
enum Answer {
    Exported(ExportTraceServiceResponse),
    /// The status's message, and Tally's error code when the answer was JSON.
    Refused {
        message: String,
        code: Option<String>,
    },
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut gz = GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(bytes).unwrap();
    gz.finish().unwrap()
}

impl Exporter {
    fn new(stack: &Stack, key: &str) -> Exporter {
        Exporter {
            http: reqwest::Client::new(),
            url: format!("{}/v1/traces", stack.ingest_url()),
            key: key.to_string(),
        }
    }

    async fn post(
        &self,
        body: Vec<u8>,
        content_type: &str,
        headers: &[(&str, &str)],
    ) -> anyhow::Result<(StatusCode, Answer)> {
        let mut request = self
            .http
            .post(&self.url)
            .bearer_auth(&self.key)
            .header("content-type", content_type)
            .body(body);
        for (k, v) in headers {
            request = request.header(*k, *v);
        }
        let response = request.send().await?;
        let status = response.status();
        let answered_in = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let bytes = response.bytes().await?;
        let answer = match (status, answered_in.starts_with("application/x-protobuf")) {
            (StatusCode::OK, true) => Answer::Exported(ExportTraceServiceResponse::decode(bytes)?),
            (StatusCode::OK, false) => Answer::Exported(serde_json::from_slice(&bytes)?),
            (_, true) => Answer::Refused { message: RpcStatus::decode(bytes)?.message, code: None },
            (_, false) => {
                let body: serde_json::Value = serde_json::from_slice(&bytes)?;
                Answer::Refused {
                    message: body["message"].as_str().unwrap_or_default().to_string(),
                    code: body["error"]["code"].as_str().map(str::to_string),
                }
            }
        };
        Ok((status, answer))
    }

    async fn export(
        &self,
        request: &ExportTraceServiceRequest,
        encoding: Encoding,
        gzipped: bool,
    ) -> anyhow::Result<(StatusCode, Answer)> {
        let body = tally_formats::otlp::encode(request, encoding);
        if gzipped {
            self.post(gzip(&body), encoding.content_type(), &[("content-encoding", "gzip")]).await
        } else {
            self.post(body, encoding.content_type(), &[]).await
        }
    }
}

fn rejected_spans(answer: &Answer) -> i64 {
    match answer {
        Answer::Exported(response) => {
            response.partial_success.as_ref().map_or(0, |p| p.rejected_spans)
        }
        Answer::Refused { .. } => panic!("refused: {answer:?}"),
    }
}

/// The generated sets mean the same in both encodings: what the tests send as JSON is measured
/// like what they send as protobuf.
#[test]
fn a_trace_set_reads_back_the_same_in_both_encodings() {
    for seed in 0..20 {
        let spec = TraceSetSpec {
            orgs: vec!["a".into(), "b".into()],
            unknown_org: "z".into(),
            traces_per_service: 30,
            seed,
            now: chrono::Utc::now(),
        };
        for request in spec.generate().requests(Ids { seed }) {
            for encoding in [Encoding::Protobuf, Encoding::Json] {
                let back = tally_formats::otlp::decode_request(
                    &tally_formats::otlp::encode(&request, encoding),
                    encoding,
                )
                .unwrap();
                let sent = tally_formats::otlp::spans(&request);
                for ((_, sent), (_, read)) in sent.zip(tally_formats::otlp::spans(&back)) {
                    assert_eq!(
                        serde_json::to_string(&tally_formats::otlp::payload::canonical(sent))
                            .unwrap(),
                        serde_json::to_string(&tally_formats::otlp::payload::canonical(read))
                            .unwrap(),
                        "seed {seed}, {encoding:?}"
                    );
                }
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_are_metered_exactly_in_protobuf_and_json_and_a_retry_counts_once(
) -> anyhow::Result<()> {
    let stack = Stack::start().await?;
    let api = stack.api();
    let orgs: Vec<String> = (0..2).map(|i| unique(&format!("otlp{i}-"))).collect();
    for org in &orgs {
        api.ensure_org(org, "OTLP org").await?;
    }
    let key = api.create_service_key(None).await?;
    let set = TraceSetSpec {
        orgs: orgs.clone(),
        unknown_org: unique("nobody-"),
        traces_per_service: 60,
        seed: rand::random(),
        now: chrono::Utc::now(),
    }
    .generate();
    let (mut expected, counts) = set.expected(&orgs);
    assert!(counts.unmapped > 0 && counts.rejected > 0, "{counts:?}");
    let requests = set.requests(Ids { seed: rand::random() });
    let exporter = Exporter::new(&stack, &key);

    let mut not_metered = 0;
    for (i, request) in requests.iter().enumerate() {
        let encoding = if i % 2 == 0 { Encoding::Protobuf } else { Encoding::Json };
        let (status, answer) = exporter.export(request, encoding, i % 3 == 0).await?;
        assert_eq!(status, StatusCode::OK, "{answer:?}");
        not_metered += rejected_spans(&answer);
    }
    assert_eq!(not_metered as usize, counts.unmapped + counts.rejected);

    // An exporter retries a request whose answer it did not get: every event in it arrives a
    // second time and is a duplicate, never billed twice.
    let (status, answer) = exporter.export(&requests[0], Encoding::Json, false).await?;
    assert_eq!(status, StatusCode::OK, "{answer:?}");
    let first = TraceSet { services: vec![set.services[0].clone()] };
    for (org_period, again) in first.expected(&orgs).0 {
        let usage = expected.get_mut(&org_period).expect("the first service's org");
        usage.duplicate += again.traces + again.child_span + again.not_success;
    }

    assert_usage_eventually(&api, &expected, Duration::from_secs(60)).await?;
    let unmapped_retried = first.expected(&orgs).1.unmapped;
    assert_eq!(
        stack.metric("ingest", "tally_ingest_unmapped_spans_total").await,
        Some((counts.unmapped + unmapped_retried) as f64)
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_otlp_input_is_refused_clearly_and_refuses_nothing_valid() -> anyhow::Result<()> {
    let stack = Stack::start().await?;
    let api = stack.api();
    let org = unique("otlpbad-");
    api.ensure_org(&org, "Bad OTLP org").await?;
    let key = api.create_key(&org, "ingest").await?;
    let exporter = Exporter::new(&stack, &key);
    let set = TraceSetSpec {
        orgs: vec![org.clone()],
        unknown_org: unique("nobody-"),
        traces_per_service: 20,
        seed: rand::random(),
        now: chrono::Utc::now(),
    }
    .generate();
    // The org's own service only.
    let set = TraceSet { services: vec![set.services[0].clone()] };
    let (mut expected, counts) = set.expected(std::slice::from_ref(&org));
    let mut request = set.requests(Ids { seed: rand::random() }).remove(0);
    let valid = tally_formats::otlp::encode(&request, Encoding::Protobuf);

    let refused = |answer: &Answer, want: &str| match answer {
        Answer::Refused { message, code } => {
            assert!(message.starts_with(want), "{message}");
            if let Some(code) = code {
                assert_eq!(code, want);
            }
        }
        other => panic!("expected {want}, got {other:?}"),
    };

    // Truncated protobuf, JSON that is not JSON or not OTLP, an unknown content type, a bomb.
    let (status, answer) =
        exporter.post(valid[..valid.len() - 5].to_vec(), "application/x-protobuf", &[]).await?;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    refused(&answer, "invalid_otlp");
    let (status, answer) =
        exporter.post(b"{\"resourceSpans\": [".to_vec(), "application/json", &[]).await?;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    refused(&answer, "invalid_json");
    let (status, answer) = exporter
        .post(
            br#"{"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": "not hex"}]}]}]}"#
                .to_vec(),
            "application/json",
            &[],
        )
        .await?;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    refused(&answer, "invalid_otlp");
    let (status, answer) = exporter.post(valid.clone(), "text/plain", &[]).await?;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    refused(&answer, "unsupported_content_type");
    let bomb = {
        let mut gz = GzEncoder::new(Vec::new(), flate2::Compression::best());
        let zeros = vec![0u8; 1 << 20];
        for _ in 0..11 {
            gz.write_all(&zeros).unwrap();
        }
        gz.finish().unwrap()
    };
    let (status, answer) =
        exporter.post(bomb, "application/x-protobuf", &[("content-encoding", "gzip")]).await?;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    refused(&answer, "body_too_large");
    let no_key = Exporter { key: "tally_ingest_nope".into(), ..Exporter::new(&stack, &key) };
    let (status, answer) = no_key.post(valid.clone(), "application/json", &[]).await?;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    refused(&answer, "unauthorized");

    // Ids of the wrong length: those spans are refused, every other span of the request is
    // metered.
    let spans = &mut request.resource_spans[0].scope_spans[0].spans;
    let mut short_trace = spans[0].clone();
    short_trace.trace_id.truncate(8);
    let mut long_span = spans[0].clone();
    long_span.span_id.extend_from_slice(&[7; 8]);
    spans.push(short_trace);
    spans.push(long_span);
    let (status, answer) = exporter.export(&request, Encoding::Json, true).await?;
    assert_eq!(status, StatusCode::OK, "{answer:?}");
    assert_eq!(rejected_spans(&answer) as usize, counts.unmapped + counts.rejected + 2);
    let Answer::Exported(response) = &answer else { unreachable!() };
    let message = &response.partial_success.as_ref().unwrap().error_message;
    assert!(
        message.contains("trace_id: must be 16 bytes") && message.contains("span_id"),
        "{message}"
    );

    // The same spans again, as protobuf: all duplicates.
    let (status, _) = exporter.export(&request, Encoding::Protobuf, false).await?;
    assert_eq!(status, StatusCode::OK);
    for usage in expected.values_mut() {
        usage.duplicate = usage.traces + usage.child_span + usage.not_success;
    }
    assert_usage_eventually(&api, &expected, Duration::from_secs(60)).await?;
    Ok(())
}
