//! The state file (`STRIPE_STANDIN_STATE_FILE`): what a stand-in was told survives a graceful
//! stop and a new start on the same file (objects, meter summaries, the 24-hour identifier
//! refusal, `Idempotency-Key` replay, a webhook endpoint set at run time); faults and the request
//! log do not; changes reach the file within a few seconds without a stop; a file that cannot be
//! parsed stops the start with an error naming it, and is left as it was.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{json, Value};
use tally_stripe_standin::{spawn_local_stoppable, Config, LocalStandIn};

const KEY: &str = "sk_test_standin_state";

fn temp_dir(name: &str) -> PathBuf {
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    let dir = std::env::temp_dir()
        .join(format!("standin-state-it-{name}-{}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

async fn start(file: &Path) -> LocalStandIn {
    let config = Config {
        api_key: Some(KEY.into()),
        state_file: Some(file.to_path_buf()),
        ..Config::new(([127, 0, 0, 1], 0).into())
    };
    spawn_local_stoppable(config).await.unwrap()
}

struct Client {
    http: reqwest::Client,
    base: String,
}

impl Client {
    fn new(base: &str) -> Client {
        // No pooled connections: each stand-in is a new server.
        Client {
            http: reqwest::Client::builder().pool_max_idle_per_host(0).build().unwrap(),
            base: base.to_string(),
        }
    }

    async fn post(
        &self,
        path: &str,
        body: &str,
        idempotency_key: Option<&str>,
    ) -> (u16, bool, Value) {
        let mut request = self
            .http
            .post(format!("{}{path}", self.base))
            .bearer_auth(KEY)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body.to_string());
        if let Some(key) = idempotency_key {
            request = request.header("idempotency-key", key);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let replayed = response.headers().get("idempotent-replayed").is_some();
        (status, replayed, response.json().await.unwrap())
    }

    async fn ok(&self, path: &str, body: &str) -> Value {
        let (status, _, value) = self.post(path, body, None).await;
        assert_eq!(status, 200, "POST {path}: {value}");
        value
    }

    async fn get(&self, path: &str) -> Value {
        let response =
            self.http.get(format!("{}{path}", self.base)).bearer_auth(KEY).send().await.unwrap();
        assert_eq!(response.status().as_u16(), 200, "GET {path}");
        response.json().await.unwrap()
    }

    async fn standin(&self, path: &str, body: Value) -> u16 {
        self.http
            .post(format!("{}{path}", self.base))
            .json(&body)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    }
}

#[tokio::test]
async fn the_state_survives_a_restart_on_the_same_file() {
    let dir = temp_dir("restart");
    let file = dir.join("stripe-standin.json");

    // ---- first run ----------------------------------------------------------------------------
    let first = start(&file).await;
    let c = Client::new(&first.url);
    let customer = c.ok("/v1/customers", "email=ops%40acme.test&metadata[org_id]=acme").await;
    let cus = customer["id"].as_str().unwrap().to_string();
    let meter = c
        .ok(
            "/v1/billing/meters",
            "display_name=Traces&event_name=tally_traces&default_aggregation[formula]=sum",
        )
        .await;
    let mtr = meter["id"].as_str().unwrap().to_string();
    let event_body = format!("event_name=tally_traces&identifier=usage-1&payload[stripe_customer_id]={cus}&payload[value]=1234");
    let (status, _, meter_event) =
        c.post("/v1/billing/meter_events", &event_body, Some("key-usage-1")).await;
    assert_eq!(status, 200, "{meter_event}");
    let product = c.ok("/v1/products", "id=tally_starter&name=Starter").await;
    let price = c
        .ok(
            "/v1/prices",
            &format!(
                "currency=usd&product={}&unit_amount=2500&recurring[interval]=month",
                product["id"].as_str().unwrap()
            ),
        )
        .await;
    let session = c
        .ok(
            "/v1/checkout/sessions",
            &format!("mode=subscription&customer={cus}&client_reference_id=org_acme&success_url=http%3A%2F%2F127.0.0.1%2Fok&line_items[0][price]={}&line_items[0][quantity]=1", price["id"].as_str().unwrap()),
        )
        .await;
    let cs = session["id"].as_str().unwrap().to_string();
    // Set at run time: kept (with its secret) in the file. Nothing is delivered: no event follows.
    assert_eq!(
        c.standin(
            "/_standin/webhook",
            json!({"url": "http://127.0.0.1:9/hook", "secret": "whsec_runtime_state"})
        )
        .await,
        200
    );
    // Faults are not kept.
    assert_eq!(c.standin("/_standin/faults", json!({"rate_slow": 1.0, "slow_ms": 1})).await, 200);
    let events_before = c.get("/v1/events?limit=100").await;
    first.stop().await.unwrap();

    assert!(file.exists(), "saved on a graceful stop");
    assert_eq!(std::fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o600);
    assert!(!dir.join("stripe-standin.json.tmp").exists());

    // ---- second run on the same file ------------------------------------------------------------
    let second = start(&file).await;
    let c = Client::new(&second.url);
    assert_eq!(c.get(&format!("/v1/customers/{cus}")).await, customer);
    assert_eq!(c.get(&format!("/v1/billing/meters/{mtr}")).await, meter);
    assert_eq!(c.get("/v1/products/tally_starter").await, product);
    assert_eq!(c.get(&format!("/v1/checkout/sessions/{cs}")).await, session);
    assert_eq!(c.get("/v1/events?limit=100").await, events_before);

    // The meter still counts the event.
    let now = chrono::Utc::now().timestamp();
    let (from, to) = (now / 60 * 60 - 3600, now / 60 * 60 + 120);
    let summary = c.get(&format!("/v1/billing/meters/{mtr}/event_summaries?customer={cus}&start_time={from}&end_time={to}")).await;
    assert_eq!(summary["data"][0]["aggregated_value"], 1234.0, "{summary}");

    // The identifier is still taken for 24 hours; the idempotency key still replays.
    let (status, _, refused) = c.post("/v1/billing/meter_events", &event_body, None).await;
    assert_eq!(
        (status, refused["error"]["code"].as_str()),
        (400, Some("resource_already_exists")),
        "{refused}"
    );
    let (status, replayed, again) =
        c.post("/v1/billing/meter_events", &event_body, Some("key-usage-1")).await;
    assert_eq!((status, replayed, &again), (200, true, &meter_event));

    // The run-time webhook endpoint is back; faults and the request log are not.
    assert_eq!(c.get("/_standin/webhook").await["url"], "http://127.0.0.1:9/hook");
    assert_eq!(
        c.get("/_standin/faults").await,
        json!({"rate_429": 0.0, "rate_500": 0.0, "rate_slow": 0.0, "slow_ms": 0})
    );
    let log = c.get("/_standin/requests").await;
    assert!(
        log["requests"].as_array().unwrap().iter().all(|r| r["path"] != "/v1/customers"),
        "{log}"
    );

    // A change reaches the file within a couple of seconds, without a stop (as after kill -9).
    let later = c.ok("/v1/customers", "email=later%40acme.test").await;
    let later_id = later["id"].as_str().unwrap();
    let mut waited = Duration::ZERO;
    while !std::fs::read_to_string(&file).unwrap().contains(later_id) {
        assert!(waited < Duration::from_secs(6), "the new customer was not saved within 6 s");
        tokio::time::sleep(Duration::from_millis(200)).await;
        waited += Duration::from_millis(200);
    }
    second.stop().await.unwrap();

    let third = start(&file).await;
    assert_eq!(Client::new(&third.url).get(&format!("/v1/customers/{later_id}")).await, later);
    third.stop().await.unwrap();
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test]
async fn a_corrupt_state_file_refuses_the_start_and_is_left_alone() {
    let dir = temp_dir("corrupt");
    let file = dir.join("stripe-standin.json");
    std::fs::write(&file, "{\"format\": 1, \"store\": ").unwrap();

    let config =
        Config { state_file: Some(file.clone()), ..Config::new(([127, 0, 0, 1], 0).into()) };
    let error =
        spawn_local_stoppable(config).await.err().expect("a corrupt file is refused").to_string();
    assert!(error.starts_with(&format!("state file {}: ", file.display())), "{error}");

    // The binary: exit 1, one line naming the file, before listening.
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_stripe-standin"))
        .env("STRIPE_STANDIN_STATE_FILE", &file)
        .env("STRIPE_STANDIN_ADDR", "127.0.0.1:0")
        .env_remove("STRIPE_STANDIN_WEBHOOK_URL")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8(output.stderr).unwrap();
    let line = format!("stripe-standin: state file {}: ", file.display());
    assert_eq!(stderr.lines().filter(|l| l.starts_with(&line)).count(), 1, "{stderr}");

    assert_eq!(
        std::fs::read_to_string(&file).unwrap(),
        "{\"format\": 1, \"store\": ",
        "the file is left as it was"
    );
    std::fs::remove_dir_all(dir).unwrap();
}
