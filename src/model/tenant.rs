//! Tenant IDs (`X-Scope-OrgID`), validated by the Cortex/Mimir rules.

use std::fmt;

/// The tenant of requests that name none.
pub const DEFAULT_TENANT: &str = "anonymous";
const MAX_TENANT_LENGTH: usize = 150;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TenantError {
    #[error("tenant ID is empty")]
    Empty,
    #[error("tenant ID is {0} bytes long, more than the limit of 150")]
    TooLong(usize),
    #[error("tenant ID {0:?} contains a character outside a-z A-Z 0-9 ! - _ . * ' ( )")]
    BadCharacter(String),
    #[error("tenant ID may not be \".\" or \"..\"")]
    Dots,
}

/// A validated tenant ID; safe as the first component of an object key.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Tenant(String);

impl Tenant {
    pub fn parse(id: &str) -> Result<Self, TenantError> {
        if id.is_empty() {
            return Err(TenantError::Empty);
        }
        if id.len() > MAX_TENANT_LENGTH {
            return Err(TenantError::TooLong(id.len()));
        }
        if id == "." || id == ".." {
            return Err(TenantError::Dots);
        }
        let allowed = |c: char| c.is_ascii_alphanumeric() || "!-_.*'()".contains(c);
        if !id.chars().all(allowed) {
            return Err(TenantError::BadCharacter(id.to_string()));
        }
        Ok(Self(id.to_string()))
    }

    pub fn anonymous() -> Self {
        Self(DEFAULT_TENANT.to_string())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Tenant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation() {
        assert!(Tenant::parse("team-a_1.(x)").is_ok());
        assert_eq!(Tenant::parse(""), Err(TenantError::Empty));
        assert_eq!(Tenant::parse(".."), Err(TenantError::Dots));
        assert!(matches!(Tenant::parse("a/b"), Err(TenantError::BadCharacter(_))));
        assert_eq!(Tenant::parse(&"x".repeat(151)), Err(TenantError::TooLong(151)));
    }
}
