//! Accounts, API tokens and staff: creation (admin CLI, demo) and authentication.

use std::collections::HashMap;

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use releasedesk_domain::{DomainError, EmailAddress, time::now};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QuerySelect,
};
use serde::Serialize;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::{
    Store, StoreError,
    db::one_of,
    entity::{account, api_token, staff},
    error::is_unique_violation,
    group::Group,
};

const CUSTOMER_TOKEN_PREFIX: &str = "rd_live_";
const STAFF_TOKEN_PREFIX: &str = "rd_staff_";

/// A fresh token: a prefix that says what it is, then 32 random bytes.
fn new_token(prefix: &str) -> String {
    let bytes: [u8; 32] = rand::random();
    format!("{prefix}{}", URL_SAFE_NO_PAD.encode(bytes))
}

/// What the database keeps of a token.
pub(crate) fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// Whether `token` says it is a customer token (whether it is known is another
/// matter).
pub fn is_customer_token(token: &str) -> bool {
    token.starts_with(CUSTOMER_TOKEN_PREFIX)
}

/// What the database keeps of `token`, if it is a customer token at all.
pub(crate) fn customer_token_hash(token: &str) -> Option<String> {
    is_customer_token(token).then(|| hash_token(token))
}

#[derive(Debug, Clone, Serialize)]
pub struct CreatedAccount {
    pub id: Uuid,
    pub name: String,
    pub email: String,
}

/// A token, shown once.
#[derive(Debug, Clone, Serialize)]
pub struct CreatedToken {
    pub id: Uuid,
    pub token: String,
}

/// A revoked customer token: when it stopped working.
#[derive(Debug, Clone, Serialize)]
pub struct RevokedToken {
    pub id: Uuid,
    pub revoked_at: chrono::DateTime<chrono::Utc>,
}

/// Which customer token to revoke.
#[derive(Debug, Clone, Copy)]
pub enum TokenRef<'a> {
    /// The id printed by `admin token create`.
    Id(Uuid),
    /// The token itself (`rd_live_…`).
    Secret(&'a str),
}

/// A staff member and their token, shown once.
#[derive(Debug, Clone, Serialize)]
pub struct CreatedStaff {
    pub id: Uuid,
    pub token: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StaffRole {
    Reviewer,
    Admin,
}

impl StaffRole {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Reviewer => "reviewer",
            Self::Admin => "admin",
        }
    }
}

/// A signed-in support staff member.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StaffPrincipal {
    pub id: Uuid,
    pub name: String,
    pub email: String,
    pub role: StaffRole,
}

impl StaffPrincipal {
    pub fn is_admin(&self) -> bool {
        self.role == StaffRole::Admin
    }
}

/// Whoever a bearer token speaks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    Customer(CustomerPrincipal),
    Staff(StaffPrincipal),
}

fn staff_principal(row: staff::Model) -> Result<StaffPrincipal, StoreError> {
    let role = match row.role.as_str() {
        "reviewer" => StaffRole::Reviewer,
        "admin" => StaffRole::Admin,
        other => return Err(StoreError::Corrupt(format!("staff.role {other:?}"))),
    };
    Ok(StaffPrincipal {
        id: row.id,
        name: row.name,
        email: row.email,
        role,
    })
}

/// The account a customer token speaks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CustomerPrincipal {
    pub account_id: Uuid,
    pub token_id: Uuid,
}

/// The account a request or number refers to; its absence is corrupt data (the
/// foreign keys forbid it).
pub(crate) async fn referenced_account(
    db: &impl sea_orm::ConnectionTrait,
    account_id: Uuid,
) -> Result<account::Model, StoreError> {
    referenced_accounts(db, [account_id])
        .await?
        .remove(&account_id)
        .ok_or_else(|| StoreError::Corrupt(format!("account {account_id} is missing")))
}

/// The accounts that requests or numbers refer to, by id, in one query.
pub(crate) async fn referenced_accounts(
    db: &impl sea_orm::ConnectionTrait,
    account_ids: impl IntoIterator<Item = Uuid>,
) -> Result<std::collections::HashMap<Uuid, account::Model>, StoreError> {
    Ok(account::Entity::find()
        .filter(account::Column::Id.is_in(account_ids))
        .all(db)
        .await?
        .into_iter()
        .map(|account| (account.id, account))
        .collect())
}

impl Store {
    pub async fn create_account(
        &self,
        name: &str,
        email: &str,
    ) -> Result<CreatedAccount, StoreError> {
        let name = name.trim();
        if name.is_empty() || name.chars().count() > 200 {
            return Err(
                DomainError::invalid("name", "must be between 1 and 200 characters").into(),
            );
        }
        let email = EmailAddress::parse("email", email)?;
        let row = account::ActiveModel {
            id: Set(releasedesk_domain::new_id()),
            name: Set(name.to_owned()),
            email: Set(email.into_inner()),
            created_at: Set(now()),
        };
        let turn = self.shared.write_gate.turn().await;
        let row = account::Entity::insert(row)
            .exec_with_returning(turn.db())
            .await?;
        Ok(CreatedAccount {
            id: row.id,
            name: row.name,
            email: row.email,
        })
    }

    pub async fn find_account_by_email(
        &self,
        email: &str,
    ) -> Result<Option<CreatedAccount>, StoreError> {
        let row = account::Entity::find()
            .filter(account::Column::Email.eq(email.trim()))
            .one(&self.shared.db)
            .await?;
        Ok(row.map(|row| CreatedAccount {
            id: row.id,
            name: row.name,
            email: row.email,
        }))
    }

    /// Issues a customer API token for an account.
    pub async fn create_token(&self, account_id: Uuid) -> Result<CreatedToken, StoreError> {
        if account::Entity::find_by_id(account_id)
            .one(&self.shared.db)
            .await?
            .is_none()
        {
            return Err(DomainError::NotFound.into());
        }
        let token = new_token(CUSTOMER_TOKEN_PREFIX);
        let id = releasedesk_domain::new_id();
        let turn = self.shared.write_gate.turn().await;
        api_token::Entity::insert(api_token::ActiveModel {
            id: Set(id),
            account_id: Set(account_id),
            token_hash: Set(hash_token(&token)),
            created_at: Set(now()),
            revoked_at: Set(None),
        })
        .exec_without_returning(turn.db())
        .await?;
        Ok(CreatedToken { id, token })
    }

    /// Revokes a customer token: from now on it authenticates nobody. Idempotent:
    /// revoking a revoked token changes nothing and answers the first `revoked_at`.
    /// An unknown token is `NotFound`.
    pub async fn revoke_token(&self, token: TokenRef<'_>) -> Result<RevokedToken, StoreError> {
        let by = match token {
            TokenRef::Id(id) => api_token::Column::Id.eq(id),
            TokenRef::Secret(secret) => api_token::Column::TokenHash.eq(hash_token(secret.trim())),
        };
        // Guarded: only a live token gets a `revoked_at`, so a second revocation
        // keeps the first time.
        let turn = self.shared.write_gate.turn().await;
        api_token::Entity::update_many()
            .col_expr(
                api_token::Column::RevokedAt,
                sea_orm::sea_query::Expr::value(Some(now())),
            )
            .filter(by.clone())
            .filter(api_token::Column::RevokedAt.is_null())
            .exec(turn.db())
            .await?;
        let row = api_token::Entity::find()
            .filter(by)
            .one(&self.shared.db)
            .await?
            .ok_or(DomainError::NotFound)?;
        let revoked_at = row
            .revoked_at
            .ok_or_else(|| StoreError::Corrupt(format!("api token {} not revoked", row.id)))?;
        Ok(RevokedToken {
            id: row.id,
            revoked_at,
        })
    }

    /// Creates a staff member with a fresh staff token.
    pub async fn create_staff(
        &self,
        email: &str,
        name: &str,
        role: StaffRole,
    ) -> Result<CreatedStaff, StoreError> {
        let email = EmailAddress::parse("email", email)?;
        let name = name.trim();
        if name.is_empty() || name.chars().count() > 200 {
            return Err(
                DomainError::invalid("name", "must be between 1 and 200 characters").into(),
            );
        }
        let token = new_token(STAFF_TOKEN_PREFIX);
        let id = releasedesk_domain::new_id();
        let turn = self.shared.write_gate.turn().await;
        let inserted = staff::Entity::insert(staff::ActiveModel {
            id: Set(id),
            email: Set(email.into_inner()),
            name: Set(name.to_owned()),
            role: Set(role.as_str().to_owned()),
            token_hash: Set(hash_token(&token)),
            created_at: Set(now()),
            revoked_at: Set(None),
        })
        .exec_without_returning(turn.db())
        .await;
        match inserted {
            Ok(_) => Ok(CreatedStaff { id, token }),
            Err(e) if is_unique_violation(&e) => {
                Err(DomainError::invalid("email", "a staff member with this email exists").into())
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Gives the staff member with this email a new token (the old one stops
    /// working); `None` if there is no such staff member.
    pub async fn rotate_staff_token(
        &self,
        email: &str,
    ) -> Result<Option<CreatedStaff>, StoreError> {
        let Some(member) = staff::Entity::find()
            .filter(staff::Column::Email.eq(email.trim()))
            .one(&self.shared.db)
            .await?
        else {
            return Ok(None);
        };
        let token = new_token(STAFF_TOKEN_PREFIX);
        let turn = self.shared.write_gate.turn().await;
        staff::Entity::update_many()
            .col_expr(
                staff::Column::TokenHash,
                sea_orm::sea_query::Expr::value(hash_token(&token)),
            )
            .col_expr(
                staff::Column::RevokedAt,
                sea_orm::sea_query::Expr::value(Option::<chrono::DateTime<chrono::Utc>>::None),
            )
            .filter(staff::Column::Id.eq(member.id))
            .exec(turn.db())
            .await?;
        Ok(Some(CreatedStaff {
            id: member.id,
            token,
        }))
    }

    /// Whoever the token speaks for, if it is known and not revoked.
    pub async fn authenticate(&self, token: &str) -> Result<Option<Principal>, StoreError> {
        if token.starts_with(STAFF_TOKEN_PREFIX) {
            return Ok(self.authenticate_staff(token).await?.map(Principal::Staff));
        }
        Ok(self
            .authenticate_customer(token)
            .await?
            .map(Principal::Customer))
    }

    /// The staff member behind a staff token, if known and not revoked.
    pub async fn authenticate_staff(
        &self,
        token: &str,
    ) -> Result<Option<StaffPrincipal>, StoreError> {
        if !token.starts_with(STAFF_TOKEN_PREFIX) {
            return Ok(None);
        }
        let row = staff::Entity::find()
            .filter(staff::Column::TokenHash.eq(hash_token(token)))
            .filter(staff::Column::RevokedAt.is_null())
            .one(&self.shared.db)
            .await?;
        row.map(staff_principal).transpose()
    }

    /// A staff member by id, if not revoked (console sessions re-check this on
    /// every request).
    pub async fn active_staff(&self, staff_id: Uuid) -> Result<Option<StaffPrincipal>, StoreError> {
        let row = staff::Entity::find_by_id(staff_id)
            .filter(staff::Column::RevokedAt.is_null())
            .one(&self.shared.db)
            .await?;
        row.map(staff_principal).transpose()
    }

    /// The account behind a customer token, if the token is known and not revoked.
    ///
    /// Every API request but a filing asks this first (a filing's group reads
    /// its token with its numbers, see `filing`), so concurrent look-ups share
    /// one statement (see `group`): a revocation committed before the request
    /// arrived is always seen.
    pub async fn authenticate_customer(
        &self,
        token: &str,
    ) -> Result<Option<CustomerPrincipal>, StoreError> {
        let Some(hash) = customer_token_hash(token) else {
            return Ok(None);
        };
        self.shared
            .groups
            .customer_tokens
            .submit(hash, || CustomerTokens(self.detached()))
            .await
    }
}

/// The metric with the number of customer tokens looked up per statement.
pub const TOKEN_LOOKUP_BATCH_METRIC: &str = "releasedesk_token_lookup_batch_size";

/// This process's customer token look-ups: requests are token hashes.
pub(crate) struct CustomerTokens(pub(crate) Store);

impl Group for CustomerTokens {
    type Request = String;
    type Answer = Option<CustomerPrincipal>;
    const NAME: &'static str = "token look-up";
    /// 128 hashes are far below either database's limit on bound parameters.
    const MAX: usize = 128;
    const METRIC: &'static str = TOKEN_LOOKUP_BATCH_METRIC;

    async fn perform(
        &self,
        hashes: &[String],
    ) -> Result<Vec<Result<Self::Answer, StoreError>>, StoreError> {
        let found = valid_customer_tokens(&self.0.shared.db, hashes).await?;
        Ok(hashes
            .iter()
            .map(|hash| Ok(found.get(hash).copied()))
            .collect())
    }
}

/// The customer tokens among `hashes` that are known and not revoked, by hash.
pub(crate) async fn valid_customer_tokens(
    db: &impl ConnectionTrait,
    hashes: &[String],
) -> Result<HashMap<String, CustomerPrincipal>, StoreError> {
    let rows = api_token::Entity::find()
        .select_only()
        .column(api_token::Column::TokenHash)
        .column(api_token::Column::Id)
        .column(api_token::Column::AccountId)
        .filter(one_of(
            api_token::Column::TokenHash,
            hashes.to_vec(),
            db.get_database_backend(),
        ))
        .filter(api_token::Column::RevokedAt.is_null())
        .into_tuple::<(String, Uuid, Uuid)>()
        .all(db)
        .await?;
    Ok(rows
        .into_iter()
        .map(|(hash, token_id, account_id)| {
            (
                hash,
                CustomerPrincipal {
                    account_id,
                    token_id,
                },
            )
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use std::{future::Future, time::Duration};

    use releasedesk_domain::{E164, Money, ReleasePolicy};

    use super::*;
    use crate::{DbOptions, NewNumber, StoreSettings, db::connect};

    /// Admin writes (the CLI's, the demo's) queue for the process's write turn
    /// like every other writer: on SQLite one that skipped the queue would
    /// meet the write lock in SQLite's busy handler instead.
    #[tokio::test]
    async fn admin_writes_wait_for_the_write_turn() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!(
            "sqlite://{}?mode=rwc",
            dir.path().join("admin.db").display()
        );
        let day = Duration::from_secs(86_400);
        let settings = StoreSettings {
            policy: ReleasePolicy {
                cooling_off: day * 30,
                reclaim_window: day * 10,
                minimum_term: day * 90,
                early_termination_fee: Money::from_minor(2500),
                currency: "USD".into(),
            },
            staff_email: "support@example.com".into(),
        };
        let store = Store::new(connect(&DbOptions::new(url)).await.unwrap(), settings);
        store.migrate().await.unwrap();

        let account =
            waits_for_the_turn(&store, store.create_account("Acme", "ops@acme.test")).await;
        waits_for_the_turn(&store, store.create_token(account.id)).await;
        waits_for_the_turn(
            &store,
            store.create_staff("riley@acme.test", "Riley", StaffRole::Reviewer),
        )
        .await;
        let number = waits_for_the_turn(
            &store,
            store.add_number(NewNumber {
                account_id: account.id,
                e164: E164::parse("+15550100001").unwrap(),
                purchased_at: None,
                monthly_price: Money::from_minor(100),
            }),
        )
        .await;
        assert_eq!(
            waits_for_the_turn(&store, store.add_sms(number.id, 3)).await,
            3
        );
        store.close().await;
    }

    /// Runs `write` while another writer holds the turn, which it must wait
    /// for, then lets it finish.
    async fn waits_for_the_turn<T>(
        store: &Store,
        write: impl Future<Output = Result<T, StoreError>>,
    ) -> T {
        let turn = store.shared.write_gate.turn().await;
        let mut write = std::pin::pin!(write);
        assert!(
            tokio::time::timeout(Duration::from_millis(50), &mut write)
                .await
                .is_err(),
            "written while another writer had the turn"
        );
        drop(turn);
        write.await.expect("written once the turn is free")
    }

    #[test]
    fn tokens_are_prefixed_random_and_hashed_to_hex_sha256() {
        let a = new_token(CUSTOMER_TOKEN_PREFIX);
        let b = new_token(CUSTOMER_TOKEN_PREFIX);
        assert!(a.starts_with("rd_live_"));
        assert_ne!(a, b);
        assert_eq!(
            a.len(),
            "rd_live_".len() + 43,
            "32 bytes in unpadded base64url"
        );
        let hash = hash_token(&a);
        assert_eq!(hash.len(), 64);
        assert!(!hash.contains(&a[8..]));
        assert_eq!(
            hash_token("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
