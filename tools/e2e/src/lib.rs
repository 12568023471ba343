//! The end-to-end harness: Tally's real binaries, started as processes against the real Kafka
//! broker and PostgreSQL that `make test` provides (a broker of its own on 19092, database
//! `tally_test`), on free loopback ports, killed with SIGKILL when a test wants a crash.
//!
//! Every test uses org ids of its own, so tests share the broker and database without seeing
//! each other's usage.

use std::collections::HashMap;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use tally_loadgen::api::Api;

pub mod flaky_ingest;
pub mod log;
pub mod stripe;

/// The pipeline's services, which `Stack::start` runs.
pub const SERVICES: [&str; 4] = ["api", "aggregator", "projector", "ingest"];
/// Every service a stack can run: the pipeline's, and the billing reporter (which needs Stripe
/// settings, so a test starts it with [`Stack::start_service`]).
pub const ALL_SERVICES: [&str; 5] =
    ["api", "aggregator", "projector", "ingest", "billing-reporter"];

pub fn kafka_brokers() -> String {
    std::env::var("TALLY_TEST_KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:19092".into())
}

pub fn database_url() -> String {
    std::env::var("TALLY_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/tally_test".into())
}

/// `url` with its user replaced by `role` (the tests' cluster trusts Tally's roles on loopback).
pub fn as_role(url: &str, role: &str) -> String {
    let (scheme, rest) = url.split_once("://").expect("a database url has a scheme");
    let rest = rest.split_once('@').map_or(rest, |(_, host)| host);
    format!("{scheme}://{role}@{rest}")
}

/// The role each service connects as (store migration 0009).
pub fn database_role(service: &str) -> &'static str {
    match service {
        "ingest" => "tally_ingest",
        "projector" => "tally_projector",
        "api" => "tally_api",
        "billing-reporter" => "tally_reporter",
        _ => "tally_owner",
    }
}

/// Brings the schema of the database `url` names up to date, as its owner (what `tally-migrate`
/// does before a deployment starts its services).
pub async fn migrate(url: &str) -> anyhow::Result<()> {
    let owner = tally_common::settings::Secret::new(as_role(url, "tally_owner"));
    tally_store::migrate(&owner).await?;
    Ok(())
}

/// A new database named `name` beside the tests' one, owned by `tally_owner`; migrated if
/// `migrated`. Returns its URL (as the superuser: [`as_role`] gives a role's).
pub async fn create_database(name: &str, migrated: bool) -> anyhow::Result<String> {
    let admin = sqlx::PgPool::connect(&database_url()).await?;
    sqlx::query(&format!("CREATE DATABASE {name} OWNER tally_owner")).execute(&admin).await?;
    admin.close().await;
    let base = database_url();
    let url =
        format!("{}/{name}", &base[..base.rfind('/').expect("a database url names a database")]);
    if migrated {
        migrate(&url).await?;
    }
    Ok(url)
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A service binary built by `make build`.
pub fn binary(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/release").join(name)
}

pub fn logs_dir() -> PathBuf {
    let dir = std::env::var("TALLY_TEST_LOGS").map(PathBuf::from).unwrap_or_else(|_| {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.tally/test/logs")
    });
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Polls `check` every 200 ms until it answers `Some`, for at most `timeout`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<Option<T>>>,
{
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if let Some(v) = check().await? {
            return Ok(v);
        }
        anyhow::ensure!(std::time::Instant::now() < deadline, "{what}: not within {timeout:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The settings whose values are secrets: a stack remembers them ([`remember_secret`]).
const SECRET_SETTINGS: [&str; 4] = [
    "TALLY_ADMIN_TOKEN",
    "TALLY_ADMIN_TOKEN_PREVIOUS",
    "TALLY_STRIPE_SECRET_KEY",
    "TALLY_STRIPE_WEBHOOK_SECRET",
];

/// The file the run's secrets are remembered in, one per line, for the sweep at the end of the
/// run (`tests/zz_secrets.rs`).
pub fn secrets_ledger() -> PathBuf {
    logs_dir().join("secrets.ledger")
}

/// Adds a secret to the run's ledger (the loaded keys and links of [`tally_loadgen::api::Api`]
/// are added by it).
pub fn remember_secret(secret: &str) {
    static LEDGER: std::sync::Once = std::sync::Once::new();
    LEDGER.call_once(|| std::env::set_var("TALLY_SECRETS_LEDGER", secrets_ledger()));
    tally_loadgen::secrets::remember(secret);
}

/// Signs in to the page at `api_url` with a key or the admin token; the session cookie
/// (`name=value`) to send back.
pub async fn sign_in(api_url: &str, key: &str) -> anyhow::Result<String> {
    let response = reqwest::Client::new()
        .post(format!("{api_url}/v1/sessions"))
        .json(&serde_json::json!({ "key": key }))
        .send()
        .await?;
    anyhow::ensure!(response.status().as_u16() == 201, "signing in: {}", response.status());
    response
        .headers()
        .get(reqwest::header::SET_COOKIE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(str::to_string)
        .inspect(|cookie| remember_secret(cookie.split_once('=').map_or(cookie, |(_, v)| v)))
        .ok_or_else(|| anyhow::anyhow!("no session cookie"))
}

/// A short random suffix for org and event ids.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}{:08x}", rand::random::<u32>())
}

/// One running set of Tally's services.
pub struct Stack {
    pub admin_token: String,
    pub addrs: HashMap<&'static str, String>,
    /// Where each service answers `/healthz`, `/readyz` and `/metrics`.
    pub ops: HashMap<&'static str, String>,
    pub env: Vec<(String, String)>,
    children: HashMap<&'static str, Child>,
    /// Further instances of a stage, by (service, instance id).
    extra: HashMap<(&'static str, u32), Child>,
    pub restarts: HashMap<&'static str, u32>,
}

impl Stack {
    /// Starts all four services with default settings.
    pub async fn start() -> anyhow::Result<Stack> {
        Stack::start_with(&[]).await
    }

    /// Starts all four services, with extra environment variables.
    pub async fn start_with(extra: &[(&str, &str)]) -> anyhow::Result<Stack> {
        Stack::start_services(&SERVICES, extra).await
    }

    /// Starts some of the services, with extra environment variables. A test that writes its own
    /// log times runs without ingest (whose ticks carry the wall clock) in a namespace of its own.
    pub async fn start_services(
        services: &[&'static str],
        extra: &[(&str, &str)],
    ) -> anyhow::Result<Stack> {
        let admin_token = format!("test-admin-{:032x}", rand::random::<u128>());
        let mut addrs = HashMap::new();
        let mut ops = HashMap::new();
        for service in ALL_SERVICES {
            let addr = format!("127.0.0.1:{}", free_port());
            // Ingest and the api serve their probes and metrics on a listener of their own.
            let ops_addr = match service {
                "ingest" | "api" => format!("127.0.0.1:{}", free_port()),
                _ => addr.clone(),
            };
            addrs.insert(service, addr);
            ops.insert(service, ops_addr);
        }
        let mut env: Vec<(String, String)> = vec![
            ("TALLY_KAFKA_BROKERS".into(), kafka_brokers()),
            ("TALLY_DATABASE_URL".into(), database_url()),
            ("TALLY_ADMIN_TOKEN".into(), admin_token.clone()),
            ("TALLY_API_ADDR".into(), addrs["api"].clone()),
            ("TALLY_INGEST_ADDR".into(), addrs["ingest"].clone()),
            ("TALLY_INGEST_OPS_ADDR".into(), ops["ingest"].clone()),
            ("TALLY_API_OPS_ADDR".into(), ops["api"].clone()),
            ("TALLY_AGGREGATOR_ADDR".into(), addrs["aggregator"].clone()),
            ("TALLY_PROJECTOR_ADDR".into(), addrs["projector"].clone()),
            ("TALLY_BILLING_REPORTER_ADDR".into(), addrs["billing-reporter"].clone()),
            (
                "TALLY_PIPELINE_STAGES".into(),
                ["ingest", "aggregator", "projector", "billing-reporter"]
                    .map(|s| format!("{s}=http://{}", ops[s]))
                    .join(","),
            ),
            ("NO_COLOR".into(), "1".into()),
        ];
        env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        for (name, value) in &env {
            if SECRET_SETTINGS.contains(&name.as_str()) {
                remember_secret(value);
            }
        }
        let mut stack = Stack {
            admin_token,
            addrs,
            ops,
            env,
            children: HashMap::new(),
            extra: HashMap::new(),
            restarts: HashMap::new(),
        };
        // As a deployment does: the owner migrates, then each service connects as its own role.
        migrate(&stack.database_url()).await?;
        for &service in services {
            stack.spawn(service)?;
            stack.wait_ready(service).await?;
        }
        Ok(stack)
    }

    /// The database this stack's services use (the superuser's URL to it).
    pub fn database_url(&self) -> String {
        self.env
            .iter()
            .rev()
            .find(|(k, _)| k == "TALLY_DATABASE_URL")
            .map_or_else(database_url, |(_, v)| v.clone())
    }

    fn spawn(&mut self, service: &'static str) -> anyhow::Result<()> {
        let log_path = logs_dir().join(format!("{service}.log"));
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&log_path)?;
        let child = Command::new(binary(service))
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env("TALLY_DATABASE_URL", as_role(&self.database_url(), database_role(service)))
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log))
            .spawn()
            .with_context(|| {
                format!("starting {} (run `make build` first)", binary(service).display())
            })?;
        self.children.insert(service, child);
        Ok(())
    }

    /// Starts one more service of this stack (the billing reporter) and waits until it is ready.
    pub async fn start_service(&mut self, service: &'static str) -> anyhow::Result<()> {
        self.spawn(service)?;
        self.wait_ready(service).await
    }

    pub async fn wait_ready(&mut self, service: &'static str) -> anyhow::Result<()> {
        let url = format!("http://{}/readyz", self.ops[service]);
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Ok(r) = client.get(&url).send().await {
                if r.status().is_success() {
                    return Ok(());
                }
            }
            if let Some(status) =
                self.children.get_mut(service).and_then(|c| c.try_wait().ok().flatten())
            {
                bail!(
                    "{service} exited with {status} before it was ready (see {}/{service}.log)",
                    logs_dir().display()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        bail!("{service} was not ready within 60 s")
    }

    /// SIGKILL: the process gets no chance to finish anything.
    pub fn kill9(&mut self, service: &'static str) {
        if let Some(mut child) = self.children.remove(service) {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub async fn restart(&mut self, service: &'static str) -> anyhow::Result<()> {
        self.kill9(service);
        *self.restarts.entry(service).or_default() += 1;
        self.spawn(service)?;
        self.wait_ready(service).await
    }

    /// Starts another instance of `service` (aggregator or projector) with its own instance id.
    pub async fn start_instance(
        &mut self,
        service: &'static str,
        instance: u32,
    ) -> anyhow::Result<()> {
        let addr = format!("127.0.0.1:{}", free_port());
        let addr_var = format!("TALLY_{}_ADDR", service.to_ascii_uppercase());
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(logs_dir().join(format!("{service}-{instance}.log")))?;
        let child = Command::new(binary(service))
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env("TALLY_DATABASE_URL", as_role(&self.database_url(), database_role(service)))
            .env(addr_var, &addr)
            .env("TALLY_INSTANCE_ID", instance.to_string())
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log))
            .spawn()?;
        self.extra.insert((service, instance), child);
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Ok(r) = client.get(format!("http://{addr}/readyz")).send().await {
                if r.status().is_success() {
                    return Ok(());
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        bail!("{service} instance {instance} was not ready within 60 s")
    }

    pub fn kill9_instance(&mut self, service: &'static str, instance: u32) {
        if let Some(mut child) = self.extra.remove(&(service, instance)) {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Whether `service` (started by this stack) is still running.
    pub fn running(&mut self, service: &'static str) -> bool {
        self.children.get_mut(service).is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Waits up to `timeout` for `service` to exit on its own; its exit status, if it did.
    pub async fn wait_exit(
        &mut self,
        service: &'static str,
        timeout: Duration,
    ) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(status) =
                self.children.get_mut(service).and_then(|c| c.try_wait().ok().flatten())
            {
                self.children.remove(service);
                return Some(status);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        None
    }

    /// `GET /readyz` of `service`: its status code (0 when it did not answer) and body.
    pub async fn readyz(&self, service: &'static str) -> (u16, String) {
        let url = format!("http://{}/readyz", self.ops[service]);
        let client =
            reqwest::Client::builder().timeout(Duration::from_secs(5)).build().expect("client");
        match client.get(&url).send().await {
            Ok(r) => (r.status().as_u16(), r.text().await.unwrap_or_default()),
            Err(_) => (0, String::new()),
        }
    }

    /// Waits up to `timeout` until `/readyz` of `service` answers `status`; fails with the last
    /// answer.
    pub async fn wait_readyz(
        &self,
        service: &'static str,
        status: u16,
        timeout: Duration,
    ) -> anyhow::Result<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let (got, body) = self.readyz(service).await;
            if got == status {
                return Ok(body);
            }
            if Instant::now() > deadline {
                bail!("{service} /readyz answered {got} {body:?}, not {status}, for {timeout:?}");
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// The value of one sample (`name{labels}` exactly as exposed) on `service`'s `/metrics`.
    pub async fn metric(&self, service: &'static str, sample: &str) -> Option<f64> {
        let url = format!("http://{}/metrics", self.ops[service]);
        let text = reqwest::get(&url).await.ok()?.text().await.ok()?;
        text.lines()
            .find_map(|line| line.strip_prefix(sample).and_then(|rest| rest.strip_prefix(' ')))
            .and_then(|value| value.trim().parse().ok())
    }

    /// The last line `service` wrote to its log.
    pub fn last_log_line(&self, service: &'static str) -> String {
        let text =
            std::fs::read_to_string(logs_dir().join(format!("{service}.log"))).unwrap_or_default();
        text.lines().last().unwrap_or_default().to_string()
    }

    pub fn api(&self) -> Api {
        Api::new(&format!("http://{}", self.addrs["api"]), &self.admin_token)
    }

    pub fn ingest_url(&self) -> String {
        format!("http://{}", self.addrs["ingest"])
    }

    pub fn api_url(&self) -> String {
        format!("http://{}", self.addrs["api"])
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        // What each service's metrics said last, for the sweep for secrets (tests/zz_secrets.rs).
        let dumps = logs_dir().join("metrics");
        let _ = std::fs::create_dir_all(&dumps);
        for (service, addr) in &self.ops {
            if self.children.contains_key(service) {
                if let Some(text) = scrape_metrics(addr) {
                    let port = addr.rsplit(':').next().unwrap_or("0");
                    let _ = std::fs::write(dumps.join(format!("{service}-{port}.log")), text);
                }
            }
        }
        for service in ALL_SERVICES {
            self.kill9(service);
        }
        for (_, mut child) in self.extra.drain() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// `GET /metrics` of `addr`, plainly (this runs in `Drop`, outside any runtime).
fn scrape_metrics(addr: &str) -> Option<Vec<u8>> {
    use std::io::{Read, Write};
    let mut stream =
        std::net::TcpStream::connect_timeout(&addr.parse().ok()?, Duration::from_secs(1)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    stream.write_all(format!("GET /metrics HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes()).ok()?;
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    Some(answer)
}

/// The fields of an API usage answer that a workload's [`Expected`] fixes.
fn observed(usage: &serde_json::Value) -> tally_loadgen::Expected {
    let n = |v: &serde_json::Value| v.as_u64().unwrap_or(u64::MAX);
    let mut by_operation = std::collections::BTreeMap::new();
    for op in tally_schemas::Operation::ALL {
        let u = &usage["by_operation"][op.as_str()];
        let (t, b) = (n(&u["traces"]), n(&u["payload_bytes"]));
        if t != 0 || b != 0 {
            by_operation.insert(op, (t, b));
        }
    }
    let nb = &usage["not_billed"];
    tally_loadgen::Expected {
        traces: n(&usage["traces"]),
        payload_bytes: n(&usage["payload_bytes"]),
        by_operation,
        child_span: n(&nb["child_span"]),
        not_success: n(&nb["not_success"]),
        duplicate: n(&nb["duplicate"]),
        late: n(&nb["late"]),
    }
}

/// Waits until the API shows exactly the expected usage for every (org, period), or fails
/// listing every difference.
pub async fn assert_usage_eventually(
    api: &Api,
    expected: &std::collections::BTreeMap<(String, String), tally_loadgen::Expected>,
    timeout: Duration,
) -> anyhow::Result<()> {
    assert_usage_eventually_resent(api, expected, 0, timeout).await
}

/// Like [`assert_usage_eventually`], for a workload whose clients resent requests that got no
/// answer: a resent event that had reached the log is one more re-delivery, so each org may show
/// up to `resent` more duplicates than the workload made. Everything billed must be exact.
pub async fn assert_usage_eventually_resent(
    api: &Api,
    expected: &std::collections::BTreeMap<(String, String), tally_loadgen::Expected>,
    resent: u64,
    timeout: Duration,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        let mut diffs = Vec::new();
        for ((org, period), want) in expected {
            let usage = api.usage(org, period).await?;
            let got = observed(&usage);
            let extra = got.duplicate.wrapping_sub(want.duplicate);
            let billed_exact =
                tally_loadgen::Expected { duplicate: want.duplicate, ..got.clone() } == *want;
            if !billed_exact || extra > resent {
                diffs.push(format!("{org} {period}:\n  want {want:?}\n  got  {got:?}"));
            }
        }
        if diffs.is_empty() {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("usage differs after {timeout:?}:\n{}", diffs.join("\n"));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The test broker that `make test` started (`scripts/kafka.sh` with the test's home and ports),
/// for tests that stop, kill and start it.
pub struct Broker {
    home: String,
    port: String,
    controller_port: String,
}

impl Broker {
    pub fn test() -> Broker {
        let home = std::env::var("TALLY_TEST_HOME").unwrap_or_else(|_| {
            concat!(env!("CARGO_MANIFEST_DIR"), "/../../.tally/test").to_string()
        });
        let port = kafka_brokers().rsplit(':').next().unwrap_or("19092").to_string();
        let controller_port =
            std::env::var("TALLY_TEST_KAFKA_CONTROLLER_PORT").unwrap_or_else(|_| "19093".into());
        Broker { home, port, controller_port }
    }

    async fn script(&self, command: &str) -> anyhow::Result<()> {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../scripts/kafka.sh");
        let output = tokio::process::Command::new(script)
            .arg(command)
            .env("TALLY_HOME", &self.home)
            .env("TALLY_KAFKA_PORT", &self.port)
            .env("TALLY_KAFKA_CONTROLLER_PORT", &self.controller_port)
            // A broker killed under load can take more than the default minute to recover its
            // log on two busy cores; the test is about Tally, not about the broker's start time.
            .env("TALLY_KAFKA_WAIT_SECS", "240")
            .output()
            .await?;
        if !output.status.success() {
            bail!(
                "scripts/kafka.sh {command}: {}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        Ok(())
    }

    /// Stops the broker the ordinary way (SIGTERM, controlled shutdown).
    pub async fn stop(&self) -> anyhow::Result<()> {
        self.script("stop").await
    }

    /// SIGKILL: the broker gets no chance to finish anything.
    pub async fn kill9(&self) -> anyhow::Result<()> {
        let pid = std::fs::read_to_string(format!("{}/run/kafka.pid", self.home))
            .context("the test broker's pid file")?;
        let status =
            tokio::process::Command::new("kill").args(["-KILL", pid.trim()]).status().await?;
        anyhow::ensure!(status.success(), "kill -KILL {}", pid.trim());
        // Wait until the process is gone, so the ports are free for the next start.
        let proc = format!("/proc/{}/stat", pid.trim());
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::fs::read_to_string(&proc)
            .is_ok_and(|stat| !stat.rsplit(") ").next().unwrap_or("").starts_with('Z'))
        {
            anyhow::ensure!(Instant::now() < deadline, "the killed broker is still running");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // A zombie JVM's last threads can still hold the listener: wait for the port too.
        while tokio::net::TcpStream::connect(format!("127.0.0.1:{}", self.port)).await.is_ok() {
            anyhow::ensure!(
                Instant::now() < deadline,
                "the killed broker's port 127.0.0.1:{} is still open",
                self.port
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(())
    }

    /// Starts the broker and waits until it serves.
    pub async fn start(&self) -> anyhow::Result<()> {
        self.script("start").await
    }
}

/// The broker is left running: a test that stopped it and failed half-way starts it again, so
/// the tests after it have their broker.
impl Drop for Broker {
    fn drop(&mut self) {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../scripts/kafka.sh");
        let _ = Command::new(script)
            .arg("start")
            .env("TALLY_HOME", &self.home)
            .env("TALLY_KAFKA_PORT", &self.port)
            .env("TALLY_KAFKA_CONTROLLER_PORT", &self.controller_port)
            .stdout(Stdio::null())
            .status();
    }
}
