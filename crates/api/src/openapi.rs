//! The HTTP kit's half of the OpenAPI document: the envelopes' schemas, the
//! catalogue of error codes with their statuses and examples, and [`Conventions`],
//! which gives every operation the answers every endpoint can give (auth, rate
//! limit, idempotency, unavailability, `x-request-id`) so that no handler has to
//! repeat them.
//!
//! A handler documents its success response and names its own error codes in an
//! `x-error-codes` extension; [`Conventions`] turns those names into responses
//! with examples rendered by [`ApiError`] itself, so statuses and messages in the
//! document are the ones the server sends.

use std::collections::BTreeMap;

use releasedesk_domain::{DomainError, FieldError, InUseAgent};
use serde_json::{Value, json};
use utoipa::{
    IntoParams, Modify, PartialSchema, ToSchema,
    openapi::{
        Components, ContentBuilder, HttpMethod, ObjectBuilder, OpenApi, Ref, RefOr, Required,
        ResponseBuilder, Type,
        example::ExampleBuilder,
        header::HeaderBuilder,
        path::{Operation, ParameterBuilder, ParameterIn},
        security::{HttpAuthScheme, HttpBuilder, SecurityScheme},
    },
};

use crate::ApiError;

/// Security scheme of the customer API: `Authorization: Bearer rd_live_…`.
pub const CUSTOMER_TOKEN: &str = "customer_token";
/// Security scheme of the reviewer API: `Authorization: Bearer rd_staff_…`.
pub const STAFF_TOKEN: &str = "staff_token";
/// The extension in which an operation names its own error codes.
pub const ERROR_CODES: &str = "x-error-codes";

/// `{"success": true, "data": …}`.
#[derive(ToSchema)]
#[schema(as = Data)]
pub struct DataEnvelope<T> {
    #[schema(schema_with = always_true)]
    pub success: bool,
    pub data: T,
}

/// `{"success": true, "data": [...], "next_cursor": …}`. `next_cursor` is null on
/// the last page; pass it as `?cursor=` for the next one.
#[derive(ToSchema)]
#[schema(as = List)]
pub struct ListEnvelope<T> {
    #[schema(schema_with = always_true)]
    pub success: bool,
    pub data: Vec<T>,
    #[schema(required = true)]
    pub next_cursor: Option<String>,
}

fn always_true() -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::Boolean)
        .enum_values(Some([true]))
}

/// `{"success": false, "message": …, "code": …, "details"?: [...]}`: every error
/// the server answers, including unknown routes and wrong methods.
#[derive(ToSchema)]
pub struct ErrorEnvelope {
    #[schema(schema_with = always_false)]
    pub success: bool,
    /// For people; may change. Never contains internals.
    pub message: String,
    /// For programs; stable.
    #[schema(schema_with = error_code)]
    pub code: String,
    /// Validation errors name each offending field; `PHONE_NUMBER_IN_USE` names
    /// the agents using the number.
    pub details: Option<Vec<ErrorDetail>>,
}

/// One item of an error's `details`.
#[derive(ToSchema)]
pub struct ErrorDetail {
    /// The offending field (`reason`, `config.sms_webhook_url`, `query`, …).
    pub field: String,
    pub message: String,
    /// `PHONE_NUMBER_IN_USE`: the agent using the number.
    pub agent_id: Option<uuid::Uuid>,
    /// `PHONE_NUMBER_IN_USE`: that agent's name.
    pub agent_name: Option<String>,
}

fn always_false() -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::Boolean)
        .enum_values(Some([false]))
}

fn error_code() -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .enum_values(Some(catalogue().into_iter().map(|e| e.code)))
}

/// `?limit=&cursor=` of every list.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageParams {
    /// Items per page (default 50).
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<u64>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// One error code as the document shows it.
#[derive(Debug, Clone)]
pub struct ErrorDoc {
    pub code: &'static str,
    pub status: u16,
    pub example: Value,
}

impl ErrorDoc {
    fn of(error: &ApiError) -> Self {
        let mut example = json!({
            "success": false,
            "message": error.message(),
            "code": error.code(),
        });
        if let Some(details) = error.details() {
            example["details"] = details;
        }
        Self {
            code: error.code(),
            status: error.status().as_u16(),
            example,
        }
    }
}

/// Every error code the server answers, each with its status and an example
/// body. Where [`ApiError`] renders the code, the example is its rendering.
pub fn catalogue() -> Vec<ErrorDoc> {
    let example_agent = InUseAgent {
        id: uuid::Uuid::nil(),
        name: "Front desk".into(),
    };
    [
        ApiError::Unauthorized,
        DomainError::Forbidden("staff tokens cannot use the customer API").into(),
        DomainError::NotFound.into(),
        ApiError::MethodNotAllowed,
        ApiError::MalformedJson("EOF while parsing a string at line 1 column 25".into()),
        ApiError::UnsupportedMediaType,
        ApiError::PayloadTooLarge,
        DomainError::Validation(vec![FieldError::new(
            "reason",
            "must be between 10 and 500 characters after trimming (got 3)",
        )])
        .into(),
        DomainError::PhoneNumberInUse(vec![example_agent]).into(),
        DomainError::ReleaseAlreadyPending.into(),
        DomainError::RequestNotPending.into(),
        DomainError::NumberNotActive.into(),
        DomainError::NumberNotReleased.into(),
        DomainError::ReclaimWindowExpired.into(),
        DomainError::ClaimedByOther.into(),
        ApiError::IdempotencyKeyReused,
        ApiError::IdempotencyKeyInUse,
        ApiError::RateLimited {
            retry_after_secs: 1,
        },
        ApiError::Unavailable,
        ApiError::Internal(String::new()),
    ]
    .iter()
    .map(ErrorDoc::of)
    .collect()
}

/// The answers every operation can give, added to each operation of `openapi`:
///
/// - every response carries `x-request-id`;
/// - every endpoint may answer 503 `UNAVAILABLE` (with `Retry-After`) and 500
///   `INTERNAL`;
/// - an authenticated endpoint may answer 401 `UNAUTHORIZED` (with
///   `WWW-Authenticate: Bearer`), 403 `FORBIDDEN` and 429 `RATE_LIMITED` (with
///   `Retry-After`);
/// - an endpoint with an id in its path may answer 404 `NOT_FOUND`;
/// - one with a query string or a body may answer 422 `VALIDATION_ERROR`; one with
///   a JSON body 400 `MALFORMED_JSON`, 415 and 413;
/// - every POST takes an optional `Idempotency-Key` and may answer 422
///   `IDEMPOTENCY_KEY_REUSED`, 409 `IDEMPOTENCY_KEY_IN_USE` and 422
///   `VALIDATION_ERROR` (a malformed key);
///
/// plus the codes the operation names in its `x-error-codes` extension.
#[derive(Debug, Clone, Copy, Default)]
pub struct Conventions;

impl Modify for Conventions {
    fn modify(&self, openapi: &mut OpenApi) {
        let components = openapi.components.get_or_insert_with(Components::new);
        add_components(components);
        let catalogue = catalogue();
        for (path, item) in openapi.paths.paths.iter_mut() {
            for (method, operation) in [
                (HttpMethod::Get, &mut item.get),
                (HttpMethod::Post, &mut item.post),
                (HttpMethod::Patch, &mut item.patch),
                (HttpMethod::Put, &mut item.put),
                (HttpMethod::Delete, &mut item.delete),
            ] {
                if let Some(operation) = operation {
                    apply(&catalogue, path, method, operation);
                }
            }
        }
    }
}

fn header_ref(name: &str) -> Ref {
    Ref::new(format!("#/components/headers/{name}"))
}

fn add_components(components: &mut Components) {
    components
        .schemas
        .insert(ErrorEnvelope::name().into_owned(), ErrorEnvelope::schema());
    let mut dependencies = Vec::new();
    ErrorEnvelope::schemas(&mut dependencies);
    components.schemas.extend(dependencies);
    let string = || ObjectBuilder::new().schema_type(Type::String);
    components.security_schemes.insert(
        CUSTOMER_TOKEN.into(),
        RefOr::T(SecurityScheme::Http(
            HttpBuilder::new()
                .scheme(HttpAuthScheme::Bearer)
                .bearer_format("rd_live_…")
                .description(Some(
                    "A customer API token, `rd_live_…` (`releasedesk admin token create`).",
                ))
                .build(),
        )),
    );
    components.security_schemes.insert(
        STAFF_TOKEN.into(),
        RefOr::T(SecurityScheme::Http(
            HttpBuilder::new()
                .scheme(HttpAuthScheme::Bearer)
                .bearer_format("rd_staff_…")
                .description(Some(
                    "A support staff token, `rd_staff_…` (`releasedesk admin staff create`).",
                ))
                .build(),
        )),
    );
    let headers = [
        (
            "XRequestId",
            "The request's id: the caller's `x-request-id`, or a fresh UUID. Quote it when reporting a problem.",
            string(),
        ),
        (
            "RetryAfter",
            "Seconds to wait before retrying.",
            ObjectBuilder::new()
                .schema_type(Type::Integer)
                .minimum(Some(0)),
        ),
        (
            "WwwAuthenticate",
            "Always `Bearer`.",
            string().enum_values(Some(["Bearer"])),
        ),
    ];
    for (name, description, schema) in headers {
        components.headers.insert(
            name.into(),
            RefOr::T(
                HeaderBuilder::new()
                    .schema(Some(schema))
                    .description(Some(description))
                    .build(),
            ),
        );
    }
    components.parameters.insert(
        "IdempotencyKey".into(),
        RefOr::T(
            ParameterBuilder::new()
                .name("Idempotency-Key")
                .parameter_in(ParameterIn::Header)
                .required(Required::False)
                .description(Some(
                    "Makes a retried POST safe: the same key from the same account with the same \
                     body within 24 h replays the first response (status and body). The same key \
                     with a different body is 422 `IDEMPOTENCY_KEY_REUSED`; while the first \
                     request is still in flight, 409 `IDEMPOTENCY_KEY_IN_USE`. 1 to 255 visible \
                     ASCII characters (`!` to `~`: no spaces); anything else is 422 \
                     `VALIDATION_ERROR`.",
                ))
                .schema(Some(
                    string()
                        .min_length(Some(1))
                        .max_length(Some(255))
                        .pattern(Some("^[!-~]+$")),
                ))
                .build(),
        ),
    );
}

fn apply(catalogue: &[ErrorDoc], path: &str, method: HttpMethod, operation: &mut Operation) {
    let mut codes: Vec<String> = Vec::new();
    let named = operation
        .extensions
        .as_mut()
        .and_then(|extensions| extensions.remove(ERROR_CODES));
    if let Some(Value::Array(named)) = named {
        codes.extend(named.iter().filter_map(Value::as_str).map(str::to_owned));
    }
    let authenticated = operation
        .security
        .as_ref()
        .is_some_and(|requirements| !requirements.is_empty());
    let params = operation.parameters.as_deref().unwrap_or_default();
    let has_query = params.iter().any(|p| match p {
        RefOr::T(p) => p.parameter_in == ParameterIn::Query,
        RefOr::Ref(_) => false,
    });
    let has_body = operation.request_body.is_some();
    let mut add = |list: &[&str]| codes.extend(list.iter().map(|code| (*code).to_owned()));
    if authenticated {
        add(&["UNAUTHORIZED", "FORBIDDEN", "RATE_LIMITED"]);
    }
    if path.contains('{') {
        add(&["NOT_FOUND"]);
    }
    if has_query {
        add(&["VALIDATION_ERROR"]);
    }
    if has_body {
        add(&[
            "MALFORMED_JSON",
            "UNSUPPORTED_MEDIA_TYPE",
            "PAYLOAD_TOO_LARGE",
            "VALIDATION_ERROR",
        ]);
    }
    if method == HttpMethod::Post {
        add(&[
            "IDEMPOTENCY_KEY_REUSED",
            "IDEMPOTENCY_KEY_IN_USE",
            "VALIDATION_ERROR",
        ]);
        operation
            .parameters
            .get_or_insert_with(Vec::new)
            .push(RefOr::Ref(Ref::new(
                "#/components/parameters/IdempotencyKey",
            )));
    }
    add(&["UNAVAILABLE", "INTERNAL"]);

    // The catalogue's FORBIDDEN is the customer API's; staff endpoints refuse
    // customer tokens with their own message.
    let staff_forbidden =
        ErrorDoc::of(&DomainError::Forbidden("this API is for support staff only").into());
    let staff = operation.security.iter().flatten().any(|requirement| {
        serde_json::to_value(requirement).is_ok_and(|value| value.get(STAFF_TOKEN).is_some())
    });
    let mut by_status: BTreeMap<u16, Vec<&ErrorDoc>> = BTreeMap::new();
    for code in &codes {
        let doc = match catalogue.iter().find(|doc| doc.code == code) {
            Some(doc) if staff && doc.code == "FORBIDDEN" => &staff_forbidden,
            Some(doc) => doc,
            None => panic!("{path}: unknown error code {code} in {ERROR_CODES}"),
        };
        let docs = by_status.entry(doc.status).or_default();
        if !docs.iter().any(|d| d.code == doc.code) {
            docs.push(doc);
        }
    }
    for (status, docs) in by_status {
        let names: Vec<&str> = docs.iter().map(|d| d.code).collect();
        let content = ContentBuilder::new()
            .schema(Some(Ref::from_schema_name("ErrorEnvelope")))
            .examples_from_iter(docs.iter().map(|d| {
                (
                    d.code,
                    ExampleBuilder::new()
                        .summary(d.code)
                        .value(Some(d.example.clone())),
                )
            }))
            .build();
        let mut response = ResponseBuilder::new()
            .description(format!("`{}`", names.join("`, `")))
            .content("application/json", content)
            .header_ref("x-request-id", header_ref("XRequestId"));
        if status == 429 || status == 503 {
            response = response.header_ref("Retry-After", header_ref("RetryAfter"));
        }
        if status == 401 {
            response = response.header_ref("WWW-Authenticate", header_ref("WwwAuthenticate"));
        }
        operation
            .responses
            .responses
            .insert(status.to_string(), RefOr::T(response.build()));
    }
    for response in operation.responses.responses.values_mut() {
        if let RefOr::T(response) = response {
            response
                .headers
                .entry("x-request-id".into())
                .or_insert_with(|| RefOr::Ref(header_ref("XRequestId")));
        }
    }
}
