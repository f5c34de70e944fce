//! The retry schedule: the delays after each failed attempt, with jitter.
//!
//! The default follows the published schedule (≈ 5 s, 30 s, 2 min, 10 min, 30 min, 1 h, 2 h,
//! 4 h, 8 h, 16 h, 24 h): twelve attempts over about 2.3 days, then the delivery is dead.
//! Each delay is spread by ±10 % so that receivers coming back from an outage are not hit
//! by every retry in the same second.

use std::time::Duration;

use rand::Rng;

/// Delays between attempts, and how much to jitter them.
#[derive(Clone, Debug, PartialEq)]
pub struct RetrySchedule {
    delays: Vec<Duration>,
    jitter: f64,
}

/// A schedule that does not parse.
#[derive(Debug, thiserror::Error)]
#[error("a retry schedule is a comma-separated list of durations like 5s,30s,2m,1h: {0}")]
pub struct InvalidSchedule(String);

impl Default for RetrySchedule {
    fn default() -> Self {
        let secs = [5, 30, 120, 600, 1800, 3600, 7200, 14_400, 28_800, 57_600, 86_400];
        Self {
            delays: secs.iter().map(|s| Duration::from_secs(*s)).collect(),
            jitter: 0.1,
        }
    }
}

impl RetrySchedule {
    /// A schedule of exactly these delays, jittered by `jitter` (0.1 = ±10 %).
    pub fn new(delays: Vec<Duration>, jitter: f64) -> Self {
        Self {
            delays,
            jitter: jitter.clamp(0.0, 0.5),
        }
    }

    /// Parses `5s,30s,2m,…` (an empty string means: never retry).
    pub fn parse(text: &str) -> Result<Self, InvalidSchedule> {
        let delays = text
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| humantime::parse_duration(s).map_err(|e| InvalidSchedule(format!("`{s}`: {e}"))))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            delays,
            ..Self::default()
        })
    }

    /// The same delays with another jitter.
    pub fn with_jitter(mut self, jitter: f64) -> Self {
        self.jitter = jitter.clamp(0.0, 0.5);
        self
    }

    /// The configured delays, without jitter.
    pub fn delays(&self) -> &[Duration] {
        &self.delays
    }

    /// How many attempts a delivery gets in all.
    pub fn max_attempts(&self) -> u32 {
        self.delays.len() as u32 + 1
    }

    /// The delay after the `failures`-th failed attempt (1 for the first), or `None` when the
    /// delivery is now dead.
    pub fn delay_after(&self, failures: u32) -> Option<Duration> {
        let base = *self.delays.get(failures.checked_sub(1)? as usize)?;
        if self.jitter == 0.0 {
            return Some(base);
        }
        let factor = rand::thread_rng().gen_range(1.0 - self.jitter..=1.0 + self.jitter);
        Some(base.mul_f64(factor))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_schedule_is_the_published_one() {
        let s = RetrySchedule::default();
        assert_eq!(s.max_attempts(), 12);
        let first = s.delay_after(1).unwrap();
        assert!(first >= Duration::from_millis(4500) && first <= Duration::from_millis(5500));
        let last = s.delay_after(11).unwrap();
        assert!(last >= Duration::from_secs(77_760) && last <= Duration::from_secs(95_040));
        assert_eq!(s.delay_after(12), None);
    }

    #[test]
    fn parses_durations() {
        let s = RetrySchedule::parse("1s, 2m ,1h").unwrap();
        assert_eq!(
            s.delays(),
            &[
                Duration::from_secs(1),
                Duration::from_secs(120),
                Duration::from_secs(3600)
            ]
        );
        assert!(RetrySchedule::parse("soon").is_err());
        assert_eq!(RetrySchedule::parse("").unwrap().max_attempts(), 1);
    }
}
