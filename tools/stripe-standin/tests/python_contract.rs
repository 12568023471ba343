//! Stripe's official Python library (`stripe`, pinned in `tests/python/requirements.txt`) against
//! the stand-in binary: meters, meter events, idempotent retries, refusals and summaries as Stripe
//! has them. `make test` prepares the Python environment (`scripts/python-env.sh`).

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn python() -> PathBuf {
    std::env::var_os("TALLY_TEST_PYTHON").map(PathBuf::from).unwrap_or_else(|| {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.tally/venv/bin/python")
    })
}

#[test]
fn stripes_python_library_works_against_the_stand_in() {
    let python = python();
    assert!(
        python.exists(),
        "{} is missing: run scripts/python-env.sh (make test does) to install Stripe's Python library",
        python.display()
    );
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut standin = Command::new(env!("CARGO_BIN_EXE_stripe-standin"))
        .env("STRIPE_STANDIN_ADDR", format!("127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting stripe-standin");
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "the stand-in did not listen within 20 s");
        std::thread::sleep(Duration::from_millis(50));
    }
    let output = Command::new(&python)
        .arg(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/python/contract.py"))
        .env("STANDIN_URL", format!("http://127.0.0.1:{port}"))
        .output()
        .expect("running the Python contract test");
    let _ = standin.kill();
    let _ = standin.wait();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "contract.py failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("checks passed"), "{stdout}");
}
