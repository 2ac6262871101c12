//! Pure rules of ReleaseDesk: validated value types, statuses and their legal
//! transitions, fee and window arithmetic, and the errors a rule can raise.
//!
//! Nothing here touches HTTP, SQL or the clock's side effects: every function is a
//! deterministic function of its inputs, so the rules are unit-tested in isolation.

mod e164;
mod email;
mod error;
mod money;
mod policy;
mod status;
mod text;
pub mod time;

pub use e164::E164;
pub use email::{EmailAddress, WebhookUrl};
pub use error::{DomainError, FieldError, InUseAgent};
pub use money::Money;
pub use policy::{ReleasePolicy, ReleaseWindows};
pub use status::{NumberStatus, RequestStatus, UnknownStatus};
pub use text::{AgentName, FriendlyName, Note, Reason};

/// A new time-ordered id (UUID v7): index-friendly and sortable by creation.
pub fn new_id() -> uuid::Uuid {
    uuid::Uuid::now_v7()
}
