use std::{fmt, str::FromStr};

use serde::{Serialize, Serializer};

use crate::DomainError;

/// A non-negative amount in minor units (cents), shown as a decimal string with two
/// places (`"25.00"`), the way the contract renders money.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Money(i64);

impl Money {
    pub const ZERO: Money = Money(0);

    pub fn from_minor(minor: i64) -> Self {
        Self(minor)
    }

    pub fn minor(self) -> i64 {
        self.0
    }

    pub fn is_zero(self) -> bool {
        self.0 == 0
    }
}

impl FromStr for Money {
    type Err = DomainError;

    /// Parses `"25"`, `"25.0"` or `"25.00"`; at most two decimals, never negative.
    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let invalid = || DomainError::invalid("amount", "must be a decimal amount such as 25.00");
        let (whole, fraction) = input.trim().split_once('.').unwrap_or((input.trim(), ""));
        let digits_only = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
        if whole.is_empty() || !digits_only(whole) || !digits_only(fraction) || fraction.len() > 2 {
            return Err(invalid());
        }
        let whole: i64 = whole.parse().map_err(|_| invalid())?;
        let cents: i64 = format!("{fraction:0<2}").parse().map_err(|_| invalid())?;
        whole
            .checked_mul(100)
            .and_then(|w| w.checked_add(cents))
            .map(Money)
            .ok_or_else(invalid)
    }
}

impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{:02}", self.0 / 100, self.0 % 100)
    }
}

impl Serialize for Money {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_renders_two_decimals() {
        for (input, minor, shown) in [
            ("25.00", 2500, "25.00"),
            ("1.15", 115, "1.15"),
            ("7", 700, "7.00"),
            ("0.5", 50, "0.50"),
        ] {
            let money: Money = input.parse().unwrap();
            assert_eq!(money.minor(), minor);
            assert_eq!(money.to_string(), shown);
        }
    }

    #[test]
    fn rejects_negative_fractional_cents_and_garbage() {
        for bad in [
            "-1.00",
            "1.155",
            "abc",
            "",
            ".5",
            "1.2.3",
            "99999999999999999999",
        ] {
            assert!(bad.parse::<Money>().is_err(), "{bad}");
        }
    }
}
