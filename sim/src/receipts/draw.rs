//! The per-target dice: which receipt, if any, a target of an accepted call gets.

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use super::config::ReceiptConfig;

/// What the provider learns about one target.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Fate {
    /// Reached the device or handset.
    Delivered,
    /// Reported as not delivered.
    Failed,
    /// No receipt ever comes (device offline past the TTL, carrier silence).
    Silent,
}

/// One uniform draw `u` in `[0, 1)` → fate, by the cumulative ratios.
pub(crate) fn fate(u: f64, config: &ReceiptConfig) -> Fate {
    if u < config.delivered_ratio {
        Fate::Delivered
    } else if u < config.delivered_ratio + config.failed_ratio {
        Fate::Failed
    } else {
        Fate::Silent
    }
}

/// A second uniform draw `v` decides whether a delivered target is also clicked.
pub(crate) fn clicked(v: f64, config: &ReceiptConfig) -> bool {
    v < config.clicked_ratio
}

/// A small seedable generator; one per simulator, locked once per accepted call.
pub(crate) struct Dice(SmallRng);

impl Dice {
    pub(crate) fn new(seed: Option<u64>) -> Dice {
        Dice(SmallRng::seed_from_u64(seed.unwrap_or_else(rand::random)))
    }

    /// The fate of one target and, when delivered, whether it is clicked.
    pub(crate) fn roll(&mut self, config: &ReceiptConfig) -> (Fate, bool) {
        let f = fate(self.0.random::<f64>(), config);
        let c = f == Fate::Delivered && clicked(self.0.random::<f64>(), config);
        (f, c)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn config(delivered: f64, failed: f64, clicked: f64) -> ReceiptConfig {
        ReceiptConfig {
            delivered_ratio: delivered,
            failed_ratio: failed,
            clicked_ratio: clicked,
            ..ReceiptConfig::default()
        }
    }

    #[test]
    fn the_draw_splits_the_unit_interval_by_cumulative_ratios() {
        let c = config(0.6, 0.3, 0.0);
        assert_eq!(fate(0.0, &c), Fate::Delivered);
        assert_eq!(fate(0.599, &c), Fate::Delivered);
        assert_eq!(fate(0.6, &c), Fate::Failed);
        assert_eq!(fate(0.899, &c), Fate::Failed);
        assert_eq!(fate(0.9, &c), Fate::Silent);
        assert_eq!(fate(0.999, &c), Fate::Silent);
    }

    #[test]
    fn extreme_ratios_are_certain() {
        let mut dice = Dice::new(Some(1));
        let all = config(1.0, 0.0, 1.0);
        let none = config(0.0, 0.0, 1.0);
        let fail = config(0.0, 1.0, 1.0);
        for _ in 0..10_000 {
            assert_eq!(dice.roll(&all), (Fate::Delivered, true));
            assert_eq!(dice.roll(&none), (Fate::Silent, false));
            assert_eq!(dice.roll(&fail), (Fate::Failed, false));
        }
    }

    #[test]
    fn seeded_dice_follow_the_ratios_and_repeat() {
        let c = config(0.7, 0.2, 0.5);
        let mut dice = Dice::new(Some(42));
        let n = 100_000;
        let (mut delivered, mut failed, mut clicks) = (0, 0, 0);
        let rolls: Vec<(Fate, bool)> = (0..n).map(|_| dice.roll(&c)).collect();
        for (f, click) in &rolls {
            match f {
                Fate::Delivered => delivered += 1,
                Fate::Failed => failed += 1,
                Fate::Silent => {}
            }
            clicks += usize::from(*click);
        }
        let share = |k: usize, of: usize| k as f64 / of as f64;
        assert!((share(delivered, n) - 0.7).abs() < 0.01, "{delivered}");
        assert!((share(failed, n) - 0.2).abs() < 0.01, "{failed}");
        assert!((share(clicks, delivered) - 0.5).abs() < 0.01, "{clicks}");
        let mut again = Dice::new(Some(42));
        let replay: Vec<(Fate, bool)> = (0..n).map(|_| again.roll(&c)).collect();
        assert_eq!(rolls, replay, "the same seed gives the same draws");
    }
}
