//! Success envelopes: `{"success": true, "data": …}`, lists add `next_cursor`.

use axum::{
    Json,
    http::StatusCode,
    response::{IntoResponse, Response},
};
use releasedesk_store::Page;
use serde::Serialize;

/// `200 {"success": true, "data": …}`.
pub struct Data<T>(pub T);

/// `201 {"success": true, "data": …}`.
pub struct Created<T>(pub T);

/// `200 {"success": true, "data": [...], "next_cursor": …}`.
pub struct Listed<T>(pub Page<T>);

#[derive(Serialize)]
struct Envelope<'a, T> {
    success: bool,
    data: &'a T,
}

#[derive(Serialize)]
struct ListEnvelope<'a, T> {
    success: bool,
    data: &'a [T],
    next_cursor: &'a Option<String>,
}

impl<T: Serialize> IntoResponse for Data<T> {
    fn into_response(self) -> Response {
        Json(Envelope {
            success: true,
            data: &self.0,
        })
        .into_response()
    }
}

impl<T: Serialize> IntoResponse for Created<T> {
    fn into_response(self) -> Response {
        (
            StatusCode::CREATED,
            Json(Envelope {
                success: true,
                data: &self.0,
            }),
        )
            .into_response()
    }
}

impl<T: Serialize> IntoResponse for Listed<T> {
    fn into_response(self) -> Response {
        Json(ListEnvelope {
            success: true,
            data: &self.0.items,
            next_cursor: &self.0.next_cursor,
        })
        .into_response()
    }
}
