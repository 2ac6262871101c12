//! Reviewer request bodies and the queue's query string.

use releasedesk_api::{
    ApiError,
    body::{Fields, one_of, page, required},
};
use releasedesk_domain::{DomainError, Note, RequestStatus};
use releasedesk_store::{ClaimFilter, OutboxStatus, PageRequest, QueueFilter, QueueOrder};
use serde::Deserialize;

/// An approval's optional note.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
pub struct ApproveBody {
    /// Up to 1000 characters; empty counts as none.
    #[schema(max_length = 1000)]
    pub(crate) note: Option<String>,
}

impl ApproveBody {
    /// The optional note; an empty note counts as none.
    pub fn parse(self) -> Result<Option<Note>, ApiError> {
        match self.note.filter(|n| !n.trim().is_empty()) {
            None => Ok(None),
            Some(note) => Ok(Some(Note::parse(&note)?)),
        }
    }
}

/// A cancellation's note, sent to the customer.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct CancelBody {
    /// 1 to 1000 characters after trimming.
    #[schema(value_type = String, min_length = 1, max_length = 1000, example = "The number is still in use by your IVR.")]
    pub(crate) note: Option<String>,
}

impl CancelBody {
    pub fn parse(self) -> Result<Note, ApiError> {
        required("note", self.note, Note::parse)
    }
}

/// `?status=&order=&q=&claimed=&limit=&cursor=`.
#[derive(Debug, Default, Deserialize)]
pub struct QueueQuery {
    pub status: Option<String>,
    pub order: Option<String>,
    pub q: Option<String>,
    pub claimed: Option<String>,
    pub limit: Option<String>,
    pub cursor: Option<String>,
}

fn order(raw: &str) -> Result<QueueOrder, DomainError> {
    match raw {
        "oldest" => Ok(QueueOrder::Oldest),
        "newest" => Ok(QueueOrder::Newest),
        _ => Err(DomainError::invalid(
            "order",
            "must be one of: oldest, newest",
        )),
    }
}

fn claimed(raw: &str) -> Result<ClaimFilter, DomainError> {
    match raw {
        "mine" => Ok(ClaimFilter::Mine),
        "unclaimed" => Ok(ClaimFilter::Unclaimed),
        "any" => Ok(ClaimFilter::Any),
        _ => Err(DomainError::invalid(
            "claimed",
            "must be one of: mine, unclaimed, any",
        )),
    }
}

impl QueueQuery {
    /// Empty values (as an HTML form sends them) count as absent.
    fn value(raw: &Option<String>) -> Option<&str> {
        raw.as_deref().map(str::trim).filter(|v| !v.is_empty())
    }

    pub fn parse(&self) -> Result<(QueueFilter, PageRequest), ApiError> {
        let mut f = Fields::default();
        let statuses: Vec<&str> = RequestStatus::ALL.iter().map(|s| s.as_str()).collect();
        let status =
            one_of::<RequestStatus>(&mut f, "status", Self::value(&self.status), &statuses);
        let order = Self::value(&self.order).map(order).transpose();
        let order = f.take(order).map(Option::unwrap_or_default);
        let claimed = Self::value(&self.claimed).map(claimed).transpose();
        let claimed = f.take(claimed).map(Option::unwrap_or_default);
        let page = page(&mut f, Self::value(&self.limit), Self::value(&self.cursor));
        let filter = status
            .zip(order)
            .zip(claimed)
            .map(|((status, order), claimed)| QueueFilter {
                status,
                order,
                search: Self::value(&self.q).map(str::to_owned),
                claimed,
            });
        f.finish(filter.zip(page))
    }
}

/// `?status=&limit=&cursor=` for the outbox.
#[derive(Debug, Default, Deserialize)]
pub struct OutboxQuery {
    pub status: Option<String>,
    pub limit: Option<String>,
    pub cursor: Option<String>,
}

impl OutboxQuery {
    pub fn parse(&self) -> Result<(OutboxStatus, PageRequest), ApiError> {
        let mut f = Fields::default();
        let status = match QueueQuery::value(&self.status) {
            None => Some(OutboxStatus::Dead),
            Some(raw) => f.take(raw.parse()),
        };
        let page = page(
            &mut f,
            QueueQuery::value(&self.limit),
            QueueQuery::value(&self.cursor),
        );
        f.finish(status.zip(page))
    }
}
