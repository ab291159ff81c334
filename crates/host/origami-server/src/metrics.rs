//! The server's counters and their Prometheus text exposition (`GET /metrics`).

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// Latency histogram bucket bounds (seconds).
const BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

/// Counters shared by the handlers and the worker.
#[derive(Default)]
pub struct Metrics {
    pub(crate) received: AtomicU64,
    pub(crate) ok: AtomicU64,
    pub(crate) bad_request: AtomicU64,
    pub(crate) unavailable: AtomicU64,
    pub(crate) failed: AtomicU64,
    pub(crate) latency_buckets: [AtomicU64; BUCKETS.len()],
    pub(crate) latency_count: AtomicU64,
    pub(crate) latency_sum_us: AtomicU64,
    pub(crate) batch_count: AtomicU64,
    pub(crate) tail_batch_count: AtomicU64,
    pub(crate) tail_batch_sum: AtomicU64,
    pub(crate) tail_batch_max: AtomicUsize,
    pub(crate) batch_sum: AtomicU64,
    pub(crate) batch_max: AtomicUsize,
    pub(crate) pads_ready: AtomicUsize,
    pub(crate) pads_made: AtomicU64,
    pub(crate) restarts: AtomicU64,
    pub(crate) key_rotations: AtomicU64,
    pub(crate) connections_refused: AtomicU64,
}

impl Metrics {
    /// Requests received so far (answered or not).
    pub fn received(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }

    pub(crate) fn observe(&self, secs: f64) {
        for (b, c) in BUCKETS.iter().zip(&self.latency_buckets) {
            if secs <= *b {
                c.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.latency_count.fetch_add(1, Ordering::Relaxed);
        self.latency_sum_us
            .fetch_add((secs * 1e6) as u64, Ordering::Relaxed);
    }

    /// Prometheus text exposition.
    pub fn render(&self) -> String {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let mut s = String::new();
        s += &format!(
            "# HELP origami_requests_received_total Inference requests received (answered or not yet).\n# TYPE origami_requests_received_total counter\norigami_requests_received_total {}\n",
            g(&self.received)
        );
        s += "# HELP origami_requests_total Inference requests by outcome.\n# TYPE origami_requests_total counter\n";
        for (k, v) in [
            ("ok", g(&self.ok)),
            ("bad_request", g(&self.bad_request)),
            ("unavailable", g(&self.unavailable)),
            ("failed", g(&self.failed)),
        ] {
            s += &format!("origami_requests_total{{outcome=\"{k}\"}} {v}\n");
        }
        s += "# HELP origami_request_seconds Latency of answered requests (queue + enclave + accelerator).\n# TYPE origami_request_seconds histogram\n";
        for (b, c) in BUCKETS.iter().zip(&self.latency_buckets) {
            s += &format!("origami_request_seconds_bucket{{le=\"{b}\"}} {}\n", g(c));
        }
        s += &format!(
            "origami_request_seconds_bucket{{le=\"+Inf\"}} {}\norigami_request_seconds_sum {}\norigami_request_seconds_count {}\n",
            g(&self.latency_count),
            g(&self.latency_sum_us) as f64 / 1e6,
            g(&self.latency_count)
        );
        s += &format!(
            "# HELP origami_batch_size Requests taken per worker wake-up.\n# TYPE origami_batch_size summary\norigami_batch_size_sum {}\norigami_batch_size_count {}\n# HELP origami_batch_size_max Largest batch so far.\n# TYPE origami_batch_size_max gauge\norigami_batch_size_max {}\n",
            g(&self.batch_sum),
            g(&self.batch_count),
            self.batch_max.load(Ordering::Relaxed)
        );
        s += &format!(
            "# HELP origami_tail_batch_size Requests whose tails ran in one accelerator call (origami placement).\n# TYPE origami_tail_batch_size summary\norigami_tail_batch_size_sum {}\norigami_tail_batch_size_count {}\n# HELP origami_tail_batch_size_max Largest tail batch so far.\n# TYPE origami_tail_batch_size_max gauge\norigami_tail_batch_size_max {}\n",
            g(&self.tail_batch_sum),
            g(&self.tail_batch_count),
            self.tail_batch_max.load(Ordering::Relaxed)
        );
        s += &format!(
            "# HELP origami_pads_ready Sealed pads in the pool.\n# TYPE origami_pads_ready gauge\norigami_pads_ready {}\n# HELP origami_pads_precomputed_total Pads precomputed by the enclave.\n# TYPE origami_pads_precomputed_total counter\norigami_pads_precomputed_total {}\n",
            self.pads_ready.load(Ordering::Relaxed),
            g(&self.pads_made)
        );
        s += &format!(
            "# HELP origami_enclave_restarts_total Enclave restarts after a failure.\n# TYPE origami_enclave_restarts_total counter\norigami_enclave_restarts_total {}\n",
            g(&self.restarts)
        );
        s += &format!(
            "# HELP origami_key_rotations_total Session key rotations by the enclave (fresh key, fresh evidence, same instance).\n# TYPE origami_key_rotations_total counter\norigami_key_rotations_total {}\n",
            g(&self.key_rotations)
        );
        s += &format!(
            "# HELP origami_connections_refused_total Connections closed at accept: the connection limit was reached.\n# TYPE origami_connections_refused_total counter\norigami_connections_refused_total {}\n",
            g(&self.connections_refused)
        );
        s
    }
}
