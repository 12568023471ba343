//! How fast Tally measures payloads: `payload_bytes` over the golden payloads
//! (tests/golden/payloads.jsonl), one thread, beside the same measurement fed to the compressor
//! token by token as serde_json writes (how Tally measured before 2026-12-07; same sizes).
//! `cargo run --release --example payload_size_throughput` (BENCHMARKS.md has the figures).

use std::time::Instant;

use flate2::write::GzEncoder;
use tally_metering::rules::payload_bytes;

fn token_by_token(payload: &serde_json::Value) -> u64 {
    let mut gz = GzEncoder::new(Vec::new(), flate2::Compression::default());
    serde_json::to_writer(&mut gz, payload).unwrap();
    gz.finish().unwrap().len() as u64
}

fn main() {
    let golden = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/golden/payloads.jsonl");
    let payloads: Vec<serde_json::Value> = std::fs::read_to_string(golden)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["payload"].take())
        .collect();
    // A 1 KiB chat call, the benchmark's inline payload size.
    let kib = serde_json::json!({
        "model": "gpt-4o",
        "messages": [{"role": "user", "content": "the customer asks about the refund policy ".repeat(24)}],
        "usage": {"prompt_tokens": 812, "completion_tokens": 95},
    });
    let json_bytes: usize = payloads.iter().map(|p| serde_json::to_vec(p).unwrap().len()).sum();
    for (name, measure) in [
        ("payload_bytes", payload_bytes as fn(&serde_json::Value) -> u64),
        ("token by token", token_by_token),
    ] {
        let rounds = 20;
        let started = Instant::now();
        let mut total = 0u64;
        for _ in 0..rounds {
            total += payloads.iter().map(measure).sum::<u64>();
        }
        let secs = started.elapsed().as_secs_f64();
        let n = 20_000;
        let started = Instant::now();
        let mut one = 0;
        for _ in 0..n {
            one += measure(&kib);
        }
        let per_kib = started.elapsed().as_secs_f64() / n as f64;
        println!(
            "{name:>15}: golden corpus {:.1} MB of JSON/s ({} payloads, {total} metered bytes); \
             a {} B chat call: {:.1} µs each ({:.0}/s), {} metered bytes",
            (json_bytes * rounds) as f64 / secs / 1e6,
            payloads.len(),
            serde_json::to_vec(&kib).unwrap().len(),
            per_kib * 1e6,
            1.0 / per_kib,
            one / n,
        );
    }
}
