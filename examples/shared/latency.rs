//! What the load generators (loadgen, epollgen) report about latencies,
//! in one place so that both measure the same way. Included by path: an
//! example cannot import another.

use std::time::Duration;

/// The `p` quantile (0–1) of `sorted`, in microseconds: the smallest
/// sample with at least that share at or below it. NaN when empty.
pub fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i].as_secs_f64() * 1e6
}

/// The result line of a connection-rate run: connections per second over
/// `secs`, how many, and their latency p50 and p99.
pub fn print_rate(mut latencies: Vec<Duration>, secs: f64) {
    latencies.sort();
    println!(
        "conns_s={:.0} conns={} p50_us={:.0} p99_us={:.0}",
        latencies.len() as f64 / secs,
        latencies.len(),
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99)
    );
}
