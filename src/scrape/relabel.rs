//! Prometheus-style relabeling of discovered targets: `keep`, `drop`, `replace`, `labelmap`,
//! `labelkeep`, `labeldrop`, and `hashmod` (Prometheus's hash, so a sharding rule carries over
//! from a Prometheus config unchanged).

use std::collections::BTreeMap;

use regex::Regex;
use serde::Deserialize;

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum RelabelAction {
    #[default]
    Replace,
    Keep,
    Drop,
    Labelmap,
    Labelkeep,
    Labeldrop,
    /// `target_label` = the MD5 of the joined source values, last 8 bytes big-endian, modulo
    /// `modulus`: with `keep` on it, replicas without `cluster.peers` split targets.
    Hashmod,
}

/// One rule, with Prometheus's field names and defaults (`separator: ;`, `regex: (.*)`,
/// `replacement: $1`, `action: replace`). The regex is anchored at both ends.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct RelabelConfig {
    pub source_labels: Vec<String>,
    pub separator: String,
    pub regex: String,
    pub target_label: Option<String>,
    pub replacement: String,
    pub action: RelabelAction,
    /// For `hashmod`.
    pub modulus: u64,
}

impl Default for RelabelConfig {
    fn default() -> Self {
        Self {
            source_labels: Vec::new(),
            separator: ";".into(),
            regex: "(.*)".into(),
            target_label: None,
            replacement: "$1".into(),
            action: RelabelAction::Replace,
            modulus: 0,
        }
    }
}

impl RelabelConfig {
    fn compiled(&self) -> Result<Regex, regex::Error> {
        Regex::new(&format!("^(?:{})$", self.regex))
    }

    pub fn validate(&self) -> Result<(), String> {
        self.compiled()
            .map_err(|err| format!("regex {:?}: {err}", self.regex))?;
        if self.action == RelabelAction::Replace && self.target_label.as_deref().unwrap_or("").is_empty() {
            return Err("replace needs a target_label".into());
        }
        if matches!(self.action, RelabelAction::Keep | RelabelAction::Drop) && self.source_labels.is_empty() {
            return Err("keep and drop need source_labels".into());
        }
        if self.action == RelabelAction::Hashmod
            && (self.modulus == 0 || self.target_label.as_deref().unwrap_or("").is_empty())
        {
            return Err("hashmod needs a target_label and a modulus above 0".into());
        }
        Ok(())
    }
}

/// Rules compiled once.
#[derive(Debug, Clone)]
pub struct Relabeler {
    rules: Vec<(RelabelConfig, Regex)>,
}

impl Relabeler {
    pub fn new(rules: &[RelabelConfig]) -> Result<Self, String> {
        rules
            .iter()
            .map(|rule| {
                rule.validate()?;
                Ok((rule.clone(), rule.compiled().map_err(|err| err.to_string())?))
            })
            .collect::<Result<Vec<_>, String>>()
            .map(|rules| Self { rules })
    }

    /// Applies every rule in order; None when a rule drops the target.
    pub fn apply(&self, mut labels: BTreeMap<String, String>) -> Option<BTreeMap<String, String>> {
        for (rule, regex) in &self.rules {
            let value = rule
                .source_labels
                .iter()
                .map(|name| labels.get(name).map_or("", String::as_str))
                .collect::<Vec<_>>()
                .join(&rule.separator);
            match rule.action {
                RelabelAction::Keep if !regex.is_match(&value) => return None,
                RelabelAction::Drop if regex.is_match(&value) => return None,
                RelabelAction::Keep | RelabelAction::Drop => {}
                RelabelAction::Replace => {
                    let Some(captures) = regex.captures(&value) else {
                        continue;
                    };
                    let mut target = String::new();
                    captures.expand(rule.target_label.as_deref().unwrap_or(""), &mut target);
                    let mut replacement = String::new();
                    captures.expand(&rule.replacement, &mut replacement);
                    if target.is_empty() {
                        continue;
                    }
                    if replacement.is_empty() {
                        labels.remove(&target);
                    } else {
                        labels.insert(target, replacement);
                    }
                }
                RelabelAction::Labelkeep => labels.retain(|name, _| regex.is_match(name)),
                RelabelAction::Labeldrop => labels.retain(|name, _| !regex.is_match(name)),
                RelabelAction::Hashmod => {
                    use md5::Digest;
                    let hash = md5::Md5::digest(value.as_bytes());
                    let tail: [u8; 8] = hash[8..16].try_into().expect("an MD5 hash has 16 bytes");
                    let shard = u64::from_be_bytes(tail) % rule.modulus;
                    labels.insert(rule.target_label.clone().unwrap_or_default(), shard.to_string());
                }
                RelabelAction::Labelmap => {
                    let mapped: Vec<(String, String)> = labels
                        .iter()
                        .filter_map(|(name, value)| {
                            let captures = regex.captures(name)?;
                            let mut new_name = String::new();
                            captures.expand(&rule.replacement, &mut new_name);
                            (!new_name.is_empty()).then(|| (new_name, value.clone()))
                        })
                        .collect();
                    labels.extend(mapped);
                }
            }
        }
        Some(labels)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn rules(yaml: &str) -> Relabeler {
        Relabeler::new(&serde_yaml::from_str::<Vec<RelabelConfig>>(yaml).unwrap()).unwrap()
    }

    #[test]
    fn keep_drop_replace_labelmap() {
        let relabeler = rules(
            r#"
- source_labels: [__meta_kubernetes_pod_annotation_profiles_grafana_com_cpu_scrape]
  regex: "true"
  action: keep
- source_labels: [__meta_kubernetes_namespace]
  regex: kube-.*
  action: drop
- source_labels: [__meta_kubernetes_namespace, __meta_kubernetes_pod_container_name]
  separator: /
  target_label: service_name
- source_labels: [__address__]
  regex: "([^:]+):\\d+"
  replacement: "${1}:6060"
  target_label: __address__
- regex: __meta_kubernetes_pod_label_(.+)
  action: labelmap
"#,
        );
        let pod = labels(&[
            ("__address__", "10.0.0.5:8080"),
            ("__meta_kubernetes_namespace", "shop"),
            ("__meta_kubernetes_pod_container_name", "cart"),
            (
                "__meta_kubernetes_pod_annotation_profiles_grafana_com_cpu_scrape",
                "true",
            ),
            ("__meta_kubernetes_pod_label_team", "payments"),
        ]);
        let out = relabeler.apply(pod.clone()).unwrap();
        assert_eq!(out["service_name"], "shop/cart");
        assert_eq!(out["__address__"], "10.0.0.5:6060");
        assert_eq!(out["team"], "payments");

        let mut system = pod.clone();
        system.insert("__meta_kubernetes_namespace".into(), "kube-system".into());
        assert!(relabeler.apply(system).is_none(), "dropped");
        let mut off = pod;
        off.insert(
            "__meta_kubernetes_pod_annotation_profiles_grafana_com_cpu_scrape".into(),
            "false".into(),
        );
        assert!(relabeler.apply(off).is_none(), "not kept");
    }

    /// `hashmod` as Prometheus computes it, checked against Python's hashlib on the same input.
    #[test]
    fn hashmod_shards_like_prometheus_and_labelkeep_labeldrop() {
        let relabeler = rules(
            r#"
- source_labels: [__address__]
  modulus: 7
  target_label: __tmp_shard
  action: hashmod
- regex: __meta_.*
  action: labeldrop
"#,
        );
        let addresses: Vec<String> = (0..40)
            .map(|i| format!("10.1.{}.{}:6060", i / 7, i * 13 % 251))
            .collect();
        let script = "import hashlib, sys\nfor a in sys.argv[1:]:\n    print(int.from_bytes(hashlib.md5(a.encode()).digest()[8:], 'big') % 7)";
        let output = std::process::Command::new("python3")
            .arg("-c")
            .arg(script)
            .args(&addresses)
            .output()
            .expect("python3");
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        let expected: Vec<String> = String::from_utf8(output.stdout)
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect();
        let shards: Vec<String> = addresses
            .iter()
            .map(|address| {
                let out = relabeler
                    .apply(labels(&[("__address__", address), ("__meta_kubernetes_pod_name", "p")]))
                    .unwrap();
                assert!(!out.contains_key("__meta_kubernetes_pod_name"), "labeldrop");
                out["__tmp_shard"].clone()
            })
            .collect();
        assert_eq!(shards, expected);
        assert!(
            shards.iter().collect::<std::collections::BTreeSet<_>>().len() > 3,
            "spread: {shards:?}"
        );

        let keep_only = rules("- regex: __address__|job\n  action: labelkeep\n");
        let out = keep_only
            .apply(labels(&[("__address__", "a:1"), ("job", "j"), ("team", "t")]))
            .unwrap();
        assert_eq!(out.keys().collect::<Vec<_>>(), ["__address__", "job"]);
        assert!(
            Relabeler::new(&[RelabelConfig {
                action: RelabelAction::Hashmod,
                target_label: Some("shard".into()),
                ..RelabelConfig::default()
            }])
            .is_err(),
            "hashmod without a modulus"
        );
    }

    #[test]
    fn invalid_rules_are_refused() {
        assert!(
            Relabeler::new(&[RelabelConfig {
                regex: "(".into(),
                target_label: Some("x".into()),
                ..RelabelConfig::default()
            }])
            .is_err()
        );
        assert!(
            Relabeler::new(&[RelabelConfig::default()]).is_err(),
            "replace without target"
        );
    }
}
