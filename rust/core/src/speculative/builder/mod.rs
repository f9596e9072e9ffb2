//! SpecExec best-first tree growth under a node budget.
//!
//! Every node has a score: the root 0, a child `score(parent) + log_decay + logprob`. With
//! `logprob <= 0` and `log_decay <= 0`, scores never rise along a path, and ties are broken by
//! insertion order (older first), so a child always ranks strictly below its parent. The
//! running top-`budget` set is therefore always closed under ancestors: evicting its worst
//! member never orphans a kept node. Two heaps make each step `O(c log n)` for `c` inserted
//! candidates: a min-heap of kept nodes (the eviction candidate on top) and a max-heap of
//! unexpanded nodes (the frontier, with lazy deletion).

mod batch;
mod expand;
mod keys;

use std::cmp::Reverse;
use std::collections::BinaryHeap;

pub use batch::BatchTreeBuilder;
use keys::{key, key_id, order_bits};

use crate::{Error, Result};

/// Log-probabilities above this are rejected; values in `(0, LOGPROB_SLACK]` are taken as 0
/// (rounding in a log-softmax can leave them slightly positive).
pub const LOGPROB_SLACK: f32 = 1e-4;

/// Nodes a new [`TreeBuilder`] reserves room for: budgets up to this allocate once.
const INITIAL_ROOM: usize = 4096;

/// Growth limits of a [`TreeBuilder`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BuilderConfig {
    /// Most nodes in the tree, root included (at least 1).
    pub budget: usize,
    /// Deepest allowed node (root = depth 0).
    pub max_depth: usize,
    /// Most children kept per node (the best `max_width` of each expanded row).
    pub max_width: usize,
    /// Added to a child's score per level (<= 0); favours shallow trees when negative.
    pub log_decay: f32,
    /// Nodes whose score falls below this are never kept (early stop); `-inf` disables it.
    pub min_logprob: f32,
}

impl BuilderConfig {
    /// Checks the limits.
    pub fn validate(&self) -> Result<()> {
        if self.budget == 0 || self.budget > (i32::MAX as usize) {
            return Err(Error::value("budget", "in [1, 2^31)", self.budget));
        }
        if self.max_depth > u16::MAX as usize {
            return Err(Error::value("max_depth", "at most 65535", self.max_depth));
        }
        if self.max_width == 0 {
            return Err(Error::value("max_width", "at least 1", self.max_width));
        }
        if self.log_decay.is_nan() || self.log_decay > 0.0 || self.log_decay.is_infinite() {
            return Err(Error::value(
                "log_decay",
                "a finite value <= 0 (scores must not rise along a path)",
                self.log_decay,
            ));
        }
        if self.min_logprob.is_nan() || self.min_logprob > 0.0 {
            return Err(Error::value(
                "min_logprob",
                "<= 0 or -inf",
                self.min_logprob,
            ));
        }
        Ok(())
    }
}

/// A finalized tree: the spec format plus each node's score.
#[derive(Debug, Clone, PartialEq)]
pub struct FinalTree {
    /// `parents[0] = -1`, `parents[i] < i`.
    pub parents: Vec<i32>,
    /// Token of every node (the root's is the builder's root token).
    pub tokens: Vec<i32>,
    /// Depth of every node.
    pub depth: Vec<i32>,
    /// Rank among siblings (0 = highest draft log-prob).
    pub rank: Vec<i32>,
    /// Score of every node (cumulative draft log-prob plus decay).
    pub score: Vec<f32>,
}

/// One inserted node (kept or evicted); children form a linked list in insertion order.
#[derive(Debug, Clone, Copy)]
struct Node {
    token: i32,
    score: f32,
    first_child: i32,
    last_child: i32,
    next_sibling: i32,
    depth: u16,
    alive: bool,
    expanded: bool,
}

/// SpecExec best-first tree growth: see the module documentation.
#[derive(Debug, Clone)]
pub struct TreeBuilder {
    cfg: BuilderConfig,
    nodes: Vec<Node>,
    kept: usize,
    worst: BinaryHeap<Reverse<u64>>,
    open: BinaryHeap<u64>,
}

impl TreeBuilder {
    /// A builder holding only the root (`root_token`, score 0).
    pub fn new(root_token: i32, cfg: BuilderConfig) -> Result<Self> {
        cfg.validate()?;
        if root_token < 0 {
            return Err(Error::value("root_token", "a token id >= 0", root_token));
        }
        // Room for a typical tree up front; a large budget is only a ceiling, and the buffers
        // grow with the nodes that `expand` actually inserts (each backed by input rows).
        let room = cfg.budget.min(INITIAL_ROOM);
        let mut b = TreeBuilder {
            cfg,
            nodes: Vec::with_capacity(room * 2),
            kept: 0,
            worst: BinaryHeap::with_capacity(room + 1),
            open: BinaryHeap::with_capacity(room + 1),
        };
        b.insert(-1, root_token, 0.0, 0);
        Ok(b)
    }

    /// The limits this builder was made with.
    pub fn config(&self) -> BuilderConfig {
        self.cfg
    }

    /// Nodes currently in the tree (root included).
    pub fn size(&self) -> usize {
        self.kept
    }

    /// Nodes ever inserted (the length of the old-to-new map).
    pub fn num_inserted(&self) -> usize {
        self.nodes.len()
    }

    /// Score of node `id` (old id), whether or not it is still kept.
    pub fn score(&self, id: usize) -> Option<f32> {
        self.nodes.get(id).map(|n| n.score)
    }

    /// Adds a node and links it under `parent`; returns its id and whether it can still be
    /// expanded (the caller puts those in `open`).
    fn add_node(&mut self, parent: i32, token: i32, score: f32, depth: u16) -> (i32, bool) {
        let id = self.nodes.len() as u32;
        self.nodes.push(Node {
            token,
            score,
            first_child: -1,
            last_child: -1,
            next_sibling: -1,
            depth,
            alive: true,
            expanded: false,
        });
        if parent >= 0 {
            let p = parent as usize;
            let last = self.nodes[p].last_child;
            if last < 0 {
                self.nodes[p].first_child = id as i32;
            } else {
                self.nodes[last as usize].next_sibling = id as i32;
            }
            self.nodes[p].last_child = id as i32;
        }
        self.kept += 1;
        (id as i32, (depth as usize) < self.cfg.max_depth)
    }

    fn insert(&mut self, parent: i32, token: i32, score: f32, depth: u16) -> i32 {
        let (id, open) = self.add_node(parent, token, score, depth);
        let k = key(score, id as u32);
        if open {
            self.open.push(k);
        }
        self.worst.push(Reverse(k));
        id
    }

    /// Score bits a newcomer must exceed to enter, or `None` while there is room.
    fn entry_bar(&self) -> Option<u32> {
        if self.kept < self.cfg.budget {
            None
        } else {
            self.worst.peek().map(|Reverse(k)| (k >> 32) as u32)
        }
    }

    fn could_grow(&self, score: f32) -> bool {
        let best_child = score + self.cfg.log_decay;
        if best_child < self.cfg.min_logprob {
            return false;
        }
        match self.entry_bar() {
            None => true,
            Some(bar) => order_bits(best_child) > bar,
        }
    }

    /// Up to `k` best unexpanded nodes (old ids, best first) whose children could still enter
    /// the tree: depth below `max_depth`, not below `min_logprob`, and better than the current
    /// worst node once the budget is full. Empty when growth is over.
    pub fn frontier(&mut self, k: usize) -> Vec<i32> {
        let mut out = Vec::with_capacity(k.min(self.open.len()));
        let mut keep = Vec::with_capacity(k.min(self.open.len()));
        while out.len() < k {
            let Some(top) = self.open.pop() else { break };
            let id = key_id(top);
            if !self.nodes[id].alive || self.nodes[id].expanded {
                continue;
            }
            keep.push(top);
            if !self.could_grow(self.nodes[id].score) {
                break;
            }
            out.push(id as i32);
        }
        self.open.extend(keep);
        out
    }

    /// Whether [`TreeBuilder::frontier`] is empty.
    pub fn done(&mut self) -> bool {
        self.frontier(1).is_empty()
    }

    /// The tree in breadth-first order with siblings in rank order, and the old-to-new map
    /// (`-1` for nodes that were evicted or never kept).
    pub fn finalize(&self) -> (FinalTree, Vec<i32>) {
        let n = self.kept;
        let mut old_to_new = vec![-1i32; self.nodes.len()];
        let mut order: Vec<u32> = Vec::with_capacity(n);
        let mut t = FinalTree {
            parents: Vec::with_capacity(n),
            tokens: Vec::with_capacity(n),
            depth: Vec::with_capacity(n),
            rank: Vec::with_capacity(n),
            score: Vec::with_capacity(n),
        };
        order.push(0);
        old_to_new[0] = 0;
        t.parents.push(-1);
        t.rank.push(0);
        // Children were linked in insertion order; ranks follow the key (score, then id).
        let mut kids: Vec<u64> = Vec::new();
        let mut head = 0;
        while head < order.len() {
            let old = order[head] as usize;
            kids.clear();
            let mut c = self.nodes[old].first_child;
            while c >= 0 {
                let node = &self.nodes[c as usize];
                if node.alive {
                    kids.push(key(node.score, c as u32));
                }
                c = node.next_sibling;
            }
            if kids.len() > 1 {
                kids.sort_unstable_by(|a, b| b.cmp(a));
            }
            for (rank, &k) in kids.iter().enumerate() {
                let cu = key_id(k);
                old_to_new[cu] = order.len() as i32;
                order.push(cu as u32);
                t.parents.push(head as i32);
                t.rank.push(rank as i32);
            }
            head += 1;
        }
        for &old in &order {
            let old = old as usize;
            t.tokens.push(self.nodes[old].token);
            t.depth.push(self.nodes[old].depth as i32);
            t.score.push(self.nodes[old].score);
        }
        (t, old_to_new)
    }
}

#[cfg(test)]
mod tests;
