use std::{fmt, str::FromStr};

use serde::{Deserialize, Serialize};

/// A status string that no variant spells.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown status {0:?}")]
pub struct UnknownStatus(pub String);

macro_rules! string_enum {
    ($(#[$doc:meta])* $name:ident { $($variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[serde(rename_all = "snake_case")]
        pub enum $name { $($variant),+ }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = UnknownStatus;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($text => Ok($name::$variant),)+
                    other => Err(UnknownStatus(other.to_owned())),
                }
            }
        }
    };
}

string_enum!(
    /// Where a release request is in its lifecycle.
    RequestStatus {
        Pending => "pending",
        Approved => "approved",
        Releasing => "releasing",
        Released => "released",
        Cancelled => "cancelled",
        Failed => "failed",
    }
);

string_enum!(
    /// Where a phone number is in its lifecycle.
    NumberStatus {
        Active => "active",
        Releasing => "releasing",
        Released => "released",
        Available => "available",
    }
);

impl RequestStatus {
    /// Statuses that hold the number: at most one such request per number, enforced
    /// by the unique partial index `release_requests_one_open_per_number`.
    pub const OPEN: &'static [RequestStatus] = &[Self::Pending, Self::Approved, Self::Releasing];

    pub fn is_open(self) -> bool {
        Self::OPEN.contains(&self)
    }

    /// The lifecycle's legal moves; every guarded update in the store follows one.
    pub fn can_become(self, next: RequestStatus) -> bool {
        use RequestStatus::*;
        matches!(
            (self, next),
            (Pending, Approved)
                | (Pending, Cancelled)
                | (Approved, Releasing)
                | (Releasing, Released)
                | (Approved, Failed)
                | (Releasing, Failed)
        )
    }
}

impl NumberStatus {
    pub fn can_become(self, next: NumberStatus) -> bool {
        use NumberStatus::*;
        matches!(
            (self, next),
            (Active, Releasing)
                | (Releasing, Released)
                | (Releasing, Active)
                | (Released, Active)
                | (Released, Available)
                | (Available, Active)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_round_trip_through_their_strings() {
        for status in RequestStatus::ALL {
            assert_eq!(status.as_str().parse::<RequestStatus>().unwrap(), *status);
        }
        for status in NumberStatus::ALL {
            assert_eq!(status.as_str().parse::<NumberStatus>().unwrap(), *status);
        }
        assert!("PENDING".parse::<RequestStatus>().is_err());
    }

    #[test]
    fn only_pending_can_be_approved_or_cancelled() {
        for status in RequestStatus::ALL {
            let pending = *status == RequestStatus::Pending;
            assert_eq!(
                status.can_become(RequestStatus::Approved),
                pending,
                "{status}"
            );
            assert_eq!(
                status.can_become(RequestStatus::Cancelled),
                pending,
                "{status}"
            );
        }
    }

    #[test]
    fn terminal_request_statuses_go_nowhere() {
        for terminal in [
            RequestStatus::Released,
            RequestStatus::Cancelled,
            RequestStatus::Failed,
        ] {
            assert!(!terminal.is_open());
            assert!(
                RequestStatus::ALL
                    .iter()
                    .all(|next| !terminal.can_become(*next))
            );
        }
    }

    #[test]
    fn a_number_is_released_only_through_releasing() {
        assert!(!NumberStatus::Active.can_become(NumberStatus::Released));
        assert!(NumberStatus::Active.can_become(NumberStatus::Releasing));
        assert!(NumberStatus::Releasing.can_become(NumberStatus::Released));
        assert!(!NumberStatus::Active.can_become(NumberStatus::Available));
    }
}
