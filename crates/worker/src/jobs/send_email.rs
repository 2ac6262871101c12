//! `send_email`: an outbox email, rendered and built for delivery.

use releasedesk_store::OutboxItem;

use super::JobError;
use crate::mail::{MailContext, Mailer, Outgoing, render};

/// Renders the row's template and builds the message for its recipient, for
/// [`Mailer::deliver`]. The Message-ID derives from the row's id (one row per
/// event and recipient), so a resend after a crash is recognisably the same
/// message.
pub fn prepare_email(
    mailer: &Mailer,
    context: &MailContext,
    item: &OutboxItem,
) -> Result<Outgoing, JobError> {
    let to = item
        .recipient
        .as_deref()
        .ok_or_else(|| JobError::Payload(format!("email {} has no recipient", item.id)))?;
    let email = render(&item.topic, &item.payload, context)?;
    Ok(mailer.prepare(to, &email, &item.id.to_string())?)
}
