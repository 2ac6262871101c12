//! The connection a store reads on, which refuses writes.

use sea_orm::{
    ConnectionTrait, DatabaseConnection, DbBackend, DbErr, ExecResult, QueryResult, Statement,
};

/// The pool, for reads only.
///
/// A store writes in a write turn ([`crate::db::WriteGate`]): on SQLite on its
/// one writer connection, so that its writers queue in this process instead of
/// sleeping in SQLite's busy handler, and that connection's page cache stays
/// warm; on PostgreSQL after the foreground writers. A write sent to the pool
/// instead would still work, only slower and outside the queue, so nothing
/// would show it but a benchmark. This connection refuses it: every statement
/// sea-orm writes with goes through `execute` here (it is told there is no
/// `RETURNING`, which would make inserts and updates queries), and a query
/// handed to it with a writing keyword outside quotes and comments is
/// refused too.
#[derive(Clone)]
pub(crate) struct Reads(DatabaseConnection);

impl Reads {
    pub(crate) fn new(pool: DatabaseConnection) -> Self {
        Self(pool)
    }

    /// The pool without the guard, for what is neither a read nor an
    /// operation's write: migrations (under their own lock), pings and
    /// `EXPLAIN`s.
    pub(crate) fn unguarded(&self) -> &DatabaseConnection {
        &self.0
    }
}

#[async_trait::async_trait]
impl ConnectionTrait for Reads {
    fn get_database_backend(&self) -> DbBackend {
        self.0.get_database_backend()
    }

    async fn execute_raw(&self, stmt: Statement) -> Result<ExecResult, DbErr> {
        Err(refused(&stmt.sql))
    }

    async fn execute_unprepared(&self, sql: &str) -> Result<ExecResult, DbErr> {
        Err(refused(sql))
    }

    async fn query_one_raw(&self, stmt: Statement) -> Result<Option<QueryResult>, DbErr> {
        read_only(&stmt.sql)?;
        self.0.query_one_raw(stmt).await
    }

    async fn query_all_raw(&self, stmt: Statement) -> Result<Vec<QueryResult>, DbErr> {
        read_only(&stmt.sql)?;
        self.0.query_all_raw(stmt).await
    }

    fn support_returning(&self) -> bool {
        false
    }
}

/// Refuses a statement that writes: one that starts with a writing keyword,
/// or has `INSERT`, `UPDATE`, `DELETE` or `MERGE` as a word of its own
/// outside quotes and comments anywhere (a `WITH` whose part writes, a
/// locking read).
fn read_only(sql: &str) -> Result<(), DbErr> {
    let mut words = unquoted_words(sql);
    let first = words.next().unwrap_or_default();
    let writes = first.eq_ignore_ascii_case("REPLACE")
        || std::iter::once(first).chain(words).any(|word| {
            ["INSERT", "UPDATE", "DELETE", "MERGE"]
                .iter()
                .any(|keyword| word.eq_ignore_ascii_case(keyword))
        });
    if writes { Err(refused(sql)) } else { Ok(()) }
}

/// What the lexer of [`unquoted_words`] is inside of.
#[derive(Clone, Copy)]
enum Skipping {
    Quote(char),
    /// `--` to the end of the line.
    LineComment,
    /// `/*` to the next `*/` (PostgreSQL nests them; taken here as SQLite
    /// does, so a nested one's words after its first `*/` are looked at:
    /// a read refused, never a write let through).
    BlockComment,
}

/// The words of `sql` (runs of letters, digits and `_`) outside quoted
/// strings and identifiers and outside comments (where a quote opens
/// nothing, so it cannot hide the words after it).
fn unquoted_words(sql: &str) -> impl Iterator<Item = &str> {
    let mut skipping = None;
    let mut start = None;
    let mut previous = ' ';
    sql.char_indices()
        .chain(std::iter::once((sql.len(), ' ')))
        .filter_map(move |(i, c)| {
            let after = std::mem::replace(&mut previous, c);
            match skipping {
                Some(Skipping::Quote(open)) if c == open => skipping = None,
                Some(Skipping::LineComment) if c == '\n' => skipping = None,
                Some(Skipping::BlockComment) if after == '*' && c == '/' => {
                    skipping = None;
                    // The `/` closed a comment: it does not open another.
                    previous = ' ';
                }
                Some(_) => {}
                None if c.is_ascii_alphanumeric() || c == '_' => {
                    start.get_or_insert(i);
                }
                None => {
                    skipping = match (after, c) {
                        ('-', '-') => Some(Skipping::LineComment),
                        ('/', '*') => {
                            // The `*` opened a comment: it does not close it.
                            previous = ' ';
                            Some(Skipping::BlockComment)
                        }
                        (_, '\'' | '"' | '`') => Some(Skipping::Quote(c)),
                        _ => None,
                    };
                    return start.take().map(|from| &sql[from..i]);
                }
            }
            None
        })
}

fn refused(sql: &str) -> DbErr {
    DbErr::Custom(format!(
        "a store write outside its write turn (a bug: write in a turn, see db::WriteGate): {sql}"
    ))
}

#[cfg(test)]
mod tests {
    use releasedesk_migrations::{Migrator, MigratorTrait};
    use sea_orm::{ActiveModelTrait, EntityTrait, Set};

    use super::*;
    use crate::{DbOptions, connect, entity::account};

    async fn reads() -> Reads {
        let pool = connect(&DbOptions::new("sqlite::memory:")).await.unwrap();
        let db = pool.sea_orm();
        Migrator::up(&db, None).await.unwrap();
        Reads::new(db)
    }

    #[tokio::test]
    async fn reads_pass_and_sea_orm_s_writes_are_refused() {
        let reads = reads().await;
        assert!(
            account::Entity::find()
                .all(&reads)
                .await
                .unwrap()
                .is_empty()
        );
        let insert = account::ActiveModel {
            id: Set(uuid::Uuid::now_v7()),
            name: Set("Acme".into()),
            email: Set("ops@acme.example".into()),
            created_at: Set(chrono::Utc::now()),
        }
        .insert(&reads)
        .await;
        let error = insert.expect_err("an insert on the read connection");
        assert!(
            error.to_string().contains("outside its write turn"),
            "{error}"
        );
        let delete = account::Entity::delete_many().exec(&reads).await;
        assert!(delete.is_err(), "a delete on the read connection");
        let accounts = account::Entity::find().all(reads.unguarded()).await;
        assert!(accounts.unwrap().is_empty(), "the refused insert wrote");
    }

    #[test]
    fn a_query_that_writes_is_refused_and_one_that_reads_is_not() {
        assert!(read_only("  insert into accounts (id) values (1) returning id").is_err());
        assert!(read_only("UPDATE release_requests SET status = 'x' RETURNING id").is_err());
        assert!(read_only("DELETE FROM outbox").is_err());
        assert!(read_only("SELECT id FROM release_requests").is_ok());
        assert!(read_only("WITH r AS (SELECT 1) SELECT * FROM r").is_ok());
        assert!(read_only("select updated_at from release_requests").is_ok());
        assert!(read_only("REPLACE INTO accounts (id) VALUES (1)").is_err());
        assert!(read_only("SELECT replace(name, 'a', 'b') FROM accounts").is_ok());
    }

    #[test]
    fn a_query_with_a_writing_part_is_refused() {
        let writes = [
            "WITH gone AS (DELETE FROM outbox RETURNING id) SELECT count(*) FROM gone",
            "with r as (select 1) insert into accounts (id) select * from r returning id",
            "SELECT id FROM release_requests WHERE status = 'pending' FOR UPDATE SKIP LOCKED",
            "WITH m AS (MERGE INTO accounts USING x ON true WHEN MATCHED THEN DO NOTHING) SELECT 1",
            // A quote in a comment opens nothing that could hide what follows.
            "SELECT id FROM accounts -- don't\n FOR UPDATE",
            "SELECT id /* it's */ FROM accounts FOR UPDATE",
            "SELECT id /*/ still a comment */ FROM accounts FOR UPDATE",
        ];
        for sql in writes {
            assert!(read_only(sql).is_err(), "{sql}");
        }
        let reads = [
            "SELECT 'delete me', \"update\" FROM accounts WHERE note = 'it''s an insert'",
            "SELECT deleted_at, inserted_by, merged FROM accounts",
            "SELECT id -- not an update\nFROM accounts",
            "SELECT /* delete? no */ id FROM accounts /**/",
            "SELECT 10-1 AS nine, 4/2 AS two, 2*3 AS six FROM accounts",
        ];
        for sql in reads {
            assert!(read_only(sql).is_ok(), "{sql}");
        }
    }
}
