//! Pyroscope profile type IDs: `name:sample_type:sample_unit:period_type:period_unit`.

use std::fmt;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProfileTypeError {
    #[error("profile type {0:?} must have 5 parts `name:sample_type:sample_unit:period_type:period_unit`")]
    Parts(String),
    #[error("profile type {0:?} has an empty name, sample type or sample unit")]
    Empty(String),
    #[error("profile type {0:?} has a part with a control character")]
    ControlCharacter(String),
}

/// One series kind: which sample type of which profile.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ProfileType {
    pub name: String,
    pub sample_type: String,
    pub sample_unit: String,
    pub period_type: String,
    pub period_unit: String,
}

impl ProfileType {
    /// Parses an ID; a sixth `:delta` part is accepted and ignored, as Pyroscope does.
    pub fn parse(id: &str) -> Result<Self, ProfileTypeError> {
        let parts: Vec<&str> = id.split(':').collect();
        let parts = match parts.as_slice() {
            [a, b, c, d, e] | [a, b, c, d, e, "delta"] => [*a, *b, *c, *d, *e],
            _ => return Err(ProfileTypeError::Parts(id.to_string())),
        };
        let profile_type = Self {
            name: parts[0].to_string(),
            sample_type: parts[1].to_string(),
            sample_unit: parts[2].to_string(),
            period_type: parts[3].to_string(),
            period_unit: parts[4].to_string(),
        };
        profile_type.check()?;
        Ok(profile_type)
    }

    /// The rule every stored profile type obeys, at ingest as when read back: name, sample type
    /// and unit non-empty, no part holding `:` (the ID would not parse back) or a control
    /// character.
    pub fn check(&self) -> Result<(), ProfileTypeError> {
        let parts = [
            &self.name,
            &self.sample_type,
            &self.sample_unit,
            &self.period_type,
            &self.period_unit,
        ];
        if parts.iter().any(|part| part.contains(':')) {
            return Err(ProfileTypeError::Parts(self.id()));
        }
        if parts[..3].iter().any(|part| part.is_empty()) {
            return Err(ProfileTypeError::Empty(self.id()));
        }
        if parts.iter().any(|part| part.chars().any(char::is_control)) {
            return Err(ProfileTypeError::ControlCharacter(self.id()));
        }
        Ok(())
    }

    /// The ID string.
    pub fn id(&self) -> String {
        self.to_string()
    }

    pub fn to_proto(&self) -> crate::proto::types::v1::ProfileType {
        crate::proto::types::v1::ProfileType {
            id: self.id(),
            name: self.name.clone(),
            sample_type: self.sample_type.clone(),
            sample_unit: self.sample_unit.clone(),
            period_type: self.period_type.clone(),
            period_unit: self.period_unit.clone(),
        }
    }
}

impl fmt::Display for ProfileType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}:{}:{}",
            self.name, self.sample_type, self.sample_unit, self.period_type, self.period_unit
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_errors() {
        let id = "process_cpu:cpu:nanoseconds:cpu:nanoseconds";
        assert_eq!(ProfileType::parse(id).unwrap().id(), id);
        assert_eq!(
            ProfileType::parse("memory:inuse_space:bytes::").unwrap().period_type,
            ""
        );
        assert!(ProfileType::parse("memory:inuse_space:bytes::").is_ok());
        assert!(ProfileType::parse("a:b:c:d:e:delta").is_ok());
        assert!(matches!(ProfileType::parse("cpu"), Err(ProfileTypeError::Parts(_))));
        assert!(matches!(ProfileType::parse("::::"), Err(ProfileTypeError::Empty(_))));
    }
}
