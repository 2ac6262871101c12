//! Extractors whose every rejection renders the contract's envelope.

use axum::{
    body::Bytes,
    extract::{FromRef, FromRequest, FromRequestParts, Request, rejection::BytesRejection},
    http::{StatusCode, header, request::Parts},
};
use releasedesk_domain::DomainError;
use releasedesk_store::{CustomerPrincipal, Principal, StaffPrincipal, Store, is_customer_token};
use serde::de::DeserializeOwned;
use uuid::Uuid;

use crate::ApiError;

/// A JSON body. Wrong content type is 415, unparsable JSON 400, and JSON of the
/// wrong shape 422 with the offending field in `details`.
pub struct Json<T>(pub T);

fn is_json(content_type: Option<&str>) -> bool {
    let Some(mime) = content_type.and_then(|ct| ct.split(';').next()) else {
        return false;
    };
    let mime = mime.trim().to_ascii_lowercase();
    mime == "application/json" || (mime.starts_with("application/") && mime.ends_with("+json"))
}

/// The field a serde error is about: its path, or for a missing field the name in
/// serde's message ("missing field `reason`").
fn field_of(path: &serde_path_to_error::Path, message: &str) -> String {
    let path = path.to_string();
    if path != "." && !path.is_empty() {
        return path;
    }
    message
        .split('`')
        .nth(1)
        .filter(|_| message.starts_with("missing field"))
        .unwrap_or("body")
        .to_owned()
}

/// Reads the body; `None` if it is empty.
async fn body_bytes<S: Send + Sync>(
    req: Request,
    state: &S,
) -> Result<Option<(bool, Bytes)>, ApiError> {
    let json = is_json(
        req.headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok()),
    );
    let bytes = Bytes::from_request(req, state)
        .await
        .map_err(|e: BytesRejection| {
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::PayloadTooLarge
            } else {
                ApiError::MalformedJson("the body could not be read".into())
            }
        })?;
    Ok((!bytes.is_empty()).then_some((json, bytes)))
}

fn parse_json<T: DeserializeOwned>(is_json: bool, bytes: &[u8]) -> Result<T, ApiError> {
    if !is_json {
        return Err(ApiError::UnsupportedMediaType);
    }
    let value: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| ApiError::MalformedJson(e.to_string()))?;
    serde_path_to_error::deserialize(value).map_err(|e| {
        let message = e.inner().to_string();
        ApiError::invalid(field_of(e.path(), &message), message)
    })
}

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for Json<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let json = is_json(
            req.headers()
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok()),
        );
        match body_bytes(req, state).await? {
            Some((json, bytes)) => parse_json(json, &bytes).map(Json),
            None => parse_json(json, b"").map(Json),
        }
    }
}

/// An optional JSON body: an empty body is `None`; a non-empty one must be JSON
/// as for [`Json`].
pub struct MaybeJson<T>(pub Option<T>);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for MaybeJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match body_bytes(req, state).await? {
            Some((json, bytes)) => parse_json(json, &bytes).map(|v| MaybeJson(Some(v))),
            None => Ok(MaybeJson(None)),
        }
    }
}

/// An id from the path. Anything that is not a UUID names nothing, so it is 404.
pub struct PathId(pub Uuid);

impl<S: Send + Sync> FromRequestParts<S> for PathId {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let axum::extract::Path(raw) =
            axum::extract::Path::<String>::from_request_parts(parts, state)
                .await
                .map_err(|_| ApiError::RouteNotFound)?;
        Uuid::parse_str(&raw)
            .map(PathId)
            .map_err(|_| DomainError::NotFound.into())
    }
}

/// A query string. Query structs take strings and parse them into domain types
/// themselves, so a rejection here means the query itself is garbled.
pub struct Query<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for Query<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Query(value)| Query(value))
            .map_err(|e| ApiError::invalid("query", e.body_text()))
    }
}

/// The token of the request's `Authorization: Bearer <token>` header, if any.
pub fn bearer_token(headers: &axum::http::HeaderMap) -> Option<&str> {
    let authorization = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = authorization.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(token.trim())
}

/// The caller: as the guard middleware already authenticated it, or looked up
/// from the bearer token here (routers mounted without the guard).
async fn principal<S>(parts: &Parts, state: &S) -> Result<Principal, ApiError>
where
    Store: FromRef<S>,
{
    if let Some(principal) = parts.extensions.get::<Principal>() {
        return Ok(principal.clone());
    }
    let token = bearer_token(&parts.headers).ok_or(ApiError::Unauthorized)?;
    Store::from_ref(state)
        .authenticate(token)
        .await?
        .ok_or(ApiError::Unauthorized)
}

/// The calling customer: a known, unrevoked `rd_live_` token. Everything the
/// customer API reads or writes is scoped by its account id. A staff token is
/// recognised and refused (403).
pub struct Customer(pub CustomerPrincipal);

impl<S> FromRequestParts<S> for Customer
where
    Store: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match principal(parts, state).await? {
            Principal::Customer(customer) => Ok(Customer(customer)),
            Principal::Staff(_) => {
                Err(DomainError::Forbidden("staff tokens cannot use the customer API").into())
            }
        }
    }
}

/// The caller of a customer write whose own statement checks the token (see
/// `Store::file_request_with_token`), so that the request waits for no
/// look-up of its own first: the customer if the token was already looked up
/// (the guard does for an idempotent POST), else the customer token as sent,
/// unchecked. Anything other than a customer token is authenticated here,
/// as for [`Customer`].
pub enum CustomerCaller {
    Known(CustomerPrincipal),
    Unchecked(String),
}

impl CustomerCaller {
    /// The customer, looked up now if it was not: for an answer that must
    /// not tell an unknown caller more than 401.
    pub async fn check(&self, store: &Store) -> Result<CustomerPrincipal, ApiError> {
        match self {
            Self::Known(customer) => Ok(*customer),
            Self::Unchecked(token) => store
                .authenticate_customer(token)
                .await?
                .ok_or(ApiError::Unauthorized),
        }
    }
}

impl<S> FromRequestParts<S> for CustomerCaller
where
    Store: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        if parts.extensions.get::<Principal>().is_none()
            && let Some(token) = bearer_token(&parts.headers).filter(|t| is_customer_token(t))
        {
            return Ok(Self::Unchecked(token.to_owned()));
        }
        let Customer(customer) = Customer::from_request_parts(parts, state).await?;
        Ok(Self::Known(customer))
    }
}

/// The calling staff member: a known, unrevoked `rd_staff_` token. A customer
/// token is recognised and refused (403).
pub struct Staff(pub StaffPrincipal);

impl<S> FromRequestParts<S> for Staff
where
    Store: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match principal(parts, state).await? {
            Principal::Staff(staff) => Ok(Staff(staff)),
            Principal::Customer(_) => {
                Err(DomainError::Forbidden("this API is for support staff only").into())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_content_types() {
        assert!(is_json(Some("application/json")));
        assert!(is_json(Some("application/json; charset=utf-8")));
        assert!(is_json(Some("application/merge-patch+json")));
        assert!(!is_json(Some("text/plain")));
        assert!(!is_json(None));
    }
}
