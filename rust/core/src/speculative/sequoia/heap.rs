//! The heap fast path for non-increasing acceptance vectors: the best tree holds the largest
//! path products, popped from a max-heap.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use super::{validate_acceptance, ShapeTree, MAX_NODES};
use crate::{Error, Result};

#[derive(PartialEq)]
struct HeapItem {
    prod: f64,
    seq: u64,
    parent_prod: f64,
    parent: i32,
    depth: i32,
    rank: usize,
}

impl Eq for HeapItem {}

impl PartialOrd for HeapItem {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for HeapItem {
    fn cmp(&self, other: &Self) -> Ordering {
        self.prod
            .total_cmp(&other.prod)
            .then_with(|| other.seq.cmp(&self.seq))
    }
}

/// The heap fast path, exact when `p` is non-increasing: the best `n`-node tree of depth at most
/// `d` holds the `n` largest path products. Returns the tree (in pop order: topological,
/// siblings in rank order) and the prefix values `[F[1][d], ..., F[n][d]]` (`-inf` past the
/// largest feasible tree).
pub fn sequoia_heap(p: &[f64], n: usize, d: usize) -> Result<(ShapeTree, Vec<f64>)> {
    validate_acceptance(p)?;
    if let Some(k) = (1..p.len()).find(|&k| p[k] > p[k - 1]) {
        return Err(Error::value(
            "p",
            "non-increasing for the heap fast path (use the DP otherwise)",
            format!("p[{k}] = {} > p[{}] = {}", p[k], k - 1, p[k - 1]),
        ));
    }
    if n == 0 || n > MAX_NODES * 16 {
        return Err(Error::value("n", format!("in [1, {}]", MAX_NODES * 16), n));
    }
    let mut tree = ShapeTree {
        parents: Vec::with_capacity(n),
        depth: Vec::with_capacity(n),
        rank: Vec::with_capacity(n),
    };
    let mut values = Vec::with_capacity(n);
    let mut heap = BinaryHeap::new();
    let mut seq = 0u64;
    heap.push(HeapItem {
        prod: 1.0,
        seq,
        parent_prod: 1.0,
        parent: -1,
        depth: 0,
        rank: 0,
    });
    let mut total = 0.0f64;
    while values.len() < n {
        let Some(item) = heap.pop() else { break };
        let id = tree.parents.len() as i32;
        tree.parents.push(item.parent);
        tree.depth.push(item.depth);
        tree.rank.push(item.rank as i32);
        total += item.prod;
        values.push(total);
        if (item.depth as usize) < d {
            seq += 1;
            heap.push(HeapItem {
                prod: item.prod * p[0],
                seq,
                parent_prod: item.prod,
                parent: id,
                depth: item.depth + 1,
                rank: 0,
            });
        }
        if item.parent >= 0 && item.rank + 1 < p.len() {
            seq += 1;
            heap.push(HeapItem {
                prod: item.parent_prod * p[item.rank + 1],
                seq,
                parent_prod: item.parent_prod,
                parent: item.parent,
                depth: item.depth,
                rank: item.rank + 1,
            });
        }
    }
    values.resize(n, f64::NEG_INFINITY);
    Ok((tree, values))
}
