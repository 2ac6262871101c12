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

/// Why the number should be released.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct RequestReleaseBody {
    /// 10 to 500 characters (Unicode characters, not bytes) after trimming.
    #[schema(value_type = String, min_length = 10, max_length = 500, example = "We no longer need this line at all.")]
    reason: Option<String>,
}

impl RequestReleaseBody {
    pub fn parse(self) -> Result<Reason, ApiError> {
        required("reason", self.reason, Reason::parse)
    }
}

/// A number's configuration; a field left out stays, `null` clears it.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConfigBody {
    /// An email address whose messages are sent as SMS from this number.
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>, format = Email, max_length = 254, example = "ops@example.com")]
    email_to_sms: Option<Option<String>>,
    /// An `http` or `https` URL called for incoming SMS.
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>, max_length = 2048, pattern = r"^https?://[^/?#\s]+[^\s]*$", example = "https://example.com/hooks/sms")]
    sms_webhook_url: Option<Option<String>>,
    /// An `http` or `https` URL called for incoming calls.
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>, max_length = 2048, pattern = r"^https?://[^/?#\s]+[^\s]*$", example = "https://example.com/hooks/voice")]
    voice_webhook_url: Option<Option<String>>,
}

/// A change to a number: a field left out stays, `null` clears it.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PatchNumberBody {
    /// 1 to 64 characters after trimming.
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>, min_length = 1, max_length = 64, example = "Support line")]
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

/// A new agent.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct CreateAgentBody {
    /// 1 to 100 characters after trimming.
    #[schema(value_type = String, min_length = 1, max_length = 100, example = "Front desk")]
    name: Option<String>,
    /// Default `true`.
    active: Option<bool>,
    /// Active numbers of the account that the agent uses (default none).
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

/// A change to an agent; a field left out stays. `phone_number_ids` replaces
/// the whole set.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PatchAgentBody {
    /// 1 to 100 characters after trimming.
    #[schema(min_length = 1, max_length = 100)]
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
