//! sea-orm entities, one per table. Hand-written to match the migration; the
//! queries that use them live in the aggregate modules beside this one.

pub mod account;
pub mod agent;
pub mod agent_number;
pub mod api_token;
pub mod idempotency_key;
pub mod outbox;
pub mod phone_number;
pub mod release_event;
pub mod release_request;
pub mod sms_message;
pub mod staff;
