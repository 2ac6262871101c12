use std::fmt;

use serde::{Serialize, Serializer};

use crate::DomainError;

/// A phone number in E.164 form: `+`, a country code that does not start with 0,
/// and at most 15 digits in all.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct E164(String);

impl E164 {
    /// Fewest digits we accept; real E.164 numbers are never shorter.
    const MIN_DIGITS: usize = 7;
    const MAX_DIGITS: usize = 15;

    pub fn parse(input: &str) -> Result<Self, DomainError> {
        let invalid = || {
            DomainError::invalid(
                "e164",
                "must be an E.164 number: '+' then 7 to 15 digits, not starting with 0",
            )
        };
        let digits = input.trim().strip_prefix('+').ok_or_else(invalid)?;
        let well_formed = (Self::MIN_DIGITS..=Self::MAX_DIGITS).contains(&digits.len())
            && digits.bytes().all(|b| b.is_ascii_digit())
            && !digits.starts_with('0');
        if !well_formed {
            return Err(invalid());
        }
        Ok(Self(format!("+{digits}")))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_inner(self) -> String {
        self.0
    }
}

impl fmt::Display for E164 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Serialize for E164 {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_a_us_number_and_trims_it() {
        assert_eq!(
            E164::parse(" +15551234567 ").unwrap().as_str(),
            "+15551234567"
        );
    }

    #[test]
    fn rejects_numbers_without_plus_too_long_or_with_letters() {
        for bad in [
            "15551234567",
            "+0551234567",
            "+1555123456789012",
            "+1555abc4567",
            "+",
            "+123456",
        ] {
            assert!(E164::parse(bad).is_err(), "{bad} should be rejected");
        }
    }

    #[test]
    fn accepts_fifteen_digits() {
        assert!(E164::parse("+123456789012345").is_ok());
    }
}
