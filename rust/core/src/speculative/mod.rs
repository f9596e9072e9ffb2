//! Speculative decoding core: draft trees, SpecExec growth, Sequoia's dynamic program.
//!
//! - [`tree`]: the tree format (parents / depth / rank), validation, ancestor masks built from
//!   bitsets, position ids, the verification walk, KV-compaction indices, retrieval paths, and
//!   CSR-batched variants.
//! - [`builder`]: [`TreeBuilder`], SpecExec best-first growth under a node budget, and
//!   [`BatchTreeBuilder`] over several trees.
//! - [`sequoia`]: the optimal static tree for an acceptance vector (DP and heap fast path), the
//!   hardware-aware planner and the acceptance estimate.

pub mod builder;
mod masks;
pub mod sequoia;
pub mod tree;

pub use builder::{BatchTreeBuilder, BuilderConfig, FinalTree, TreeBuilder};
pub use sequoia::{plan, sequoia_dp, sequoia_heap, Plan, SequoiaTable, ShapeTree};
