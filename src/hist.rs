//! Latency histograms that merge by adding counts, so percentiles can be read from rollups of any
//! window without the raw rows.
//!
//! Values are whole milliseconds. Bins are exact below 50 ms (one value each) and then grow by a
//! factor of 1.02: bin k+1 starts at floor(1.02 · start of bin k). A bin is reported as the integer
//! closest to the point that splits it into equal relative errors (2·lo·hi / (lo + hi)). The exact
//! nearest-rank percentile is a value in the bin that the histogram picks (both walk the same
//! sorted counts), so the reported value is within the bin's relative half-width of it: at most
//! 1 % for every bin, which `every_bin_is_within_one_percent` checks bin by bin.

use std::collections::BTreeMap;
use std::sync::OnceLock;

/// Values at or above the last bin's start (about 35 years in ms) go to the last bin.
const LIMIT: i64 = 1 << 40;

fn starts() -> &'static [i64] {
    static STARTS: OnceLock<Vec<i64>> = OnceLock::new();
    STARTS.get_or_init(|| {
        let mut v = vec![0, 1];
        let mut lo: i64 = 1;
        while lo < LIMIT {
            lo = ((lo as f64 * 1.02).floor() as i64).max(lo + 1);
            v.push(lo);
        }
        v
    })
}

/// The bin of a duration in ms (negative durations count as 0).
pub fn bin_of(ms: i64) -> i64 {
    let s = starts();
    let ms = ms.clamp(0, s[s.len() - 1]);
    (s.partition_point(|&x| x <= ms) - 1) as i64
}

/// The lowest and highest value of a bin.
pub fn bin_range(bin: i64) -> (i64, i64) {
    let s = starts();
    let b = (bin.max(0) as usize).min(s.len() - 1);
    (s[b], s.get(b + 1).map(|n| n - 1).unwrap_or(s[b]))
}

/// The value a bin reports.
pub fn bin_value(bin: i64) -> i64 {
    let (lo, hi) = bin_range(bin);
    if lo == 0 {
        return 0;
    }
    (2.0 * lo as f64 * hi as f64 / (lo + hi) as f64).round() as i64
}

/// Counts per bin.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Hist {
    pub bins: BTreeMap<i64, i64>,
}

impl Hist {
    pub fn add_bin(&mut self, bin: i64, n: i64) {
        *self.bins.entry(bin).or_insert(0) += n;
    }
    pub fn record(&mut self, ms: i64) {
        self.add_bin(bin_of(ms), 1);
    }
    pub fn merge(&mut self, other: &Hist) {
        for (b, n) in &other.bins {
            self.add_bin(*b, *n);
        }
    }
    pub fn count(&self) -> i64 {
        self.bins.values().filter(|n| **n > 0).sum()
    }
    /// The nearest-rank percentile (`p` in 0..=1), within 1 % of the exact one.
    pub fn percentile(&self, p: f64) -> Option<i64> {
        let n = self.count();
        if n == 0 {
            return None;
        }
        let rank = ((p * n as f64).ceil() as i64).clamp(1, n);
        let mut seen = 0;
        for (b, c) in self.bins.iter().filter(|(_, c)| **c > 0) {
            seen += c;
            if seen >= rank {
                return Some(bin_value(*b));
            }
        }
        self.bins.keys().next_back().map(|b| bin_value(*b))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_bin_is_within_one_percent() {
        let s = starts();
        assert!(s.len() < 1300, "{} bins", s.len());
        for b in 1..s.len() as i64 - 1 {
            let (lo, hi) = bin_range(b);
            let v = bin_value(b);
            assert!(lo <= v && v <= hi, "bin {b}: {v} outside {lo}..={hi}");
            for x in [lo, hi] {
                let err = (v - x).abs() as f64 / x as f64;
                assert!(err <= 0.01, "bin {b} ({lo}..={hi}) reports {v}: {:.4} off {x}", err);
            }
            assert_eq!(bin_of(lo), b);
            assert_eq!(bin_of(hi), b);
        }
        for v in 0..50 {
            assert_eq!(bin_value(bin_of(v)), v, "exact below 50 ms");
        }
    }

    #[test]
    fn percentiles_match_nearest_rank_within_one_percent() {
        let mut rng = fastrand::Rng::with_seed(7);
        let mut values: Vec<i64> = (0..5000).map(|_| (rng.f64().powi(3) * 200_000.0) as i64 + 1).collect();
        let mut h = Hist::default();
        let mut halves = (Hist::default(), Hist::default());
        for (i, v) in values.iter().enumerate() {
            h.record(*v);
            if i % 2 == 0 { &mut halves.0 } else { &mut halves.1 }.record(*v);
        }
        halves.0.merge(&halves.1);
        assert_eq!(halves.0, h, "merging halves gives the whole");
        values.sort_unstable();
        for p in [0.01, 0.5, 0.9, 0.95, 0.99, 1.0] {
            let exact = crate::stats::nearest_rank(&values, p);
            let got = h.percentile(p).unwrap();
            assert!((got - exact).abs() as f64 <= 0.01 * exact as f64, "p{p}: {got} vs {exact}");
        }
        assert_eq!(Hist::default().percentile(0.5), None);
    }
}
