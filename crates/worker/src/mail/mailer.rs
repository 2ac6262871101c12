//! Delivering rendered emails: SMTP, `.eml` files, or memory.

use std::{
    fmt,
    path::{Path, PathBuf},
    sync::{Arc, Mutex, PoisonError},
};

use lettre::{
    Address, AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor,
    address::Envelope,
    message::{
        Body, Mailbox, MultiPart, SinglePart,
        header::{ContentTransferEncoding, ContentType},
    },
};

use super::{MailError, RenderedEmail};

/// Where a [`Mailer`] puts what it sends.
#[derive(Clone)]
pub enum MailBackend {
    /// Production: an SMTP server, with pooled connections.
    Smtp(AsyncSmtpTransport<Tokio1Executor>),
    /// Local runs: one `.eml` file per message in this directory.
    Files(PathBuf),
    /// Unit tests: kept in memory, read through [`MemoryOutbox`].
    Memory(Arc<Mutex<Vec<SentEmail>>>),
}

// By hand: the SMTP transport holds the credentials of `SMTP_URL`.
impl fmt::Debug for MailBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MailBackend::Smtp(_) => f.write_str("Smtp(..)"),
            MailBackend::Files(dir) => f.debug_tuple("Files").field(dir).finish(),
            MailBackend::Memory(sent) => {
                let count = sent.lock().unwrap_or_else(PoisonError::into_inner).len();
                write!(f, "Memory({count} sent)")
            }
        }
    }
}

/// An email as the memory backend recorded it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentEmail {
    pub to: String,
    pub subject: String,
    pub text: String,
    pub html: String,
    /// The Message-ID header as sent: `<{message_id}@releasedesk>`.
    pub message_id: String,
}

/// Read access to what a [`Mailer::memory`] sent.
#[derive(Debug, Clone)]
pub struct MemoryOutbox(Arc<Mutex<Vec<SentEmail>>>);

impl MemoryOutbox {
    /// Every email sent so far, oldest first.
    pub fn sent(&self) -> Vec<SentEmail> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// Sends rendered emails from one sender through one backend.
#[derive(Clone)]
pub struct Mailer {
    from: Mailbox,
    backend: MailBackend,
}

impl fmt::Debug for Mailer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Mailer")
            .field("from", &self.from.to_string())
            .field("backend", &self.backend)
            .finish()
    }
}

impl Mailer {
    pub fn new(from: Mailbox, backend: MailBackend) -> Self {
        Self { from, backend }
    }

    /// SMTP when `smtp_url` is set (`smtp://host:port` plain, `smtps://host`,
    /// `smtp://host?tls=required`, optionally with `user:password@`), otherwise
    /// `.eml` files in `outbox_dir`, which is created. SMTP needs a Tokio runtime.
    pub fn from_settings(
        smtp_url: Option<&str>,
        outbox_dir: &Path,
        from: &str,
    ) -> Result<Mailer, MailError> {
        let from: Mailbox = from
            .parse()
            .map_err(|e| MailError::Config(format!("mail.from is not a mailbox: {e}")))?;
        let backend = match smtp_url.map(str::trim).filter(|url| !url.is_empty()) {
            Some(url) => MailBackend::Smtp(smtp_transport(url)?),
            None => {
                std::fs::create_dir_all(outbox_dir).map_err(|e| {
                    MailError::Config(format!(
                        "cannot create the outbox directory {}: {e}",
                        outbox_dir.display()
                    ))
                })?;
                MailBackend::Files(outbox_dir.to_owned())
            }
        };
        Ok(Mailer { from, backend })
    }

    /// A mailer that keeps what it sends, and the handle to read it.
    pub fn memory() -> (Mailer, MemoryOutbox) {
        let sent = Arc::new(Mutex::new(Vec::new()));
        // A fixed, valid address: nothing to check.
        let from = Mailbox::new(
            Some("ReleaseDesk".to_owned()),
            Address::new_dangerous("no-reply", "localhost"),
        );
        let mailer = Mailer::new(from, MailBackend::Memory(Arc::clone(&sent)));
        (mailer, MemoryOutbox(sent))
    }

    pub fn backend(&self) -> &MailBackend {
        &self.backend
    }

    /// Sends `email` to `to` as text and HTML alternatives. The Message-ID is
    /// `<{message_id}@releasedesk>` (characters other than ASCII letters, digits,
    /// `.`, `-` and `_` become `_`), so a retried send is recognisably the same
    /// message; the files backend names its file after it too, so a retry
    /// replaces the file.
    pub async fn send(
        &self,
        to: &str,
        email: &RenderedEmail,
        message_id: &str,
    ) -> Result<(), MailError> {
        let outgoing = self.prepare(to, email, message_id)?;
        let mut outcomes = self.deliver(vec![outgoing]).await;
        // `deliver` answers every email it is given; none is no success.
        outcomes.pop().unwrap_or_else(|| {
            Err(MailError::Transient(
                "the email was not delivered".to_owned(),
            ))
        })
    }

    /// `email` built for `to`, ready for [`deliver`](Self::deliver) (the
    /// Message-ID as [`send`](Self::send) makes it).
    pub fn prepare(
        &self,
        to: &str,
        email: &RenderedEmail,
        message_id: &str,
    ) -> Result<Outgoing, MailError> {
        let Composed {
            id,
            header_id,
            message,
        } = self.compose(to, email, message_id)?;
        let kept = match self.backend {
            MailBackend::Memory(_) => Some(SentEmail {
                to: to.to_owned(),
                subject: email.subject.clone(),
                text: email.text.clone(),
                html: email.html.clone(),
                message_id: header_id.clone(),
            }),
            MailBackend::Smtp(_) | MailBackend::Files(_) => None,
        };
        Ok(Outgoing {
            id,
            header_id,
            message,
            kept,
        })
    }

    /// Delivers `batch`, each email's outcome in the batch's order: over SMTP
    /// [`SEND_CONCURRENCY`] at a time (the replies overlap instead of adding
    /// up); as `.eml` files in one hand-off to the [`background`] thread for
    /// the whole batch (a hand-off per file cost more than its write:
    /// docs/BENCHMARKS.md).
    ///
    /// [`background`]: crate::background
    pub async fn deliver(&self, mut batch: Vec<Outgoing>) -> Vec<Result<(), MailError>> {
        use futures::StreamExt as _;

        // Moved out for the log lines below; nothing else reads them.
        let ids: Vec<String> = batch
            .iter_mut()
            .map(|outgoing| std::mem::take(&mut outgoing.header_id))
            .collect();
        let outcomes = match &self.backend {
            MailBackend::Smtp(transport) => {
                futures::stream::iter(batch)
                    .map(|outgoing| async move {
                        transport
                            .send(outgoing.message)
                            .await
                            .map(drop)
                            .map_err(classify)
                    })
                    .buffered(SEND_CONCURRENCY)
                    .collect()
                    .await
            }
            MailBackend::Files(dir) => {
                let files = batch
                    .into_iter()
                    .map(|outgoing| (outgoing.id, outgoing.message))
                    .collect();
                write_emls(dir, files).await
            }
            MailBackend::Memory(sent) => {
                let count = batch.len();
                sent.lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .extend(batch.into_iter().filter_map(|outgoing| outgoing.kept));
                (0..count).map(|_| Ok(())).collect()
            }
        };
        for (header_id, outcome) in ids.iter().zip(&outcomes) {
            if outcome.is_ok() {
                tracing::debug!(email.message_id = %header_id, "email sent");
            }
        }
        outcomes
    }

    /// The message [`send`](Self::send) delivers, built but not sent.
    pub fn message(
        &self,
        to: &str,
        email: &RenderedEmail,
        message_id: &str,
    ) -> Result<Message, MailError> {
        Ok(self.compose(to, email, message_id)?.message)
    }

    fn compose(
        &self,
        to: &str,
        email: &RenderedEmail,
        message_id: &str,
    ) -> Result<Composed, MailError> {
        let recipient: Mailbox = to
            .parse()
            .map_err(|e| MailError::Permanent(format!("invalid recipient address: {e}")))?;
        let id = sanitize(message_id);
        if id.is_empty() {
            return Err(MailError::Permanent("empty message id".to_owned()));
        }
        let header_id = format!("<{id}@releasedesk>");
        // Given, not derived: lettre would format the From and To headers and
        // parse them back into addresses (~10% of a build).
        let envelope = Envelope::new(Some(self.from.email.clone()), vec![recipient.email.clone()])
            .map_err(|e| MailError::Permanent(format!("cannot address the message: {e}")))?;
        let message = Message::builder()
            .envelope(envelope)
            .from(self.from.clone())
            .to(recipient)
            .subject(email.subject.as_str())
            .message_id(Some(header_id.clone()))
            .multipart(
                MultiPart::alternative()
                    .singlepart(SinglePart::plain(crlf_lines(&email.text)))
                    .singlepart(html_part(&email.html)?),
            )
            .map_err(|e| MailError::Permanent(format!("cannot build the message: {e}")))?;
        Ok(Composed {
            id,
            header_id,
            message,
        })
    }
}

/// A message ready to go, with its ids: `id` names its file, `header_id` is its
/// Message-ID.
struct Composed {
    id: String,
    header_id: String,
    message: Message,
}

/// An email built for its recipient, ready for [`Mailer::deliver`].
pub struct Outgoing {
    id: String,
    header_id: String,
    message: Message,
    /// What the memory backend records (only it keeps one).
    kept: Option<SentEmail>,
}

// By hand: the message holds the body, which never goes into a log line.
impl fmt::Debug for Outgoing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Outgoing")
            .field("message_id", &self.header_id)
            .finish_non_exhaustive()
    }
}

/// Emails one mailer has in flight at once over SMTP: replies (milliseconds
/// each) overlap instead of adding up, within what a relay accepts from one
/// client (lettre's pool opens up to 10 connections).
const SEND_CONCURRENCY: usize = 8;

fn smtp_transport(url: &str) -> Result<AsyncSmtpTransport<Tokio1Executor>, MailError> {
    // The pool spawns its upkeep task at once; without a runtime that would panic.
    if tokio::runtime::Handle::try_current().is_err() {
        return Err(MailError::Config(
            "the SMTP mailer must be created inside a Tokio runtime".to_owned(),
        ));
    }
    // lettre's message names the scheme or the parse failure, never the password.
    let builder = AsyncSmtpTransport::<Tokio1Executor>::from_url(url)
        .map_err(|e| MailError::Config(format!("SMTP_URL is not usable: {e}")))?;
    Ok(builder.build())
}

/// 5xx replies are final; everything else (refused connections, timeouts, 4xx
/// replies, TLS trouble) may pass, and the outbox retries it with backoff.
fn classify(error: lettre::transport::smtp::Error) -> MailError {
    if error.is_permanent() {
        MailError::Permanent(error.to_string())
    } else {
        MailError::Transient(error.to_string())
    }
}

fn sanitize(message_id: &str) -> String {
    message_id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// The HTML alternative, in base64. Its lines (inline styles, links) run past
/// 76 characters, so lettre would pick quoted-printable, whose encoder took
/// ~45% of the instructions of building a message; base64 costs a fraction
/// of that, and mail clients read the HTML part decoded either way. The text
/// part stays as lettre chooses (7bit or quoted-printable): readable as sent.
fn html_part(html: &str) -> Result<SinglePart, MailError> {
    let html = crlf_lines(html);
    let mut encoded = String::with_capacity(email_encoding::body::base64::encoded_len(html.len()));
    email_encoding::body::base64::encode(html.as_bytes(), &mut encoded)
        .map_err(|_| MailError::Permanent("cannot encode the HTML part".to_owned()))?;
    // Base64 is 7-bit with short lines: what "pre-encoded" requires.
    let body = Body::dangerous_pre_encoded(encoded.into_bytes(), ContentTransferEncoding::Base64);
    Ok(SinglePart::builder()
        .header(ContentType::TEXT_HTML)
        .body(body))
}

/// `text` with every line ending in CRLF, as a message body goes on the wire.
/// lettre converts bare line feeds itself, but one `String::insert` at a time,
/// moving the rest of the body for every line (docs/BENCHMARKS.md); given CRLF
/// already, it has nothing to insert.
fn crlf_lines(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + text.len() / 16);
    let mut lines = text.split('\n');
    out.push_str(lines.next().unwrap_or_default());
    for line in lines {
        if !out.ends_with('\r') {
            out.push('\r');
        }
        out.push('\n');
        out.push_str(line);
    }
    out
}

/// Writes each `(id, message)` to `{id}.eml`, whole or not at all: a reader
/// never sees half a message. One background job for the batch, which formats
/// the messages too; each file has its own outcome, in order.
async fn write_emls(dir: &Path, files: Vec<(String, Message)>) -> Vec<Result<(), MailError>> {
    let count = files.len();
    let dir = dir.to_owned();
    let written = crate::background::run(move || {
        files
            .into_iter()
            .map(|(id, message)| write_eml(&dir, &id, &message.formatted()))
            .collect::<Vec<_>>()
    })
    .await;
    let unwritten = |e: &dyn fmt::Display| {
        MailError::Transient(format!("cannot write to the outbox directory: {e}"))
    };
    match written {
        Ok(outcomes) => outcomes
            .into_iter()
            .map(|outcome| outcome.map_err(|e| unwritten(&e)))
            .collect(),
        // The job panicked or the thread is gone: none is known written.
        Err(e) => (0..count).map(|_| Err(unwritten(&e))).collect(),
    }
}

/// `{id}.eml` in `dir`, through a temporary file renamed into place.
fn write_eml(dir: &Path, id: &str, raw: &[u8]) -> std::io::Result<()> {
    let path = dir.join(format!("{id}.eml"));
    let temporary = dir.join(format!(".{id}.{}.tmp", uuid::Uuid::new_v4().simple()));
    std::fs::write(&temporary, raw)?;
    std::fs::rename(&temporary, &path).inspect_err(|_| {
        let _ = std::fs::remove_file(&temporary);
    })
}

#[cfg(test)]
mod tests {
    use super::crlf_lines;

    #[test]
    fn every_line_ends_in_crlf_and_none_gets_two_carriage_returns() {
        assert_eq!(crlf_lines("a\nb\r\nc\n\nd"), "a\r\nb\r\nc\r\n\r\nd");
        assert_eq!(crlf_lines("\n\r\n"), "\r\n\r\n");
        assert_eq!(crlf_lines("no line feed"), "no line feed");
        assert_eq!(crlf_lines(""), "");
    }
}
