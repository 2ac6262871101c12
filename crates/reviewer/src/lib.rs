//! Support staff's side of ReleaseDesk: the review queue as a JSON API under
//! `/reviewer/api/v1` and as a server-rendered console under `/reviewer/`. Both
//! call the same store operations as every other front end.

mod api;
mod body;
mod console;

use axum::Router;
use releasedesk_store::Store;

pub use api::openapi;
pub use console::ConsoleSettings;

/// The reviewer API and console.
pub fn router(store: Store, console: ConsoleSettings) -> Router {
    Router::new()
        .nest("/reviewer/api/v1", api::router(store.clone()))
        .merge(console::router(store, console))
}
