//! Whole-window exports (`/api/v1/render`, `pyrite export`): a merged tree in the format asked
//! for, with its media type. The query before it is `crate::export`'s.

use std::str::FromStr;

use super::{RenderError, SvgOptions};
use crate::model::{FlameTree, ProfileType};

/// The formats a window can be exported in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportFormat {
    Svg,
    Pprof,
    Folded,
    Json,
}

impl FromStr for ExportFormat {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "svg" => Ok(Self::Svg),
            "pprof" => Ok(Self::Pprof),
            "folded" | "collapsed" => Ok(Self::Folded),
            "json" => Ok(Self::Json),
            other => Err(format!("unknown format {other:?}: expected svg, pprof, folded or json")),
        }
    }
}

impl ExportFormat {
    pub fn media_type(self) -> &'static str {
        match self {
            Self::Svg => "image/svg+xml",
            Self::Pprof => "application/octet-stream",
            Self::Folded => "text/plain; charset=utf-8",
            Self::Json => "application/json",
        }
    }
}

/// What was queried, for titles and pprof headers.
#[derive(Debug, Clone)]
pub struct ExportContext {
    pub profile_type: ProfileType,
    /// The selector as the user wrote it.
    pub query: String,
    pub from_ms: i64,
    pub until_ms: i64,
    pub max_nodes: Option<usize>,
}

/// Renders `tree` as `format`.
pub fn export(tree: &FlameTree, format: ExportFormat, context: &ExportContext) -> Result<Vec<u8>, RenderError> {
    Ok(match format {
        ExportFormat::Svg => {
            let options = SvgOptions {
                title: format!("{} {}", context.profile_type.id(), display_query(&context.query)),
                subtitle: Some(format!("{} — {}", rfc3339(context.from_ms), rfc3339(context.until_ms))),
                profile_type: context.profile_type.clone(),
                max_nodes: context.max_nodes,
            };
            super::svg(tree, &options)?
        }
        ExportFormat::Pprof => {
            let duration_nanos = (context.until_ms - context.from_ms).saturating_mul(1_000_000);
            let profile = super::pprof(
                tree,
                &context.profile_type,
                context.from_ms.saturating_mul(1_000_000),
                duration_nanos,
            );
            super::encode_pprof_gzip(&profile)
        }
        ExportFormat::Folded => super::folded(tree).into_bytes(),
        ExportFormat::Json => {
            let value = super::flamebearer(tree, &context.profile_type, context.max_nodes, None);
            serde_json::to_vec(&value).expect("JSON values serialize")
        }
    })
}

fn display_query(query: &str) -> &str {
    if query.trim().is_empty() { "{}" } else { query.trim() }
}

fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms).map_or_else(|| ms.to_string(), |t| t.to_rfc3339())
}
