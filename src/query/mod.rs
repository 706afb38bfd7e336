//! Queries: pick the blocks and head data a window touches, merge their stacks by function name.

mod tree;

pub use tree::{FlameNode, FlameTree, ROOT_NAME};
