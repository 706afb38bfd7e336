//! The parameters of a read, parsed in one place for every edge that reads: querier.v1, the
//! legacy `/pyroscope/*` routes, `/api/v1/render` and `pyrite export`. A read names a tenant,
//! a window, a profile type, a label selector and how many nodes to answer with; this module
//! turns their text (or querier.v1's numbers) into a [`SelectParams`] and a node count.
//! Every error here is the client's ([`ErrorClass::Client`], or `Unauthenticated` for a
//! missing tenant).

use std::collections::HashMap;

use crate::error::{Classify, ErrorClass};
use crate::model::{
    ProfileId, ProfileIdError, ProfileType, ProfileTypeError, Selector, SelectorError, Tenant, TenantError, TimeError,
    parse_time_ms, time_in_range,
};
use crate::query::SelectParams;

/// Profile type of a render or export that names none.
pub const DEFAULT_PROFILE_TYPE: &str = "process_cpu:cpu:nanoseconds:cpu:nanoseconds";

/// Length of the window of a render that names none: the last hour.
pub const DEFAULT_WINDOW_MS: i64 = 3_600_000;

/// Why a read's parameters were refused.
#[derive(Debug, thiserror::Error)]
pub enum ParamsError {
    #[error(transparent)]
    ProfileType(#[from] ProfileTypeError),
    #[error(transparent)]
    Selector(#[from] SelectorError),
    #[error(transparent)]
    ProfileId(#[from] ProfileIdError),
    #[error("{name}: {source}")]
    Time { name: String, source: TimeError },
    #[error("{from_name} ({from_ms}) must be before {until_name} ({until_ms})")]
    EmptyWindow {
        from_name: String,
        from_ms: i64,
        until_name: String,
        until_ms: i64,
    },
    #[error("start ({start}) and end ({end}) must be times in ms between the years 0000 and 9999")]
    TimeOutOfRange { start: i64, end: i64 },
    #[error("missing time range in the query")]
    NoTimeRange,
    #[error("start ({start}) is after end ({end})")]
    StartAfterEnd { start: i64, end: i64 },
    #[error("{0} is required")]
    Missing(String),
    #[error("query must start with a profile type ID, e.g. process_cpu:cpu:nanoseconds:cpu:nanoseconds{{}}")]
    NoProfileType,
    #[error("max-nodes {0:?} is not an integer")]
    MaxNodesNotInteger(String),
    #[error("max_nodes {requested} is outside 1..={limit}")]
    MaxNodesOutOfRange { requested: i64, limit: usize },
    #[error("no tenant: the X-Scope-OrgID header is required")]
    NoTenant,
    #[error("X-Scope-OrgID is not valid ASCII")]
    TenantNotAscii,
    #[error("queries across several tenants (a|b) are not supported")]
    SeveralTenants,
    #[error("X-Scope-OrgID: {0}")]
    Tenant(#[from] TenantError),
}

impl Classify for ParamsError {
    fn class(&self) -> ErrorClass {
        match self {
            Self::NoTenant => ErrorClass::Unauthenticated,
            _ => ErrorClass::Client,
        }
    }
}

/// The tenant a read acts for, from its `X-Scope-OrgID` (or `--tenant`): `anonymous` when
/// none is given, unless one is `required`. Reads naming several tenants (`a|b`) are refused.
pub fn tenant(id: Option<&str>, required: bool) -> Result<Tenant, ParamsError> {
    match id {
        None if required => Err(ParamsError::NoTenant),
        None => Ok(Tenant::anonymous()),
        Some(id) if id.contains('|') => Err(ParamsError::SeveralTenants),
        Some(id) => Ok(Tenant::parse(id)?),
    }
}

pub fn profile_type(id: &str) -> Result<ProfileType, ParamsError> {
    Ok(ProfileType::parse(id)?)
}

pub fn selector(text: &str) -> Result<Selector, ParamsError> {
    Ok(Selector::parse(text)?)
}

pub fn selectors(texts: &[String]) -> Result<Vec<Selector>, ParamsError> {
    texts.iter().map(|text| selector(text)).collect()
}

/// A `profile_id_selector`: profile ids in the UUID form heatmap exemplars carry
/// ([`ProfileId`]); any other form is refused.
pub fn profile_ids(texts: &[String]) -> Result<Vec<ProfileId>, ParamsError> {
    texts.iter().map(|text| Ok(ProfileId::parse(text)?)).collect()
}

/// `process_cpu:cpu:nanoseconds:cpu:nanoseconds{service_name="x"}`: a profile type, then an
/// optional selector, as `/pyroscope/render` writes its `query`.
pub fn typed_query(query: &str) -> Result<(ProfileType, Selector), ParamsError> {
    let query = query.trim();
    let (type_part, selector_part) = match query.find('{') {
        Some(open) => (&query[..open], &query[open..]),
        None => (query, ""),
    };
    if type_part.is_empty() {
        return Err(ParamsError::NoProfileType);
    }
    Ok((profile_type(type_part)?, selector(selector_part)?))
}

/// A render's `query` and `type`: a selector (`{…}`) with the profile type in `type` (default
/// [`DEFAULT_PROFILE_TYPE`]), or a [`typed_query`].
pub fn query_and_type(query: &str, type_id: Option<&str>) -> Result<(ProfileType, Selector), ParamsError> {
    if query.trim_start().starts_with('{') {
        Ok((profile_type(type_id.unwrap_or(DEFAULT_PROFILE_TYPE))?, selector(query)?))
    } else {
        typed_query(query)
    }
}

/// A time argument named `name` (RFC 3339, unix seconds or ms, `now-1h`), `default_ms` when
/// absent.
pub fn time(text: Option<&str>, name: &str, default_ms: i64, now_ms: i64) -> Result<i64, ParamsError> {
    match text {
        None => Ok(default_ms),
        Some(text) => parse_time_ms(text, now_ms).map_err(|source| ParamsError::Time {
            name: name.to_string(),
            source,
        }),
    }
}

/// The window `[from, until)` named by two time arguments (default: the hour before `now`),
/// refused unless it starts before it ends. `names` are the arguments' names, for messages.
pub fn window(
    from: Option<&str>,
    until: Option<&str>,
    names: (&str, &str),
    now_ms: i64,
) -> Result<(i64, i64), ParamsError> {
    let from_ms = time(from, names.0, now_ms - DEFAULT_WINDOW_MS, now_ms)?;
    let until_ms = time(until, names.1, now_ms, now_ms)?;
    if from_ms >= until_ms {
        return Err(ParamsError::EmptyWindow {
            from_name: names.0.to_string(),
            from_ms,
            until_name: names.1.to_string(),
            until_ms,
        });
    }
    Ok((from_ms, until_ms))
}

/// querier.v1's `[start, end]` in ms, both ends included as Pyroscope reads them, as the
/// window `[start, end + 1)`.
pub fn querier_window(start: i64, end: i64) -> Result<(i64, i64), ParamsError> {
    if !time_in_range(start) || !time_in_range(end) {
        return Err(ParamsError::TimeOutOfRange { start, end });
    }
    if start == 0 || end == 0 {
        return Err(ParamsError::NoTimeRange);
    }
    if start > end {
        return Err(ParamsError::StartAfterEnd { start, end });
    }
    Ok((start, end.saturating_add(1)))
}

/// A metadata request's `[start, end]` (labels, series, profile types): both 0 means the
/// `default_ms` before `now`.
pub fn metadata_window(start: i64, end: i64, default_ms: i64, now_ms: i64) -> Result<(i64, i64), ParamsError> {
    if start == 0 && end == 0 {
        return Ok((now_ms - default_ms, now_ms + 1));
    }
    querier_window(start, end)
}

/// What one select reads, from querier.v1's fields.
pub fn querier_select(
    tenant: Tenant,
    profile_type_id: &str,
    label_selector: &str,
    start: i64,
    end: i64,
) -> Result<SelectParams, ParamsError> {
    let profile_type = profile_type(profile_type_id)?;
    let selector = selector(label_selector)?;
    let (from_ms, until_ms) = querier_window(start, end)?;
    Ok(SelectParams {
        tenant,
        profile_type,
        selector,
        from_ms,
        until_ms,
    })
}

/// The node counts a read may ask for (`api.default_max_nodes`, `api.max_nodes_limit`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeLimits {
    pub default: usize,
    pub max: usize,
}

impl NodeLimits {
    pub fn from_config(config: &crate::config::ApiConfig) -> Self {
        Self {
            default: config.default_max_nodes,
            max: config.max_nodes_limit,
        }
    }

    /// A requested node count checked against the ceiling; absent or 0 means the default.
    pub fn check(self, requested: Option<i64>) -> Result<usize, ParamsError> {
        match requested {
            None | Some(0) => Ok(self.default),
            Some(n) if n < 0 || n as usize > self.max => Err(ParamsError::MaxNodesOutOfRange {
                requested: n,
                limit: self.max,
            }),
            Some(n) => Ok(n as usize),
        }
    }

    /// [`NodeLimits::check`] of a node count given as text.
    pub fn check_text(self, requested: Option<&str>) -> Result<usize, ParamsError> {
        let requested = requested
            .map(|text| {
                text.parse::<i64>()
                    .map_err(|_| ParamsError::MaxNodesNotInteger(text.to_string()))
            })
            .transpose()?;
        self.check(requested)
    }
}

/// An HTTP query string (or any named text arguments): the first non-empty value among
/// several names.
#[derive(Debug, Clone, Copy)]
pub struct Args<'a>(pub &'a HashMap<String, String>);

impl<'a> Args<'a> {
    pub fn get(self, names: &[&str]) -> Option<&'a str> {
        names
            .iter()
            .find_map(|name| self.0.get(*name))
            .map(String::as_str)
            .filter(|value| !value.is_empty())
    }

    pub fn has(self, name: &str) -> bool {
        self.0.contains_key(name)
    }

    /// The node count of `max-nodes` (or `maxNodes`, `max_nodes`).
    pub fn max_nodes(self, limits: NodeLimits) -> Result<usize, ParamsError> {
        limits.check_text(self.get(&["max-nodes", "maxNodes", "max_nodes"]))
    }
}

/// A window of one profile type read by a render or an export, and the selector as written
/// (for titles).
#[derive(Debug, Clone)]
pub struct RenderWindow {
    pub select: SelectParams,
    pub query: String,
}

impl RenderWindow {
    /// `/api/v1/render` and `pyrite export`: `query` is a selector with `type` beside it, or a
    /// [`typed_query`] (default `{}`); the window is `from_name`/`until_name` (default: the
    /// last hour).
    pub fn parse(
        tenant: Tenant,
        query: Option<&str>,
        type_id: Option<&str>,
        (from, until): (Option<&str>, Option<&str>),
        names: (&str, &str),
        now_ms: i64,
    ) -> Result<Self, ParamsError> {
        let query = query.unwrap_or("{}");
        let (profile_type, selector) = query_and_type(query, type_id)?;
        let (from_ms, until_ms) = window(from, until, names, now_ms)?;
        Ok(Self {
            select: SelectParams {
                tenant,
                profile_type,
                selector,
                from_ms,
                until_ms,
            },
            query: query.to_string(),
        })
    }

    /// `/pyroscope/render`: `query_name` is a required [`typed_query`].
    pub fn parse_legacy(
        tenant: Tenant,
        args: Args<'_>,
        query_name: &str,
        names: (&str, &str),
        now_ms: i64,
    ) -> Result<Self, ParamsError> {
        let query = args
            .get(&[query_name])
            .ok_or_else(|| ParamsError::Missing(query_name.to_string()))?;
        let (profile_type, selector) = typed_query(query)?;
        let (from_ms, until_ms) = window(args.get(&[names.0]), args.get(&[names.1]), names, now_ms)?;
        Ok(Self {
            select: SelectParams {
                tenant,
                profile_type,
                selector,
                from_ms,
                until_ms,
            },
            query: query.to_string(),
        })
    }

    /// The same, read from an HTTP query string.
    pub fn from_args(tenant: Tenant, args: Args<'_>, names: (&str, &str), now_ms: i64) -> Result<Self, ParamsError> {
        Self::parse(
            tenant,
            args.get(&["query"]),
            args.get(&["type"]),
            (args.get(&[names.0]), args.get(&[names.1])),
            names,
            now_ms,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_700_000_000_000;

    #[test]
    fn a_render_query_names_its_type_beside_or_in_front() {
        let beside = RenderWindow::parse(
            Tenant::anonymous(),
            Some(r#"{service_name="api"}"#),
            Some("memory:alloc_space:bytes:space:bytes"),
            (Some("1000"), Some("2000")),
            ("from", "until"),
            NOW,
        )
        .unwrap();
        assert_eq!(beside.select.profile_type.id(), "memory:alloc_space:bytes:space:bytes");
        assert_eq!((beside.select.from_ms, beside.select.until_ms), (1_000_000, 2_000_000));
        let in_front = RenderWindow::parse(
            Tenant::anonymous(),
            Some(r#"process_cpu:cpu:nanoseconds:cpu:nanoseconds{service_name="api"}"#),
            Some("ignored"),
            (None, None),
            ("from", "until"),
            NOW,
        )
        .unwrap();
        assert_eq!(in_front.select.profile_type.id(), DEFAULT_PROFILE_TYPE);
        assert_eq!(
            (in_front.select.from_ms, in_front.select.until_ms),
            (NOW - DEFAULT_WINDOW_MS, NOW)
        );
        assert!(
            in_front
                .select
                .selector
                .matches(&crate::model::Labels::new([("service_name".to_string(), "api".to_string())]).unwrap())
        );
        assert!(matches!(typed_query("{}"), Err(ParamsError::NoProfileType)));
    }

    #[test]
    fn windows_must_start_before_they_end() {
        let err = window(Some("2000"), Some("1000"), ("--from", "--until"), NOW).unwrap_err();
        assert_eq!(err.to_string(), "--from (2000000) must be before --until (1000000)");
        assert_eq!(err.class(), ErrorClass::Client);
        let err = window(Some("yesterday-ish"), None, ("from", "until"), NOW).unwrap_err();
        assert!(err.to_string().starts_with("from: "), "{err}");
        // querier.v1 includes both ends.
        assert_eq!(querier_window(5, 5).unwrap(), (5, 6));
        assert!(matches!(querier_window(0, 5), Err(ParamsError::NoTimeRange)));
        assert!(matches!(querier_window(6, 5), Err(ParamsError::StartAfterEnd { .. })));
        assert!(matches!(
            querier_window(i64::MAX, i64::MAX),
            Err(ParamsError::TimeOutOfRange { .. })
        ));
        assert_eq!(metadata_window(0, 0, 10, NOW).unwrap(), (NOW - 10, NOW + 1));
    }

    #[test]
    fn node_counts_default_and_stay_under_the_ceiling() {
        let limits = NodeLimits { default: 8, max: 100 };
        assert_eq!(limits.check(None).unwrap(), 8);
        assert_eq!(limits.check(Some(0)).unwrap(), 8);
        assert_eq!(limits.check(Some(100)).unwrap(), 100);
        assert!(matches!(
            limits.check(Some(101)),
            Err(ParamsError::MaxNodesOutOfRange { .. })
        ));
        assert!(matches!(
            limits.check(Some(-1)),
            Err(ParamsError::MaxNodesOutOfRange { .. })
        ));
        assert!(matches!(
            limits.check_text(Some("ten")),
            Err(ParamsError::MaxNodesNotInteger(_))
        ));
        assert_eq!(limits.check_text(Some("12")).unwrap(), 12);
    }

    #[test]
    fn tenants() {
        assert_eq!(tenant(None, false).unwrap(), Tenant::anonymous());
        assert_eq!(tenant(None, true).unwrap_err().class(), ErrorClass::Unauthenticated);
        assert!(matches!(tenant(Some("a|b"), false), Err(ParamsError::SeveralTenants)));
        assert_eq!(tenant(Some("team-a"), true).unwrap().as_str(), "team-a");
    }
}
