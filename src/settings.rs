//! Per-tenant settings (Pyroscope's `settings.v1`: named string values the Profiles Drilldown
//! app keeps, such as its flame graph node limit), one object per setting at
//! `<tenant>/settings/<name>.json` in the block store, so every replica sees the same ones and
//! deleting a tenant's prefix deletes them too. A write carrying an older `modifiedAt` than the
//! stored one is refused: the later change wins, whichever replica took it.

use bytes::Bytes;

use crate::model::Tenant;
use crate::proto::settings::v1::Setting;
use crate::storage::{Storage, StorageError};

/// Longest setting name; names are `[A-Za-z0-9._-]`, not starting with a dot.
pub const MAX_NAME_LENGTH: usize = 128;
/// Largest setting value, in bytes.
pub const MAX_VALUE_BYTES: usize = 64 * 1024;
/// Most settings one tenant may keep (each is an object a `get` reads).
pub const MAX_SETTINGS_PER_TENANT: usize = 256;

#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(
        "invalid setting name {0:?}: 1 to {MAX_NAME_LENGTH} characters of A-Z a-z 0-9 . _ -, not starting with a dot"
    )]
    Name(String),
    #[error("setting {name:?}: value of {bytes} bytes exceeds the limit of {MAX_VALUE_BYTES}")]
    TooLarge { name: String, bytes: usize },
    #[error("tenant has {MAX_SETTINGS_PER_TENANT} settings already; delete one first")]
    TooMany,
    #[error("setting {name:?} was changed at {stored_ms} ms, after this update's {given_ms} ms")]
    Outdated {
        name: String,
        stored_ms: i64,
        given_ms: i64,
    },
    #[error("setting object {key}: {reason}")]
    Corrupt { key: String, reason: String },
}

impl SettingsError {
    /// Whether the client sent something it can fix (a 4xx), as opposed to a storage fault.
    pub fn is_client_error(&self) -> bool {
        !matches!(self, Self::Storage(_) | Self::Corrupt { .. })
    }
}

impl crate::error::Classify for SettingsError {
    fn class(&self) -> crate::error::ErrorClass {
        use crate::error::ErrorClass;
        match self {
            Self::Outdated { .. } => ErrorClass::Conflict,
            Self::TooMany => ErrorClass::Limited,
            Self::Name(_) | Self::TooLarge { .. } => ErrorClass::Client,
            Self::Storage(err) => crate::error::Classify::class(err),
            Self::Corrupt { .. } => ErrorClass::Internal,
        }
    }
}

/// The settings of every tenant, in object storage.
#[derive(Clone)]
pub struct SettingsStore {
    storage: Storage,
}

impl SettingsStore {
    pub fn new(storage: Storage) -> Self {
        Self { storage }
    }

    fn prefix(tenant: &Tenant) -> String {
        format!("{tenant}/settings")
    }

    fn key(tenant: &Tenant, name: &str) -> String {
        format!("{}/{name}.json", Self::prefix(tenant))
    }

    /// Every setting of `tenant`, by name.
    pub async fn get(&self, tenant: &Tenant) -> Result<Vec<Setting>, SettingsError> {
        let mut settings = Vec::new();
        for object in self.storage.list_objects(&Self::prefix(tenant)).await? {
            if let Some(setting) = self.read(&object.key).await? {
                settings.push(setting);
            }
        }
        settings.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(settings)
    }

    /// Stores `setting`, stamped now when it carries no `modifiedAt`; returns what was stored.
    pub async fn set(&self, tenant: &Tenant, mut setting: Setting) -> Result<Setting, SettingsError> {
        check_name(&setting.name)?;
        if setting.value.len() > MAX_VALUE_BYTES {
            return Err(SettingsError::TooLarge {
                name: setting.name,
                bytes: setting.value.len(),
            });
        }
        if setting.modified_at == 0 {
            setting.modified_at = crate::now_ms();
        }
        let key = Self::key(tenant, &setting.name);
        match self.read(&key).await? {
            Some(stored) if stored.modified_at > setting.modified_at => {
                return Err(SettingsError::Outdated {
                    name: setting.name,
                    stored_ms: stored.modified_at,
                    given_ms: setting.modified_at,
                });
            }
            Some(_) => {}
            None => {
                if self.storage.list_objects(&Self::prefix(tenant)).await?.len() >= MAX_SETTINGS_PER_TENANT {
                    return Err(SettingsError::TooMany);
                }
            }
        }
        let json = serde_json::to_vec(&setting).expect("a setting serializes");
        self.storage.put(&key, Bytes::from(json)).await?;
        Ok(setting)
    }

    /// Removes a setting; removing one that does not exist is no error.
    pub async fn delete(&self, tenant: &Tenant, name: &str) -> Result<(), SettingsError> {
        check_name(name)?;
        self.storage.delete(&Self::key(tenant, name)).await?;
        Ok(())
    }

    /// One stored setting; `None` if it was deleted meanwhile.
    async fn read(&self, key: &str) -> Result<Option<Setting>, SettingsError> {
        let Some(raw) = self.storage.get_if_exists(key).await? else {
            return Ok(None);
        };
        serde_json::from_slice(&raw)
            .map(Some)
            .map_err(|err| SettingsError::Corrupt {
                key: key.to_string(),
                reason: err.to_string(),
            })
    }
}

fn check_name(name: &str) -> Result<(), SettingsError> {
    let valid = !name.is_empty()
        && name.len() <= MAX_NAME_LENGTH
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'.' | b'_' | b'-'));
    if valid {
        Ok(())
    } else {
        Err(SettingsError::Name(name.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setting(name: &str, value: &str, modified_at: i64) -> Setting {
        Setting {
            name: name.into(),
            value: value.into(),
            modified_at,
        }
    }

    #[tokio::test]
    async fn set_get_delete_per_tenant_and_the_later_change_wins() {
        let storage = Storage::new(std::sync::Arc::new(object_store::memory::InMemory::new()));
        let store = SettingsStore::new(storage);
        let (a, b) = (Tenant::parse("a").unwrap(), Tenant::parse("b").unwrap());
        let stored = store.set(&a, setting("pyroscope.max-nodes", "8192", 0)).await.unwrap();
        assert!(stored.modified_at > 1_700_000_000_000, "stamped now");
        store.set(&a, setting("theme", "dark", 5)).await.unwrap();
        let names: Vec<String> = store.get(&a).await.unwrap().into_iter().map(|s| s.name).collect();
        assert_eq!(names, ["pyroscope.max-nodes", "theme"]);
        assert!(store.get(&b).await.unwrap().is_empty(), "tenants do not share settings");

        let outdated = store.set(&a, setting("theme", "light", 4)).await;
        assert!(matches!(
            outdated,
            Err(SettingsError::Outdated {
                stored_ms: 5,
                given_ms: 4,
                ..
            })
        ));
        store.set(&a, setting("theme", "light", 6)).await.unwrap();
        assert_eq!(store.get(&a).await.unwrap()[1].value, "light");

        store.delete(&a, "theme").await.unwrap();
        store.delete(&a, "theme").await.unwrap();
        assert_eq!(store.get(&a).await.unwrap().len(), 1);

        for bad in ["", ".hidden", "a/b", "x y", &"n".repeat(MAX_NAME_LENGTH + 1)] {
            let refused = store.set(&a, setting(bad, "v", 0)).await;
            assert!(matches!(refused, Err(SettingsError::Name(_))), "{bad:?}: {refused:?}");
        }
        let huge = store.set(&a, setting("big", &"v".repeat(MAX_VALUE_BYTES + 1), 0)).await;
        assert!(matches!(huge, Err(SettingsError::TooLarge { .. })));
    }
}
