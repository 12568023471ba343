//! The progress bar: records read, records per second and the time left, redrawn on standard
//! error a few times a second while it is a terminal. Nothing is drawn otherwise (a pipe, a file,
//! `--json`), so scripts see only the result.

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Shared counters of a run: the workers add, the drawer reads.
#[derive(Debug)]
pub struct Progress {
    done: AtomicU64,
    total: AtomicU64,
    started: Instant,
    finished: AtomicBool,
}

impl Progress {
    pub fn new() -> Arc<Progress> {
        Arc::new(Progress {
            done: AtomicU64::new(0),
            total: AtomicU64::new(0),
            started: Instant::now(),
            finished: AtomicBool::new(false),
        })
    }

    /// Records read so far.
    pub fn add(&self, n: u64) {
        self.done.fetch_add(n, Ordering::Relaxed);
    }

    /// More records expected (an estimate: the reads stop as soon as the period is final).
    pub fn expect(&self, n: u64) {
        self.total.fetch_add(n, Ordering::Relaxed);
    }

    pub fn done(&self) -> u64 {
        self.done.load(Ordering::Relaxed)
    }

    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// Records per second so far.
    pub fn rate(&self) -> f64 {
        self.done() as f64 / self.elapsed().as_secs_f64().max(1e-9)
    }

    /// One line: `[#####-----] 4.1M/10.0M records  812k/s  ETA 7s`.
    pub fn line(&self, width: usize) -> String {
        let done = self.done();
        let total = self.total.load(Ordering::Relaxed).max(done).max(1);
        let filled = (done as u128 * width as u128 / total as u128) as usize;
        let rate = self.rate();
        let eta = if rate > 0.0 { ((total - done) as f64 / rate).ceil() as u64 } else { 0 };
        format!(
            "[{}{}] {}/{} records  {}/s  ETA {}s",
            "#".repeat(filled),
            "-".repeat(width - filled),
            human(done),
            human(total),
            human(rate as u64),
            eta
        )
    }

    /// Draws the bar on standard error until [`Drawer::finish`], when `enabled` and standard
    /// error is a terminal; otherwise does nothing.
    pub fn draw(self: &Arc<Self>, enabled: bool) -> Drawer {
        if !enabled || !std::io::stderr().is_terminal() {
            return Drawer { progress: self.clone(), thread: None };
        }
        let progress = self.clone();
        let thread = std::thread::spawn(move || {
            while !progress.finished.load(Ordering::Relaxed) {
                eprint!("\r{}", progress.line(30));
                let _ = std::io::stderr().flush();
                std::thread::sleep(Duration::from_millis(200));
            }
            eprint!("\r\x1b[K");
            let _ = std::io::stderr().flush();
        });
        Drawer { progress: self.clone(), thread: Some(thread) }
    }
}

/// Stops the bar when finished or dropped.
pub struct Drawer {
    progress: Arc<Progress>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drawer {
    pub fn finish(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        self.progress.finished.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Drawer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// 1234 → "1.2k", 10_000_000 → "10.0M".
pub fn human(n: u64) -> String {
    match n {
        0..=999 => n.to_string(),
        1_000..=999_999 => format!("{:.1}k", n as f64 / 1e3),
        _ => format!("{:.1}M", n as f64 / 1e6),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_line_shows_counts_and_never_overflows_its_width() {
        let p = Progress::new();
        p.expect(10_000_000);
        p.add(4_100_000);
        let line = p.line(10);
        assert!(line.starts_with("[####------] 4.1M/10.0M records"), "{line}");
        p.add(20_000_000);
        assert!(p.line(10).starts_with("[##########] 24.1M/24.1M"));
        assert_eq!(human(999), "999");
        assert_eq!(human(1_234), "1.2k");
    }
}
