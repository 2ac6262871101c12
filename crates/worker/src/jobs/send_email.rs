//! `send_email`: deliver one outbox email.

use releasedesk_store::OutboxItem;

use super::JobError;
use crate::mail::{MailContext, Mailer, render};

/// Renders the row's template and sends it. The Message-ID derives from the
/// row's id (one row per event and recipient), so a resend after a crash is
/// recognisably the same message.
pub async fn send_email(
    mailer: &Mailer,
    context: &MailContext,
    item: &OutboxItem,
) -> Result<(), JobError> {
    let to = item
        .recipient
        .as_deref()
        .ok_or_else(|| JobError::Payload(format!("email {} has no recipient", item.id)))?;
    let email = render(&item.topic, &item.payload, context)?;
    mailer.send(to, &email, &item.id.to_string()).await?;
    Ok(())
}
