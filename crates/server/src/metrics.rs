//! Counters for `GET /metrics`, in Prometheus' text format.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use edgellm::batch::BatchStats;

/// Upper bounds (seconds) of the time-to-first-token histogram's buckets.
const TTFT_BUCKETS: [f64; 12] = [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];
/// Upper bounds (tokens/s) of the per-request decode speed histogram's buckets.
const TPS_BUCKETS: [f64; 10] = [1.0, 5.0, 10.0, 25.0, 50.0, 75.0, 100.0, 150.0, 250.0, 500.0];

/// A cumulative histogram.
#[derive(Debug)]
struct Histogram {
    bounds: &'static [f64],
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Histogram {
        Histogram { bounds, counts: vec![0; bounds.len()], sum: 0.0, count: 0 }
    }

    fn observe(&mut self, v: f64) {
        for (c, &b) in self.counts.iter_mut().zip(self.bounds) {
            if v <= b {
                *c += 1;
            }
        }
        self.sum += v;
        self.count += 1;
    }

    fn write(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        for (c, b) in self.counts.iter().zip(self.bounds) {
            let _ = writeln!(out, "{name}_bucket{{le=\"{b}\"}} {c}");
        }
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {}", self.count);
        let _ = writeln!(out, "{name}_sum {}", self.sum);
        let _ = writeln!(out, "{name}_count {}", self.count);
    }
}

/// What the server counts.
#[derive(Debug)]
pub(crate) struct Metrics {
    /// Requests answered, by route and status.
    requests: Mutex<BTreeMap<(String, u16), u64>>,
    ttft: Mutex<Histogram>,
    tps: Mutex<Histogram>,
    /// Texts embedded.
    pub(crate) embedded: AtomicU64,
    /// Embedding requests waiting or running.
    pub(crate) embed_queued: AtomicU64,
    /// Utterances classified.
    pub(crate) classified: AtomicU64,
    /// Intent requests waiting or running.
    pub(crate) intent_queued: AtomicU64,
    /// Completions that ended because their client went away.
    pub(crate) disconnects: AtomicU64,
}

impl Metrics {
    pub(crate) fn new() -> Metrics {
        Metrics {
            requests: Mutex::new(BTreeMap::new()),
            ttft: Mutex::new(Histogram::new(&TTFT_BUCKETS)),
            tps: Mutex::new(Histogram::new(&TPS_BUCKETS)),
            embedded: AtomicU64::new(0),
            embed_queued: AtomicU64::new(0),
            classified: AtomicU64::new(0),
            intent_queued: AtomicU64::new(0),
            disconnects: AtomicU64::new(0),
        }
    }

    /// Count an answer to `route` with `status`.
    pub(crate) fn request(&self, route: &str, status: u16) {
        let mut m = self.requests.lock().unwrap_or_else(|e| e.into_inner());
        *m.entry((route.to_string(), status)).or_insert(0) += 1;
    }

    /// Record a finished generation: its time to first token (seconds, from the request's
    /// arrival) and decode speed (tokens/s, when it generated at least two tokens).
    pub(crate) fn generation(&self, ttft_s: f64, tokens_per_s: Option<f64>) {
        self.ttft.lock().unwrap_or_else(|e| e.into_inner()).observe(ttft_s);
        if let Some(t) = tokens_per_s {
            self.tps.lock().unwrap_or_else(|e| e.into_inner()).observe(t);
        }
    }

    /// The text of `GET /metrics`.
    pub(crate) fn render(&self, batch: Option<BatchStats>) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# HELP edgellm_requests_total HTTP requests answered, by route and status.\n# TYPE edgellm_requests_total counter"
        );
        for ((route, status), n) in self.requests.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            let _ = writeln!(out, "edgellm_requests_total{{route=\"{route}\",status=\"{status}\"}} {n}");
        }
        let counter = |out: &mut String, name: &str, help: &str, v: u64| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}");
        };
        let gauge = |out: &mut String, name: &str, help: &str, v: u64| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
        };
        if let Some(b) = batch {
            counter(&mut out, "edgellm_prompt_tokens_total", "Prompt tokens evaluated.", b.prompt_tokens);
            counter(
                &mut out,
                "edgellm_prompt_tokens_cached_total",
                "Prompt tokens reused from a slot's KV cache (prompt cache hits).",
                b.cached_tokens,
            );
            counter(&mut out, "edgellm_generated_tokens_total", "Tokens generated.", b.generated_tokens);
            counter(&mut out, "edgellm_generations_total", "Generations finished.", b.requests);
            counter(&mut out, "edgellm_batch_steps_total", "Forward steps of the batch scheduler.", b.steps);
            counter(
                &mut out,
                "edgellm_batch_step_sequences_total",
                "Sequences summed over the steps (divided by the steps: the mean batch).",
                b.step_sequences,
            );
            gauge(
                &mut out,
                "edgellm_queue_depth",
                "Generation requests waiting for a slot.",
                b.queued as u64,
            );
            gauge(&mut out, "edgellm_slots", "Generation slots (--parallel).", b.slots as u64);
            gauge(&mut out, "edgellm_slots_in_use", "Slots running a generation now.", b.slots_busy as u64);
        }
        counter(
            &mut out,
            "edgellm_client_disconnects_total",
            "Generations ended because their client went away.",
            self.disconnects.load(Ordering::Relaxed),
        );
        counter(
            &mut out,
            "edgellm_embedded_texts_total",
            "Texts embedded.",
            self.embedded.load(Ordering::Relaxed),
        );
        gauge(
            &mut out,
            "edgellm_embed_queue_depth",
            "Embedding requests waiting or running.",
            self.embed_queued.load(Ordering::Relaxed),
        );
        counter(
            &mut out,
            "edgellm_classified_utterances_total",
            "Utterances classified by the intent model.",
            self.classified.load(Ordering::Relaxed),
        );
        gauge(
            &mut out,
            "edgellm_intent_queue_depth",
            "Intent requests waiting or running.",
            self.intent_queued.load(Ordering::Relaxed),
        );
        self.ttft.lock().unwrap_or_else(|e| e.into_inner()).write(
            &mut out,
            "edgellm_time_to_first_token_seconds",
            "Time from a generation request's arrival to its first token.",
        );
        self.tps.lock().unwrap_or_else(|e| e.into_inner()).write(
            &mut out,
            "edgellm_generation_tokens_per_second",
            "Decode speed of each generation (tokens after the first, per second).",
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative() {
        let m = Metrics::new();
        m.generation(0.03, Some(80.0));
        m.generation(0.2, None);
        let t = m.render(None);
        assert!(t.contains("edgellm_time_to_first_token_seconds_bucket{le=\"0.025\"} 0"), "{t}");
        assert!(t.contains("edgellm_time_to_first_token_seconds_bucket{le=\"0.05\"} 1"), "{t}");
        assert!(t.contains("edgellm_time_to_first_token_seconds_bucket{le=\"0.25\"} 2"), "{t}");
        assert!(t.contains("edgellm_time_to_first_token_seconds_count 2"), "{t}");
        assert!(t.contains("edgellm_generation_tokens_per_second_count 1"), "{t}");
    }
}
