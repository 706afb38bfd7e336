//! Sorted, deduplicated label sets.

use std::fmt;

/// Errors in a label set supplied by a client.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LabelError {
    #[error("label name is empty")]
    EmptyName,
    #[error("duplicate label name {0:?}")]
    Duplicate(String),
    #[error("label name {name:?} is longer than {limit} bytes")]
    NameTooLong { name: String, limit: usize },
    #[error("value of label {name:?} is longer than {limit} bytes")]
    ValueTooLong { name: String, limit: usize },
    #[error("series has {count} labels, more than the limit of {limit}")]
    TooMany { count: usize, limit: usize },
    #[error(
        "label name {0:?} is invalid: it must start with a letter, `_` or `.` and hold only \
         letters, digits, `_` and `.`"
    )]
    InvalidName(String),
    #[error("value of label {0:?} contains a control character")]
    ControlCharacter(String),
}

/// Whether `name` is a label name Pyrite stores: Pyroscope's legacy names with dots allowed
/// (`[a-zA-Z_.][a-zA-Z0-9_.]*`, the names its sanitiser keeps, OpenTelemetry's `service.name`
/// among them), which is exactly what a selector can name unquoted.
pub fn valid_label_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    !bytes.is_empty()
        && !bytes[0].is_ascii_digit()
        && bytes
            .iter()
            .all(|&byte| byte.is_ascii_alphanumeric() || byte == b'_' || byte == b'.')
}

/// Maximum label name length, as Pyroscope's `max_label_name_length` default.
pub const MAX_LABEL_NAME_LENGTH: usize = 1024;
/// Maximum label value length, as Pyroscope's `max_label_value_length` default.
pub const MAX_LABEL_VALUE_LENGTH: usize = 2048;
/// Maximum labels per series, as Pyroscope's `max_label_names_per_series` default.
pub const MAX_LABELS_PER_SERIES: usize = 30;

/// A label set sorted by name, names unique.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Labels(Vec<(String, String)>);

impl Labels {
    /// Builds a label set, refusing duplicates and over-long names or values. Empty values are
    /// dropped, as Prometheus treats `k=""` as absent.
    pub fn new(pairs: impl IntoIterator<Item = (String, String)>) -> Result<Self, LabelError> {
        let mut pairs: Vec<(String, String)> = pairs.into_iter().filter(|(_, value)| !value.is_empty()).collect();
        pairs.sort();
        for window in pairs.windows(2) {
            if window[0].0 == window[1].0 {
                return Err(LabelError::Duplicate(window[0].0.clone()));
            }
        }
        for (name, value) in &pairs {
            if name.is_empty() {
                return Err(LabelError::EmptyName);
            }
            if name.len() > MAX_LABEL_NAME_LENGTH {
                return Err(LabelError::NameTooLong {
                    name: name.chars().take(64).collect(),
                    limit: MAX_LABEL_NAME_LENGTH,
                });
            }
            if !valid_label_name(name) {
                return Err(LabelError::InvalidName(name.chars().take(64).collect()));
            }
            // NUL and other control characters break the text formats values end up in
            // (folded lines, Prometheus exposition, log lines) and no profiler means them.
            if value.chars().any(char::is_control) {
                return Err(LabelError::ControlCharacter(name.clone()));
            }
            if value.len() > MAX_LABEL_VALUE_LENGTH {
                return Err(LabelError::ValueTooLong {
                    name: name.clone(),
                    limit: MAX_LABEL_VALUE_LENGTH,
                });
            }
        }
        if pairs.len() > MAX_LABELS_PER_SERIES + 8 {
            // A few private labels (`__name__`, `__profile_type__`, …) come on top of user labels.
            return Err(LabelError::TooMany {
                count: pairs.len(),
                limit: MAX_LABELS_PER_SERIES,
            });
        }
        Ok(Self(pairs))
    }

    /// Value of `name`, if present.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .binary_search_by(|(key, _)| key.as_str().cmp(name))
            .ok()
            .map(|index| self.0[index].1.as_str())
    }

    /// Sets `name` to `value`, replacing any earlier value; an empty value removes the label.
    pub fn set(&mut self, name: &str, value: &str) {
        match self.0.binary_search_by(|(key, _)| key.as_str().cmp(name)) {
            Ok(index) if value.is_empty() => {
                self.0.remove(index);
            }
            Ok(index) => self.0[index].1 = value.to_string(),
            Err(_) if value.is_empty() => {}
            Err(index) => self.0.insert(index, (name.to_string(), value.to_string())),
        }
    }

    /// Removes `name` and returns its value.
    pub fn remove(&mut self, name: &str) -> Option<String> {
        let index = self.0.binary_search_by(|(key, _)| key.as_str().cmp(name)).ok()?;
        Some(self.0.remove(index).1)
    }

    /// Pairs in name order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(name, value)| (name.as_str(), value.as_str()))
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Only the labels whose names are in `names`.
    pub fn project(&self, names: &[String]) -> Labels {
        Labels(
            self.0
                .iter()
                .filter(|(name, _)| names.iter().any(|n| n == name))
                .cloned()
                .collect(),
        )
    }

    /// As protobuf label pairs.
    pub fn to_pairs(&self) -> Vec<crate::proto::types::v1::LabelPair> {
        self.0
            .iter()
            .map(|(name, value)| crate::proto::types::v1::LabelPair {
                name: name.clone(),
                value: value.clone(),
            })
            .collect()
    }

    /// From protobuf label pairs.
    pub fn from_pairs(pairs: &[crate::proto::types::v1::LabelPair]) -> Result<Self, LabelError> {
        Self::new(pairs.iter().map(|pair| (pair.name.clone(), pair.value.clone())))
    }
}

impl fmt::Display for Labels {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("{")?;
        for (index, (name, value)) in self.0.iter().enumerate() {
            if index > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{name}={value:?}")?;
        }
        f.write_str("}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sorted_and_unique() {
        let labels = Labels::new([("b".into(), "2".into()), ("a".into(), "1".into())]).unwrap();
        assert_eq!(labels.iter().collect::<Vec<_>>(), vec![("a", "1"), ("b", "2")]);
        assert_eq!(
            Labels::new([("a".into(), "1".into()), ("a".into(), "2".into())]),
            Err(LabelError::Duplicate("a".into()))
        );
    }

    #[test]
    fn names_follow_the_selector_grammar_and_values_have_no_control_characters() {
        for name in ["service_name", "service.name", "__name__", "_x", ".dot", "a1"] {
            assert!(Labels::new([(name.into(), "v".into())]).is_ok(), "{name}");
        }
        for name in ["a b", "1a", "a-b", "a=b", "é", "a\0"] {
            assert_eq!(
                Labels::new([(name.into(), "v".into())]),
                Err(LabelError::InvalidName(name.into())),
                "{name}"
            );
        }
        assert_eq!(
            Labels::new([("a".into(), "x\0y".into())]),
            Err(LabelError::ControlCharacter("a".into()))
        );
        assert!(Labels::new([("a".into(), "tab\there".into())]).is_err());
        assert!(Labels::new([("a".into(), "ünïcode and spaces ok".into())]).is_ok());
    }

    #[test]
    fn set_and_remove_keep_order() {
        let mut labels = Labels::default();
        labels.set("z", "1");
        labels.set("a", "2");
        labels.set("z", "3");
        assert_eq!(labels.to_string(), r#"{a="2", z="3"}"#);
        assert_eq!(labels.remove("a").as_deref(), Some("2"));
        assert_eq!(labels.get("z"), Some("3"));
    }
}
