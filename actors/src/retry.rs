//! Retry policy for provider calls: exponential backoff with jitter, bounded attempts.

use std::time::Duration;

use rand::Rng;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Total attempts per delivery, the first included.
    pub max_attempts: u32,
    pub base_backoff: Duration,
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 5,
            base_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(30),
        }
    }
}

impl RetryPolicy {
    /// How long to wait before attempt `attempt + 1`, given what the provider asked for.
    /// Jitter spreads retries of many batches so they do not return in lockstep.
    pub fn backoff(&self, attempt: u32, provider_hint: Option<Duration>) -> Duration {
        let exp = self
            .base_backoff
            .saturating_mul(1u32 << attempt.saturating_sub(1).min(16))
            .min(self.max_backoff);
        let jitter = rand::rng().random_range(0.5..=1.0);
        let computed = exp.mul_f64(jitter);
        match provider_hint {
            Some(hint) => hint.min(self.max_backoff).max(computed),
            None => computed,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        let p = RetryPolicy {
            max_attempts: 10,
            base_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(1),
        };
        assert!(p.backoff(1, None) <= Duration::from_millis(100));
        assert!(p.backoff(1, None) >= Duration::from_millis(50));
        assert!(p.backoff(3, None) >= Duration::from_millis(200));
        assert!(p.backoff(30, None) <= Duration::from_secs(1));
    }

    #[test]
    fn a_provider_reset_hint_is_honoured_up_to_the_cap() {
        let p = RetryPolicy::default();
        assert!(p.backoff(1, Some(Duration::from_secs(2))) >= Duration::from_secs(2));
        assert!(p.backoff(1, Some(Duration::from_secs(3600))) <= p.max_backoff);
    }
}
