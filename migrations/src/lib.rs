//! msghub's schema migrations, run on SQLite and Postgres alike.
//!
//! The SQL is written once in the portable subset both engines share; the only per-backend
//! difference is how an auto-increment primary key is spelled, which [`id_column`] decides.

pub use sea_orm_migration::prelude::*;

mod m0001_core;
mod m0002_strategies;
mod m0003_callbacks;
mod m0004_schedule;
mod m0005_audience_filters;
mod m0006_lean_delivery_indexes;
mod m0007_covering_bindings_index;
mod m0008_step_index_without_judged;
mod m0009_receipt_id_indexes;
mod m0010_suppressions;
mod m0011_soft_bounces;
mod m0012_receipt_pulls;
mod m0013_miniprogram_msgid_index;

pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m0001_core::Migration),
            Box::new(m0002_strategies::Migration),
            Box::new(m0003_callbacks::Migration),
            Box::new(m0004_schedule::Migration),
            Box::new(m0005_audience_filters::Migration),
            Box::new(m0006_lean_delivery_indexes::Migration),
            Box::new(m0007_covering_bindings_index::Migration),
            Box::new(m0008_step_index_without_judged::Migration),
            Box::new(m0009_receipt_id_indexes::Migration),
            Box::new(m0010_suppressions::Migration),
            Box::new(m0011_soft_bounces::Migration),
            Box::new(m0012_receipt_pulls::Migration),
            Box::new(m0013_miniprogram_msgid_index::Migration),
        ]
    }
}

/// Run statements in order (migrations are plain portable SQL).
pub(crate) async fn run<S: AsRef<str>>(
    manager: &SchemaManager<'_>,
    statements: &[S],
) -> Result<(), DbErr> {
    let db = manager.get_connection();
    for sql in statements {
        db.execute_unprepared(sql.as_ref()).await?;
    }
    Ok(())
}

/// The auto-increment 64-bit primary key column, spelled for the connected backend.
pub(crate) fn id_column(backend: sea_orm_migration::sea_orm::DatabaseBackend) -> &'static str {
    match backend {
        sea_orm_migration::sea_orm::DatabaseBackend::Postgres => "id BIGSERIAL PRIMARY KEY",
        _ => "id INTEGER PRIMARY KEY AUTOINCREMENT",
    }
}
