//! Channels (downstream provider accounts). Credentials are encrypted before they are stored
//! and only the dispatch path ever decrypts them.

use msghub_actors::provider::ChannelType;
use msghub_actors::store::ChannelSpec;
use sea_orm::{DbErr, QueryResult};

use super::crypto::Crypto;
use super::{Db, now_ms};

#[derive(Debug, Clone)]
pub struct ChannelRow {
    pub id: i64,
    pub channel_type: String,
    pub name: String,
    pub rate_per_second: u32,
    pub enabled: bool,
    pub created_at: i64,
    pub updated_at: i64,
    /// Encrypted form; see [`Crypto`].
    pub credentials_sealed: String,
}

pub struct NewChannel<'a> {
    pub channel_type: ChannelType,
    pub name: &'a str,
    pub credentials: &'a serde_json::Value,
    pub rate_per_second: u32,
    pub enabled: bool,
}

#[derive(Default)]
pub struct ChannelPatch {
    pub name: Option<String>,
    pub credentials: Option<serde_json::Value>,
    pub rate_per_second: Option<u32>,
    pub enabled: Option<bool>,
}

const COLUMNS: &str =
    "id, channel_type, name, credentials, rate_per_second, enabled, created_at, updated_at";

fn row(r: &QueryResult) -> Result<ChannelRow, DbErr> {
    let rate: i32 = r.try_get("", "rate_per_second")?;
    Ok(ChannelRow {
        id: r.try_get("", "id")?,
        channel_type: r.try_get("", "channel_type")?,
        name: r.try_get("", "name")?,
        rate_per_second: u32::try_from(rate).unwrap_or(0),
        enabled: r.try_get("", "enabled")?,
        created_at: r.try_get("", "created_at")?,
        updated_at: r.try_get("", "updated_at")?,
        credentials_sealed: r.try_get("", "credentials")?,
    })
}

fn seal(crypto: &Crypto, credentials: &serde_json::Value) -> Result<String, DbErr> {
    crypto
        .encrypt(credentials.to_string().as_bytes())
        .map_err(|e| DbErr::Custom(e.to_string()))
}

impl Db {
    pub async fn create_channel(
        &self,
        crypto: &Crypto,
        new: NewChannel<'_>,
    ) -> Result<ChannelRow, DbErr> {
        use sea_orm::ConnectionTrait;
        let now = now_ms();
        let sql = "INSERT INTO channels (channel_type, name, credentials, rate_per_second, enabled, created_at, updated_at) \
                   VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING id";
        let stmt = self.stmt(
            sql,
            vec![
                new.channel_type.code().into(),
                new.name.into(),
                seal(crypto, new.credentials)?.into(),
                i32::try_from(new.rate_per_second)
                    .unwrap_or(i32::MAX)
                    .into(),
                new.enabled.into(),
                now.into(),
                now.into(),
            ],
        );
        let id: i64 = self
            .write()
            .query_one_raw(stmt)
            .await?
            .ok_or(DbErr::RecordNotInserted)?
            .try_get("", "id")?;
        let stmt = self.stmt(
            &format!("SELECT {COLUMNS} FROM channels WHERE id = ?"),
            vec![id.into()],
        );
        self.write()
            .query_one_raw(stmt)
            .await?
            .as_ref()
            .map(row)
            .transpose()?
            .ok_or(DbErr::RecordNotInserted)
    }

    pub async fn channel_row(&self, id: i64) -> Result<Option<ChannelRow>, DbErr> {
        let r = self
            .query_one(
                &format!("SELECT {COLUMNS} FROM channels WHERE id = ?"),
                vec![id.into()],
            )
            .await?;
        r.as_ref().map(row).transpose()
    }

    pub async fn list_channels(&self) -> Result<Vec<ChannelRow>, DbErr> {
        let rows = self
            .query_all(
                &format!("SELECT {COLUMNS} FROM channels ORDER BY id"),
                vec![],
            )
            .await?;
        rows.iter().map(row).collect()
    }

    pub async fn update_channel(
        &self,
        crypto: &Crypto,
        id: i64,
        patch: ChannelPatch,
    ) -> Result<bool, DbErr> {
        let sealed = patch
            .credentials
            .as_ref()
            .map(|c| seal(crypto, c))
            .transpose()?;
        let n = self
            .execute(
                "UPDATE channels SET name = COALESCE(?, name), credentials = COALESCE(?, credentials), \
                 rate_per_second = COALESCE(?, rate_per_second), enabled = COALESCE(?, enabled), updated_at = ? \
                 WHERE id = ?",
                vec![
                    patch.name.into(),
                    sealed.into(),
                    patch.rate_per_second.map(|r| i32::try_from(r).unwrap_or(i32::MAX)).into(),
                    patch.enabled.into(),
                    now_ms().into(),
                    id.into(),
                ],
            )
            .await?;
        Ok(n > 0)
    }

    /// The channel with decrypted credentials, for the dispatch path only.
    pub async fn channel_spec(
        &self,
        crypto: &Crypto,
        id: i64,
    ) -> Result<Option<ChannelSpec>, DbErr> {
        let Some(row) = self.channel_row(id).await? else {
            return Ok(None);
        };
        let channel_type = ChannelType::from_code(&row.channel_type).ok_or_else(|| {
            DbErr::Custom(format!(
                "channel {id} has unknown type {}",
                row.channel_type
            ))
        })?;
        let plain = crypto
            .decrypt(&row.credentials_sealed)
            .map_err(|e| DbErr::Custom(format!("channel {id}: {e}")))?;
        let credentials = serde_json::from_slice(&plain)
            .map_err(|e| DbErr::Custom(format!("channel {id}: {e}")))?;
        Ok(Some(ChannelSpec {
            id,
            channel_type,
            credentials,
            rate_per_second: row.rate_per_second,
            enabled: row.enabled,
            version: row.updated_at,
        }))
    }

    /// Decrypted credentials for masking on read.
    pub fn open_credentials(
        &self,
        crypto: &Crypto,
        row: &ChannelRow,
    ) -> Result<serde_json::Value, DbErr> {
        let plain = crypto
            .decrypt(&row.credentials_sealed)
            .map_err(|e| DbErr::Custom(format!("channel {}: {e}", row.id)))?;
        serde_json::from_slice(&plain)
            .map_err(|e| DbErr::Custom(format!("channel {}: {e}", row.id)))
    }
}
