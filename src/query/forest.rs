//! The flame-graph merge algorithm: the in-window rows of one partition's wanted series,
//! summed per stack, become a [`StackForest`] over that partition's own stack tree (`stack =
//! (parent, location)`, already hash-consed), and the forests of every partition of a query are
//! expanded together into one [`FlameTree`] keyed by function name.
//!
//! Why this shape: the stack tree has one node per distinct stack prefix, so summing totals
//! over it is one pass of integer arithmetic; each location's frames are named once per
//! partition (not once per frame of every stack); siblings are grouped by integer name ids,
//! never by hashing strings. With a node cut (`max_nodes`) the expansion is best-first — a
//! node's exact total is known before it is expanded, so the tree stops growing once the cut
//! is reached and a small answer costs about its own size plus one pass over the rows.
//!
//! Forests are independent (the query builds them on the rayon pool, `super::merge`); only the
//! expansion, O(kept nodes), runs on the query's thread.

use crate::block::Series;
use crate::model::{FlameTree, OTHER_NAME};
use crate::symbols::{ROOT_STACK, SymbolTable};

use super::{MAX_STACK_DEPTH, QueryError, RowFilter, SelectParams, Ticker};
use foldhash::{HashMap, HashMapExt};
use smallvec::SmallVec;
use std::sync::Arc;

const UNSET: u32 = u32::MAX;
/// Marks a stack as wanted (has rows, or a wanted descendant) before it gets its compact id.
const WANTED: u32 = u32::MAX - 1;

/// The tree shape of a stack table: each node's children and its location's frame names.
/// A block's shape covers its whole table (node = stack id), is built once when its symbols
/// are loaded and cached with them (blocks never change), so a query over it only sums rows;
/// a head or peer partition's shape is built by the query over its wanted stacks alone.
#[derive(Debug, Default)]
pub struct StackShape {
    /// Children of node `n` are `children[child_start[n]..child_start[n + 1]]`, in id order.
    child_start: Vec<u32>,
    children: Vec<u32>,
    /// Per node (unused for the root): its location, an index into `frame_start`.
    node_location: Vec<u32>,
    /// Frames of location `l` (root first, inlined callees after their caller) are
    /// `frames[frame_start[l]..frame_start[l + 1]]`, as ids into `names`.
    frame_start: Vec<u32>,
    frames: Vec<u32>,
    names: Vec<String>,
}

impl StackShape {
    /// The shape of every stack of `symbols`: node `n` is stack `n`.
    pub fn of_table(symbols: &SymbolTable) -> StackShape {
        let stacks = symbols.stack_count();
        let mut names = Names::new(symbols);
        let mut location_ids = vec![UNSET; symbols.location_count()];
        let mut shape = StackShape {
            node_location: Vec::with_capacity(stacks.max(1)),
            frame_start: vec![0],
            ..StackShape::default()
        };
        shape.node_location.push(UNSET);
        for stack in 1..stacks as u32 {
            let location = shape.location_slot(&mut names, &mut location_ids, symbols.stack_location_id(stack));
            shape.node_location.push(location);
        }
        shape.set_children(stacks.max(1), |stack| symbols.stack_parent(stack));
        shape.names = names.into_names();
        shape
    }

    /// The index into `frame_start` of table location `location`, naming its frames the first
    /// time.
    fn location_slot(&mut self, names: &mut Names, location_ids: &mut [u32], location: u32) -> u32 {
        let slot = &mut location_ids[location as usize];
        if *slot == UNSET {
            *slot = (self.frame_start.len() - 1) as u32;
            names.push_frames(location, &mut self.frames);
            self.frame_start.push(self.frames.len() as u32);
        }
        *slot
    }

    /// Children of `nodes` nodes in id order (node 0 is the root), as a counting sort by parent.
    fn set_children(&mut self, nodes: usize, parent_of: impl Fn(u32) -> u32) {
        let mut child_start = vec![0u32; nodes + 1];
        for node in 1..nodes as u32 {
            child_start[parent_of(node) as usize + 1] += 1;
        }
        for node in 0..nodes {
            child_start[node + 1] += child_start[node];
        }
        let mut fill = child_start.clone();
        let mut children = vec![0u32; nodes.saturating_sub(1)];
        for node in 1..nodes as u32 {
            let parent = parent_of(node) as usize;
            children[fill[parent] as usize] = node;
            fill[parent] += 1;
        }
        self.child_start = child_start;
        self.children = children;
    }

    fn nodes(&self) -> usize {
        self.node_location.len()
    }

    fn children(&self, node: u32) -> &[u32] {
        let node = node as usize;
        &self.children[self.child_start[node] as usize..self.child_start[node + 1] as usize]
    }

    fn frames(&self, node: u32) -> &[u32] {
        let location = self.node_location[node as usize] as usize;
        &self.frames[self.frame_start[location] as usize..self.frame_start[location + 1] as usize]
    }

    /// Heap bytes, about (for the symbol cache's budget).
    pub fn estimated_bytes(&self) -> usize {
        4 * (self.child_start.len() + self.children.len() + self.node_location.len())
            + 4 * (self.frame_start.len() + self.frames.len())
            + self.names.iter().map(|name| name.len() + 24).sum::<usize>()
    }
}

/// A block's symbol table with the shape of its stack tree, cached together.
#[derive(Debug)]
pub struct BlockSymbols {
    pub table: SymbolTable,
    pub shape: StackShape,
}

impl BlockSymbols {
    pub fn new(table: SymbolTable) -> Self {
        let shape = StackShape::of_table(&table);
        Self { table, shape }
    }
}

/// The shape a forest sums over: its own, or a cached block's.
#[derive(Debug)]
enum Shape {
    Own(StackShape),
    Block(Arc<BlockSymbols>),
}

/// One partition's wanted rows summed over a stack tree shape: per node, the sum of the rows
/// of every stack through it (`total`) and of the rows ending at it (`self_value`).
#[derive(Debug)]
pub struct StackForest {
    shape: Shape,
    total: Vec<i64>,
    self_value: Vec<i64>,
    /// Over a block's whole table: the nodes with rows or a descendant with some, one bit each
    /// (a node whose rows cancel out to a zero total is still drawn, as the rows say). `None`:
    /// every node of the shape is wanted.
    wanted: Option<Vec<u64>>,
    /// Some row summed into it is negative, so a child may outweigh its parent.
    has_negative: bool,
}

/// Sums the in-window rows of the series `params` wants (with a `filter`, only the rows it
/// keeps) per stack id, and says whether any of those rows is negative; `None` when the
/// deadline passed meanwhile.
fn sum_rows(
    stacks: usize,
    all_series: &[Series],
    params: &SelectParams,
    filter: Option<&RowFilter>,
    ticker: &mut Ticker,
) -> Option<(Vec<i64>, bool)> {
    let mut sums = vec![0i64; stacks];
    let mut has_negative = false;
    let window = params.window();
    for series in all_series {
        if ticker.expired(1 + params.selector.matchers.len()) {
            return None;
        }
        if !params.wants_series(series) {
            continue;
        }
        let Some(keep) = RowFilter::rows_of(filter, series) else {
            continue;
        };
        for (row, ((&time, &stack), &value)) in series.times.iter().zip(&series.stacks).zip(&series.values).enumerate()
        {
            if ticker.expired(1) {
                return None;
            }
            if window.contains(time)
                && keep.keeps(series, row, time)
                && let Some(sum) = sums.get_mut(stack as usize)
            {
                has_negative |= value < 0;
                *sum = sum.saturating_add(value);
            }
        }
    }
    Some((sums, has_negative))
}

impl StackForest {
    /// Sums the in-window rows of the series `params` wants (with a `filter`, only the rows
    /// it keeps) and builds the forest of their stacks, with a shape of its own. `None` when
    /// the deadline passed meanwhile.
    pub fn from_rows(
        symbols: &SymbolTable,
        all_series: &[Series],
        params: &SelectParams,
        filter: Option<&RowFilter>,
    ) -> Option<StackForest> {
        let mut ticker = Ticker::new();
        let (sums, _) = sum_rows(symbols.stack_count(), all_series, params, filter, &mut ticker)?;
        Self::from_sums(symbols, sums, &mut ticker)
    }

    /// [`StackForest::from_rows`] over a block's cached shape: one pass over the rows and one
    /// over the stack table, nothing named or sorted.
    pub fn over_block(
        block: Arc<BlockSymbols>,
        all_series: &[Series],
        params: &SelectParams,
        filter: Option<&RowFilter>,
    ) -> Option<StackForest> {
        let mut ticker = Ticker::new();
        let symbols = &block.table;
        let stacks = symbols.stack_count();
        debug_assert_eq!(stacks.max(1), block.shape.nodes());
        let (sums, has_negative) = sum_rows(stacks, all_series, params, filter, &mut ticker)?;
        // Descending: parents have smaller ids than their children, so a stack's mark and
        // total are final when the scan reaches it and can be passed up.
        let mut totals = sums.clone();
        let mut wanted = vec![0u64; stacks.max(1).div_ceil(64)];
        let is_set = |bits: &[u64], node: usize| bits[node / 64] & (1 << (node % 64)) != 0;
        for stack in (1..stacks).rev() {
            if ticker.expired(1) {
                return None;
            }
            if sums[stack] == 0 && !is_set(&wanted, stack) {
                continue;
            }
            let parent = symbols.stack_parent(stack as u32) as usize;
            debug_assert!(parent < stack, "stack parents precede their children");
            wanted[stack / 64] |= 1 << (stack % 64);
            wanted[parent / 64] |= 1 << (parent % 64);
            totals[parent] = totals[parent].saturating_add(totals[stack]);
        }
        if totals.is_empty() {
            totals.push(0);
        }
        let mut self_value = sums;
        if self_value.is_empty() {
            self_value.push(0);
        }
        Some(StackForest {
            shape: Shape::Block(block),
            total: totals,
            self_value,
            wanted: Some(wanted),
            has_negative,
        })
    }

    /// The forest of the stacks with a non-zero sum in `sums` (indexed by stack id), with a
    /// shape of its own holding only those stacks and their parents.
    pub fn from_sums(symbols: &SymbolTable, sums: Vec<i64>, ticker: &mut Ticker) -> Option<StackForest> {
        let stacks = sums.len();
        let has_negative = sums.iter().any(|&sum| sum < 0);
        // Descending: parents have smaller ids than their children, so a stack's mark and
        // total are final when the scan reaches it and can be passed up.
        let mut compact = vec![UNSET; stacks];
        let mut totals = sums.clone();
        for stack in (1..stacks).rev() {
            if ticker.expired(1) {
                return None;
            }
            if sums[stack] == 0 && compact[stack] == UNSET {
                continue;
            }
            let parent = symbols.stack_parent(stack as u32) as usize;
            debug_assert!(parent < stack, "stack parents precede their children");
            compact[stack] = WANTED;
            compact[parent] = WANTED;
            totals[parent] = totals[parent].saturating_add(totals[stack]);
        }
        let mut shape = StackShape {
            node_location: vec![UNSET],
            frame_start: vec![0],
            ..StackShape::default()
        };
        let mut forest_total = vec![totals.first().copied().unwrap_or(0)];
        // Rows of the empty stack (no frames) are the root's own.
        let mut forest_self = vec![sums.first().copied().unwrap_or(0)];
        let mut parents: Vec<u32> = vec![UNSET];
        if stacks > 0 {
            compact[ROOT_STACK as usize] = 0;
        }
        let mut names = Names::new(symbols);
        let mut location_ids = vec![UNSET; symbols.location_count()];
        for stack in 1..stacks {
            if compact[stack] != WANTED {
                continue;
            }
            if ticker.expired(1) {
                return None;
            }
            compact[stack] = forest_total.len() as u32;
            parents.push(compact[symbols.stack_parent(stack as u32) as usize]);
            forest_total.push(totals[stack]);
            forest_self.push(sums[stack]);
            let location = shape.location_slot(&mut names, &mut location_ids, symbols.stack_location_id(stack as u32));
            shape.node_location.push(location);
        }
        drop((compact, totals, sums));
        shape.set_children(forest_total.len(), |node| parents[node as usize]);
        shape.names = names.into_names();
        Some(StackForest {
            shape: Shape::Own(shape),
            total: forest_total,
            self_value: forest_self,
            wanted: None,
            has_negative,
        })
    }

    /// Sum of every wanted row.
    pub fn total(&self) -> i64 {
        self.total[0]
    }

    fn shape(&self) -> &StackShape {
        match &self.shape {
            Shape::Own(shape) => shape,
            Shape::Block(block) => &block.shape,
        }
    }

    fn names(&self) -> &[String] {
        &self.shape().names
    }

    /// The wanted children of `node`.
    fn children(&self, node: u32) -> impl Iterator<Item = u32> + '_ {
        let wanted = self.wanted.as_deref();
        self.shape()
            .children(node)
            .iter()
            .copied()
            .filter(move |&child| wanted.is_none_or(|bits| bits[child as usize / 64] & (1 << (child % 64)) != 0))
    }

    fn frames(&self, node: u32) -> &[u32] {
        self.shape().frames(node)
    }
}

/// Function names of one partition, each looked up and hashed once per function or address.
struct Names<'a> {
    symbols: &'a SymbolTable,
    ids: HashMap<Box<str>, u32>,
    names: Vec<String>,
    by_function: Vec<u32>,
}

impl<'a> Names<'a> {
    fn new(symbols: &'a SymbolTable) -> Self {
        Self {
            symbols,
            ids: HashMap::new(),
            names: Vec::new(),
            by_function: vec![UNSET; symbols.function_count()],
        }
    }

    fn intern(&mut self, name: &str) -> u32 {
        if let Some(&id) = self.ids.get(name) {
            return id;
        }
        let id = self.names.len() as u32;
        self.names.push(name.to_string());
        self.ids.insert(name.into(), id);
        id
    }

    /// Appends the frame names of `location`, root first, as
    /// [`SymbolTable::visit_stack_frames`] names them.
    fn push_frames(&mut self, location: u32, out: &mut Vec<u32>) {
        let symbols = self.symbols;
        let location = symbols.location(location);
        if location.lines.is_empty() {
            let name = format!("0x{:x}", location.address);
            out.push(self.intern(&name));
            return;
        }
        // The last line is the caller; earlier ones are callees inlined into it.
        for line in location.lines.iter().rev() {
            let function = line.function as usize;
            if self.by_function[function] == UNSET {
                self.by_function[function] = self.intern(symbols.function_name(line.function));
            }
            out.push(self.by_function[function]);
        }
    }

    fn into_names(self) -> Vec<String> {
        self.names
    }
}

/// A position in one forest: frame `frame` of the location of stack node `node` (the root
/// of the forest has no frames).
#[derive(Debug, Clone, Copy)]
struct Member {
    forest: u32,
    node: u32,
    frame: u32,
}

/// The forests being expanded and the output tree's name of each forest's names.
struct Expansion<'a> {
    forests: &'a [StackForest],
    names: Vec<Vec<u32>>,
}

impl Expansion<'_> {
    /// Appends `(name, member)` for each member one frame below `member`.
    fn push_children(&self, member: Member, out: &mut Vec<(u32, Member)>) {
        let forest = &self.forests[member.forest as usize];
        if member.node != 0 && member.frame + 1 < forest.frames(member.node).len() as u32 {
            let next = Member {
                frame: member.frame + 1,
                ..member
            };
            out.push((self.name(next), next));
            return;
        }
        for child in forest.children(member.node) {
            let next = Member {
                forest: member.forest,
                node: child,
                frame: 0,
            };
            out.push((self.name(next), next));
        }
    }

    fn name(&self, member: Member) -> u32 {
        let forest = &self.forests[member.forest as usize];
        self.names[member.forest as usize][forest.frames(member.node)[member.frame as usize] as usize]
    }

    /// Total and self value of a group of members sharing one output node.
    fn values(&self, members: &[(u32, Member)]) -> (i64, i64) {
        let (mut total, mut self_value) = (0i64, 0i64);
        for &(_, member) in members {
            let forest = &self.forests[member.forest as usize];
            total = total.saturating_add(forest.total[member.node as usize]);
            if member.frame + 1 == forest.frames(member.node).len() as u32 {
                self_value = self_value.saturating_add(forest.self_value[member.node as usize]);
            }
        }
        (total, self_value)
    }
}

/// Sorts `members` by name, so each output node's members are one run.
fn sort_by_name(members: &mut [(u32, Member)]) {
    if members.len() > 1 {
        members.sort_unstable_by_key(|&(name, member)| (name, member.forest, member.node));
    }
}

/// The runs of one name in sorted `members`, as `(start, end)`.
fn runs(members: &[(u32, Member)]) -> impl Iterator<Item = (usize, usize)> + '_ {
    let mut start = 0;
    std::iter::from_fn(move || {
        let name = members.get(start)?.0;
        let end = start + members[start..].iter().take_while(|(other, _)| *other == name).count();
        let run = (start, end);
        start = end;
        Some(run)
    })
}

/// Expands `forests` into one flame tree: every node, or with `cut` the `cut` heaviest (and
/// every node as heavy as the last of them), each after its parent, with the totals of what was
/// cut under one [`OTHER_NAME`] child per parent (marked [`crate::model::FlameNode::other`]),
/// so every kept node's total and self value are exact and each parent's sum adds up.
/// Refused past `max_tree_nodes` (the query's memory budget); `Ok(None)` past the deadline.
///
/// With a `guide` (a cut tree of other forests, the other side of a diff), every node whose
/// name path the guide keeps is kept too, whatever its weight here, so the two sides of a diff
/// hold exact values for every node either side keeps (the union cut).
pub fn expand(
    forests: &[StackForest],
    cut: Option<usize>,
    guide: Option<&FlameTree>,
    max_tree_nodes: usize,
) -> Result<Option<FlameTree>, QueryError> {
    let mut tree = FlameTree::new();
    let expansion = Expansion {
        forests,
        names: forests
            .iter()
            .map(|forest| forest.names().iter().map(|name| tree.intern(name)).collect())
            .collect(),
    };
    let (root_total, root_self) = forests.iter().fold((0i64, 0i64), |(total, self_value), forest| {
        (
            total.saturating_add(forest.total()),
            self_value.saturating_add(forest.self_value[0]),
        )
    });
    tree.add_to_node(0, root_total, root_self, false);
    let roots = (0..forests.len() as u32).map(|forest| Member {
        forest,
        node: 0,
        frame: 0,
    });
    let built = match cut {
        Some(cut) => expand_cut(&expansion, &mut tree, roots, (cut, guide), max_tree_nodes)?,
        None => expand_all(&expansion, &mut tree, roots, max_tree_nodes)?,
    };
    Ok(built.then_some(tree))
}

/// Depth-first over every node. Members of pending nodes live in one arena: a node's children
/// are appended after everything pending, and, depth first, all that lies past a popped node's
/// sibling block belongs to nodes already done.
fn expand_all(
    expansion: &Expansion,
    tree: &mut FlameTree,
    roots: impl Iterator<Item = Member>,
    max_tree_nodes: usize,
) -> Result<bool, QueryError> {
    struct Pending {
        node: u32,
        members: (usize, usize),
        depth: usize,
        block_end: usize,
    }
    /// Sorts the block of children members from `from` on and adds one node per name.
    fn add_children(
        expansion: &Expansion,
        tree: &mut FlameTree,
        arena: &mut [(u32, Member)],
        pending: &mut Vec<Pending>,
        (parent, from, depth): (u32, usize, usize),
    ) {
        let block_end = arena.len();
        sort_by_name(&mut arena[from..]);
        let block = &arena[from..];
        for (start, end) in runs(block) {
            let members = &block[start..end];
            let (total, mut self_value) = expansion.values(members);
            if depth == MAX_STACK_DEPTH {
                // The deepest frame a merge keeps takes the value of every frame below it.
                self_value = total;
            }
            let node = tree.push_child(parent, members[0].0, total, self_value, false);
            if depth < MAX_STACK_DEPTH {
                pending.push(Pending {
                    node,
                    members: (from + start, from + end),
                    depth,
                    block_end,
                });
            }
        }
    }
    let mut ticker = Ticker::new();
    let mut arena: Vec<(u32, Member)> = Vec::new();
    for root in roots {
        expansion.push_children(root, &mut arena);
    }
    let mut pending: Vec<Pending> = Vec::new();
    add_children(expansion, tree, &mut arena, &mut pending, (0, 0, 1));
    while let Some(item) = pending.pop() {
        if tree.nodes().len() > max_tree_nodes {
            return Err(QueryError::TooManyNodes { limit: max_tree_nodes });
        }
        arena.truncate(item.block_end);
        let from = arena.len();
        for index in item.members.0..item.members.1 {
            if ticker.expired(1) {
                return Ok(false);
            }
            let member = arena[index].1;
            expansion.push_children(member, &mut arena);
        }
        if arena.len() > from {
            add_children(
                expansion,
                tree,
                &mut arena,
                &mut pending,
                (item.node, from, item.depth + 1),
            );
        }
    }
    if tree.nodes().len() > max_tree_nodes {
        return Err(QueryError::TooManyNodes { limit: max_tree_nodes });
    }
    Ok(true)
}

/// The kept nodes of a guide tree by (guide parent, output name id): which pending node the
/// guide has, in O(1) per node.
struct Guide {
    children: HashMap<(u32, u32), u32>,
}

impl Guide {
    fn new(guide: &FlameTree, out: &FlameTree) -> Self {
        let ids: HashMap<&str, u32> = out
            .names()
            .iter()
            .enumerate()
            .map(|(id, name)| (name.as_str(), id as u32))
            .collect();
        let mut children = HashMap::new();
        for (id, node) in guide.nodes().iter().enumerate() {
            for &child in &node.children {
                let child_node = guide.node(child);
                // A remainder is no node of its own: nothing below it is kept for it.
                if child_node.other {
                    continue;
                }
                // A name the output never interned names nothing these forests have.
                if let Some(&name) = ids.get(guide.name(child_node.name)) {
                    children.insert((id as u32, name), child);
                }
            }
        }
        Self { children }
    }

    fn child(&self, parent: u32, name: u32) -> u32 {
        if parent == UNSET {
            return UNSET;
        }
        self.children.get(&(parent, name)).copied().unwrap_or(UNSET)
    }
}

/// Best-first: a node's exact total is known from its members before it is expanded, so nodes
/// come off the heap heaviest first (children never outweigh their parents) and the tree stops
/// once `cut` nodes are kept (and those as heavy as the last one, as Pyroscope's threshold
/// keeps ties). What is left pending goes to its parent's "other".
///
/// Pruning: the `cut` heaviest totals queued so far bound the threshold from below (the tree
/// has at least `cut` nodes that heavy), so a candidate lighter than the lightest of them can
/// never be kept: its total goes to its parent's "other" at once, without a heap entry or a
/// member list. The frontier of a small cut over millions of stacks is mostly such nodes.
/// Pruning needs the "children never outweigh their parents" order, so it is off when a forest
/// holds a negative row (a diff of deltas), where the plain best-first order is kept as it was.
fn expand_cut(
    expansion: &Expansion,
    tree: &mut FlameTree,
    roots: impl Iterator<Item = Member>,
    (cut, guide): (usize, Option<&FlameTree>),
    max_tree_nodes: usize,
) -> Result<bool, QueryError> {
    struct Pending {
        total: i64,
        self_value: i64,
        parent: u32,
        name: u32,
        depth: usize,
        members: SmallVec<[Member; 2]>,
    }
    type Heap = std::collections::BinaryHeap<(i64, std::cmp::Reverse<usize>)>;
    /// The candidates of one expansion step and where they go.
    struct Frontier {
        // Heaviest first, then first pushed: (total, Reverse(sequence)) → index in `pending`.
        heap: Heap,
        pending: Vec<Option<Pending>>,
        scratch: Vec<(u32, Member)>,
        /// The `cut` heaviest totals queued, lightest on top; `None`: pruning is off.
        heaviest: Option<std::collections::BinaryHeap<std::cmp::Reverse<i64>>>,
        cut: usize,
        guide: Option<Guide>,
        /// Per output node, the guide's node of the same name path (UNSET: none).
        guide_of: Vec<u32>,
        others: HashMap<u32, i64>,
    }
    impl Frontier {
        fn guided(&self, parent: u32, name: u32) -> u32 {
            self.guide
                .as_ref()
                .map_or(UNSET, |guide| guide.child(self.guide_of[parent as usize], name))
        }

        /// Whether a candidate of `total` can still be among the kept nodes; records it among
        /// the heaviest if so.
        fn may_keep(&mut self, total: i64) -> bool {
            let Some(heaviest) = self.heaviest.as_mut() else {
                return true;
            };
            if heaviest.len() < self.cut {
                heaviest.push(std::cmp::Reverse(total));
                return true;
            }
            let Some(&std::cmp::Reverse(lightest)) = heaviest.peek() else {
                return true;
            };
            if total < lightest {
                return false;
            }
            if total > lightest {
                heaviest.pop();
                heaviest.push(std::cmp::Reverse(total));
            }
            true
        }

        /// Queues one pending node per name among the members in `scratch` (or adds its total
        /// to `parent`'s "other" when it cannot be kept), then empties `scratch`.
        fn push_groups(&mut self, expansion: &Expansion, (parent, depth): (u32, usize)) {
            let mut scratch = std::mem::take(&mut self.scratch);
            sort_by_name(&mut scratch);
            for (start, end) in runs(&scratch) {
                let members = &scratch[start..end];
                let (total, self_value) = expansion.values(members);
                let name = members[0].0;
                if !self.may_keep(total) && self.guided(parent, name) == UNSET {
                    let other = self.others.entry(parent).or_default();
                    *other = other.saturating_add(total);
                    continue;
                }
                self.heap.push((total, std::cmp::Reverse(self.pending.len())));
                self.pending.push(Some(Pending {
                    total,
                    self_value,
                    parent,
                    name,
                    depth,
                    members: members.iter().map(|&(_, member)| member).collect(),
                }));
            }
            scratch.clear();
            self.scratch = scratch;
        }
    }
    let mut ticker = Ticker::new();
    let prune = expansion.forests.iter().all(|forest| !forest.has_negative);
    let mut frontier = Frontier {
        heap: Heap::new(),
        pending: Vec::new(),
        scratch: Vec::new(),
        heaviest: prune.then(|| std::collections::BinaryHeap::with_capacity(cut.saturating_add(1).min(1 << 20))),
        cut,
        guide: guide.map(|guide| Guide::new(guide, tree)),
        guide_of: vec![0],
        others: HashMap::new(),
    };
    let mut scratch = std::mem::take(&mut frontier.scratch);
    for root in roots {
        expansion.push_children(root, &mut scratch);
    }
    frontier.scratch = scratch;
    frontier.push_groups(expansion, (0, 1));
    let mut kept = 0usize;
    let mut last_total = i64::MAX;
    // Past the cut, only nodes the guide has are kept; the rest goes to its parent's "other".
    let mut past_cut = false;
    // Past the cut, the frontier (often far larger than the cut) is drained in any order.
    let mut rest: Vec<usize> = Vec::new();
    loop {
        let index = if past_cut {
            rest.extend(frontier.heap.drain().map(|(_, std::cmp::Reverse(index))| index));
            match rest.pop() {
                Some(index) => index,
                None => break,
            }
        } else {
            let Some(&(total, std::cmp::Reverse(index))) = frontier.heap.peek() else {
                break;
            };
            if kept >= cut && total < last_total {
                past_cut = true;
                continue;
            }
            frontier.heap.pop();
            index
        };
        let item = frontier.pending[index]
            .take()
            .expect("each pending node is popped once");
        let guided = frontier.guided(item.parent, item.name);
        if past_cut && guided == UNSET {
            let other = frontier.others.entry(item.parent).or_default();
            *other = other.saturating_add(item.total);
            continue;
        }
        if ticker.expired(item.members.len()) {
            return Ok(false);
        }
        let self_value = if item.depth == MAX_STACK_DEPTH {
            item.total
        } else {
            item.self_value
        };
        let node = tree.push_child(item.parent, item.name, item.total, self_value, false);
        debug_assert_eq!(node as usize, frontier.guide_of.len());
        frontier.guide_of.push(guided);
        if !past_cut {
            kept += 1;
            last_total = item.total;
        }
        if tree.nodes().len() > max_tree_nodes {
            return Err(QueryError::TooManyNodes { limit: max_tree_nodes });
        }
        if item.depth < MAX_STACK_DEPTH {
            let mut scratch = std::mem::take(&mut frontier.scratch);
            for &member in &item.members {
                expansion.push_children(member, &mut scratch);
            }
            frontier.scratch = scratch;
            frontier.push_groups(expansion, (node, item.depth + 1));
        }
    }
    let others = frontier.others;
    if others.is_empty() {
        return Ok(true);
    }
    let other_name = tree.intern(OTHER_NAME);
    let mut others: Vec<(u32, i64)> = others.into_iter().collect();
    others.sort_unstable();
    for (parent, total) in others {
        // A kept function named like the remainder takes it, so sibling names stay unique.
        let existing = tree
            .node(parent)
            .children
            .iter()
            .copied()
            .find(|&child| tree.node(child).name == other_name);
        match existing {
            Some(node) => tree.add_to_node(node, total, total, true),
            None => {
                tree.push_child(parent, other_name, total, total, true);
            }
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    //! The merge against the straightforward one it replaced (each distinct stack's frames
    //! named and inserted into a [`FlameTree`] one by one), on generated partitions and on
    //! every corpus file: whole trees equal, and cut trees exact where kept.

    use std::collections::BTreeMap;

    use super::*;
    use crate::block::Partition;
    use crate::model::{Labels, ProfileType, Selector, Tenant};
    use crate::proto::google::v1 as pprof;

    fn params(profile_type: &ProfileType, from_ms: i64, until_ms: i64) -> SelectParams {
        SelectParams {
            tenant: Tenant::parse("merge").unwrap(),
            profile_type: profile_type.clone(),
            selector: Selector::parse("{}").unwrap(),
            from_ms,
            until_ms,
        }
    }

    /// The merge as it was: per stack, its frames named, interned and inserted root first.
    fn reference(partitions: &[&Partition], params: &SelectParams) -> FlameTree {
        let mut tree = FlameTree::new();
        for partition in partitions {
            let mut per_stack: BTreeMap<u32, i64> = BTreeMap::new();
            for series in partition.series.iter().filter(|s| params.wants_series(s)) {
                for ((&time, &stack), &value) in series.times.iter().zip(&series.stacks).zip(&series.values) {
                    if time >= params.from_ms && time < params.until_ms {
                        let sum = per_stack.entry(stack).or_default();
                        *sum = sum.saturating_add(value);
                    }
                }
            }
            let mut names = Vec::new();
            for (stack, value) in per_stack {
                if value == 0 {
                    continue;
                }
                names.clear();
                partition
                    .symbols
                    .visit_stack_frames_within(stack, MAX_STACK_DEPTH, |name| names.push(tree.intern(name)));
                tree.insert(&names, value);
            }
        }
        tree
    }

    /// The merge over shapes of the query's own (head partitions) and over cached whole-table
    /// shapes (blocks): both must give the same tree, which is returned.
    fn merged(partitions: &[&Partition], params: &SelectParams, cut: Option<usize>) -> FlameTree {
        let forests: Vec<StackForest> = partitions
            .iter()
            .map(|partition| StackForest::from_rows(&partition.symbols, &partition.series, params, None).unwrap())
            .collect();
        let own = expand(&forests, cut, None, usize::MAX).unwrap().unwrap();
        let forests: Vec<StackForest> = partitions
            .iter()
            .map(|partition| {
                let block = Arc::new(BlockSymbols::new(partition.symbols.clone()));
                StackForest::over_block(block, &partition.series, params, None).unwrap()
            })
            .collect();
        let over_blocks = expand(&forests, cut, None, usize::MAX).unwrap().unwrap();
        assert_eq!(paths(&over_blocks), paths(&own), "block shapes merge as own shapes do");
        own
    }

    /// Every node by its name path: (total, self, marked other).
    fn paths(tree: &FlameTree) -> BTreeMap<Vec<String>, (i64, i64, bool)> {
        let mut out = BTreeMap::new();
        let mut pending = vec![(0u32, Vec::<String>::new())];
        while let Some((id, path)) = pending.pop() {
            let node = tree.node(id);
            for &child in &node.children {
                let mut child_path = path.clone();
                child_path.push(tree.name(tree.node(child).name).to_string());
                pending.push((child, child_path));
            }
            let previous = out.insert(path, (node.total, node.self_value, node.other));
            assert!(previous.is_none(), "sibling names are unique");
        }
        out
    }

    /// A cut tree against the whole one: the kept nodes are exactly those at least as heavy as
    /// the `cut`-th heaviest, with their whole-tree values; each parent's sum adds up; the
    /// flame graph of `cut` nodes is the same from both.
    fn check_cut(whole: &FlameTree, cut_tree: &FlameTree, cut: usize) {
        let whole_paths = paths(whole);
        let cut_paths = paths(cut_tree);
        assert_eq!(cut_tree.total(), whole.total());
        let mut totals: Vec<i64> = whole_paths
            .iter()
            .filter(|(path, _)| !path.is_empty())
            .map(|(_, &(total, _, _))| total)
            .collect();
        totals.sort_unstable_by(|a, b| b.cmp(a));
        let threshold = if totals.len() <= cut { i64::MIN } else { totals[cut - 1] };
        let expected: Vec<&Vec<String>> = whole_paths
            .iter()
            .filter(|&(path, &(total, _, _))| !path.is_empty() && total >= threshold)
            .map(|(path, _)| path)
            .collect();
        let kept: Vec<&Vec<String>> = cut_paths
            .iter()
            .filter(|&(path, &(_, _, other))| !path.is_empty() && !other)
            .map(|(path, _)| path)
            .collect();
        assert_eq!(kept, expected, "the kept nodes are the heaviest");
        for path in &kept {
            let (total, self_value, _) = cut_paths[*path];
            let (whole_total, whole_self, _) = whole_paths[*path];
            assert_eq!((total, self_value), (whole_total, whole_self), "{path:?}");
        }
        for id in 0..cut_tree.nodes().len() as u32 {
            let node = cut_tree.node(id);
            let children: i64 = node.children.iter().map(|&c| cut_tree.node(c).total).sum();
            assert_eq!(node.total, node.self_value + children, "sums add up under node {id}");
        }
        assert_eq!(
            crate::render::flamegraph(cut_tree, Some(cut)),
            crate::render::flamegraph(whole, Some(cut)),
            "the flame graph is drawn the same from the cut tree"
        );
    }

    struct Rng(u64);

    impl Rng {
        fn below(&mut self, n: u64) -> u64 {
            // xorshift64*: deterministic, enough to spread stacks.
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11) % n
        }
    }

    /// A partition of random stacks over locations with zero (an address), one or two
    /// (inlined) lines, function names shared between functions, and rows at several times.
    fn generated(seed: u64, stacks: usize, cpu: &ProfileType) -> Partition {
        let mut rng = Rng(seed | 1);
        let functions = 40u64;
        let mut strings = vec![String::new()];
        strings.extend((0..functions / 2).map(|i| format!("fn{i}")));
        let profile = pprof::Profile {
            string_table: strings,
            function: (1..=functions)
                .map(|id| pprof::Function {
                    id,
                    // Two functions per name (different ids, same name): one flame node.
                    name: (1 + (id - 1) / 2) as i64,
                    ..Default::default()
                })
                .collect(),
            location: (1..=60u64)
                .map(|id| pprof::Location {
                    id,
                    address: 0x1000 + id,
                    line: (0..id % 3)
                        .map(|line| pprof::Line {
                            function_id: 1 + (id * 7 + line * 13) % functions,
                            line: line as i64,
                            column: 0,
                        })
                        .collect(),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        };
        let mut partition = Partition::default();
        let symbols = partition.symbols.add_profile(&profile);
        let labels = Labels::new([("service_name".to_string(), "gen".to_string())]).unwrap();
        for _ in 0..stacks {
            let depth = 1 + rng.below(12) as usize;
            // Few choices near the root, so stacks share prefixes and names collide.
            let locations: Vec<u64> = (0..depth)
                .map(|level| 1 + rng.below(if level < 3 { 4 } else { 60 }))
                .collect();
            let stack = partition.symbols.add_stack(&symbols, &locations);
            let time = rng.below(4) as i64;
            let heavy = rng.below(10) == 0;
            let value = 1 + rng.below(if heavy { 10_000 } else { 50 }) as i64;
            partition.push(&labels, cpu, time, stack, value);
        }
        partition
    }

    #[test]
    fn generated_partitions_merge_as_the_reference_does_whole_and_cut() {
        let cpu = ProfileType::parse("process_cpu:cpu:nanoseconds:cpu:nanoseconds").unwrap();
        let (a, b) = (generated(7, 3_000, &cpu), generated(11, 2_000, &cpu));
        for window in [(0, 4), (1, 3)] {
            let params = params(&cpu, window.0, window.1);
            let whole = reference(&[&a, &b], &params);
            assert!(whole.nodes().len() > 1_000, "{} nodes", whole.nodes().len());
            let ours = merged(&[&a, &b], &params, None);
            assert_eq!(paths(&ours), paths(&whole));
            for cut in [1, 7, 100, 1_000, whole.nodes().len(), 10 * whole.nodes().len()] {
                check_cut(&whole, &merged(&[&a, &b], &params, Some(cut)), cut);
            }
        }
        // Nothing in the window: an empty tree.
        let empty = merged(&[&a], &params(&cpu, 100, 200), Some(10));
        assert!(empty.is_empty());
    }

    /// A diff's union cut: each side cut to `cut` and keeping what the other side's cut keeps
    /// draws the same diff flame graph as the two whole trees, and every node either side keeps
    /// has its whole-tree values on both sides.
    #[test]
    fn the_union_cut_of_two_sides_draws_the_diff_of_the_whole_trees() {
        let cpu = ProfileType::parse("process_cpu:cpu:nanoseconds:cpu:nanoseconds").unwrap();
        let (a, b) = (generated(3, 3_000, &cpu), generated(5, 2_500, &cpu));
        let params = params(&cpu, 0, 4);
        let (whole_left, whole_right) = (reference(&[&a], &params), reference(&[&b], &params));
        let forests = |partition: &Partition| {
            vec![StackForest::from_rows(&partition.symbols, &partition.series, &params, None).unwrap()]
        };
        let (left, right) = (forests(&a), forests(&b));
        let (whole_left_paths, whole_right_paths) = (paths(&whole_left), paths(&whole_right));
        let mut alone_differs = false;
        for cut in [1, 5, 60, 400, 5_000] {
            let alone = |forests: &[StackForest]| expand(forests, Some(cut), None, usize::MAX).unwrap().unwrap();
            let (left_alone, right_alone) = (alone(&left), alone(&right));
            let guided = |forests: &[StackForest], guide: &FlameTree| {
                expand(forests, Some(cut), Some(guide), usize::MAX).unwrap().unwrap()
            };
            let (left_cut, right_cut) = (guided(&left, &right_alone), guided(&right, &left_alone));
            assert_eq!(
                crate::render::flamegraph_diff(&left_cut, &right_cut, Some(cut)),
                crate::render::flamegraph_diff(&whole_left, &whole_right, Some(cut)),
                "cut {cut}"
            );
            // Without the guide, the sides alone do not always draw the same diff.
            alone_differs |= crate::render::flamegraph_diff(&left_alone, &right_alone, Some(cut))
                != crate::render::flamegraph_diff(&whole_left, &whole_right, Some(cut));
            for (cut_tree, whole_paths) in [(&left_cut, &whole_left_paths), (&right_cut, &whole_right_paths)] {
                for (path, (total, self_value, other)) in paths(cut_tree) {
                    if !other {
                        let (whole_total, whole_self, _) = whole_paths[&path];
                        assert_eq!((total, self_value), (whole_total, whole_self), "{path:?}");
                    }
                }
            }
            // Each side keeps at least what it keeps alone, and what the other side keeps.
            let kept = |tree: &FlameTree| -> std::collections::BTreeSet<Vec<String>> {
                paths(tree)
                    .into_iter()
                    .filter(|(_, v)| !v.2)
                    .map(|(path, _)| path)
                    .collect()
            };
            let left_kept = kept(&left_cut);
            assert!(left_kept.is_superset(&kept(&left_alone)));
            let in_left = kept(&whole_left);
            for path in kept(&right_alone) {
                assert_eq!(in_left.contains(&path), left_kept.contains(&path), "{path:?}");
            }
        }
        assert!(alone_differs, "the guide is what makes the cut diff exact");
    }

    #[test]
    fn stacks_deeper_than_a_merge_keeps_are_cut_at_the_same_frame() {
        let cpu = ProfileType::parse("process_cpu:cpu:nanoseconds:cpu:nanoseconds").unwrap();
        let profile = pprof::Profile {
            string_table: vec![String::new(), "a".into(), "b".into()],
            function: vec![
                pprof::Function {
                    id: 1,
                    name: 1,
                    ..Default::default()
                },
                pprof::Function {
                    id: 2,
                    name: 2,
                    ..Default::default()
                },
            ],
            // One location of two frames, so the cut falls inside a location.
            location: vec![pprof::Location {
                id: 1,
                line: vec![
                    pprof::Line {
                        function_id: 2,
                        line: 1,
                        column: 0,
                    },
                    pprof::Line {
                        function_id: 1,
                        line: 2,
                        column: 0,
                    },
                ],
                ..Default::default()
            }],
            ..Default::default()
        };
        let mut partition = Partition::default();
        let symbols = partition.symbols.add_profile(&profile);
        let labels = Labels::new([("service_name".to_string(), "deep".to_string())]).unwrap();
        for (depth, value) in [(MAX_STACK_DEPTH / 2 + 3, 5), (MAX_STACK_DEPTH, 7), (10, 1)] {
            let stack = partition.symbols.add_stack(&symbols, &vec![1; depth]);
            partition.push(&labels, &cpu, 0, stack, value);
        }
        let params = params(&cpu, 0, 1);
        let whole = reference(&[&partition], &params);
        assert_eq!(paths(&merged(&[&partition], &params, None)), paths(&whole));
        check_cut(&whole, &merged(&[&partition], &params, Some(50)), 50);
    }

    /// Every corpus file the ingester accepts, flushed to a block and read back: the merge
    /// equals the reference on every profile type of every file, whole and cut to 16 nodes.
    #[tokio::test]
    async fn every_corpus_file_merges_as_the_reference_does() {
        use crate::head::testing::TempStore;
        use crate::ingest::Ingester;
        use crate::pprof::DecodeLimits;

        const AT_MS: i64 = 1_700_000_000_000;
        let store = TempStore::new();
        let head = store.open().await;
        let ingester = Ingester::new(head.clone(), DecodeLimits::default());
        let tenant = Tenant::parse("merge").unwrap();
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/corpus/files");
        let mut accepted = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().to_string();
            let labels = Labels::new([("service_name".to_string(), name)]).unwrap();
            let raw = bytes::Bytes::from(std::fs::read(&path).unwrap());
            if ingester.push_pprof(&tenant, labels, raw, Some(AT_MS)).await.is_ok() {
                accepted += 1;
            }
        }
        assert!(accepted >= 45, "{accepted} corpus files accepted");
        head.flush().await.unwrap();
        let metas = crate::block::list(&store.storage, &tenant, 0, i64::MAX).await.unwrap();
        let mut partitions = Vec::new();
        for meta in &metas {
            partitions.push(crate::block::load_all(&store.storage, meta).await.unwrap());
        }
        let partitions: Vec<&Partition> = partitions.iter().collect();
        let mut types: Vec<ProfileType> = partitions
            .iter()
            .flat_map(|p| p.series.iter().map(|s| s.profile_type.clone()))
            .collect();
        types.sort_by_key(ProfileType::id);
        types.dedup();
        assert!(types.len() > 10, "{} profile types", types.len());
        let mut nonempty = 0;
        for profile_type in &types {
            let params = SelectParams {
                tenant: tenant.clone(),
                ..params(profile_type, AT_MS, AT_MS + 1)
            };
            let whole = reference(&partitions, &params);
            nonempty += usize::from(!whole.is_empty());
            assert_eq!(
                paths(&merged(&partitions, &params, None)),
                paths(&whole),
                "{}",
                profile_type.id()
            );
            check_cut(&whole, &merged(&partitions, &params, Some(16)), 16);
        }
        assert!(nonempty > 10);
    }
}
