//! Output formats for a merged query result: turns a [`FlameTree`](crate::model::FlameTree)
//! into Grafana's `querier.v1` flame graphs (single and diff), the legacy flamebearer JSON of
//! `/pyroscope/render`, folded stacks, an SVG (via inferno) and a pprof profile.
//!
//! Every renderer reads the tree as is; none mutates or re-queries it.

mod export;
mod flamebearer;
mod flamegraph;
mod folded;
mod pprof;
mod svg;

pub use export::{ExportContext, ExportFormat, export};
pub use flamebearer::{Timeline, flamebearer, flamebearer_diff};
pub use flamegraph::{DEFAULT_MAX_NODES, OTHER_NAME, flamegraph, flamegraph_diff};
pub use folded::{folded, folded_diff};
pub use pprof::{encode_pprof_gzip, pprof};
pub use svg::{EMPTY_SVG_MARKER, SvgOptions, svg, svg_diff};

/// Why a render failed.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error("writing the flame graph SVG: {0}")]
    Svg(#[from] std::io::Error),
}

impl crate::error::Classify for RenderError {
    fn class(&self) -> crate::error::ErrorClass {
        crate::error::ErrorClass::Internal
    }
}

#[cfg(test)]
pub(crate) mod testutil {
    //! Shared fixtures and an independent decoder of the level encoding.

    use std::collections::BTreeMap;

    use crate::model::FlameTree;

    /// Several levels, siblings inserted out of name order, self on inner nodes.
    pub fn sample_tree() -> FlameTree {
        let mut tree = FlameTree::new();
        tree.insert_names(&["main", "work", "hash"], 50);
        tree.insert_names(&["main", "work", "alloc", "memmove"], 7);
        tree.insert_names(&["main", "work"], 11);
        tree.insert_names(&["main", "idle"], 9);
        tree.insert_names(&["main"], 3);
        tree.insert_names(&["main", "work", "alloc"], 4);
        tree.insert_names(&["gc", "mark"], 20);
        tree.insert_names(&["gc", "sweep", "hash"], 5);
        tree.insert_names(&["bg", "hash"], 1);
        tree
    }

    /// Every node of `tree` by name path (root "total" first): `(total, self)`.
    pub fn tree_paths(tree: &FlameTree) -> BTreeMap<Vec<String>, (i64, i64)> {
        let mut out = BTreeMap::new();
        let mut pending = vec![(0u32, Vec::<String>::new())];
        while let Some((id, mut path)) = pending.pop() {
            let node = tree.node(id);
            path.push(tree.name(node.name).to_string());
            for &child in &node.children {
                pending.push((child, path.clone()));
            }
            out.insert(path, (node.total, node.self_value));
        }
        out
    }

    pub struct Decoded {
        pub path: Vec<String>,
        pub total: Vec<i64>,
        pub self_value: Vec<i64>,
    }

    /// Decodes levels of `sides * 3 + 1` numbers back into name paths, asserting on the way
    /// the layout rules: ascending x per level, children packed after their parent's self in
    /// name order.
    pub fn decode(names: &[String], levels: &[Vec<i64>], sides: usize) -> Vec<Decoded> {
        let width = sides * 3 + 1;
        // Per level: (absolute x per side, decoded node index).
        let mut placed: Vec<Vec<(Vec<i64>, usize)>> = Vec::new();
        let mut out: Vec<Decoded> = Vec::new();
        // Per node: next free x per side for its children.
        let mut cursor: Vec<Vec<i64>> = Vec::new();
        for (depth, level) in levels.iter().enumerate() {
            assert_eq!(level.len() % width, 0, "level {depth} is not made of groups of {width}");
            let mut end = vec![0i64; sides];
            let mut row = Vec::new();
            for group in level.chunks(width) {
                let x: Vec<i64> = (0..sides).map(|s| end[s] + group[s * 3]).collect();
                let total: Vec<i64> = (0..sides).map(|s| group[s * 3 + 1]).collect();
                let self_value: Vec<i64> = (0..sides).map(|s| group[s * 3 + 2]).collect();
                for s in 0..sides {
                    assert!(group[s * 3] >= 0, "level {depth}: x must not go backwards");
                    end[s] = x[s] + total[s];
                }
                let name = names[group[width - 1] as usize].clone();
                let path = if depth == 0 {
                    assert_eq!(x, vec![0; sides], "root must sit at offset 0");
                    vec![name]
                } else {
                    let side = (0..sides)
                        .find(|&s| total[s] > 0)
                        .expect("test trees have no empty nodes");
                    let parents: Vec<usize> = placed[depth - 1]
                        .iter()
                        .filter(|(px, parent)| {
                            let parent = &out[*parent];
                            parent.total[side] > 0
                                && px[side] + parent.self_value[side] <= x[side]
                                && x[side] < px[side] + parent.total[side]
                        })
                        .map(|&(_, parent)| parent)
                        .collect();
                    assert_eq!(parents.len(), 1, "node {name} at level {depth} has no unique parent");
                    let parent = parents[0];
                    assert_eq!(x, cursor[parent], "{name} is not packed after its earlier siblings");
                    // "other" goes after the kept siblings whatever its name.
                    if let Some(previous) = out.iter().rev().find(|d| d.path.len() == depth + 1)
                        && previous.path[..depth] == out[parent].path[..]
                        && name != super::OTHER_NAME
                    {
                        assert!(previous.path[depth] < name, "siblings out of name order: {name}");
                    }
                    for s in 0..sides {
                        cursor[parent][s] = cursor[parent][s].saturating_add(total[s]);
                    }
                    let mut path = out[parent].path.clone();
                    path.push(name);
                    path
                };
                cursor.push((0..sides).map(|s| x[s] + self_value[s]).collect());
                row.push((x, out.len()));
                out.push(Decoded {
                    path,
                    total,
                    self_value,
                });
            }
            placed.push(row);
        }
        out
    }
}
