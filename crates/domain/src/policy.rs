use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};

use crate::Money;

/// The release rules an operator configures: `release.*` and `billing.*`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReleasePolicy {
    /// How long a released number rests before it returns to inventory.
    pub cooling_off: Duration,
    /// How long the former owner may reclaim a released number.
    pub reclaim_window: Duration,
    /// Releasing before this much time since purchase costs the fee.
    pub minimum_term: Duration,
    pub early_termination_fee: Money,
    pub currency: String,
}

/// The deadlines a release sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReleaseWindows {
    pub released_at: DateTime<Utc>,
    pub reclaimable_until: DateTime<Utc>,
    pub available_after: DateTime<Utc>,
}

fn delta(duration: Duration) -> TimeDelta {
    TimeDelta::from_std(duration).unwrap_or(TimeDelta::MAX)
}

fn whole_days(duration: Duration) -> u64 {
    duration.as_secs() / 86_400
}

impl ReleasePolicy {
    /// The fee owed when a number bought at `purchased_at` is released at `at`.
    pub fn early_termination_fee(&self, purchased_at: DateTime<Utc>, at: DateTime<Utc>) -> Money {
        match self.term_cutoff(at) {
            Some(cutoff) if purchased_at <= cutoff => Money::ZERO,
            _ => self.early_termination_fee,
        }
    }

    /// The last purchase time that has served the minimum term at `at`:
    /// numbers bought after it owe the fee when released at `at`. `None`
    /// when the term reaches back beyond the earliest time there is (every
    /// number owes it).
    pub fn term_cutoff(&self, at: DateTime<Utc>) -> Option<DateTime<Utc>> {
        at.checked_sub_signed(delta(self.minimum_term))
    }

    /// Deadlines for a release executed at `released_at`. A number cannot be
    /// reclaimed after it went back to inventory, so the reclaim window is capped
    /// by the cooling-off period.
    pub fn windows(&self, released_at: DateTime<Utc>) -> ReleaseWindows {
        let add = |d: Duration| {
            released_at
                .checked_add_signed(delta(d))
                .unwrap_or(DateTime::<Utc>::MAX_UTC)
        };
        ReleaseWindows {
            released_at,
            reclaimable_until: add(self.reclaim_window.min(self.cooling_off)),
            available_after: add(self.cooling_off),
        }
    }

    pub fn cooling_off_days(&self) -> u64 {
        whole_days(self.cooling_off)
    }

    pub fn reclaim_window_days(&self) -> u64 {
        whole_days(self.reclaim_window.min(self.cooling_off))
    }

    pub fn minimum_term_days(&self) -> u64 {
        whole_days(self.minimum_term)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: u64 = 86_400;

    fn policy() -> ReleasePolicy {
        ReleasePolicy {
            cooling_off: Duration::from_secs(30 * DAY),
            reclaim_window: Duration::from_secs(10 * DAY),
            minimum_term: Duration::from_secs(90 * DAY),
            early_termination_fee: "25.00".parse().unwrap(),
            currency: "USD".into(),
        }
    }

    fn at(rfc3339: &str) -> DateTime<Utc> {
        rfc3339.parse().unwrap()
    }

    #[test]
    fn fee_applies_inside_the_minimum_term_only() {
        let bought = at("2026-01-01T00:00:00Z");
        let p = policy();
        assert_eq!(
            p.early_termination_fee(bought, at("2026-01-02T00:00:00Z"))
                .to_string(),
            "25.00"
        );
        assert_eq!(
            p.early_termination_fee(bought, at("2026-03-31T23:59:59Z"))
                .to_string(),
            "25.00"
        );
        assert_eq!(
            p.early_termination_fee(bought, at("2026-04-01T00:00:00Z")),
            Money::ZERO
        );
        assert_eq!(
            p.early_termination_fee(bought, at("2027-01-01T00:00:00Z")),
            Money::ZERO
        );
    }

    #[test]
    fn a_term_longer_than_time_itself_always_costs_the_fee() {
        let p = ReleasePolicy {
            minimum_term: Duration::MAX,
            ..policy()
        };
        let now = at("2026-01-01T00:00:00Z");
        assert_eq!(p.term_cutoff(now), None);
        assert_eq!(
            p.early_termination_fee(at("1970-01-01T00:00:00Z"), now)
                .to_string(),
            "25.00"
        );
    }

    #[test]
    fn windows_follow_the_configured_periods() {
        let w = policy().windows(at("2026-05-01T12:00:00Z"));
        assert_eq!(w.reclaimable_until, at("2026-05-11T12:00:00Z"));
        assert_eq!(w.available_after, at("2026-05-31T12:00:00Z"));
    }

    #[test]
    fn reclaim_window_never_outlasts_cooling_off() {
        let p = ReleasePolicy {
            reclaim_window: Duration::from_secs(60 * DAY),
            ..policy()
        };
        let w = p.windows(at("2026-05-01T00:00:00Z"));
        assert_eq!(w.reclaimable_until, w.available_after);
        assert_eq!(p.reclaim_window_days(), 30);
    }

    #[test]
    fn days_are_whole_days() {
        let p = policy();
        assert_eq!(
            (
                p.cooling_off_days(),
                p.reclaim_window_days(),
                p.minimum_term_days()
            ),
            (30, 10, 90)
        );
    }
}
