//! Grafana/Pyroscope `querier.v1` flame graph encoding (single and diff): aligning one or two
//! [`FlameTree`]s onto one shape, `max_nodes` truncation, and the delta-encoded levels.

use foldhash::{HashMap, HashMapExt};

use crate::model::{FlameTree, ROOT_NAME};
use crate::proto::querier::v1::{FlameGraph, FlameGraphDiff, Level};

/// Pyroscope's default for `max_nodes` when a request leaves it unset or zero.
pub const DEFAULT_MAX_NODES: usize = 8192;

/// Name of the synthetic node that stands for the siblings truncation pruned.
pub use crate::model::OTHER_NAME;

/// Encodes `tree` as a Pyroscope flame graph: levels of `[x_delta, total, self, name]`.
pub fn flamegraph(tree: &FlameTree, max_nodes: Option<usize>) -> FlameGraph {
    let layout = Aligned::new([tree]).layout(max_nodes);
    FlameGraph {
        names: layout.names,
        levels: layout.levels.into_iter().map(|values| Level { values }).collect(),
        total: tree.total(),
        max_self: layout.max_self,
    }
}

/// Encodes `left` and `right` on one shape: levels of
/// `[xL, totalL, selfL, xR, totalR, selfR, name]`.
pub fn flamegraph_diff(left: &FlameTree, right: &FlameTree, max_nodes: Option<usize>) -> FlameGraphDiff {
    let layout = Aligned::new([left, right]).layout(max_nodes);
    FlameGraphDiff {
        names: layout.names,
        levels: layout.levels.into_iter().map(|values| Level { values }).collect(),
        total: left.total().saturating_add(right.total()),
        max_self: layout.max_self,
        left_ticks: left.total(),
        right_ticks: right.total(),
    }
}

struct Layout {
    names: Vec<String>,
    levels: Vec<Vec<i64>>,
    max_self: i64,
}

struct Node<const N: usize> {
    name: u32,
    total: [i64; N],
    self_value: [i64; N],
    /// Sorted by name, the order Pyroscope lays siblings out in.
    children: Vec<u32>,
    /// Cut off by a truncated merge already ([`crate::model::FlameNode::other`]): pruned here
    /// whatever its weight, and not counted when picking the threshold, so a tree the query cut
    /// to `max_nodes` lays out as the whole tree would.
    other: bool,
}

impl<const N: usize> Node<N> {
    fn new(name: u32) -> Self {
        Self {
            name,
            total: [0; N],
            self_value: [0; N],
            children: Vec::new(),
            other: false,
        }
    }

    /// What truncation ranks a node by: its heaviest side.
    fn weight(&self) -> i64 {
        self.total.iter().copied().max().unwrap_or(0)
    }
}

/// The union of `N` trees by name path, one value column per tree, so a diff lays both sides
/// out on the same rows.
struct Aligned<'a, const N: usize> {
    names: Vec<&'a str>,
    name_ids: HashMap<&'a str, u32>,
    nodes: Vec<Node<N>>,
}

/// A node waiting to be emitted: a tree node, or the synthetic "other" (`node == None`).
struct Pending<const N: usize> {
    node: Option<u32>,
    name: u32,
    total: [i64; N],
    self_value: [i64; N],
    depth: usize,
    x: [i64; N],
}

impl<'a, const N: usize> Aligned<'a, N> {
    fn new(trees: [&'a FlameTree; N]) -> Self {
        let mut aligned = Self {
            names: Vec::new(),
            name_ids: HashMap::new(),
            nodes: Vec::new(),
        };
        let root = aligned.intern(ROOT_NAME);
        aligned.nodes.push(Node::new(root));
        let mut lookup: HashMap<(u32, u32), u32> = HashMap::new();
        for (side, tree) in trees.into_iter().enumerate() {
            let names: Vec<u32> = tree.names().iter().map(|name| aligned.intern(name)).collect();
            let mut pending = vec![(0u32, 0u32)];
            while let Some((src, dst)) = pending.pop() {
                let node = tree.node(src);
                let target = &mut aligned.nodes[dst as usize];
                target.total[side] = target.total[side].saturating_add(node.total);
                target.self_value[side] = target.self_value[side].saturating_add(node.self_value);
                target.other |= node.other;
                for &child in &node.children {
                    let name = names[tree.node(child).name as usize];
                    let next_id = aligned.nodes.len() as u32;
                    let id = *lookup.entry((dst, name)).or_insert(next_id);
                    if id == next_id {
                        aligned.nodes.push(Node::new(name));
                        aligned.nodes[dst as usize].children.push(id);
                    }
                    pending.push((child, id));
                }
            }
        }
        for id in 0..aligned.nodes.len() {
            let mut children = std::mem::take(&mut aligned.nodes[id].children);
            children.sort_by_key(|&child| aligned.names[aligned.nodes[child as usize].name as usize]);
            aligned.nodes[id].children = children;
        }
        aligned
    }

    fn intern(&mut self, name: &'a str) -> u32 {
        let next = self.names.len() as u32;
        let id = *self.name_ids.entry(name).or_insert(next);
        if id == next {
            self.names.push(name);
        }
        id
    }

    /// The smallest weight a node needs to be kept so that about `max_nodes` nodes survive.
    /// Parents weigh at least as much as their children, so the kept set stays connected.
    fn threshold(&self, max_nodes: usize) -> i64 {
        let mut weights: Vec<i64> = self.nodes[1..]
            .iter()
            .filter(|node| !node.other)
            .map(Node::weight)
            .collect();
        if weights.len() <= max_nodes {
            return i64::MIN;
        }
        *weights.select_nth_unstable_by(max_nodes - 1, |a, b| b.cmp(a)).1
    }

    fn layout(mut self, max_nodes: Option<usize>) -> Layout {
        let max_nodes = max_nodes.filter(|&n| n > 0).unwrap_or(DEFAULT_MAX_NODES);
        let threshold = self.threshold(max_nodes);
        let other = self.intern(OTHER_NAME);

        let mut out_names: Vec<String> = Vec::new();
        let mut out_ids = vec![u32::MAX; self.names.len()];
        let mut levels: Vec<Vec<i64>> = Vec::new();
        // Per level and side, where the previously emitted node ended: the delta base.
        let mut ends: Vec<[i64; N]> = Vec::new();
        let mut max_self = 0;

        let root = &self.nodes[0];
        // Depth-first with children pushed in reverse, so each level fills left to right.
        let mut stack = vec![Pending {
            node: Some(0),
            name: root.name,
            total: root.total,
            self_value: root.self_value,
            depth: 0,
            x: [0; N],
        }];
        while let Some(item) = stack.pop() {
            if levels.len() == item.depth {
                levels.push(Vec::new());
                ends.push([0; N]);
            }
            let out_id = &mut out_ids[item.name as usize];
            if *out_id == u32::MAX {
                *out_id = out_names.len() as u32;
                out_names.push(self.names[item.name as usize].to_string());
            }
            let (level, end) = (&mut levels[item.depth], &mut ends[item.depth]);
            for (side, end) in end.iter_mut().enumerate() {
                level.extend([item.x[side] - *end, item.total[side], item.self_value[side]]);
                *end = item.x[side] + item.total[side];
                max_self = max_self.max(item.self_value[side]);
            }
            level.push(i64::from(*out_id));

            let Some(id) = item.node else { continue };
            let first_child = stack.len();
            // Self is laid out before the children.
            let mut x: [i64; N] = std::array::from_fn(|side| item.x[side] + item.self_value[side]);
            let children = &self.nodes[id as usize].children;
            let cut = |child: &Node<N>| child.other || child.weight() < threshold;
            let pruned = children.iter().any(|&child| cut(&self.nodes[child as usize]));
            let mut other_total = [0i64; N];
            for &child_id in children {
                let child = &self.nodes[child_id as usize];
                // A real "other" next to pruned siblings joins them, keeping sibling names unique.
                if cut(child) || (pruned && child.name == other) {
                    (0..N).for_each(|side| other_total[side] = other_total[side].saturating_add(child.total[side]));
                    continue;
                }
                stack.push(Pending {
                    node: Some(child_id),
                    name: child.name,
                    total: child.total,
                    self_value: child.self_value,
                    depth: item.depth + 1,
                    x,
                });
                (0..N).for_each(|side| x[side] = x[side].saturating_add(child.total[side]));
            }
            if other_total != [0; N] {
                stack.push(Pending {
                    node: None,
                    name: other,
                    total: other_total,
                    self_value: other_total,
                    depth: item.depth + 1,
                    x,
                });
            }
            stack[first_child..].reverse();
        }
        Layout {
            names: out_names,
            levels,
            max_self,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, HashSet};

    use super::*;
    use crate::render::testutil::{decode, sample_tree, tree_paths};

    fn levels(levels: &[Level]) -> Vec<Vec<i64>> {
        levels.iter().map(|level| level.values.clone()).collect()
    }

    #[test]
    fn levels_decode_back_to_the_tree() {
        let tree = sample_tree();
        let graph = flamegraph(&tree, None);
        assert_eq!(graph.names[0], "total");
        assert_eq!(graph.levels[0].values, vec![0, tree.total(), 0, 0]);
        assert_eq!(graph.total, 110);
        assert_eq!(graph.max_self, 50);
        assert_eq!(
            graph.names.iter().collect::<HashSet<_>>().len(),
            graph.names.len(),
            "names deduplicated"
        );

        let decoded: BTreeMap<Vec<String>, (i64, i64)> = decode(&graph.names, &levels(&graph.levels), 1)
            .into_iter()
            .map(|node| (node.path, (node.total[0], node.self_value[0])))
            .collect();
        assert_eq!(decoded, tree_paths(&tree));
        assert_eq!(graph.levels.len(), 5);
    }

    #[test]
    fn exact_encoding_of_a_small_tree() {
        let mut tree = FlameTree::new();
        tree.insert_names(&["b"], 2);
        tree.insert_names(&["a", "y"], 3);
        tree.insert_names(&["a"], 1);
        tree.insert_names(&["a", "x"], 4);
        let graph = flamegraph(&tree, None);
        let name = |n: &str| graph.names.iter().position(|m| m == n).unwrap() as i64;
        assert_eq!(graph.levels[0].values, vec![0, 10, 0, 0]);
        // a at 0 (8 wide), b right after it.
        assert_eq!(graph.levels[1].values, vec![0, 8, 1, name("a"), 0, 2, 2, name("b")]);
        // x starts after a's self (1); y right after x.
        assert_eq!(graph.levels[2].values, vec![1, 4, 4, name("x"), 0, 3, 3, name("y")]);
    }

    #[test]
    fn empty_tree() {
        let graph = flamegraph(&FlameTree::new(), Some(10));
        assert_eq!(graph.names, vec!["total".to_string()]);
        assert_eq!(levels(&graph.levels), vec![vec![0, 0, 0, 0]]);
        assert_eq!((graph.total, graph.max_self), (0, 0));
    }

    #[test]
    fn truncation_keeps_the_total_and_adds_other() {
        let mut tree = FlameTree::new();
        tree.insert_names(&["main", "a", "b", "c"], 10_000);
        for i in 1..=100i64 {
            tree.insert_names(&[format!("f{i:03}")], i);
        }
        let total = tree.total();
        let graph = flamegraph(&tree, Some(30));
        assert_eq!(graph.total, total);
        assert_eq!(graph.levels[0].values[1], total, "root total unchanged");
        let nodes = decode(&graph.names, &levels(&graph.levels), 1);
        let others: Vec<_> = nodes.iter().filter(|n| n.path.last().unwrap() == OTHER_NAME).collect();
        assert_eq!(others.len(), 1);
        assert_eq!(others[0].path, ["total", OTHER_NAME]);
        assert_eq!(others[0].total, others[0].self_value);
        // The chain's 4 nodes and the 26 heaviest leaves (f075..f100) survive.
        assert_eq!(others[0].total[0], (1..=74).sum::<i64>());
        assert!(nodes.iter().any(|n| n.path == ["total", "main", "a", "b", "c"]));
        assert!(nodes.iter().any(|n| n.path == ["total", "f075"]));
        assert!(!nodes.iter().any(|n| n.path == ["total", "f074"]));
        assert_eq!(nodes.len(), 1 + 30 + 1, "root + max_nodes + other");
        let level_one: i64 = graph.levels[1].values.chunks(4).map(|group| group[1]).sum();
        assert_eq!(level_one, total, "no weight lost at the truncated level");

        // None and 0 mean the default, which keeps all 104 nodes here.
        let full = flamegraph(&tree, Some(0));
        assert_eq!(decode(&full.names, &levels(&full.levels), 1).len(), 105);
        assert_eq!(flamegraph(&tree, None), flamegraph(&tree, Some(DEFAULT_MAX_NODES)));
    }

    #[test]
    fn every_parent_gets_its_own_other() {
        let mut tree = FlameTree::new();
        for i in 1..=10i64 {
            let name = format!("f{i:02}");
            tree.insert_names(&[name.as_str(), "leaf"], 1);
            tree.insert_names(&[name.as_str()], 100 * i);
        }
        let graph = flamegraph(&tree, Some(5));
        let nodes = decode(&graph.names, &levels(&graph.levels), 1);
        let others = nodes.iter().filter(|n| n.path.last().unwrap() == OTHER_NAME).count();
        // One "other" for the 5 pruned top-level frames, one under each kept frame for its leaf.
        assert_eq!(others, 6);
        assert_eq!(graph.levels[0].values[1], tree.total());
    }

    #[test]
    fn diff_aligns_two_shapes() {
        let left = sample_tree();
        let mut right = FlameTree::new();
        right.insert_names(&["main", "work", "hash"], 30);
        right.insert_names(&["main", "new", "path"], 12);
        right.insert_names(&["gc", "mark"], 25);
        right.insert_names(&["main"], 2);
        let diff = flamegraph_diff(&left, &right, None);
        assert_eq!((diff.left_ticks, diff.right_ticks, diff.total), (110, 69, 179));
        assert_eq!(diff.names[0], "total");
        assert_eq!(diff.levels[0].values, vec![0, 110, 0, 0, 69, 0, 0]);
        assert_eq!(diff.max_self, 50);

        let decoded = decode(&diff.names, &levels(&diff.levels), 2);
        let (left_paths, right_paths) = (tree_paths(&left), tree_paths(&right));
        let union: HashSet<&Vec<String>> = left_paths.keys().chain(right_paths.keys()).collect();
        assert_eq!(decoded.len(), union.len());
        for node in &decoded {
            let want = |paths: &BTreeMap<Vec<String>, (i64, i64)>| {
                let (total, self_value) = paths.get(&node.path).copied().unwrap_or_default();
                (total, self_value)
            };
            assert_eq!(
                (node.total[0], node.self_value[0]),
                want(&left_paths),
                "left {:?}",
                node.path
            );
            assert_eq!(
                (node.total[1], node.self_value[1]),
                want(&right_paths),
                "right {:?}",
                node.path
            );
        }
    }

    #[test]
    fn diff_truncation_ranks_by_the_heavier_side() {
        let mut left = FlameTree::new();
        let mut right = FlameTree::new();
        for i in 1..=20i64 {
            left.insert_names(&[format!("l{i:02}")], i);
            right.insert_names(&[format!("r{i:02}")], 100 + i);
        }
        let diff = flamegraph_diff(&left, &right, Some(10));
        let decoded = decode(&diff.names, &levels(&diff.levels), 2);
        let other = decoded.iter().find(|n| n.path.last().unwrap() == OTHER_NAME).unwrap();
        assert_eq!(other.total, vec![left.total(), (101..=110).sum::<i64>()]);
        assert_eq!(decoded.len(), 1 + 10 + 1);
    }
}
