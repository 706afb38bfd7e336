//! Exporting a window, for `/api/v1/render` and `pyrite export --data-dir`: the query, then the
//! renderer. It sits between `query` and `render` so that renderers only render and neither
//! edge (API, CLI) assembles the two itself.

use crate::error::{Classify, ErrorClass};
use crate::params::RenderWindow;
use crate::query::{Querier, QueryError};
use crate::render::{self, ExportContext, ExportFormat, RenderError};

/// One export: the window read, the format, and the node cap (none: the whole tree).
#[derive(Debug, Clone)]
pub struct ExportRequest {
    pub window: RenderWindow,
    pub format: ExportFormat,
    pub max_nodes: Option<usize>,
}

/// Why a window could not be exported: the query (a bad window, an unreadable block) or the
/// rendering.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error(transparent)]
    Query(#[from] QueryError),
    #[error(transparent)]
    Render(#[from] RenderError),
}

impl Classify for ExportError {
    fn class(&self) -> ErrorClass {
        match self {
            Self::Query(err) => err.class(),
            Self::Render(err) => err.class(),
        }
    }
}

/// Merges the profiles the request selects and renders them in its format.
pub async fn export_window(querier: &Querier, request: &ExportRequest) -> Result<Vec<u8>, ExportError> {
    let select = &request.window.select;
    // The tree is cut while it is merged wherever the renderer would cut it anyway, so an SVG of
    // millions of stacks costs what its flame graph costs, not a whole-tree merge.
    let cut = match request.format {
        ExportFormat::Svg => Some(request.max_nodes.unwrap_or(render::DEFAULT_MAX_NODES)),
        ExportFormat::Json => request.max_nodes,
        // A pprof is whole unless a node count was asked for (then its stacks end in "other"
        // where the cut fell); folded text is always every stack.
        ExportFormat::Pprof => request.max_nodes.filter(|&max_nodes| max_nodes > 0),
        ExportFormat::Folded => None,
    };
    let tree = match cut {
        Some(max_nodes) => querier.select_merge_truncated(select, max_nodes).await?,
        None => querier.select_merge(select).await?,
    };
    let context = ExportContext {
        profile_type: select.profile_type.clone(),
        query: request.window.query.clone(),
        from_ms: select.from_ms,
        until_ms: select.until_ms,
        max_nodes: request.max_nodes,
    };
    Ok(render::export(&tree, request.format, &context)?)
}
