use serde::Serialize;
use uuid::Uuid;

/// One invalid input field, as reported in the error envelope's `details`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// An active agent that still uses a phone number.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InUseAgent {
    pub id: Uuid,
    pub name: String,
}

/// A business rule said no. Each variant is one error code of the contract.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DomainError {
    #[error("the request is invalid")]
    Validation(Vec<FieldError>),
    #[error("the resource does not exist")]
    NotFound,
    #[error("this action is not allowed")]
    Forbidden(&'static str),
    #[error("a release request for this phone number is already pending")]
    ReleaseAlreadyPending,
    #[error("phone number is currently assigned to active agents and cannot be released")]
    PhoneNumberInUse(Vec<InUseAgent>),
    #[error("the release request is not pending")]
    RequestNotPending,
    #[error("the phone number is not active")]
    NumberNotActive,
    #[error("the reclaim window for this phone number has expired")]
    ReclaimWindowExpired,
    #[error("only a released phone number can be reclaimed")]
    NumberNotReleased,
    #[error("the release request is claimed by another reviewer")]
    ClaimedByOther,
}

impl DomainError {
    /// A validation error on a single field.
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Validation(vec![FieldError::new(field, message)])
    }

    /// The contract's SCREAMING_SNAKE code for this error.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Validation(_) => "VALIDATION_ERROR",
            Self::NotFound => "NOT_FOUND",
            Self::Forbidden(_) => "FORBIDDEN",
            Self::ReleaseAlreadyPending => "RELEASE_ALREADY_PENDING",
            Self::PhoneNumberInUse(_) => "PHONE_NUMBER_IN_USE",
            Self::RequestNotPending => "REQUEST_NOT_PENDING",
            Self::NumberNotActive => "NUMBER_NOT_ACTIVE",
            Self::ReclaimWindowExpired => "RECLAIM_WINDOW_EXPIRED",
            Self::NumberNotReleased => "NUMBER_NOT_RELEASED",
            Self::ClaimedByOther => "CLAIMED_BY_OTHER",
        }
    }
}
