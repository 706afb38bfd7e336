//! The merged result of a query: a call tree keyed by function name, with a total and a self
//! value per node. Queries build it (`query::merge`), every renderer reads this one shape, so
//! it lives here, below both.

use foldhash::{HashMap, HashMapExt};

/// Name of the root node, as Pyroscope's flame graphs name it.
pub const ROOT_NAME: &str = "total";

/// Name of the node that stands for the children a truncation cut off (Pyroscope's "other").
pub const OTHER_NAME: &str = "other";

/// One node of a [`FlameTree`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FlameNode {
    /// Index into [`FlameTree::names`].
    pub name: u32,
    /// Sum of the values of every stack through this node.
    pub total: i64,
    /// Sum of the values of stacks ending at this node.
    pub self_value: i64,
    /// Child node indices, in insertion order.
    pub children: Vec<u32>,
    /// Stands for children a truncation cut off (its self value is their total), rather than
    /// for a function: a renderer cutting the tree further treats it as cut already.
    pub other: bool,
}

/// A call tree merged by function name. Node 0 is the root, named [`ROOT_NAME`].
#[derive(Debug, Clone)]
pub struct FlameTree {
    names: Vec<String>,
    name_ids: HashMap<String, u32>,
    nodes: Vec<FlameNode>,
    /// (parent, name) → child, for [`FlameTree::insert`]; built on first use when the tree
    /// was built by [`FlameTree::push_child`] (a merge that never looks children up).
    child_lookup: HashMap<(u32, u32), u32>,
    indexed: bool,
}

impl Default for FlameTree {
    fn default() -> Self {
        Self::new()
    }
}

impl FlameTree {
    pub fn new() -> Self {
        let mut tree = Self {
            names: Vec::new(),
            name_ids: HashMap::new(),
            nodes: vec![FlameNode::default()],
            child_lookup: HashMap::new(),
            indexed: true,
        };
        let root_name = tree.intern(ROOT_NAME);
        tree.nodes[0].name = root_name;
        tree
    }

    /// The id of `name` in this tree's name table, adding it if new.
    pub fn intern(&mut self, name: &str) -> u32 {
        if let Some(&id) = self.name_ids.get(name) {
            return id;
        }
        let id = self.names.len() as u32;
        self.names.push(name.to_string());
        self.name_ids.insert(name.to_string(), id);
        id
    }

    /// Adds `value` along a stack of interned names, root first.
    pub fn insert(&mut self, stack_root_first: &[u32], value: i64) {
        let mut node = 0u32;
        self.nodes[0].total = self.nodes[0].total.saturating_add(value);
        for &name in stack_root_first {
            node = self.child(node, name);
            self.nodes[node as usize].total = self.nodes[node as usize].total.saturating_add(value);
        }
        self.nodes[node as usize].self_value = self.nodes[node as usize].self_value.saturating_add(value);
    }

    /// Adds `value` along a stack of function names, root first.
    pub fn insert_names<S: AsRef<str>>(&mut self, stack_root_first: &[S], value: i64) {
        let ids: Vec<u32> = stack_root_first.iter().map(|name| self.intern(name.as_ref())).collect();
        self.insert(&ids, value);
    }

    /// Appends a child of `parent` without looking for an existing one: the caller (a merge
    /// that groups siblings by name itself) guarantees `name` is new under `parent`.
    pub fn push_child(&mut self, parent: u32, name: u32, total: i64, self_value: i64, other: bool) -> u32 {
        if self.indexed {
            self.child_lookup = HashMap::new();
            self.indexed = false;
        }
        let child = self.nodes.len() as u32;
        self.nodes.push(FlameNode {
            name,
            total,
            self_value,
            children: Vec::new(),
            other,
        });
        self.nodes[parent as usize].children.push(child);
        child
    }

    /// Adds to one node's total and self value alone (its ancestors are the caller's to keep
    /// right), marking it [`FlameNode::other`] if asked.
    pub fn add_to_node(&mut self, id: u32, total: i64, self_value: i64, other: bool) {
        let node = &mut self.nodes[id as usize];
        node.total = node.total.saturating_add(total);
        node.self_value = node.self_value.saturating_add(self_value);
        node.other |= other;
    }

    fn child(&mut self, parent: u32, name: u32) -> u32 {
        if !self.indexed {
            self.child_lookup = HashMap::with_capacity(self.nodes.len());
            for (id, node) in self.nodes.iter().enumerate() {
                for &child in &node.children {
                    self.child_lookup
                        .insert((id as u32, self.nodes[child as usize].name), child);
                }
            }
            self.indexed = true;
        }
        if let Some(&child) = self.child_lookup.get(&(parent, name)) {
            return child;
        }
        let child = self.nodes.len() as u32;
        self.nodes.push(FlameNode {
            name,
            ..FlameNode::default()
        });
        self.nodes[parent as usize].children.push(child);
        self.child_lookup.insert((parent, name), child);
        child
    }

    /// Adds every stack of `other` into this tree.
    pub fn merge(&mut self, other: &FlameTree) {
        let mapping: Vec<u32> = other.names.iter().map(|name| self.intern(name)).collect();
        let mut stack = Vec::new();
        other.for_each_stack(|other_stack, value| {
            stack.clear();
            stack.extend(other_stack.iter().map(|&name| mapping[name as usize]));
            self.insert(&stack, value);
        });
    }

    /// Calls `visit(stack_root_first, self_value)` for every node with a non-zero self value.
    pub fn for_each_stack(&self, mut visit: impl FnMut(&[u32], i64)) {
        let mut path: Vec<u32> = Vec::new();
        // (node, depth) pairs; the root sits at depth 0 and is not part of any stack.
        let mut pending: Vec<(u32, usize)> = vec![(0, 0)];
        while let Some((node_id, depth)) = pending.pop() {
            let node = &self.nodes[node_id as usize];
            path.truncate(depth.saturating_sub(1));
            if depth > 0 {
                path.push(node.name);
            }
            if node.self_value != 0 {
                visit(&path, node.self_value);
            }
            for &child in node.children.iter().rev() {
                pending.push((child, depth + 1));
            }
        }
    }

    /// A tree holding only the stacks that start with `call_site` (root first), kept whole.
    pub fn filter_call_site<S: AsRef<str>>(&self, call_site: &[S]) -> FlameTree {
        let mut filtered = FlameTree::new();
        if call_site.is_empty() {
            filtered.merge(self);
            return filtered;
        }
        let mut names = Vec::new();
        self.for_each_stack(|stack, value| {
            let matches = stack.len() >= call_site.len()
                && stack
                    .iter()
                    .zip(call_site)
                    .all(|(&name, want)| self.names[name as usize] == want.as_ref());
            if matches {
                names.clear();
                names.extend(stack.iter().map(|&name| self.names[name as usize].as_str()));
                filtered.insert_names(&names, value);
            }
        });
        filtered
    }

    pub fn total(&self) -> i64 {
        self.nodes[0].total
    }

    pub fn root(&self) -> &FlameNode {
        &self.nodes[0]
    }

    pub fn node(&self, id: u32) -> &FlameNode {
        &self.nodes[id as usize]
    }

    pub fn nodes(&self) -> &[FlameNode] {
        &self.nodes
    }

    pub fn name(&self, id: u32) -> &str {
        &self.names[id as usize]
    }

    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// This tree cut to at most `max_nodes` nodes besides the root, for renderers that lay out
    /// every node they get (the SVG): nodes are kept heaviest first (by total, ties to the
    /// earlier inserted), each only after its parent, so the kept set is connected and a single
    /// deep chain of equal totals is cut too. What a kept node's pruned children held goes to
    /// one child named `other_name` (its self value), so every total stays exact; the "other"
    /// nodes are not counted in `max_nodes`, so the result has at most `2 * max_nodes` nodes.
    /// Costs O(n log n) time in the nodes visited and O(max_nodes) memory beyond them.
    ///
    /// Nodes marked [`FlameNode::other`] (a truncated merge's) are cut already: their totals go
    /// to the "other" of their parent here too, whatever their weight.
    pub fn truncated(&self, max_nodes: usize, other_name: &str) -> FlameTree {
        let mut out = FlameTree::new();
        if self.nodes.len() <= max_nodes + 1 {
            out.merge_marked(self);
            return out;
        }
        // Heaviest first: (total, earlier first), source node, parent in `out`.
        let mut queue: std::collections::BinaryHeap<(i64, std::cmp::Reverse<u32>, u32)> =
            std::collections::BinaryHeap::new();
        out.nodes[0].total = self.nodes[0].total;
        out.nodes[0].self_value = self.nodes[0].self_value;
        let mut parents: HashMap<u32, u32> = HashMap::new();
        // Cut already: (source, parent in `out`).
        let mut marked: Vec<(u32, u32)> = Vec::new();
        for &child in &self.nodes[0].children {
            if self.nodes[child as usize].other {
                marked.push((child, 0));
                continue;
            }
            queue.push((self.nodes[child as usize].total, std::cmp::Reverse(child), child));
            parents.insert(child, 0);
        }
        let mut kept = 0;
        while kept < max_nodes
            && let Some((_, _, source)) = queue.pop()
        {
            let parent = parents.remove(&source).expect("queued with its parent");
            let node = &self.nodes[source as usize];
            let name = out.intern(&self.names[node.name as usize]);
            let id = out.child(parent, name);
            out.nodes[id as usize].total += node.total;
            out.nodes[id as usize].self_value += node.self_value;
            kept += 1;
            for &child in &node.children {
                if self.nodes[child as usize].other {
                    marked.push((child, id));
                    continue;
                }
                queue.push((self.nodes[child as usize].total, std::cmp::Reverse(child), child));
                parents.insert(child, id);
            }
        }
        // Whatever was left in the queue was pruned: its total goes to its parent's "other".
        let other = out.intern(other_name);
        let pruned = queue.into_iter().map(|(_, _, source)| (source, parents[&source]));
        for (source, parent) in pruned.chain(marked) {
            let id = out.child(parent, other);
            let total = self.nodes[source as usize].total;
            let node = &mut out.nodes[id as usize];
            node.total += total;
            node.self_value += total;
            node.other = true;
        }
        out
    }

    /// [`FlameTree::merge`] that keeps the [`FlameNode::other`] marks of `source` (into an
    /// empty tree).
    fn merge_marked(&mut self, source: &FlameTree) {
        self.merge(source);
        if !source.nodes.iter().any(|node| node.other) {
            return;
        }
        // Same paths in both trees: walk them together.
        let mut pending = vec![(0u32, 0u32)];
        while let Some((from, to)) = pending.pop() {
            for &child in &source.nodes[from as usize].children {
                let node = &source.nodes[child as usize];
                let name = self.intern(&source.names[node.name as usize]);
                let target = self.child(to, name);
                self.nodes[target as usize].other |= node.other;
                pending.push((child, target));
            }
        }
    }

    /// Whether nothing was inserted.
    pub fn is_empty(&self) -> bool {
        self.nodes.len() == 1 && self.nodes[0].total == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncation_keeps_the_heaviest_nodes_and_exact_totals() {
        let mut tree = FlameTree::new();
        tree.insert_names(&["main", "work", "hash"], 50);
        tree.insert_names(&["main", "idle"], 3);
        tree.insert_names(&["gc"], 20);
        let cut = tree.truncated(3, "other");
        let mut stacks = Vec::new();
        cut.for_each_stack(|stack, value| {
            let names: Vec<&str> = stack.iter().map(|&id| cut.name(id)).collect();
            stacks.push((names.join(";"), value));
        });
        stacks.sort();
        assert_eq!(
            stacks,
            // main (53), work and hash (50) are kept; gc (20) and idle (3) go to "other"s.
            [
                ("main;other".to_string(), 3),
                ("main;work;hash".into(), 50),
                ("other".into(), 20)
            ]
        );
        assert_eq!(cut.total(), tree.total());

        // One chain of 200 000 equal frames: cut to the first frames, the rest in "other".
        let mut deep = FlameTree::new();
        let frames: Vec<u32> = (0..200_000).map(|i| deep.intern(&format!("f{}", i % 7))).collect();
        deep.insert(&frames, 9);
        let cut = deep.truncated(100, "other");
        assert_eq!(cut.nodes().len(), 1 + 100 + 1);
        assert_eq!(cut.total(), 9);
        assert_eq!(tree.truncated(100, "other").nodes().len(), tree.nodes().len());
    }

    #[test]
    fn insert_merge_and_walk() {
        let mut a = FlameTree::new();
        a.insert_names(&["main", "work", "hash"], 5);
        a.insert_names(&["main", "work"], 2);
        let mut b = FlameTree::new();
        b.insert_names(&["main", "idle"], 3);
        b.insert_names(&["main", "work", "hash"], 1);
        a.merge(&b);
        assert_eq!(a.total(), 11);
        let mut stacks = Vec::new();
        a.for_each_stack(|stack, value| {
            stacks.push((
                stack
                    .iter()
                    .map(|&id| a.name(id).to_string())
                    .collect::<Vec<_>>()
                    .join(";"),
                value,
            ))
        });
        stacks.sort();
        assert_eq!(
            stacks,
            vec![
                ("main;idle".into(), 3),
                ("main;work".into(), 2),
                ("main;work;hash".into(), 6)
            ]
        );
        let filtered = a.filter_call_site(&["main", "work"]);
        assert_eq!(filtered.total(), 8);
    }
}
