//! The figures alert rules are evaluated on, counted per endpoint between two roll-ups.
//!
//! Owns: [`Figures`] (requests, 5xx answers, failed flows, rate-limited requests and a latency
//! histogram for one endpoint over some span of time), how figures add up, and what they come
//! to as rates and percentiles. The counts are the same events `/metrics` counts, so rules
//! evaluated here and their export evaluated by Prometheus agree. Must not know about rules,
//! windows or the database: the alerts module takes the tally and stores it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

/// What one endpoint served over some span of time. Counts are `f64`: Prometheus' `increase()`
/// extrapolates, and `easymo alerts test` must compute exactly what it does.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Figures {
    /// Every answered request, rate-limited ones included.
    pub requests: f64,
    /// Answers with a 5xx status.
    pub errors: f64,
    /// Messages whose flow failed (answered 200 all the same).
    pub failed_flows: f64,
    /// Requests over a rate limit: not errors.
    pub limited: f64,
    /// Latency histogram: upper edges in seconds, ascending, the last `+Inf`.
    pub edges: Vec<f64>,
    /// Requests per bucket (not cumulative), one per edge.
    pub counts: Vec<f64>,
}

impl Figures {
    /// No requests yet, with these latency edges (`+Inf` is added).
    pub fn empty(edges: &[f64]) -> Self {
        let mut all = edges.to_vec();
        all.push(f64::INFINITY);
        Figures {
            counts: vec![0.0; all.len()],
            edges: all,
            ..Figures::default()
        }
    }

    fn observe(&mut self, seconds: f64) {
        let last = self.counts.len().saturating_sub(1);
        let bucket = self.edges.partition_point(|edge| *edge < seconds).min(last);
        if let Some(count) = self.counts.get_mut(bucket) {
            *count += 1.0;
        }
    }

    /// Adds `other` in. Latency buckets go to the first of our edges at or above theirs, so
    /// figures counted under an older set of edges still add up (a little coarser).
    pub fn add(&mut self, other: &Figures) {
        self.requests += other.requests;
        self.errors += other.errors;
        self.failed_flows += other.failed_flows;
        self.limited += other.limited;
        if self.edges.is_empty() {
            self.edges.clone_from(&other.edges);
            self.counts = vec![0.0; other.counts.len()];
        }
        let last = self.counts.len().saturating_sub(1);
        for (edge, count) in other.edges.iter().zip(&other.counts) {
            let at = self.edges.partition_point(|mine| mine < edge).min(last);
            if let Some(mine) = self.counts.get_mut(at) {
                *mine += count;
            }
        }
    }

    /// Sets the latency histogram from cumulative counts per edge (Prometheus' `_bucket`
    /// series, `+Inf` last), made monotonic first as `histogram_quantile` does.
    pub fn set_histogram(&mut self, cumulative: Vec<(f64, f64)>) {
        let mut running = 0.0_f64;
        let mut previous = 0.0;
        self.edges.clear();
        self.counts.clear();
        for (edge, count) in cumulative {
            running = running.max(count);
            self.edges.push(edge);
            self.counts.push(running - previous);
            previous = running;
        }
    }

    /// 5xx answers and failed flows over all requests, in percent; `None` without requests.
    pub fn error_rate(&self) -> Option<f64> {
        (self.requests > 0.0).then(|| (self.errors + self.failed_flows) * 100.0 / self.requests)
    }

    /// The `q` quantile of latency in seconds, interpolated within its bucket the way
    /// Prometheus' `histogram_quantile` does; `None` without requests. A threshold that is a
    /// bucket edge compares exactly: the result exceeds edge `e` if and only if fewer than
    /// `q` of the requests took at most `e`.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let total: f64 = self.counts.iter().sum();
        if total <= 0.0 {
            return None;
        }
        let rank = q * total;
        let mut below = 0.0;
        for (i, (edge, count)) in self.edges.iter().zip(&self.counts).enumerate() {
            let cumulative = below + count;
            if cumulative >= rank {
                if edge.is_infinite() {
                    // As Prometheus: the +Inf bucket answers with the highest finite edge.
                    return Some(if i == 0 { 0.0 } else { self.edges[i - 1] });
                }
                let start = if i == 0 { 0.0 } else { self.edges[i - 1] };
                if *count <= 0.0 {
                    return Some(*edge);
                }
                let within = (rank - below) / count;
                return Some(start + (edge - start) * within);
            }
            below = cumulative;
        }
        self.edges.iter().rev().find(|e| e.is_finite()).copied()
    }
}

/// Figures per endpoint since the last [`Tally::take`]. One short lock per request: the
/// roll-up every evaluation interval swaps the map out whole.
#[derive(Debug)]
pub struct Tally {
    edges: Arc<[f64]>,
    by_endpoint: Mutex<HashMap<String, Figures>>,
}

impl Tally {
    /// An empty tally with these latency edges (seconds, ascending, without `+Inf`).
    pub fn new(edges: &[f64]) -> Self {
        Tally {
            edges: edges.into(),
            by_endpoint: Mutex::new(HashMap::new()),
        }
    }

    fn with<R>(&self, endpoint: &str, f: impl FnOnce(&mut Figures) -> R) -> R {
        let mut map = self
            .by_endpoint
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(figures) = map.get_mut(endpoint) {
            return f(figures);
        }
        let figures = map
            .entry(endpoint.to_owned())
            .or_insert_with(|| Figures::empty(&self.edges));
        f(figures)
    }

    /// Counts one answered request.
    pub fn request(&self, endpoint: &str, status: u16, seconds: f64, limited: bool) {
        self.with(endpoint, |f| {
            f.requests += 1.0;
            f.errors += f64::from(u8::from(status >= 500));
            f.limited += f64::from(u8::from(limited));
            f.observe(seconds);
        });
    }

    /// Counts one message whose flow failed.
    pub fn failed_flow(&self, endpoint: &str) {
        self.with(endpoint, |f| f.failed_flows += 1.0);
    }

    /// Everything counted since the last call, by endpoint; the tally starts again from zero.
    pub fn take(&self) -> HashMap<String, Figures> {
        std::mem::take(
            &mut *self
                .by_endpoint
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        )
    }

    /// Puts figures back that could not be stored, so the next roll-up carries them.
    pub fn restore(&self, figures: HashMap<String, Figures>) {
        for (endpoint, figures) in figures {
            self.with(&endpoint, |f| f.add(&figures));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn latencies(edges: &[f64], seconds: &[f64]) -> Figures {
        let tally = Tally::new(edges);
        for s in seconds {
            tally.request("wa", 200, *s, false);
        }
        tally.take().remove("wa").unwrap_or_default()
    }

    #[test]
    fn a_threshold_on_a_bucket_edge_compares_exactly() {
        let edges = [0.5, 1.5, 3.0];
        // 95 fast requests and 5 at exactly 1.5 s: p95 is not above 1.5 s.
        let mut seconds = vec![0.1; 95];
        seconds.extend([1.5; 5]);
        let f = latencies(&edges, &seconds);
        assert!(
            f.quantile(0.95).is_some_and(|p| p <= 1.5),
            "{:?}",
            f.quantile(0.95)
        );
        // Six slower than 1.5 s (fewer than 95 at or under it), and p95 is above it.
        for s in &mut seconds[94..] {
            *s = 1.6;
        }
        let f = latencies(&edges, &seconds);
        assert!(
            f.quantile(0.95).is_some_and(|p| p > 1.5),
            "{:?}",
            f.quantile(0.95)
        );
    }

    #[test]
    fn quantiles_interpolate_like_prometheus() {
        let f = latencies(&[1.0, 2.0], &[0.5, 1.5, 1.5, 1.5]);
        // rank 2 of 4: the first request is in (0,1], the next three in (1,2]: 1 + 1/3.
        let p50 = f.quantile(0.5).unwrap_or_default();
        assert!((p50 - (1.0 + 1.0 / 3.0)).abs() < 1e-9, "{p50}");
        // Beyond the last finite edge: the highest finite edge, as histogram_quantile.
        let f = latencies(&[1.0, 2.0], &[5.0, 5.0]);
        assert_eq!(f.quantile(0.99), Some(2.0));
        assert_eq!(Figures::empty(&[1.0]).quantile(0.5), None);
    }

    #[test]
    fn rate_limited_requests_are_not_errors_and_failed_flows_are() {
        let tally = Tally::new(&[1.0]);
        for _ in 0..90 {
            tally.request("wa", 429, 0.01, true);
        }
        for _ in 0..8 {
            tally.request("wa", 200, 0.01, false);
        }
        tally.request("wa", 503, 0.01, false);
        tally.failed_flow("wa");
        let f = tally.take().remove("wa").unwrap_or_default();
        assert_eq!(
            (f.requests, f.errors, f.failed_flows, f.limited),
            (99.0, 1.0, 1.0, 90.0)
        );
        let rate = f.error_rate().unwrap_or_default();
        assert!((rate - 200.0 / 99.0).abs() < 1e-9, "{rate}");
        assert!(tally.take().is_empty(), "take starts again from zero");
    }

    #[test]
    fn figures_under_other_edges_still_add_up() {
        let mut new = Figures::empty(&[0.5, 1.5, 3.0]);
        let old = latencies(&[1.0], &[0.2, 0.7, 2.0]);
        new.add(&old);
        assert_eq!(new.requests, 3.0);
        // (0,1] lands in the (0.5,1.5] bucket: coarser, never lost.
        assert_eq!(new.counts, vec![0.0, 2.0, 0.0, 1.0]);
    }
}
