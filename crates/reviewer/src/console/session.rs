//! Console sessions: a signed, expiring, HttpOnly, SameSite=Strict cookie that
//! names the staff member and carries the CSRF token every form must echo.

use std::time::Duration;

use axum::{
    extract::{FromRef, FromRequestParts},
    http::request::Parts,
    response::{IntoResponse, Redirect, Response},
};
use axum_extra::extract::{
    SignedCookieJar,
    cookie::{Cookie, SameSite},
};
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use chrono::Utc;
use releasedesk_store::{StaffPrincipal, Store};
use uuid::Uuid;

use super::ConsoleState;

pub const SESSION_COOKIE: &str = "rd_session";
const LOGIN_CSRF_COOKIE: &str = "rd_login_csrf";
const FLASH_COOKIE: &str = "rd_flash";
const COOKIE_PATH: &str = "/reviewer";
pub const SIGN_IN: &str = "/reviewer/sign-in";

/// A fresh random token for CSRF protection.
pub fn random_token() -> String {
    URL_SAFE_NO_PAD.encode(rand::random::<[u8; 24]>())
}

/// Compares in constant time, so a CSRF check leaks nothing through timing.
pub fn same_token(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

fn cookie(
    name: &'static str,
    value: String,
    secure: bool,
    max_age: Option<Duration>,
) -> Cookie<'static> {
    let mut builder = Cookie::build((name, value))
        .path(COOKIE_PATH)
        .http_only(true)
        .same_site(SameSite::Strict)
        .secure(secure);
    if let Some(age) = max_age {
        let secs = i64::try_from(age.as_secs()).unwrap_or(i64::MAX);
        builder = builder.max_age(cookie::time::Duration::seconds(secs));
    }
    builder.build()
}

fn removal(name: &'static str) -> Cookie<'static> {
    Cookie::build(name).path(COOKIE_PATH).build()
}

/// A signed-in staff member and the session's CSRF token.
pub struct Session {
    pub staff: StaffPrincipal,
    pub csrf: String,
}

impl Session {
    /// Starts a session: the cookie holds `staff_id|expires_unix|csrf`, signed.
    pub fn start(jar: SignedCookieJar, state: &ConsoleState, staff_id: Uuid) -> SignedCookieJar {
        let expires = Utc::now().timestamp()
            + i64::try_from(state.settings.session_ttl.as_secs()).unwrap_or(i64::MAX / 2);
        let value = format!("{staff_id}|{expires}|{}", random_token());
        jar.remove(removal(LOGIN_CSRF_COOKIE)).add(cookie(
            SESSION_COOKIE,
            value,
            state.settings.secure_cookies,
            Some(state.settings.session_ttl),
        ))
    }

    pub fn end(jar: SignedCookieJar) -> SignedCookieJar {
        jar.remove(removal(SESSION_COOKIE))
    }

    pub fn csrf_ok(&self, presented: Option<&str>) -> bool {
        presented.is_some_and(|token| same_token(token, &self.csrf))
    }
}

fn parse_session(value: &str) -> Option<(Uuid, String)> {
    let mut parts = value.splitn(3, '|');
    let staff_id = Uuid::parse_str(parts.next()?).ok()?;
    let expires: i64 = parts.next()?.parse().ok()?;
    let csrf = parts.next()?.to_owned();
    (expires > Utc::now().timestamp() && !csrf.is_empty()).then_some((staff_id, csrf))
}

impl FromRequestParts<ConsoleState> for Session {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &ConsoleState,
    ) -> Result<Self, Self::Rejection> {
        let jar = SignedCookieJar::from_request_parts(parts, state)
            .await
            .map_err(IntoResponse::into_response)?;
        let session = jar
            .get(SESSION_COOKIE)
            .and_then(|c| parse_session(c.value()));
        let Some((staff_id, csrf)) = session else {
            return Err(Redirect::to(SIGN_IN).into_response());
        };
        match Store::from_ref(state).active_staff(staff_id).await {
            Ok(Some(staff)) => Ok(Session { staff, csrf }),
            Ok(None) => Err((Session::end(jar), Redirect::to(SIGN_IN)).into_response()),
            Err(error) => Err(
                super::ConsoleError::from(releasedesk_api::ApiError::from(error)).into_response(),
            ),
        }
    }
}

/// The sign-in form's CSRF token: a signed cookie the form must echo.
pub fn login_csrf(jar: SignedCookieJar, secure: bool) -> (SignedCookieJar, String) {
    if let Some(existing) = jar.get(LOGIN_CSRF_COOKIE) {
        let token = existing.value().to_owned();
        return (jar, token);
    }
    let token = random_token();
    (
        jar.add(cookie(LOGIN_CSRF_COOKIE, token.clone(), secure, None)),
        token,
    )
}

pub fn login_csrf_ok(jar: &SignedCookieJar, presented: Option<&str>) -> bool {
    match (jar.get(LOGIN_CSRF_COOKIE), presented) {
        (Some(expected), Some(presented)) => same_token(expected.value(), presented),
        _ => false,
    }
}

/// A one-shot message shown on the next page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Flash {
    /// `ok` or `error`, used as a CSS class.
    pub kind: &'static str,
    pub message: String,
}

pub fn set_flash(jar: SignedCookieJar, ok: bool, message: &str, secure: bool) -> SignedCookieJar {
    let kind = if ok { "ok" } else { "error" };
    jar.add(cookie(
        FLASH_COOKIE,
        format!("{kind}|{message}"),
        secure,
        None,
    ))
}

pub fn take_flash(jar: SignedCookieJar) -> (SignedCookieJar, Option<Flash>) {
    let flash = jar.get(FLASH_COOKIE).and_then(|c| {
        let (kind, message) = c.value().split_once('|')?;
        let kind = if kind == "ok" { "ok" } else { "error" };
        Some(Flash {
            kind,
            message: message.to_owned(),
        })
    });
    match flash {
        Some(flash) => (jar.remove(removal(FLASH_COOKIE)), Some(flash)),
        None => (jar, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expired_or_garbled_sessions_are_rejected() {
        let id = Uuid::now_v7();
        let future = Utc::now().timestamp() + 60;
        assert_eq!(
            parse_session(&format!("{id}|{future}|abc")),
            Some((id, "abc".to_owned()))
        );
        assert_eq!(
            parse_session(&format!("{id}|{}|abc", Utc::now().timestamp() - 1)),
            None
        );
        assert_eq!(parse_session(&format!("{id}|{future}|")), None);
        assert_eq!(parse_session("nonsense"), None);
    }

    #[test]
    fn token_comparison() {
        assert!(same_token("abc", "abc"));
        assert!(!same_token("abc", "abd"));
        assert!(!same_token("abc", "abcd"));
    }
}
