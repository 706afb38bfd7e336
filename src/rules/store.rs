//! Where a tenant's recording rules live: one JSON object per rule at
//! `<tenant>/recording_rules/<id>.json` in the block store (as `settings` keeps settings), so
//! every replica reads the same rules and deleting a tenant's prefix deletes them. Each write
//! bumps the rule's generation; an upsert naming another generation than the stored one is
//! refused, so of two clients editing one rule the second is told to read it again.

use bytes::Bytes;

use super::{Rule, RuleError, profile_type_of};
use crate::model::Tenant;
use crate::proto::settings::v1 as proto;
use crate::storage::Storage;

#[derive(Clone)]
pub struct RulesStore {
    storage: Storage,
}

impl RulesStore {
    pub fn new(storage: Storage) -> Self {
        Self { storage }
    }

    fn prefix(tenant: &Tenant) -> String {
        format!("{tenant}/recording_rules")
    }

    fn key(tenant: &Tenant, id: &str) -> String {
        format!("{}/{id}.json", Self::prefix(tenant))
    }

    /// Every stored rule of `tenant`, by id.
    pub async fn list(&self, tenant: &Tenant) -> Result<Vec<proto::RecordingRule>, RuleError> {
        let mut rules = Vec::new();
        for object in self.storage.list_objects(&Self::prefix(tenant)).await? {
            if let Some(rule) = self.read(&object.key).await? {
                rules.push(rule);
            }
        }
        rules.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(rules)
    }

    pub async fn get(&self, tenant: &Tenant, id: &str) -> Result<Option<proto::RecordingRule>, RuleError> {
        super::check_id(id)?;
        self.read(&Self::key(tenant, id)).await
    }

    /// Checks and stores an upserted rule; returns what was stored. `max_rules` bounds the
    /// tenant's stored rules (a new rule past it is refused).
    pub async fn upsert(
        &self,
        tenant: &Tenant,
        request: proto::UpsertRecordingRuleRequest,
        max_rules: usize,
    ) -> Result<proto::RecordingRule, RuleError> {
        let id = match request.id.trim() {
            "" => generate_id(),
            id => id.to_string(),
        };
        let mut rule = proto::RecordingRule {
            id,
            metric_name: request.metric_name.trim().to_string(),
            profile_type: String::new(),
            matchers: request.matchers,
            group_by: request.group_by,
            external_labels: request.external_labels,
            generation: 1,
            stacktrace_filter: request.stacktrace_filter,
            provisioned: false,
        };
        if request.generation < 0 {
            return Err(RuleError::Invalid("generation must not be negative".into()));
        }
        Rule::compile(&rule)?;
        rule.profile_type = profile_type_of(&rule);
        let key = Self::key(tenant, &rule.id);
        match self.read(&key).await? {
            Some(stored) => {
                if request.generation != 0 && request.generation != stored.generation {
                    return Err(RuleError::Conflict {
                        id: rule.id,
                        stored: stored.generation,
                        given: request.generation,
                    });
                }
                rule.generation = stored.generation + 1;
            }
            None => {
                if self.storage.list_objects(&Self::prefix(tenant)).await?.len() >= max_rules {
                    return Err(RuleError::TooMany { limit: max_rules });
                }
            }
        }
        let json = serde_json::to_vec(&rule).expect("a rule serializes");
        self.storage.put(&key, Bytes::from(json)).await?;
        Ok(rule)
    }

    /// Removes a rule; removing one that does not exist is no error (as Pyroscope).
    pub async fn delete(&self, tenant: &Tenant, id: &str) -> Result<(), RuleError> {
        super::check_id(id)?;
        self.storage.delete(&Self::key(tenant, id)).await?;
        Ok(())
    }

    async fn read(&self, key: &str) -> Result<Option<proto::RecordingRule>, RuleError> {
        let Some(raw) = self.storage.get_if_exists(key).await? else {
            return Ok(None);
        };
        serde_json::from_slice(&raw)
            .map(Some)
            .map_err(|err| RuleError::Corrupt {
                key: key.to_string(),
                reason: err.to_string(),
            })
    }
}

/// Ten random ASCII letters, as Pyroscope generates rule ids.
fn generate_id() -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
    uuid::Uuid::new_v4().as_bytes()[..10]
        .iter()
        .map(|&byte| ALPHABET[byte as usize % ALPHABET.len()] as char)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upsert(id: &str, generation: i64, metric: &str) -> proto::UpsertRecordingRuleRequest {
        proto::UpsertRecordingRuleRequest {
            id: id.into(),
            metric_name: metric.into(),
            matchers: vec![r#"{__profile_type__="process_cpu:cpu:nanoseconds:cpu:nanoseconds"}"#.into()],
            group_by: vec!["service_name".into()],
            generation,
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn upsert_list_delete_with_generations_and_a_limit() {
        let storage = Storage::new(std::sync::Arc::new(object_store::memory::InMemory::new()));
        let store = RulesStore::new(storage);
        let (a, b) = (Tenant::parse("a").unwrap(), Tenant::parse("b").unwrap());
        let created = store.upsert(&a, upsert("", 0, "pyrite_cpu"), 2).await.unwrap();
        assert_eq!(created.id.len(), 10);
        assert_eq!(created.generation, 1);
        assert_eq!(created.profile_type, "process_cpu:cpu:nanoseconds:cpu:nanoseconds");
        assert!(store.list(&b).await.unwrap().is_empty(), "tenants do not share rules");

        let updated = store
            .upsert(&a, upsert(&created.id, 1, "pyrite_cpu_two"), 2)
            .await
            .unwrap();
        assert_eq!(updated.generation, 2);
        let stale = store.upsert(&a, upsert(&created.id, 1, "pyrite_cpu_three"), 2).await;
        assert!(
            matches!(
                stale,
                Err(RuleError::Conflict {
                    stored: 2,
                    given: 1,
                    ..
                })
            ),
            "{stale:?}"
        );
        let got = store.get(&a, &created.id).await.unwrap().unwrap();
        assert_eq!(got.metric_name, "pyrite_cpu_two");

        store.upsert(&a, upsert("second", 0, "pyrite_x"), 2).await.unwrap();
        let over = store.upsert(&a, upsert("third", 0, "pyrite_x"), 2).await;
        assert!(matches!(over, Err(RuleError::TooMany { limit: 2 })), "{over:?}");
        // Replacing an existing rule is no new rule.
        store.upsert(&a, upsert("second", 0, "pyrite_y"), 2).await.unwrap();
        let invalid = store.upsert(&a, upsert("fourth", 0, "cpu"), 9).await;
        assert!(matches!(invalid, Err(RuleError::Invalid(_))), "{invalid:?}");

        store.delete(&a, "second").await.unwrap();
        store.delete(&a, "second").await.unwrap();
        let ids: Vec<String> = store.list(&a).await.unwrap().into_iter().map(|r| r.id).collect();
        assert_eq!(ids, [created.id]);
        assert!(matches!(store.delete(&a, "../x").await, Err(RuleError::Invalid(_))));
    }
}
