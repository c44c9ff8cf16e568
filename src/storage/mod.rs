//! Storage: the only module that talks to the database (sea-orm over SQLite or Postgres).
//!
//! SQL is written once with `?` placeholders in the subset both engines share; [`Db::stmt`]
//! renumbers them for Postgres. On SQLite every write goes through a single-connection pool,
//! the engine's own rule (one writer at a time) made explicit so writers queue instead of
//! failing with `SQLITE_BUSY`; reads use a separate pool and WAL snapshots.

pub mod callbacks;
pub mod channels;
pub mod crypto;
pub mod dispatch;
pub mod messages;
pub mod receipts;
pub mod rules;
pub mod sources;
pub mod users;

use std::time::Duration;

use msghub_migrations::{Migrator, MigratorTrait};
use sea_orm::sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous};
use sea_orm::{
    ConnectOptions, ConnectionTrait, Database, DatabaseBackend, DatabaseConnection, DbErr,
    QueryResult, Statement, Value,
};

use crate::settings::DatabaseSettings;

pub use sea_orm::DbErr as StorageError;

#[derive(Clone)]
pub struct Db {
    read: DatabaseConnection,
    write: DatabaseConnection,
    backend: DatabaseBackend,
}

/// Unix time in milliseconds, the unit of every stored timestamp.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

impl Db {
    /// Connect (creating the SQLite file and its folder if needed) and run pending migrations.
    pub async fn connect(settings: &DatabaseSettings) -> Result<Db, DbErr> {
        let url = settings.url.as_str();
        let db = if url.starts_with("sqlite:") {
            prepare_sqlite_dir(url)?;
            let sync = match settings.sqlite_synchronous.as_str() {
                "normal" => SqliteSynchronous::Normal,
                "off" => SqliteSynchronous::Off,
                _ => SqliteSynchronous::Full,
            };
            // The writer gets a larger page cache (it touches the hot indexes of every insert);
            // readers keep SQLite's small default so memory stays flat as the pool grows.
            let sqlite = |max: u32, cache_kib: i64| {
                let mut opts = ConnectOptions::new(url.to_string());
                opts.max_connections(max)
                    .min_connections(1)
                    .sqlx_logging(false)
                    .map_sqlx_sqlite_opts(move |o: SqliteConnectOptions| {
                        o.journal_mode(SqliteJournalMode::Wal)
                            .synchronous(sync)
                            .busy_timeout(Duration::from_secs(30))
                            .pragma("cache_size", format!("-{cache_kib}"))
                            .pragma("temp_store", "memory")
                    });
                opts
            };
            let write = Database::connect(sqlite(1, 16 * 1024)).await?;
            let read = Database::connect(sqlite(settings.max_connections.max(1), 2 * 1024)).await?;
            Db {
                read,
                write,
                backend: DatabaseBackend::Sqlite,
            }
        } else {
            let mut opts = ConnectOptions::new(url.to_string());
            opts.max_connections(settings.max_connections.max(2))
                .sqlx_logging(false)
                .acquire_timeout(Duration::from_secs(30));
            let conn = Database::connect(opts).await?;
            Db {
                read: conn.clone(),
                write: conn,
                backend: DatabaseBackend::Postgres,
            }
        };
        Migrator::up(&db.write, None).await?;
        Ok(db)
    }

    pub fn backend(&self) -> DatabaseBackend {
        self.backend
    }

    /// The pool for reads that need no transaction.
    pub fn read(&self) -> &DatabaseConnection {
        &self.read
    }

    /// The pool for writes and transactions.
    pub fn write(&self) -> &DatabaseConnection {
        &self.write
    }

    /// A statement for this backend from `?`-placeholder SQL.
    pub fn stmt(&self, sql: &str, values: Vec<Value>) -> Statement {
        Statement::from_sql_and_values(self.backend, self.placeholders(sql), values)
    }

    fn placeholders(&self, sql: &str) -> String {
        if self.backend != DatabaseBackend::Postgres {
            return sql.to_string();
        }
        let mut out = String::with_capacity(sql.len() + 16);
        let mut n = 0;
        for c in sql.chars() {
            if c == '?' {
                n += 1;
                out.push('$');
                out.push_str(&n.to_string());
            } else {
                out.push(c);
            }
        }
        out
    }

    pub async fn ping(&self) -> Result<(), DbErr> {
        self.read.execute_unprepared("SELECT 1").await.map(|_| ())
    }

    pub async fn query_all(
        &self,
        sql: &str,
        values: Vec<Value>,
    ) -> Result<Vec<QueryResult>, DbErr> {
        self.read.query_all_raw(self.stmt(sql, values)).await
    }

    pub async fn query_one(
        &self,
        sql: &str,
        values: Vec<Value>,
    ) -> Result<Option<QueryResult>, DbErr> {
        self.read.query_one_raw(self.stmt(sql, values)).await
    }

    /// A statement that writes and returns a row (`INSERT/UPDATE … RETURNING`).
    pub async fn query_one_rw(
        &self,
        sql: &str,
        values: Vec<Value>,
    ) -> Result<Option<QueryResult>, DbErr> {
        self.write.query_one_raw(self.stmt(sql, values)).await
    }

    pub async fn execute(&self, sql: &str, values: Vec<Value>) -> Result<u64, DbErr> {
        Ok(self
            .write
            .execute_raw(self.stmt(sql, values))
            .await?
            .rows_affected())
    }
}

/// `(?, ?, ?), (?, ?, ?)` for `rows` rows of `cols` columns.
pub fn value_rows(rows: usize, cols: usize) -> String {
    let one = format!("({})", vec!["?"; cols].join(", "));
    vec![one; rows].join(", ")
}

/// `?, ?, ?` for an `IN (...)` list.
pub fn in_list(n: usize) -> String {
    vec!["?"; n].join(", ")
}

fn prepare_sqlite_dir(url: &str) -> Result<(), DbErr> {
    let path = url.trim_start_matches("sqlite:").trim_start_matches("//");
    let path = path.split('?').next().unwrap_or_default();
    if path.is_empty() || path == ":memory:" {
        return Ok(());
    }
    if let Some(dir) = std::path::Path::new(path).parent()
        && !dir.as_os_str().is_empty()
    {
        std::fs::create_dir_all(dir)
            .map_err(|e| DbErr::Custom(format!("creating {}: {e}", dir.display())))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn value_rows_and_in_lists_have_the_right_shape() {
        assert_eq!(value_rows(2, 3), "(?, ?, ?), (?, ?, ?)");
        assert_eq!(in_list(3), "?, ?, ?");
    }
}
