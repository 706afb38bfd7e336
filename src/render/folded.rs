//! Folded stacks (`root;…;leaf value` per line), the input format of Brendan Gregg's and
//! inferno's flame graph tools.

use std::borrow::Cow;

use crate::model::FlameTree;

/// One line per stack with a non-zero self value, frames root first, lines sorted.
pub fn folded(tree: &FlameTree) -> String {
    let mut out = String::new();
    for (stack, value) in stacks(tree, |value| value != 0) {
        out.push_str(&stack);
        out.push(' ');
        out.push_str(&value.to_string());
        out.push('\n');
    }
    out
}

/// Differential folded stacks (`root;…;leaf before after` per line), the input of inferno's
/// and Brendan Gregg's differential flame graphs: every stack with a positive self value in
/// either tree, sorted.
pub fn folded_diff(before: &FlameTree, after: &FlameTree) -> String {
    let mut merged: std::collections::BTreeMap<String, (i64, i64)> = std::collections::BTreeMap::new();
    for (stack, value) in stacks(before, |value| value > 0) {
        merged.entry(stack).or_default().0 = value;
    }
    for (stack, value) in stacks(after, |value| value > 0) {
        merged.entry(stack).or_default().1 = value;
    }
    let mut out = String::new();
    for (stack, (before, after)) in merged {
        out.push_str(&format!("{stack} {before} {after}\n"));
    }
    out
}

/// `(frames joined by ';', self value)` for every stack whose self value passes `keep`, sorted.
/// The root's own self value has no frames to print and is left out.
pub(super) fn stacks(tree: &FlameTree, keep: impl Fn(i64) -> bool) -> Vec<(String, i64)> {
    let mut stacks = Vec::new();
    tree.for_each_stack(|stack, value| {
        if stack.is_empty() || !keep(value) {
            return;
        }
        let frames: Vec<Cow<'_, str>> = stack.iter().map(|&name| frame(tree.name(name))).collect();
        stacks.push((frames.join(";"), value));
    });
    stacks.sort_unstable();
    stacks
}

/// A line break inside a name would split its line in two.
fn frame(name: &str) -> Cow<'_, str> {
    if name.contains(['\n', '\r']) {
        Cow::Owned(name.replace(['\n', '\r'], " "))
    } else {
        Cow::Borrowed(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::testutil::{sample_tree, tree_paths};

    fn parse(text: &str) -> FlameTree {
        let mut tree = FlameTree::new();
        for line in text.lines() {
            let (stack, value) = line.rsplit_once(' ').expect("value after the stack");
            let frames: Vec<&str> = stack.split(';').collect();
            tree.insert_names(&frames, value.parse().unwrap());
        }
        tree
    }

    #[test]
    fn round_trip() {
        let tree = sample_tree();
        let text = folded(&tree);
        assert!(text.ends_with('\n'));
        let lines: Vec<&str> = text.lines().collect();
        let mut sorted = lines.clone();
        sorted.sort_unstable();
        assert_eq!(lines, sorted);
        assert_eq!(lines.len(), 9);
        assert!(lines.contains(&"main;work 11"));
        assert!(lines.contains(&"main 3"));
        assert!(!text.contains("total"));
        assert_eq!(tree_paths(&parse(&text)), tree_paths(&tree));
    }

    #[test]
    fn odd_names_stay_on_one_line() {
        let mut tree = FlameTree::new();
        tree.insert_names(&["main", "fn with spaces", "multi\nline"], 2);
        tree.insert_names(&[] as &[&str], 5);
        assert_eq!(folded(&tree), "main;fn with spaces;multi line 2\n");
        assert_eq!(folded(&FlameTree::new()), "");
    }
}
