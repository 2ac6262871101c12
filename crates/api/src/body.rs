//! Request bodies and query strings, and their parsing into domain types. Every
//! field error is collected so a client learns of all of them at once.

use releasedesk_domain::{
    AgentName, DomainError, EmailAddress, FieldError, FriendlyName, NumberStatus, Reason,
    RequestStatus, WebhookUrl,
};
use releasedesk_store::{AgentPatch, ConfigPatch, NewAgent, NumberPatch, PageRequest};
use serde::{Deserialize, Deserializer};
use uuid::Uuid;

use crate::ApiError;

/// Collects field errors while parsing a body, so a client learns of all of them
/// at once.
#[derive(Debug, Default)]
pub struct Fields(Vec<FieldError>);

impl Fields {
    pub fn take<T>(&mut self, result: Result<T, DomainError>) -> Option<T> {
        match result {
            Ok(value) => Some(value),
            Err(DomainError::Validation(errors)) => {
                self.0.extend(errors);
                None
            }
            Err(other) => {
                self.0.push(FieldError::new("body", other.to_string()));
                None
            }
        }
    }

    pub fn required<T>(&mut self, field: &str, value: Option<T>) -> Option<T> {
        if value.is_none() {
            self.0.push(FieldError::new(field, "is required"));
        }
        value
    }

    /// The parsed value, or every collected error.
    pub fn finish<T>(self, value: Option<T>) -> Result<T, ApiError> {
        match value {
            Some(value) if self.0.is_empty() => Ok(value),
            _ if self.0.is_empty() => Err(ApiError::invalid("body", "is invalid")),
            _ => Err(DomainError::Validation(self.0).into()),
        }
    }
}

/// A required string field parsed into its domain type, in one go.
pub fn required<T>(
    field: &str,
    value: Option<String>,
    parse: impl FnOnce(&str) -> Result<T, DomainError>,
) -> Result<T, ApiError> {
    let mut f = Fields::default();
    let value = f.required(field, value).and_then(|v| f.take(parse(&v)));
    f.finish(value)
}

/// Tells a missing field (`None`) from an explicit `null` (`Some(None)`).
fn nullable<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

/// Applies `parse` to a present, non-null value; `null` stays "clear the field".
fn parse_nullable<T>(
    fields: &mut Fields,
    value: Option<Option<String>>,
    parse: impl FnOnce(&str) -> Result<T, DomainError>,
) -> Option<Option<T>> {
    match value {
        None => None,
        Some(None) => Some(None),
        Some(Some(s)) => fields.take(parse(&s)).map(Some),
    }
}

#[derive(Debug, Deserialize)]
pub struct RequestReleaseBody {
    reason: Option<String>,
}

impl RequestReleaseBody {
    pub fn parse(self) -> Result<Reason, ApiError> {
        required("reason", self.reason, Reason::parse)
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigBody {
    #[serde(default, deserialize_with = "nullable")]
    email_to_sms: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    sms_webhook_url: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    voice_webhook_url: Option<Option<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PatchNumberBody {
    #[serde(default, deserialize_with = "nullable")]
    friendly_name: Option<Option<String>>,
    #[serde(default)]
    config: Option<ConfigBody>,
}

impl PatchNumberBody {
    pub fn parse(self) -> Result<NumberPatch, ApiError> {
        let mut f = Fields::default();
        let config = self.config.unwrap_or_default();
        let patch = NumberPatch {
            friendly_name: parse_nullable(&mut f, self.friendly_name, FriendlyName::parse),
            config: ConfigPatch {
                email_to_sms: parse_nullable(&mut f, config.email_to_sms, |s| {
                    EmailAddress::parse("config.email_to_sms", s)
                }),
                sms_webhook_url: parse_nullable(&mut f, config.sms_webhook_url, |s| {
                    WebhookUrl::parse("config.sms_webhook_url", s)
                }),
                voice_webhook_url: parse_nullable(&mut f, config.voice_webhook_url, |s| {
                    WebhookUrl::parse("config.voice_webhook_url", s)
                }),
            },
        };
        f.finish(Some(patch))
    }
}

#[derive(Debug, Deserialize)]
pub struct CreateAgentBody {
    name: Option<String>,
    active: Option<bool>,
    phone_number_ids: Option<Vec<Uuid>>,
}

impl CreateAgentBody {
    pub fn parse(self) -> Result<NewAgent, ApiError> {
        let mut f = Fields::default();
        let name = f.required("name", self.name);
        let name = name.and_then(|n| f.take(AgentName::parse(&n)));
        let agent = name.map(|name| NewAgent {
            name,
            active: self.active.unwrap_or(true),
            phone_number_ids: self.phone_number_ids.unwrap_or_default(),
        });
        f.finish(agent)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PatchAgentBody {
    name: Option<String>,
    active: Option<bool>,
    phone_number_ids: Option<Vec<Uuid>>,
}

impl PatchAgentBody {
    pub fn parse(self) -> Result<AgentPatch, ApiError> {
        let mut f = Fields::default();
        let name = self.name.and_then(|n| f.take(AgentName::parse(&n)));
        let patch = AgentPatch {
            name,
            active: self.active,
            phone_number_ids: self.phone_number_ids,
        };
        f.finish(Some(patch))
    }
}

/// `?status=&limit=&cursor=`, taken as strings and parsed here.
#[derive(Debug, Deserialize)]
pub struct ListQuery {
    status: Option<String>,
    limit: Option<String>,
    cursor: Option<String>,
}

/// Parses `?limit=&cursor=`.
pub fn page(f: &mut Fields, limit: Option<&str>, cursor: Option<&str>) -> Option<PageRequest> {
    let limit = match limit {
        None => Some(None),
        Some(raw) => match raw.parse::<u64>() {
            Ok(limit) => Some(Some(limit)),
            Err(_) => f.take(Err(DomainError::invalid("limit", "must be a whole number"))),
        },
    };
    limit.and_then(|limit| f.take(PageRequest::parse(limit, cursor)))
}

/// Parses an optional enumerated query value such as `?status=`.
pub fn one_of<T: std::str::FromStr>(
    f: &mut Fields,
    field: &str,
    raw: Option<&str>,
    all: &[&str],
) -> Option<Option<T>> {
    match raw {
        None => Some(None),
        Some(raw) => match raw.parse::<T>() {
            Ok(value) => Some(Some(value)),
            Err(_) => f.take(Err(DomainError::invalid(
                field,
                format!("must be one of: {}", all.join(", ")),
            ))),
        },
    }
}

impl ListQuery {
    fn page(&self, f: &mut Fields) -> Option<PageRequest> {
        page(f, self.limit.as_deref(), self.cursor.as_deref())
    }

    fn status<S: std::str::FromStr>(&self, f: &mut Fields, all: &[&str]) -> Option<Option<S>> {
        one_of(f, "status", self.status.as_deref(), all)
    }

    fn parse_with<S: std::str::FromStr>(
        &self,
        all: &[&str],
    ) -> Result<(Option<S>, PageRequest), ApiError> {
        let mut f = Fields::default();
        let status = self.status(&mut f, all);
        let page = self.page(&mut f);
        f.finish(status.zip(page))
    }

    pub fn numbers(&self) -> Result<(Option<NumberStatus>, PageRequest), ApiError> {
        let all: Vec<&str> = NumberStatus::ALL.iter().map(|s| s.as_str()).collect();
        self.parse_with(&all)
    }

    pub fn requests(&self) -> Result<(Option<RequestStatus>, PageRequest), ApiError> {
        let all: Vec<&str> = RequestStatus::ALL.iter().map(|s| s.as_str()).collect();
        self.parse_with(&all)
    }

    /// For lists without a status filter.
    pub fn page_only(&self) -> Result<PageRequest, ApiError> {
        let mut f = Fields::default();
        if self.status.is_some() {
            f.0.push(FieldError::new("status", "is not a filter of this list"));
        }
        let page = self.page(&mut f);
        f.finish(page)
    }
}
