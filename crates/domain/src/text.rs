//! Free-text inputs whose constructor is their only check.

use std::fmt;

use serde::{Serialize, Serializer};

use crate::DomainError;

/// Trims `input` and checks its length in Unicode scalar values (not bytes).
fn bounded(field: &str, input: &str, min: usize, max: usize) -> Result<String, DomainError> {
    let trimmed = input.trim();
    let chars = trimmed.chars().count();
    if chars < min || chars > max {
        let message = if min == max {
            format!("must be exactly {min} characters")
        } else {
            format!("must be between {min} and {max} characters after trimming (got {chars})")
        };
        return Err(DomainError::invalid(field, message));
    }
    Ok(trimmed.to_owned())
}

macro_rules! bounded_text {
    ($(#[$doc:meta])* $name:ident, $field:literal, $min:literal, $max:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq)]
        pub struct $name(String);

        impl $name {
            pub const MIN_CHARS: usize = $min;
            pub const MAX_CHARS: usize = $max;

            pub fn parse(input: &str) -> Result<Self, DomainError> {
                bounded($field, input, $min, $max).map(Self)
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }

            pub fn into_inner(self) -> String {
                self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(&self.0)
            }
        }
    };
}

bounded_text!(
    /// Why a customer wants a number released: 10–500 characters after trimming.
    Reason, "reason", 10, 500
);
bounded_text!(
    /// A staff decision note: 1–1000 characters after trimming.
    Note, "note", 1, 1000
);
bounded_text!(
    /// A label the customer gives a number: 1–64 characters after trimming.
    FriendlyName, "friendly_name", 1, 64
);
bounded_text!(
    /// An agent's display name: 1–100 characters after trimming.
    AgentName, "name", 1, 100
);

#[cfg(test)]
mod tests {
    use super::*;

    fn field_of(err: DomainError) -> String {
        match err {
            DomainError::Validation(fields) => fields[0].field.clone(),
            other => panic!("expected a validation error, got {other:?}"),
        }
    }

    #[test]
    fn reason_of_10_multibyte_characters_is_accepted() {
        let reason = "é".repeat(10);
        assert_eq!(reason.len(), 20, "each é is two bytes");
        assert_eq!(Reason::parse(&reason).unwrap().as_str(), reason);
    }

    #[test]
    fn reason_of_500_multibyte_characters_is_accepted() {
        let reason = "号".repeat(500);
        assert_eq!(reason.len(), 1500);
        assert!(Reason::parse(&reason).is_ok());
    }

    #[test]
    fn reason_of_9_or_501_characters_is_rejected() {
        assert_eq!(
            field_of(Reason::parse(&"é".repeat(9)).unwrap_err()),
            "reason"
        );
        assert_eq!(
            field_of(Reason::parse(&"号".repeat(501)).unwrap_err()),
            "reason"
        );
        assert_eq!(
            field_of(Reason::parse(&"a".repeat(501)).unwrap_err()),
            "reason"
        );
    }

    #[test]
    fn reason_counts_emoji_as_one_character_each() {
        assert!(Reason::parse(&"📞".repeat(10)).is_ok());
        assert!(Reason::parse(&"📞".repeat(9)).is_err());
    }

    #[test]
    fn reason_is_trimmed_before_counting() {
        let padded = format!("   {}\n\t", "x".repeat(10));
        assert_eq!(Reason::parse(&padded).unwrap().as_str(), "x".repeat(10));
        assert!(Reason::parse(&format!("  {}  ", "x".repeat(9))).is_err());
    }

    #[test]
    fn whitespace_only_reason_is_rejected() {
        assert!(Reason::parse(&" ".repeat(40)).is_err());
        assert!(
            Reason::parse("\n\t \u{3000}\u{3000}\u{3000}\u{3000}\u{3000}\u{3000}\u{3000}\u{3000}")
                .is_err()
        );
    }

    #[test]
    fn note_must_not_be_empty_and_at_most_1000() {
        assert!(Note::parse("  ").is_err());
        assert!(Note::parse("ok").is_ok());
        assert!(Note::parse(&"n".repeat(1000)).is_ok());
        assert_eq!(
            field_of(Note::parse(&"n".repeat(1001)).unwrap_err()),
            "note"
        );
    }
}
