//! Who may call the API. Two independent mechanisms:
//!
//! - The **cluster secret** ([`ClusterSecret`]): replicas send it on every `/internal/v1/head`
//!   request (the route that returns any tenant's head data) in [`CLUSTER_SECRET_HEADER`]; the
//!   route answers 401 without it and is not served when no cluster is configured. Read once at
//!   start from `cluster.secret_file`, else `$PYRITE_CLUSTER_SECRET`.
//! - **API tokens** ([`Tokens`], off by default): `auth.tokens_file` maps bearer tokens and
//!   basic-auth users to the tenants they may read and write; re-read when it changes, like the
//!   overrides file. The API layer (`api::auth`) decides which routes need what.
//!
//! Secrets are compared as SHA-256 digests in constant time (`subtle`), so neither their
//! contents nor their lengths show in response times, and no type here prints one: the `Debug`
//! impls are redacted and error messages name an entry, never its credential.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use http::{HeaderMap, HeaderValue};
use parking_lot::RwLock;
use serde::Deserialize;
use subtle::ConstantTimeEq;

use crate::model::Tenant;
use crate::reload::WatchedFile;

/// Header carrying the cluster secret on peer requests: its own header, so it never meets a
/// client's `Authorization` (which a proxy in front may set or strip).
pub const CLUSTER_SECRET_HEADER: &str = "x-pyrite-cluster-secret";
/// Where the cluster secret comes from when `cluster.secret_file` is not set.
pub const CLUSTER_SECRET_ENV: &str = "PYRITE_CLUSTER_SECRET";
/// Shortest secret accepted (cluster secret, plaintext tokens and passwords), in bytes.
pub const MIN_SECRET_BYTES: usize = 16;

type Digest = [u8; 32];

fn sha256(bytes: &[u8]) -> Digest {
    aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bytes)
        .as_ref()
        .try_into()
        .expect("SHA-256 is 32 bytes")
}

fn same(a: &Digest, b: &Digest) -> bool {
    a[..].ct_eq(&b[..]).into()
}

fn parse_hex_digest(text: &str) -> Option<Digest> {
    let text = text.trim();
    if text.len() != 64 || !text.is_ascii() {
        return None;
    }
    let mut digest = [0u8; 32];
    for (i, byte) in digest.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(digest)
}

/// The secret every replica of a cluster shares.
#[derive(Clone)]
pub struct ClusterSecret {
    digest: Digest,
    header: HeaderValue,
}

impl std::fmt::Debug for ClusterSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClusterSecret(redacted)")
    }
}

impl ClusterSecret {
    /// A secret from its text, without surrounding whitespace (a file's final newline): at
    /// least [`MIN_SECRET_BYTES`] of visible ASCII, as it travels in a header.
    pub fn new(text: &str) -> Result<Self, String> {
        let text = text.trim();
        if text.len() < MIN_SECRET_BYTES {
            return Err(format!("the cluster secret must be at least {MIN_SECRET_BYTES} bytes"));
        }
        if !text.bytes().all(|byte| byte.is_ascii_graphic()) {
            return Err("the cluster secret must be visible ASCII (no spaces or control characters)".into());
        }
        let mut header = HeaderValue::from_str(text).map_err(|_| "the cluster secret is not a valid header value")?;
        header.set_sensitive(true);
        Ok(Self {
            digest: sha256(text.as_bytes()),
            header,
        })
    }

    /// The secret from `file` if given, else from `$PYRITE_CLUSTER_SECRET`; `None` if neither.
    pub fn load(file: Option<&Path>) -> Result<Option<Self>, String> {
        let text = match file {
            Some(path) => {
                std::fs::read_to_string(path).map_err(|err| format!("cluster.secret_file {}: {err}", path.display()))?
            }
            None => match std::env::var(CLUSTER_SECRET_ENV) {
                Ok(text) if !text.trim().is_empty() => text,
                _ => return Ok(None),
            },
        };
        Self::new(&text).map(Some)
    }

    /// The header value peers send (marked sensitive, so HTTP clients never print it).
    pub fn header_value(&self) -> HeaderValue {
        self.header.clone()
    }

    /// Whether `presented` is this secret; constant time.
    pub fn verify(&self, presented: Option<&HeaderValue>) -> bool {
        let presented = presented.map(|value| value.as_bytes()).unwrap_or_default();
        same(&self.digest, &sha256(presented))
    }
}

/// What the API checks: both off by default.
#[derive(Debug, Default)]
pub struct ApiAuth {
    /// Set when the process is one of a cluster (`cluster.peers`); `/internal/v1/head` needs it.
    pub cluster_secret: Option<ClusterSecret>,
    /// Set when `auth.tokens_file` is.
    pub tokens: Option<Arc<Tokens>>,
}

/// `auth:` in the config: token authentication, off unless `tokens_file` is set.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// YAML file of credentials and the tenants they may read and write (see README
    /// "Security"); none: no authentication, every client may act for any tenant.
    pub tokens_file: Option<PathBuf>,
    /// How often the tokens file is checked for changes.
    #[serde(with = "humantime_serde")]
    pub reload_period: Duration,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            tokens_file: None,
            reload_period: Duration::from_secs(10),
        }
    }
}

impl AuthConfig {
    pub fn validate(&self) -> Result<(), String> {
        if self.reload_period.is_zero() {
            return Err("auth.reload_period must be positive".into());
        }
        Ok(())
    }
}

/// What a request does to its tenant's data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Read,
    Write,
    /// A route no rule names: both, so a new route is never more open than the others.
    ReadWrite,
}

impl std::fmt::Display for Access {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Access::Read => "read",
            Access::Write => "write",
            Access::ReadWrite => "read and write",
        })
    }
}

/// What one credential may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// The entry's name, for logs (never the credential).
    pub name: String,
    pub read: BTreeSet<Tenant>,
    pub write: BTreeSet<Tenant>,
}

impl Grant {
    pub fn allows(&self, access: Access, tenant: &Tenant) -> bool {
        match access {
            Access::Read => self.read.contains(tenant),
            Access::Write => self.write.contains(tenant),
            Access::ReadWrite => self.read.contains(tenant) && self.write.contains(tenant),
        }
    }

    /// The tenant a request without `X-Scope-OrgID` acts for: the only one this credential may
    /// `access`, if there is exactly one.
    pub fn only_tenant(&self, access: Access) -> Option<&Tenant> {
        let mut tenants: Box<dyn Iterator<Item = &Tenant>> = match access {
            Access::Read => Box::new(self.read.iter()),
            Access::Write => Box::new(self.write.iter()),
            Access::ReadWrite => Box::new(self.read.intersection(&self.write)),
        };
        let only = tenants.next()?;
        tenants.next().is_none().then_some(only)
    }
}

/// Credentials a request presents in `Authorization`.
pub enum Credential {
    Bearer(String),
    Basic {
        username: String,
        password: String,
    },
    /// An `Authorization` header in no scheme we know, or not decodable.
    Malformed,
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Credential::Bearer(_) => "Bearer(redacted)",
            Credential::Basic { .. } => "Basic(redacted)",
            Credential::Malformed => "Malformed",
        })
    }
}

impl Credential {
    /// The request's credentials; `None` without an `Authorization` header.
    pub fn from_headers(headers: &HeaderMap) -> Option<Self> {
        let value = headers.get(http::header::AUTHORIZATION)?;
        let Ok(value) = value.to_str() else {
            return Some(Credential::Malformed);
        };
        let (scheme, rest) = value.trim().split_once(' ').unwrap_or((value, ""));
        let rest = rest.trim();
        Some(if scheme.eq_ignore_ascii_case("bearer") && !rest.is_empty() {
            Credential::Bearer(rest.to_string())
        } else if scheme.eq_ignore_ascii_case("basic") {
            base64::engine::general_purpose::STANDARD
                .decode(rest)
                .ok()
                .and_then(|bytes| String::from_utf8(bytes).ok())
                .and_then(|pair| {
                    let (username, password) = pair.split_once(':')?;
                    Some(Credential::Basic {
                        username: username.to_string(),
                        password: password.to_string(),
                    })
                })
                .unwrap_or(Credential::Malformed)
        } else {
            Credential::Malformed
        })
    }

    /// `bearer` or `basic`, for logs.
    pub fn scheme(&self) -> &'static str {
        match self {
            Credential::Bearer(_) => "bearer",
            Credential::Basic { .. } => "basic",
            Credential::Malformed => "malformed",
        }
    }
}

/// The tokens file as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokensFile {
    /// Required, and not null: a file cut after `tokens:` is refused; `tokens: []` names none.
    tokens: Option<Vec<TokenEntry>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenEntry {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    bearer_token: Option<String>,
    #[serde(default)]
    bearer_token_sha256: Option<String>,
    #[serde(default)]
    basic_auth: Option<BasicAuthEntry>,
    #[serde(default)]
    read: Vec<String>,
    #[serde(default)]
    write: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BasicAuthEntry {
    username: String,
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    password_sha256: Option<String>,
}

/// Credentials in force, by kind (no `Debug`: it holds their digests).
#[derive(Default)]
struct TokenTable {
    bearer: Vec<(Digest, Arc<Grant>)>,
    basic: HashMap<String, (Digest, Arc<Grant>)>,
}

impl TokenTable {
    fn len(&self) -> usize {
        self.bearer.len() + self.basic.len()
    }
}

/// A plaintext secret's digest, or the digest given as hex; exactly one of them.
fn secret_digest(what: &str, plain: Option<&str>, hex: Option<&str>) -> Result<Digest, String> {
    match (plain, hex) {
        (Some(plain), None) => {
            if plain.len() < MIN_SECRET_BYTES {
                return Err(format!("its {what} must be at least {MIN_SECRET_BYTES} bytes"));
            }
            Ok(sha256(plain.as_bytes()))
        }
        (None, Some(hex)) => parse_hex_digest(hex).ok_or_else(|| format!("its {what}_sha256 is not 64 hex digits")),
        _ => Err(format!("give exactly one of {what} and {what}_sha256")),
    }
}

/// Replaces the value serde quotes in "invalid type: string \"...\"" and the like: a value in the
/// wrong place may be a credential, and the message goes to the log.
fn without_values(message: &str) -> String {
    static QUOTED: std::sync::LazyLock<regex::Regex> = std::sync::LazyLock::new(|| {
        regex::Regex::new(r"(invalid (?:type|value|length): ).*?(, expected |$)").expect("a valid regex")
    });
    QUOTED.replace_all(message, "${1}(value not shown)${2}").into_owned()
}

fn parse_tokens(text: &str) -> Result<TokenTable, String> {
    let file: TokensFile = serde_yaml::from_str(text).map_err(|err| without_values(&err.to_string()))?;
    let Some(entries) = file.tokens else {
        return Err("no `tokens:` entries (half-written?); write `tokens: []` for none".into());
    };
    let mut table = TokenTable::default();
    let mut bearer_names = Vec::new();
    for (index, entry) in entries.into_iter().enumerate() {
        let name = entry
            .name
            .clone()
            .or_else(|| entry.basic_auth.as_ref().map(|basic| basic.username.clone()))
            .unwrap_or_else(|| format!("tokens[{index}]"));
        let invalid = |reason: String| format!("tokens[{index}] ({name}): {reason}");
        let tenants = |list: &[String]| -> Result<BTreeSet<Tenant>, String> {
            list.iter()
                .map(|tenant| Tenant::parse(tenant).map_err(|err| invalid(format!("tenant {tenant:?}: {err}"))))
                .collect()
        };
        let grant = Arc::new(Grant {
            name: name.clone(),
            read: tenants(&entry.read)?,
            write: tenants(&entry.write)?,
        });
        if grant.read.is_empty() && grant.write.is_empty() {
            return Err(invalid("it names no tenant to read or write".into()));
        }
        let bearer = entry.bearer_token.is_some() || entry.bearer_token_sha256.is_some();
        match (bearer, entry.basic_auth) {
            (true, None) => {
                let digest = secret_digest(
                    "bearer_token",
                    entry.bearer_token.as_deref(),
                    entry.bearer_token_sha256.as_deref(),
                )
                .map_err(invalid)?;
                if let Some(other) = table.bearer.iter().position(|(known, _)| same(known, &digest)) {
                    return Err(invalid(format!("the same bearer token as {}", bearer_names[other])));
                }
                table.bearer.push((digest, grant));
                bearer_names.push(name.clone());
            }
            (false, Some(basic)) => {
                if basic.username.is_empty() || basic.username.contains(':') {
                    return Err(invalid("basic_auth.username must be non-empty without ':'".into()));
                }
                let digest = secret_digest("password", basic.password.as_deref(), basic.password_sha256.as_deref())
                    .map_err(invalid)?;
                if table.basic.insert(basic.username, (digest, grant)).is_some() {
                    return Err(invalid("its basic_auth.username is used twice".into()));
                }
            }
            _ => {
                return Err(invalid(
                    "give exactly one credential: bearer_token, bearer_token_sha256 or basic_auth".into(),
                ));
            }
        }
    }
    Ok(table)
}

#[derive(Debug, thiserror::Error)]
#[error("tokens file {path}: {reason}")]
pub struct TokensError {
    pub path: PathBuf,
    pub reason: String,
}

/// The credentials in force and the file they come from.
pub struct Tokens {
    file: WatchedFile,
    period: Duration,
    table: RwLock<Arc<TokenTable>>,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokens")
            .field("file", &self.file.path())
            .field("credentials", &self.table.read().len())
            .finish()
    }
}

impl Tokens {
    /// The tokens of `config`, read once (a file that is missing, empty or does not parse stops
    /// the start); `None` when token authentication is off.
    pub fn load(config: &AuthConfig) -> Result<Option<Arc<Self>>, TokensError> {
        let Some(path) = &config.tokens_file else {
            return Ok(None);
        };
        let tokens = Self {
            file: WatchedFile::new(path.clone()),
            period: config.reload_period,
            table: RwLock::new(Arc::new(TokenTable::default())),
        };
        tokens.reload()?;
        Ok(Some(Arc::new(tokens)))
    }

    /// Re-reads the file if it changed; true if it was read. A file that is empty, changes
    /// while read or does not parse keeps the tokens in force.
    pub fn reload(&self) -> Result<bool, TokensError> {
        let error = |reason: String| TokensError {
            path: self.file.path().to_path_buf(),
            reason,
        };
        let Some((text, stamp)) = self.file.read_if_changed().map_err(error)? else {
            return Ok(false);
        };
        let table = parse_tokens(&text).map_err(error)?;
        if table.len() == 0 {
            tracing::warn!(file = %self.file.path().display(), "the tokens file names no credentials: every API request is refused");
        }
        *self.table.write() = Arc::new(table);
        self.file.taken(stamp);
        Ok(true)
    }

    /// Re-reads the file every `auth.reload_period` until the task is dropped.
    pub async fn watch(self: Arc<Self>) {
        let mut ticks = tokio::time::interval(self.period);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            match self.reload() {
                Ok(true) => tracing::info!(
                    file = %self.file.path().display(),
                    credentials = self.table.read().len(),
                    "reloaded API tokens"
                ),
                Ok(false) => {}
                Err(err) => tracing::warn!(error = %err, "keeping the API tokens in force"),
            }
        }
    }

    /// What `credential` may do; `None` if it is unknown.
    pub fn authenticate(&self, credential: &Credential) -> Option<Arc<Grant>> {
        let table = self.table.read().clone();
        match credential {
            Credential::Bearer(token) => {
                let digest = sha256(token.as_bytes());
                // Every entry is compared, so the time taken does not tell which matched.
                let mut found = None;
                for (known, grant) in &table.bearer {
                    if same(known, &digest) {
                        found = Some(grant.clone());
                    }
                }
                found
            }
            Credential::Basic { username, password } => {
                let digest = sha256(password.as_bytes());
                let (known, grant) = table.basic.get(username)?;
                same(known, &digest).then(|| grant.clone())
            }
            Credential::Malformed => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tenants(names: &[&str]) -> BTreeSet<Tenant> {
        names.iter().map(|name| Tenant::parse(name).unwrap()).collect()
    }

    fn headers(authorization: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(http::header::AUTHORIZATION, authorization.parse().unwrap());
        headers
    }

    const FILE: &str = "tokens:
  - name: alloy
    bearer_token: alloy-token-0123456789
    write: [prod]
  - bearer_token_sha256: 0000000000000000000000000000000000000000000000000000000000000000
    read: [staging]
  - basic_auth: { username: grafana, password: grafana-password-01 }
    read: [prod, staging]
";

    #[test]
    fn a_tokens_file_maps_credentials_to_tenants() {
        let table = parse_tokens(FILE).unwrap();
        assert_eq!(table.len(), 3);
        let tokens = Tokens {
            file: WatchedFile::new(PathBuf::new()),
            period: Duration::from_secs(1),
            table: RwLock::new(Arc::new(table)),
        };
        let alloy = tokens
            .authenticate(&Credential::from_headers(&headers("Bearer alloy-token-0123456789")).unwrap())
            .unwrap();
        assert_eq!((alloy.name.as_str(), &alloy.write), ("alloy", &tenants(&["prod"])));
        assert!(alloy.allows(Access::Write, &Tenant::parse("prod").unwrap()));
        assert!(!alloy.allows(Access::Read, &Tenant::parse("prod").unwrap()));
        assert_eq!(alloy.only_tenant(Access::Write), Some(&Tenant::parse("prod").unwrap()));
        assert_eq!(alloy.only_tenant(Access::Read), None);
        // grafana:grafana-password-01
        let grafana = tokens
            .authenticate(&Credential::from_headers(&headers("basic Z3JhZmFuYTpncmFmYW5hLXBhc3N3b3JkLTAx")).unwrap())
            .unwrap();
        assert_eq!(grafana.read, tenants(&["prod", "staging"]));
        assert_eq!(grafana.only_tenant(Access::Read), None);
        for unknown in [
            "Bearer alloy-token-012345678",
            "Basic Z3JhZmFuYTpncmFmYW5h",
            "Basic !!!",
            "Token alloy-token-0123456789",
        ] {
            let credential = Credential::from_headers(&headers(unknown)).unwrap();
            assert!(tokens.authenticate(&credential).is_none(), "{unknown}");
        }
        assert!(Credential::from_headers(&HeaderMap::new()).is_none());
        assert_eq!(
            format!(
                "{:?}",
                Credential::from_headers(&headers("Bearer alloy-token-0123456789"))
            ),
            "Some(Bearer(redacted))"
        );
    }

    #[test]
    fn broken_entries_are_refused_without_showing_secrets() {
        for (text, expected) in [
            ("tokens:\n  - bearer_token: short\n    read: [a]\n", "at least 16"),
            ("tokens:\n  - bearer_token: 0123456789abcdef01\n", "names no tenant"),
            (
                "tokens:\n  - bearer_token: 0123456789abcdef01\n    basic_auth: { username: u, password: 0123456789abcdef01 }\n    read: [a]\n",
                "exactly one credential",
            ),
            (
                "tokens:\n  - bearer_token: 0123456789abcdef01\n    read: ['a/b']\n",
                "tenant",
            ),
            (
                "tokens:\n  - { bearer_token: 0123456789abcdef01, read: [a] }\n  - { bearer_token: 0123456789abcdef01, read: [b] }\n",
                "same bearer token",
            ),
            (
                "tokens:\n  - { bearer: 0123456789abcdef01, read: [a] }\n",
                "unknown field",
            ),
            ("tokens:\n  - { bearer_token: 0123456789abcdef01, read: [a", ""),
            ("tokens:\n", ""),
            ("# nothing\n", ""),
            (
                "tokens:\n  - basic_auth: 'user:a-password, that is secret'\n    read: [a]\n",
                "not shown",
            ),
        ] {
            let err = parse_tokens(text).err().unwrap_or_else(|| panic!("accepted {text:?}"));
            assert!(err.contains(expected), "{text:?}: {err}");
            assert!(
                !err.contains("0123456789abcdef01") && !err.contains("a-password"),
                "{err}"
            );
        }
        assert_eq!(parse_tokens("tokens: []").unwrap().len(), 0);
    }

    #[test]
    fn shipped_token_files() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let example = std::fs::read_to_string(root.join("deploy/tokens.example.yaml")).unwrap();
        assert_eq!(parse_tokens(&example).unwrap().len(), 3);
        // The Kubernetes Secret's template carries no usable credential: refused until filled in.
        let secrets = std::fs::read_to_string(root.join("deploy/kubernetes/secrets.example.yaml")).unwrap();
        let tokens = secrets
            .split("\n---\n")
            .map(|doc| serde_yaml::from_str::<serde_yaml::Value>(doc).unwrap())
            .find(|doc| doc["metadata"]["name"] == "pyrite-tokens")
            .unwrap();
        let text = tokens["stringData"]["tokens.yaml"].as_str().unwrap();
        assert!(parse_tokens(text).err().unwrap().contains("at least 16 bytes"));
        let cluster = secrets
            .split("\n---\n")
            .map(|doc| serde_yaml::from_str::<serde_yaml::Value>(doc).unwrap())
            .find(|doc| doc["metadata"]["name"] == "pyrite-cluster")
            .unwrap();
        assert!(ClusterSecret::new(cluster["stringData"]["secret"].as_str().unwrap()).is_err());
    }

    #[test]
    fn the_cluster_secret_is_checked_whole() {
        let secret = ClusterSecret::new("  a-cluster-secret-of-some-length\n").unwrap();
        assert!(secret.verify(Some(&HeaderValue::from_static("a-cluster-secret-of-some-length"))));
        assert!(!secret.verify(Some(&HeaderValue::from_static("a-cluster-secret-of-some-lengt"))));
        assert!(!secret.verify(Some(&HeaderValue::from_static("a-cluster-secret-of-some-length2"))));
        assert!(!secret.verify(None));
        assert!(ClusterSecret::new("short").is_err());
        assert!(ClusterSecret::new("with a space in the middle").is_err());
        assert_eq!(format!("{secret:?}"), "ClusterSecret(redacted)");
        assert!(secret.header_value().is_sensitive());
    }
}
