use std::fmt;

use serde::{Serialize, Serializer};

use crate::DomainError;

/// An email address, checked for shape only: one `@`, something on both sides, no
/// whitespace, at most 254 characters. Deliverability is the mail server's business.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmailAddress(String);

impl EmailAddress {
    pub fn parse(field: &str, input: &str) -> Result<Self, DomainError> {
        let trimmed = input.trim();
        let valid = match trimmed.split_once('@') {
            Some((local, domain)) => {
                !local.is_empty()
                    && !domain.is_empty()
                    && !domain.contains('@')
                    && !domain.starts_with('.')
                    && !domain.ends_with('.')
                    && trimmed.chars().count() <= 254
                    && !trimmed.chars().any(char::is_whitespace)
            }
            None => false,
        };
        if !valid {
            return Err(DomainError::invalid(field, "must be an email address"));
        }
        Ok(Self(trimmed.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_inner(self) -> String {
        self.0
    }
}

impl fmt::Display for EmailAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Serialize for EmailAddress {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

/// An `http` or `https` URL with a host, for webhooks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookUrl(String);

impl WebhookUrl {
    pub fn parse(field: &str, input: &str) -> Result<Self, DomainError> {
        let trimmed = input.trim();
        let rest = trimmed
            .strip_prefix("https://")
            .or_else(|| trimmed.strip_prefix("http://"));
        let host = rest.map(|r| r.split(['/', '?', '#']).next().unwrap_or_default());
        let valid = matches!(host, Some(h) if !h.is_empty())
            && trimmed.len() <= 2048
            && !trimmed.chars().any(|c| c.is_whitespace() || c.is_control());
        if !valid {
            return Err(DomainError::invalid(field, "must be an http or https URL"));
        }
        Ok(Self(trimmed.to_owned()))
    }

    pub fn into_inner(self) -> String {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn email_shapes() {
        assert_eq!(
            EmailAddress::parse("email", " ops@example.com ")
                .unwrap()
                .as_str(),
            "ops@example.com"
        );
        for bad in [
            "",
            "ops",
            "@example.com",
            "ops@",
            "a b@example.com",
            "a@b@c",
            "ops@.com",
        ] {
            assert!(EmailAddress::parse("email", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn webhook_urls_need_http_and_a_host() {
        assert!(WebhookUrl::parse("u", "https://hooks.example.com/sms").is_ok());
        assert!(WebhookUrl::parse("u", "http://127.0.0.1:9000").is_ok());
        for bad in ["ftp://x", "https://", "example.com", "https:// x"] {
            assert!(WebhookUrl::parse("u", bad).is_err(), "{bad}");
        }
    }
}
