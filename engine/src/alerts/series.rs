//! Time series as promtool's rule tests write them, and the two PromQL functions the exported
//! rules use on them, computed exactly as Prometheus computes them.
//!
//! Owns: the expanding notation of values (`0+10x30`, `_x3`, `stale`), instant values (the last
//! sample within the 5-minute lookback) and `increase()` with Prometheus' extrapolation to the
//! edges of the range. Must not know about rules: [`super::promtool`] turns these figures into
//! an observation.

use std::collections::BTreeMap;

use crate::metrics::exposition::parse_selector;

/// Prometheus' default lookback for instant selectors, in seconds.
const LOOKBACK: f64 = 300.0;

/// One input series: its name, labels and samples `(seconds, value)`; `None` is a staleness
/// marker.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// The metric name.
    pub name: String,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
    /// Samples in time order.
    pub samples: Vec<(f64, Option<f64>)>,
}

/// A series or values text that promtool would not read either.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SeriesError(String);

impl Series {
    /// Reads `series: 'name{a="b"}'` with `values: '0+10x30'`, one sample every `interval`
    /// seconds from 0.
    pub fn parse(selector: &str, values: &str, interval: f64) -> Result<Series, SeriesError> {
        let (name, labels) = parse_selector(selector).map_err(|e| SeriesError(e.to_string()))?;
        let mut samples = Vec::new();
        for (i, value) in expand(values)?.into_iter().enumerate() {
            let at = i as f64 * interval;
            match value {
                Value::Missing => {}
                Value::Stale => samples.push((at, None)),
                Value::Number(v) => samples.push((at, Some(v))),
            }
        }
        Ok(Series {
            name,
            labels,
            samples,
        })
    }

    /// Whether every `(label, value)` of `matchers` is on this series.
    pub fn matches(&self, name: &str, matchers: &[(&str, &str)]) -> bool {
        self.name == name
            && matchers
                .iter()
                .all(|(k, v)| self.labels.get(*k).map(String::as_str) == Some(*v))
    }

    /// The instant value at `at`: the last sample within the lookback, unless it is stale.
    pub fn instant(&self, at: f64) -> Option<f64> {
        let (t, value) = self.samples.iter().rev().find(|(t, _)| *t <= at)?;
        if at - t > LOOKBACK {
            return None;
        }
        *value
    }

    /// `increase(series[range])` at `at`, extrapolated as Prometheus does; `None` with fewer
    /// than two samples in the range.
    pub fn increase(&self, at: f64, range: f64) -> Option<f64> {
        let start = at - range;
        // Prometheus 2.x selects samples in [start, at].
        let points: Vec<(f64, f64)> = self
            .samples
            .iter()
            .filter(|(t, _)| *t >= start && *t <= at)
            .filter_map(|(t, v)| v.map(|v| (*t, v)))
            .collect();
        let (&(first_t, first_v), &(last_t, last_v)) = (points.first()?, points.last()?);
        if points.len() < 2 {
            return None;
        }
        let mut result = last_v - first_v;
        let mut previous = 0.0;
        for (_, v) in &points {
            if *v < previous {
                // A counter reset: what was counted before it still counts.
                result += previous;
            }
            previous = *v;
        }
        let mut to_start = first_t - start;
        let to_end = at - last_t;
        let sampled = last_t - first_t;
        let average = sampled / (points.len() - 1) as f64;
        if result > 0.0 && first_v >= 0.0 {
            // A counter does not extrapolate below zero.
            let to_zero = sampled * (first_v / result);
            if to_zero < to_start {
                to_start = to_zero;
            }
        }
        let threshold = average * 1.1;
        let mut extrapolated = sampled;
        extrapolated += if to_start < threshold {
            to_start
        } else {
            average / 2.0
        };
        extrapolated += if to_end < threshold {
            to_end
        } else {
            average / 2.0
        };
        Some(result * (extrapolated / sampled))
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Value {
    Number(f64),
    Missing,
    Stale,
}

/// promtool's expanding notation: `a+bxn` is n+1 values from a in steps of b (`a-bxn` down,
/// `axn` n+1 times a), `_` a missing sample, `_xn` n of them, `stale` a staleness marker.
fn expand(text: &str) -> Result<Vec<Value>, SeriesError> {
    let mut values = Vec::new();
    for item in text.split_whitespace() {
        let bad = || SeriesError(format!("`{item}` is not a value, `_`, `stale` or `a+bxn`"));
        if item == "_" {
            values.push(Value::Missing);
        } else if item == "stale" {
            values.push(Value::Stale);
        } else if let Some(times) = item.strip_prefix("_x") {
            let n: usize = times.parse().map_err(|_| bad())?;
            values.extend(std::iter::repeat_n(Value::Missing, n));
        } else if let Some((head, times)) = item.rsplit_once('x') {
            let n: usize = times.parse().map_err(|_| bad())?;
            // The step's sign sits after the first character, which may be a sign itself.
            let split = head
                .char_indices()
                .skip(1)
                .find(|(i, c)| (*c == '+' || *c == '-') && !head[..*i].ends_with(['e', 'E']))
                .map(|(i, _)| i);
            let (start, step) = match split {
                Some(i) => {
                    let step: f64 = head[i + 1..].parse().map_err(|_| bad())?;
                    let sign = if head[i..].starts_with('-') {
                        -1.0
                    } else {
                        1.0
                    };
                    (head[..i].parse::<f64>().map_err(|_| bad())?, sign * step)
                }
                None => (head.parse::<f64>().map_err(|_| bad())?, 0.0),
            };
            values.extend((0..=n).map(|k| Value::Number(start + step * k as f64)));
        } else {
            values.push(Value::Number(item.parse().map_err(|_| bad())?));
        }
    }
    Ok(values)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(series: &Series) -> Vec<Option<f64>> {
        series.samples.iter().map(|(_, v)| *v).collect()
    }

    #[test]
    fn the_expanding_notation() {
        let s = Series::parse("m", "0+10x3 _ 5 -2-1x2 1x2 stale _x2 7", 60.0)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            values(&s),
            [0.0, 10.0, 20.0, 30.0, 5.0, -2.0, -3.0, -4.0, 1.0, 1.0, 1.0]
                .into_iter()
                .map(Some)
                .chain([None, Some(7.0)])
                .collect::<Vec<_>>()
        );
        // The missing sample leaves a gap in time, not in the list.
        assert_eq!(s.samples[4].0, 300.0);
        assert_eq!(s.samples.last().map(|(t, _)| *t), Some(900.0));
        assert!(Series::parse("m", "1+x3", 60.0).is_err());
    }

    #[test]
    fn selectors() {
        let s = Series::parse(
            r#"easymo_http_requests_total{endpoint="wa-webhook-core", status_class="5xx"}"#,
            "1",
            60.0,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(s.name, "easymo_http_requests_total");
        assert!(s.matches("easymo_http_requests_total", &[("status_class", "5xx")]));
        assert!(!s.matches("easymo_http_requests_total", &[("status_class", "2xx")]));
        assert!(Series::parse("1abc", "1", 60.0).is_err());
        assert!(Series::parse(r#"m{a=b}"#, "1", 60.0).is_err());
    }

    #[test]
    fn increase_extrapolates_like_prometheus() {
        // 10 per minute, sampled every minute: a 5m range at 10m holds samples 5m..10m (six,
        // both ends in), 50 counted, and extrapolation to the edges adds nothing.
        let s = Series::parse("m", "0+10x30", 60.0).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(s.increase(600.0, 300.0), Some(50.0));
        // At 2m, samples 0..2m: 20 over 120 s; the start cannot go below zero at 0.
        assert_eq!(s.increase(120.0, 300.0), Some(20.0));
        // Sampled every 2 minutes within a 5-minute range: 4 minutes seen, extrapolated over
        // the minute before the first sample to the range's start.
        let sparse = Series::parse("m", "100+20x10", 120.0).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(sparse.increase(600.0, 300.0), Some(40.0 * 300.0 / 240.0));
        // A reset counts what came before it.
        let reset = Series::parse("m", "0 10 20 5 15", 60.0).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(reset.increase(240.0, 240.0), Some(35.0));
        assert_eq!(s.increase(0.0, 300.0), None, "one sample is no rate");
    }

    #[test]
    fn instants_look_back_five_minutes() {
        let s = Series::parse("m", "3 _x10", 60.0).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(s.instant(300.0), Some(3.0));
        assert_eq!(s.instant(301.0), None);
        let stale = Series::parse("m", "3 stale", 60.0).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(stale.instant(60.0), None);
    }
}
