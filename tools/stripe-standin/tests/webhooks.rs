//! Checkout, subscriptions, invoices and their events over HTTP, delivered to a webhook receiver
//! as Stripe delivers them: signed (`Stripe-Signature`, recomputed here with the secret), in
//! order, retried after a failure, resent on demand.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;
use tally_pricing::stripe::{meter_event_name, plans, PriceKind};
use tally_pricing::Pricing;
use tally_schemas::{BilledUsageV1, Metric, Tier};
use tally_stripe_standin::webhook::Endpoint;
use tally_stripe_standin::{spawn_local_with, Config};

const KEY: &str = "sk_test_standin_webhooks";
const SECRET: &str = "whsec_standin_webhooks_test";

/// One request the receiver got: (Stripe-Signature, Content-Type, raw body, status answered).
type Received = (String, String, String, u16);

#[derive(Clone, Default)]
struct Receiver {
    got: Arc<Mutex<Vec<Received>>>,
    /// Answer 500 to this many requests first.
    fail_first: Arc<Mutex<u32>>,
}

async fn receive(State(r): State<Receiver>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let header =
        |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    let status = {
        let mut fail = r.fail_first.lock().unwrap();
        if *fail > 0 {
            *fail -= 1;
            StatusCode::INTERNAL_SERVER_ERROR
        } else {
            StatusCode::OK
        }
    };
    let body = String::from_utf8(body.to_vec()).unwrap();
    r.got.lock().unwrap().push((
        header("stripe-signature"),
        header("content-type"),
        body,
        status.as_u16(),
    ));
    status
}

async fn start_receiver(fail_first: u32) -> (Receiver, String) {
    let r = Receiver { fail_first: Arc::new(Mutex::new(fail_first)), ..Receiver::default() };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/stripe/webhook", listener.local_addr().unwrap());
    let app = axum::Router::new()
        .route("/stripe/webhook", axum::routing::post(receive))
        .with_state(r.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (r, url)
}

/// Checks the signature as Stripe's libraries do, and returns (timestamp, event).
fn verified(signature: &str, body: &str) -> (i64, Value) {
    let mut t = None;
    let mut v1 = Vec::new();
    for part in signature.split(',') {
        match part.split_once('=') {
            Some(("t", value)) => t = Some(value.parse::<i64>().unwrap()),
            Some(("v1", value)) => v1.push(value.to_string()),
            _ => {}
        }
    }
    let t = t.expect("a timestamp");
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(format!("{t}.{body}").as_bytes());
    let expected = hex::encode(mac.finalize().into_bytes());
    assert!(v1.contains(&expected), "signature {signature} does not match the body");
    assert!((chrono::Utc::now().timestamp() - t).abs() < 300, "a fresh timestamp");
    (t, serde_json::from_str(body).unwrap())
}

struct Api {
    client: reqwest::Client,
    base: String,
}

impl Api {
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        form: &[(&str, &str)],
    ) -> (u16, Value) {
        let body = form_urlencoded::Serializer::new(String::new()).extend_pairs(form).finish();
        let url = format!("{}{path}", self.base);
        let request = if method == reqwest::Method::GET || method == reqwest::Method::DELETE {
            self.client.request(method, format!("{url}?{body}"))
        } else {
            self.client
                .request(method, url)
                .header("content-type", "application/x-www-form-urlencoded")
                .body(body)
        };
        let response = request.bearer_auth(KEY).send().await.unwrap();
        (response.status().as_u16(), response.json().await.unwrap())
    }

    async fn ok(&self, method: reqwest::Method, path: &str, form: &[(&str, &str)]) -> Value {
        let (status, body) = self.call(method, path, form).await;
        assert_eq!(status, 200, "{path}: {body}");
        body
    }

    async fn test_only(&self, path: &str, body: Value) -> (u16, Value) {
        let response =
            self.client.post(format!("{}{path}", self.base)).json(&body).send().await.unwrap();
        (response.status().as_u16(), response.json().await.unwrap())
    }
}

async fn wait_for(r: &Receiver, count: usize) -> Vec<Received> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let got = r.got.lock().unwrap().clone();
        if got.len() >= count {
            return got;
        }
        assert!(Instant::now() < deadline, "{} of {count} deliveries arrived: {got:?}", got.len());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The event types the receiver accepted (2xx), in arrival order.
fn accepted(got: &[Received]) -> Vec<String> {
    got.iter()
        .filter(|g| g.3 == 200)
        .map(|(sig, _, body, _)| verified(sig, body).1["type"].as_str().unwrap().to_string())
        .collect()
}

/// Tally's prices for `tier`, created as `setup-stripe` creates them; returns the price ids.
async fn tier_prices(api: &Api, tier: Tier) -> Vec<String> {
    let pricing = Pricing::builtin();
    let mut meters = std::collections::HashMap::new();
    for metric in Metric::ALL {
        let name = meter_event_name(metric);
        let m = api
            .ok(
                reqwest::Method::POST,
                "/v1/billing/meters",
                &[
                    ("display_name", name),
                    ("event_name", name),
                    ("default_aggregation[formula]", "sum"),
                ],
            )
            .await;
        meters.insert(metric, m["id"].as_str().unwrap().to_string());
    }
    let plan = plans(&pricing).into_iter().find(|p| p.tier == tier).unwrap();
    api.ok(
        reqwest::Method::POST,
        "/v1/products",
        &[("id", &plan.product_id), ("name", &plan.product_name)],
    )
    .await;
    let mut ids = Vec::new();
    for price in &plan.prices {
        let meter = match &price.kind {
            PriceKind::Metered { metric, .. } => Some(meters[metric].as_str()),
            PriceKind::Licensed { .. } => None,
        };
        let params = price.create_params(&plan.product_id, meter);
        let pairs: Vec<(&str, &str)> =
            params.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        ids.push(
            api.ok(reqwest::Method::POST, "/v1/prices", &pairs).await["id"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }
    ids
}

#[tokio::test]
async fn checkout_subscription_and_invoice_events_arrive_signed_in_order_retried_and_resent() {
    // The receiver fails its first request: the first event must be retried, and the ones after
    // it must still arrive after it.
    let (receiver, url) = start_receiver(1).await;
    let config = Config {
        api_key: Some(KEY.into()),
        webhook: Some(Endpoint::new(&url, SECRET).unwrap()),
        ..Config::new(([127, 0, 0, 1], 0).into())
    };
    let base = spawn_local_with(config).await.unwrap();
    let api = Api { client: reqwest::Client::new(), base: base.clone() };
    use reqwest::Method as M;

    // The webhook setting shows its URL, never its secret.
    let setting = api
        .client
        .get(format!("{base}/_standin/webhook"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(setting.contains(&url) && !setting.contains(SECRET), "{setting}");

    let prices = tier_prices(&api, Tier::Starter).await;
    let (base_price, traces_price, bytes_price) = (&prices[0], &prices[1], &prices[2]);
    // A metered price takes no quantity; an unknown price is Stripe's resource_missing.
    let (status, body) = api
        .call(
            M::POST,
            "/v1/checkout/sessions",
            &[
                ("mode", "subscription"),
                ("line_items[0][price]", traces_price),
                ("line_items[0][quantity]", "1"),
            ],
        )
        .await;
    assert_eq!((status, body["error"]["param"].as_str()), (400, Some("line_items[0][quantity]")));
    let (status, body) = api
        .call(
            M::POST,
            "/v1/checkout/sessions",
            &[("mode", "subscription"), ("line_items[0][price]", "price_nope")],
        )
        .await;
    assert_eq!((status, body["error"]["code"].as_str()), (400, Some("resource_missing")));
    let (status, body) = api
        .call(
            M::POST,
            "/v1/checkout/sessions",
            &[("mode", "subscription"), ("line_items[0][price]", base_price), ("nonsense", "1")],
        )
        .await;
    assert_eq!((status, body["error"]["code"].as_str()), (400, Some("parameter_unknown")));

    let session = api
        .ok(
            M::POST,
            "/v1/checkout/sessions",
            &[
                ("mode", "subscription"),
                ("line_items[0][price]", base_price),
                ("line_items[0][quantity]", "1"),
                ("line_items[1][price]", traces_price),
                ("line_items[2][price]", bytes_price),
                ("client_reference_id", "org_acme"),
                ("customer_email", "ops@acme.test"),
                ("success_url", "http://tally.test/billing/done?session={CHECKOUT_SESSION_ID}"),
                ("cancel_url", "http://tally.test/billing"),
                ("metadata[org_id]", "acme"),
                ("subscription_data[metadata][org_id]", "acme"),
                ("subscription_data[metadata][tier]", "starter"),
            ],
        )
        .await;
    let id = session["id"].as_str().unwrap().to_string();
    assert_eq!(session["url"], format!("{base}/_standin/checkout/{id}"));
    assert_eq!(
        (session["status"].as_str(), session["customer_email"].as_str()),
        (Some("open"), Some("ops@acme.test"))
    );
    let page = api.client.get(session["url"].as_str().unwrap()).send().await.unwrap();
    assert_eq!(page.status().as_u16(), 200);
    assert!(page.text().await.unwrap().contains("org_acme"));
    assert_eq!(api.ok(M::GET, &format!("/v1/checkout/sessions/{id}"), &[]).await, session);

    let (status, done) =
        api.test_only(&format!("/_standin/checkout/sessions/{id}/complete"), json!({})).await;
    assert_eq!(status, 200, "{done}");
    let customer = done["customer"]["id"].as_str().unwrap().to_string();
    let subscription = done["subscription"]["id"].as_str().unwrap().to_string();
    assert_eq!(done["customer"]["email"], "ops@acme.test");
    assert_eq!(done["session"]["status"], "complete");
    assert_eq!(done["subscription"]["metadata"], json!({"org_id": "acme", "tier": "starter"}));
    let (status, again) =
        api.test_only(&format!("/_standin/checkout/sessions/{id}/complete"), json!({})).await;
    assert_eq!((status, again["error"]["type"].as_str()), (400, Some("invalid_request_error")));

    // 1 refused attempt + 3 events.
    let got = wait_for(&receiver, 4).await;
    assert_eq!(got[0].3, 500);
    assert_eq!(
        accepted(&got),
        ["customer.created", "customer.subscription.created", "checkout.session.completed"]
    );
    let events: Vec<Value> = got
        .iter()
        .map(|(sig, content_type, body, _)| {
            assert_eq!(content_type, "application/json");
            verified(sig, body).1
        })
        .collect();
    assert_eq!(events[0]["id"], events[1]["id"], "the refused event is retried first");
    let completed = &events[3];
    assert_eq!(completed["data"]["object"]["id"], id.as_str());
    assert_eq!(completed["data"]["object"]["subscription"], subscription.as_str());
    assert_eq!(completed["data"]["object"]["client_reference_id"], "org_acme");
    assert_eq!(
        (
            completed["api_version"].as_str(),
            completed["livemode"].as_bool(),
            completed["object"].as_str()
        ),
        (Some("2026-08-26.dahlia"), Some(false), Some("event"))
    );
    assert_eq!(events[2]["data"]["object"]["id"], subscription.as_str());
    // The stored event is what was delivered, now with nothing pending.
    let stored =
        api.ok(M::GET, &format!("/v1/events/{}", completed["id"].as_str().unwrap()), &[]).await;
    assert_eq!(stored["data"], completed["data"]);
    assert_eq!(stored["pending_webhooks"], 0);
    let deliveries: Value = api
        .client
        .get(format!("{base}/_standin/webhook/deliveries"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let first = &deliveries["deliveries"][0];
    assert_eq!(
        (
            first["type"].as_str(),
            first["attempts"].as_u64(),
            first["last_status"].as_u64(),
            first["delivered"].as_bool()
        ),
        (Some("customer.created"), Some(2), Some(200), Some(true))
    );
    assert!(!deliveries.to_string().contains(SECRET));

    // Resend: the same event again, freshly signed.
    let (status, _) = api
        .test_only(
            &format!("/_standin/events/{}/resend", completed["id"].as_str().unwrap()),
            json!({}),
        )
        .await;
    assert_eq!(status, 200);
    let got = wait_for(&receiver, 5).await;
    let (t, resent) = verified(&got[4].0, &got[4].2);
    assert_eq!(resent["id"], completed["id"]);
    assert!(t >= verified(&got[3].0, &got[3].2).0);

    // The API's view: the subscription, the customer's subscriptions, the events newest first.
    let sub = api.ok(M::GET, &format!("/v1/subscriptions/{subscription}"), &[]).await;
    assert_eq!(sub["items"]["data"].as_array().unwrap().len(), 3);
    let listed = api.ok(M::GET, "/v1/subscriptions", &[("customer", &customer)]).await;
    assert_eq!(listed["data"][0]["id"], subscription.as_str());
    let newest = api.ok(M::GET, "/v1/events", &[("limit", "2")]).await;
    let kinds: Vec<&str> =
        newest["data"].as_array().unwrap().iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["checkout.session.completed", "customer.subscription.created"]);
    let only = api.ok(M::GET, "/v1/events", &[("type", "customer.created")]).await;
    assert_eq!(only["data"].as_array().unwrap().len(), 1);

    // Usage over the period, then its invoice, equal to Tally's own bill, and its payment.
    let now = chrono::Utc::now().timestamp();
    let (start, end) = (now - 3600, now + 60);
    for (metric, value) in [(Metric::Traces, "150000"), (Metric::PayloadBytes, "12000000000")] {
        let name = meter_event_name(metric);
        let ts = (now - 60).to_string();
        api.ok(
            M::POST,
            "/v1/billing/meter_events",
            &[
                ("event_name", name),
                ("payload[stripe_customer_id]", &customer),
                ("payload[value]", value),
                ("timestamp", &ts),
            ],
        )
        .await;
    }
    let (status, invoice) = api
        .test_only(
            "/_standin/invoices",
            json!({"subscription": subscription, "period_start": start, "period_end": end}),
        )
        .await;
    assert_eq!(status, 200, "{invoice}");
    let (_, tally_total) = Pricing::builtin()
        .price(Tier::Starter, BilledUsageV1 { traces: 150_000, payload_bytes: 12_000_000_000 });
    assert_eq!(tally_total, 25_000 + 10_000 + 100); // 50,000 traces × 0.2 + 2 GB × 0.00000005
    assert_eq!(
        (invoice["total"].as_i64(), invoice["status"].as_str()),
        (Some(tally_total), Some("open"))
    );
    assert_eq!(invoice["parent"]["subscription_details"]["subscription"], subscription.as_str());
    let (status, paid) = api
        .test_only(
            &format!("/_standin/invoices/{}/pay", invoice["id"].as_str().unwrap()),
            json!({}),
        )
        .await;
    assert_eq!(
        (status, paid["status"].as_str(), paid["amount_paid"].as_i64()),
        (200, Some("paid"), Some(tally_total))
    );
    let invoices = api.ok(M::GET, "/v1/invoices", &[("subscription", &subscription)]).await;
    assert_eq!(invoices["data"][0], paid);
    assert_eq!(
        api.ok(M::GET, &format!("/v1/invoices/{}", paid["id"].as_str().unwrap()), &[]).await,
        paid
    );

    // A plan change and a cancellation.
    let items = sub["items"]["data"].as_array().unwrap();
    let (item0, item1) = (items[0]["id"].as_str().unwrap(), items[1]["id"].as_str().unwrap());
    let updated = api
        .ok(
            M::POST,
            &format!("/v1/subscriptions/{subscription}"),
            &[
                ("items[0][id]", item1),
                ("items[0][deleted]", "true"),
                ("metadata[tier]", "growth"),
                ("proration_behavior", "none"),
            ],
        )
        .await;
    assert_eq!(updated["items"]["data"].as_array().unwrap().len(), 2);
    let canceled = api.ok(M::DELETE, &format!("/v1/subscriptions/{subscription}"), &[]).await;
    assert_eq!(canceled["status"], "canceled");
    assert!(canceled["items"]["data"].as_array().unwrap().iter().any(|i| i["id"] == item0));

    let got = wait_for(&receiver, 11).await;
    assert_eq!(
        accepted(&got[5..]),
        [
            "invoice.created",
            "invoice.finalized",
            "invoice.paid",
            "invoice.payment_succeeded",
            "customer.subscription.updated",
            "customer.subscription.deleted"
        ]
    );
    let (_, update) = verified(&got[9].0, &got[9].2);
    assert_eq!(update["data"]["previous_attributes"]["items"]["data"].as_array().unwrap().len(), 3);
    assert_eq!(update["data"]["previous_attributes"]["metadata"], json!({"tier": "starter"}));
    assert!(update["request"]["id"].as_str().unwrap().starts_with("req_"));
}

#[tokio::test]
async fn the_webhook_is_set_at_run_time_and_a_dead_endpoint_is_retried_then_given_up() {
    let base = spawn_local_with(Config {
        api_key: Some(KEY.into()),
        ..Config::new(([127, 0, 0, 1], 0).into())
    })
    .await
    .unwrap();
    let api = Api { client: reqwest::Client::new(), base: base.clone() };
    let get = || async {
        api.client
            .get(format!("{base}/_standin/webhook"))
            .send()
            .await
            .unwrap()
            .json::<Value>()
            .await
            .unwrap()
    };
    assert_eq!(get().await, json!({"url": null}));
    // Events before any endpoint are kept, not delivered.
    api.ok(reqwest::Method::POST, "/v1/customers", &[("email", "early@acme.test")]).await;

    let (status, _) = api
        .test_only("/_standin/webhook", json!({"url": "https://example.com/x", "secret": SECRET}))
        .await;
    assert_eq!(status, 422);
    let (receiver, url) = start_receiver(0).await;
    let (status, shown) =
        api.test_only("/_standin/webhook", json!({"url": url, "secret": SECRET})).await;
    assert_eq!((status, &shown), (200, &json!({"url": url})));
    assert_eq!(get().await, json!({"url": url}));
    api.ok(reqwest::Method::POST, "/v1/customers", &[("email", "late@acme.test")]).await;
    let got = wait_for(&receiver, 1).await;
    let (_, event) = verified(&got[0].0, &got[0].2);
    assert_eq!(event["data"]["object"]["email"], "late@acme.test");

    // Nothing listens here: five attempts, then the delivery is given up and recorded.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_url = format!("http://{}/hook", dead.local_addr().unwrap());
    drop(dead);
    api.test_only("/_standin/webhook", json!({"url": dead_url, "secret": SECRET})).await;
    api.ok(reqwest::Method::POST, "/v1/customers", &[("email", "lost@acme.test")]).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let d: Value = api
            .client
            .get(format!("{base}/_standin/webhook/deliveries"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let last = d["deliveries"].as_array().unwrap().last().unwrap().clone();
        if last["attempts"] == 5 {
            assert_eq!(
                (last["delivered"].as_bool(), last["last_status"].as_u64()),
                (Some(false), None)
            );
            assert!(last["last_error"].is_string());
            break;
        }
        assert!(Instant::now() < deadline, "{last}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
