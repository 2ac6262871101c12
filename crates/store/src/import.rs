//! Bulk import of numbers into an account (admin CLI): all rows or none, in one
//! transaction, with multi-row inserts.

use std::collections::HashMap;

use chrono::{DateTime, SubsecRound, Utc};
use releasedesk_domain::{DomainError, E164, FriendlyName, Money, NumberStatus, time::now};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QuerySelect,
};
use uuid::Uuid;

use crate::{
    Store, StoreError,
    entity::{account, phone_number},
    error::is_unique_violation,
};

/// Rows per `INSERT`: 18 columns × 500 rows stays well below the bind-parameter
/// limits of SQLite (32,766) and PostgreSQL (65,535).
const INSERT_CHUNK: usize = 500;
/// E.164 values per `IN (…)` look-up.
const LOOKUP_CHUNK: usize = 1000;

/// One number of an import, already parsed.
#[derive(Debug, Clone)]
pub struct ImportRow {
    pub e164: E164,
    pub friendly_name: Option<FriendlyName>,
    /// Defaults to the time of the import.
    pub purchased_at: Option<DateTime<Utc>>,
    pub monthly_price: Money,
}

/// What an import did. Either every row was inserted or none was.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImportOutcome {
    /// Every row was inserted, in one transaction.
    Imported(u64),
    /// Nothing was inserted: the rows at these indices (into the input) name
    /// numbers that are already in the inventory.
    AlreadyInInventory(Vec<usize>),
    /// Nothing was inserted: the rows at these indices repeat a number listed
    /// earlier in the same import (callers are expected to catch this first; the
    /// database's unique index is the last word).
    DuplicateInImport(Vec<usize>),
}

/// Indices of `rows` whose number is already in the inventory.
async fn already_in_inventory(
    db: &impl ConnectionTrait,
    rows: &[ImportRow],
) -> Result<Vec<usize>, StoreError> {
    let mut found = Vec::new();
    for (chunk_no, chunk) in rows.chunks(LOOKUP_CHUNK).enumerate() {
        let wanted: Vec<&str> = chunk.iter().map(|r| r.e164.as_str()).collect();
        let existing: Vec<String> = phone_number::Entity::find()
            .select_only()
            .column(phone_number::Column::E164)
            .filter(phone_number::Column::E164.is_in(wanted))
            .into_tuple()
            .all(db)
            .await?;
        if existing.is_empty() {
            continue;
        }
        let existing: std::collections::HashSet<String> = existing.into_iter().collect();
        found.extend(
            chunk
                .iter()
                .enumerate()
                .filter(|(_, row)| existing.contains(row.e164.as_str()))
                .map(|(i, _)| chunk_no * LOOKUP_CHUNK + i),
        );
    }
    Ok(found)
}

/// Indices of rows that repeat a number listed at a lower index.
fn repeated(rows: &[ImportRow]) -> Vec<usize> {
    let mut first: HashMap<&str, usize> = HashMap::with_capacity(rows.len());
    rows.iter()
        .enumerate()
        .filter(|(i, row)| *first.entry(row.e164.as_str()).or_insert(*i) != *i)
        .map(|(i, _)| i)
        .collect()
}

impl Store {
    /// Puts every row into the account as an `active` number, in ONE transaction:
    /// all rows or none. Numbers already in the inventory are looked up inside the
    /// transaction; a unique violation at insert time (a number added concurrently,
    /// or listed twice) rolls everything back and is reported, never half-applied.
    /// `progress` is told how many rows are inserted so far after each batch.
    pub async fn import_numbers(
        &self,
        account_id: Uuid,
        rows: &[ImportRow],
        progress: &(dyn Fn(u64) + Send + Sync),
    ) -> Result<ImportOutcome, StoreError> {
        let (txn, _turn) = crate::db::begin_write(&self.shared.write_gate).await?;
        if account::Entity::find_by_id(account_id)
            .one(&txn)
            .await?
            .is_none()
        {
            return Err(DomainError::NotFound.into());
        }
        let existing = already_in_inventory(&txn, rows).await?;
        if !existing.is_empty() {
            txn.rollback().await?;
            return Ok(ImportOutcome::AlreadyInInventory(existing));
        }
        let at = now();
        let currency = self.policy().currency.clone();
        let mut inserted = 0u64;
        for chunk in rows.chunks(INSERT_CHUNK) {
            let models = chunk.iter().map(|row| {
                let purchased_at = row.purchased_at.map_or(at, |t| t.trunc_subsecs(6));
                phone_number::ActiveModel {
                    id: Set(releasedesk_domain::new_id()),
                    e164: Set(row.e164.as_str().to_owned()),
                    account_id: Set(Some(account_id)),
                    status: Set(NumberStatus::Active.as_str().into()),
                    purchased_at: Set(purchased_at),
                    billing_cycle_started_at: Set(purchased_at),
                    monthly_price_minor: Set(row.monthly_price.minor()),
                    currency: Set(currency.clone()),
                    friendly_name: Set(row.friendly_name.as_ref().map(|n| n.as_str().to_owned())),
                    email_to_sms: Set(None),
                    sms_webhook_url: Set(None),
                    voice_webhook_url: Set(None),
                    released_at: Set(None),
                    reclaimable_until: Set(None),
                    available_after: Set(None),
                    released_from_account: Set(None),
                    created_at: Set(at),
                    updated_at: Set(at),
                }
            });
            match phone_number::Entity::insert_many(models)
                .exec_without_returning(&txn)
                .await
            {
                Ok(n) => inserted += n,
                Err(e) if is_unique_violation(&e) => {
                    txn.rollback().await?;
                    return self.explain_conflict(rows).await;
                }
                Err(e) => return Err(e.into()),
            }
            progress(inserted);
        }
        txn.commit().await?;
        Ok(ImportOutcome::Imported(inserted))
    }

    /// After a rolled-back import: which rows collided, and with what.
    async fn explain_conflict(&self, rows: &[ImportRow]) -> Result<ImportOutcome, StoreError> {
        let existing = already_in_inventory(&self.shared.db, rows).await?;
        if !existing.is_empty() {
            return Ok(ImportOutcome::AlreadyInInventory(existing));
        }
        Ok(ImportOutcome::DuplicateInImport(repeated(rows)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(e164: &str) -> ImportRow {
        ImportRow {
            e164: E164::parse(e164).expect("valid E.164"),
            friendly_name: None,
            purchased_at: None,
            monthly_price: Money::from_minor(115),
        }
    }

    #[test]
    fn repeated_names_every_row_after_the_first_occurrence() {
        let rows = [
            row("+15550000001"),
            row("+15550000002"),
            row("+15550000001"),
            row("+15550000001"),
        ];
        assert_eq!(repeated(&rows), vec![2, 3]);
    }
}
