//! Email: rendering and delivery.
//!
//! Every email is a template folder under `templates/` (`subject.txt`,
//! `body.txt`, `body.html`), compiled into the binary and rendered with
//! minijinja from the outbox row's JSON payload: a missing key is an error, never
//! an empty string, and only the HTML part is escaped. The HTML pieces the
//! templates share (`details`, `button`, `endpoint`, `quote`) are functions in
//! `components`. A [`Mailer`] delivers the result over SMTP in production, as
//! `.eml` files locally, or into memory in unit tests.

mod components;
mod mailer;
mod render;
#[cfg(test)]
mod tests;

use std::fmt;

pub use mailer::{MailBackend, Mailer, MemoryOutbox, Outgoing, SentEmail};
pub use render::{TEMPLATES, render};

/// One email, rendered and ready to send.
#[derive(Clone, PartialEq, Eq)]
pub struct RenderedEmail {
    pub subject: String,
    pub text: String,
    pub html: String,
}

// By hand: a body must never end up in a log line through `{:?}`.
impl fmt::Debug for RenderedEmail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RenderedEmail")
            .field("subject", &self.subject)
            .field("text", &format_args!("<{} bytes>", self.text.len()))
            .field("html", &format_args!("<{} bytes>", self.html.len()))
            .finish()
    }
}

/// What templates need beyond the payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MailContext {
    /// Base URL of links in emails, such as `http://127.0.0.1:8080`.
    pub public_url: String,
}

#[derive(Debug, thiserror::Error)]
pub enum MailError {
    #[error("unknown email template `{0}`")]
    UnknownTemplate(String),
    /// The payload does not fit the template (a missing key, a malformed time).
    #[error("cannot render email: {0}")]
    Render(String),
    /// Delivery failed in a way that may pass: SMTP down, a timeout, a 4xx reply.
    #[error("email delivery failed, will retry: {0}")]
    Transient(String),
    /// Delivery can never succeed as asked: a 5xx reply, an invalid address.
    #[error("email delivery failed for good: {0}")]
    Permanent(String),
    #[error("mail configuration: {0}")]
    Config(String),
}

impl MailError {
    /// Whether sending again later can help.
    pub fn is_transient(&self) -> bool {
        matches!(self, MailError::Transient(_))
    }
}
