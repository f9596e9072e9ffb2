//! The draft-tree format and the helpers the model loop needs around it.
//!
//! A tree of `n` nodes is a `parents` array: node 0 is the root (`parents[0] = -1`), every other
//! node `i` has `0 <= parents[i] < i` (topological order), and siblings appear in rank order
//! (best first). Batches of trees are concatenated with CSR `offsets` (`offsets[0] = 0`,
//! `offsets[b + 1] - offsets[b]` = size of tree `b`), each tree keeping local parent indices.

use crate::buffer::{try_vec, try_with_capacity};
use crate::{Error, Result};

/// Checks that `parents` is a valid tree: non-empty, `parents[0] == -1`, `0 <= parents[i] < i`.
///
/// The error says which node breaks the rule and how: a second root, an index out of range,
/// a cycle, or a parent that comes after its child (not topological).
pub fn validate_parents(parents: &[i32]) -> Result<()> {
    validate_parents_named("parents", parents)
}

pub(crate) fn validate_parents_named(arg: &str, parents: &[i32]) -> Result<()> {
    let n = parents.len();
    if n == 0 {
        return Err(Error::value(
            arg,
            "a non-empty tree (node 0 is the root)",
            "an empty array",
        ));
    }
    if n > i32::MAX as usize {
        return Err(Error::value(arg, "at most 2^31 - 1 nodes", n));
    }
    if parents[0] != -1 {
        return Err(Error::value(
            arg,
            "-1 at index 0 (node 0 is the root)",
            parents[0],
        ));
    }
    for (i, &p) in parents.iter().enumerate().skip(1) {
        if p >= 0 && (p as usize) < i {
            continue;
        }
        if p == -1 {
            return Err(Error::value(
                arg,
                "a single root: only parents[0] may be -1",
                format!("parents[{i}] = -1"),
            ));
        }
        if p < -1 || p as usize >= n {
            return Err(Error::value(
                arg,
                format!("parent indices in [0, {n})"),
                format!("parents[{i}] = {p}"),
            ));
        }
        if p as usize == i || on_cycle(parents, i) {
            return Err(Error::value(
                arg,
                "an acyclic tree",
                format!("a cycle through node {i} (parents[{i}] = {p})"),
            ));
        }
        return Err(Error::value(
            arg,
            "topological order (parents[i] < i)",
            format!("parents[{i}] = {p}; reorder nodes so every parent precedes its children"),
        ));
    }
    Ok(())
}

/// Whether following parent pointers from `start` comes back to `start` (values in range).
fn on_cycle(parents: &[i32], start: usize) -> bool {
    let mut cur = start;
    for _ in 0..parents.len() {
        let p = parents[cur];
        if p < 0 || p as usize >= parents.len() {
            return false;
        }
        cur = p as usize;
        if cur == start {
            return true;
        }
    }
    false
}

/// Checks CSR `offsets` over `total` concatenated nodes; returns the number of trees.
pub fn validate_offsets(offsets: &[i64], total: usize) -> Result<usize> {
    if offsets.len() < 2 {
        return Err(Error::value(
            "offsets",
            "at least 2 entries (one tree)",
            offsets.len(),
        ));
    }
    if offsets[0] != 0 {
        return Err(Error::value("offsets", "0 at index 0", offsets[0]));
    }
    for b in 1..offsets.len() {
        if offsets[b] <= offsets[b - 1] {
            return Err(Error::value(
                "offsets",
                "strictly increasing (every tree has a root)",
                format!("offsets[{}] = {} after {}", b, offsets[b], offsets[b - 1]),
            ));
        }
    }
    let last = offsets[offsets.len() - 1];
    if last != total as i64 {
        return Err(Error::value(
            "offsets",
            format!("to end at the node count {total}"),
            format!("last offset {last}"),
        ));
    }
    Ok(offsets.len() - 1)
}

/// Checks every tree of a CSR batch.
pub fn validate_batch(parents: &[i32], offsets: &[i64]) -> Result<usize> {
    let b = validate_offsets(offsets, parents.len())?;
    for t in 0..b {
        let tree = &parents[offsets[t] as usize..offsets[t + 1] as usize];
        validate_parents_named(&format!("parents (tree {t})"), tree)?;
    }
    Ok(b)
}

/// Depth of every node (root 0) of a valid tree.
pub fn depths(parents: &[i32]) -> Result<Vec<i32>> {
    validate_parents(parents)?;
    Ok(depths_unchecked(parents))
}

pub(crate) fn depths_unchecked(parents: &[i32]) -> Vec<i32> {
    let mut depth = vec![0i32; parents.len()];
    for i in 1..parents.len() {
        depth[i] = depth[parents[i] as usize] + 1;
    }
    depth
}

/// Rank of every node among its siblings (0 = first child), from index order.
pub fn ranks(parents: &[i32]) -> Result<Vec<i32>> {
    validate_parents(parents)?;
    let mut count = vec![0i32; parents.len()];
    let mut rank = vec![0i32; parents.len()];
    for i in 1..parents.len() {
        let p = parents[i] as usize;
        rank[i] = count[p];
        count[p] += 1;
    }
    Ok(rank)
}

/// Children of every node in index (rank) order, as CSR: `(offsets [n + 1], children [n - 1])`.
pub fn children_csr(parents: &[i32]) -> Result<(Vec<u32>, Vec<u32>)> {
    validate_parents(parents)?;
    Ok(children_csr_unchecked(parents))
}

pub(crate) fn children_csr_unchecked(parents: &[i32]) -> (Vec<u32>, Vec<u32>) {
    let n = parents.len();
    let mut offsets = vec![0u32; n + 1];
    for &p in &parents[1..] {
        offsets[p as usize + 1] += 1;
    }
    for i in 0..n {
        offsets[i + 1] += offsets[i];
    }
    let mut next = offsets.clone();
    let mut children = vec![0u32; n.saturating_sub(1)];
    for (i, &p) in parents.iter().enumerate().skip(1) {
        let slot = &mut next[p as usize];
        children[*slot as usize] = i as u32;
        *slot += 1;
    }
    (offsets, children)
}

/// Children of every node padded into a table `[n, width]` (`-1` = no child); returns
/// `(table, width)` with `width` = the largest number of children (at least 1).
pub fn children_table(parents: &[i32]) -> Result<(Vec<i32>, usize)> {
    validate_parents(parents)?;
    let whole = [0, parents.len() as i64];
    children_table_unchecked(parents, &whole)
}

/// [`children_table`] of a CSR batch: one `[total, width]` table with global node ids, `width`
/// the most children of any node of any tree (at least 1).
pub fn children_table_batch(parents: &[i32], offsets: &[i64]) -> Result<(Vec<i32>, usize)> {
    validate_batch(parents, offsets)?;
    children_table_unchecked(parents, offsets)
}

fn children_table_unchecked(parents: &[i32], offsets: &[i64]) -> Result<(Vec<i32>, usize)> {
    // Global parent ids; children then arrive in index order, which is rank order per tree.
    let mut global = vec![-1i64; parents.len()];
    for w in offsets.windows(2) {
        for i in (w[0] as usize..w[1] as usize).filter(|&i| parents[i] >= 0) {
            global[i] = w[0] + parents[i] as i64;
        }
    }
    let mut count = vec![0usize; parents.len()];
    global
        .iter()
        .filter(|&&g| g >= 0)
        .for_each(|&g| count[g as usize] += 1);
    let width = count.iter().copied().max().unwrap_or(0).max(1);
    // A star tree makes this quadratic in the input: n nodes x (n - 1) columns.
    let mut table = try_vec(
        "parents",
        &format!("the {} x {width} children table", parents.len()),
        parents.len().saturating_mul(width),
        -1i32,
    )?;
    count.fill(0);
    for (i, &g) in global.iter().enumerate().filter(|(_, &g)| g >= 0) {
        table[g as usize * width + count[g as usize]] = i as i32;
        count[g as usize] += 1;
    }
    Ok((table, width))
}

/// Children of every node ordered by `rank` (ties keep index order), as CSR
/// `(offsets [n + 1], children [n - 1])`; for trees whose ids are not in rank order.
pub fn children_by_rank(parents: &[i32], rank: &[i32]) -> Result<(Vec<i64>, Vec<i32>)> {
    validate_parents(parents)?;
    crate::error::check_len("rank", rank.len(), parents.len())?;
    let (offsets, children) = children_csr_unchecked(parents);
    let mut children: Vec<i32> = children.into_iter().map(|c| c as i32).collect();
    for w in offsets.windows(2) {
        children[w[0] as usize..w[1] as usize].sort_by_key(|&c| rank[c as usize]);
    }
    Ok((offsets.into_iter().map(i64::from).collect(), children))
}

/// Proper ancestors of every node of `nodes`, nearest first (the root last), as CSR
/// `(offsets [k + 1], ancestors)`.
pub fn ancestors(parents: &[i32], nodes: &[i32]) -> Result<(Vec<i64>, Vec<i32>)> {
    validate_parents(parents)?;
    let n = parents.len();
    let (mut offsets, mut out) = (vec![0i64], Vec::new());
    for (k, &node) in nodes.iter().enumerate() {
        if node < 0 || node as usize >= n {
            let got = format!("nodes[{k}] = {node}");
            return Err(Error::value("nodes", format!("node ids in [0, {n})"), got));
        }
        let mut cur = parents[node as usize];
        while cur >= 0 {
            out.push(cur);
            cur = parents[cur as usize];
        }
        offsets.push(out.len() as i64);
    }
    Ok((offsets, out))
}

/// The subtree of the root and the nodes whose `keep` flag is set and whose ancestors are all
/// kept: `(old, parents)`, the kept node ids in index order (node `k` of the subtree is node
/// `old[k]`) and the subtree's parents, renumbered; siblings keep their relative order.
pub fn restrict(parents: &[i32], keep: &[bool]) -> Result<(Vec<i32>, Vec<i32>)> {
    validate_parents(parents)?;
    crate::error::check_len("keep", keep.len(), parents.len())?;
    let mut new_of = vec![-1i32; parents.len()];
    new_of[0] = 0;
    let (mut old, mut renumbered) = (vec![0i32], vec![-1i32]);
    for i in 1..parents.len() {
        let p = new_of[parents[i] as usize];
        if keep[i] && p >= 0 {
            new_of[i] = old.len() as i32;
            old.push(i as i32);
            renumbered.push(p);
        }
    }
    Ok((old, renumbered))
}

pub use super::masks::{
    ancestor_bitsets, ancestor_mask, ancestor_mask_batch, ancestor_mask_batch_into,
    ancestor_mask_into, max_tree_size,
};

/// Position ids `past_len + depth` of every node.
pub fn position_ids(parents: &[i32], past_len: i64) -> Result<Vec<i64>> {
    if past_len < 0 {
        return Err(Error::value("past_len", "non-negative", past_len));
    }
    let depth = depths(parents)?;
    let deepest = depth.iter().copied().max().unwrap_or(0);
    check_positions(past_len, i64::from(deepest), "the deepest node's depth")?;
    Ok(depth.into_iter().map(|d| past_len + d as i64).collect())
}

/// Checks that `past_len + largest` fits in `int64`, so that no position wraps negative.
fn check_positions(past_len: i64, largest: i64, what: &str) -> Result<()> {
    if past_len.checked_add(largest).is_none() {
        return Err(Error::value(
            "past_len",
            format!(
                "at most {} ({what} is {largest}; positions must fit in int64)",
                i64::MAX - largest
            ),
            past_len,
        ));
    }
    Ok(())
}

/// The accepted path of one verification step.
///
/// Start at the root; while some child `c` of the current node has `tokens[c] == choice[cur]`,
/// move to the first such child. Returns the node ids from the root to the last accepted node
/// and the bonus token `choice[last]`.
pub fn walk(parents: &[i32], tokens: &[i32], choice: &[i64]) -> Result<(Vec<i32>, i64)> {
    validate_parents(parents)?;
    crate::error::check_len("tokens", tokens.len(), parents.len())?;
    crate::error::check_len("choice", choice.len(), parents.len())?;
    Ok(walk_unchecked(parents, tokens, choice))
}

fn walk_unchecked(parents: &[i32], tokens: &[i32], choice: &[i64]) -> (Vec<i32>, i64) {
    let (offsets, children) = children_csr_unchecked(parents);
    let mut path = vec![0i32];
    let mut cur = 0usize;
    'descend: loop {
        let want = choice[cur];
        for &c in &children[offsets[cur] as usize..offsets[cur + 1] as usize] {
            if tokens[c as usize] as i64 == want {
                cur = c as usize;
                path.push(cur as i32);
                continue 'descend;
            }
        }
        return (path, want);
    }
}

/// [`walk`] over a CSR batch: returns `(paths concatenated, path offsets [B + 1], bonus [B])`
/// with local node ids.
pub fn walk_batch(
    parents: &[i32],
    offsets: &[i64],
    tokens: &[i32],
    choice: &[i64],
) -> Result<(Vec<i32>, Vec<i64>, Vec<i64>)> {
    let b = validate_batch(parents, offsets)?;
    crate::error::check_len("tokens", tokens.len(), parents.len())?;
    crate::error::check_len("choice", choice.len(), parents.len())?;
    let mut paths = Vec::new();
    let mut path_offsets = vec![0i64];
    let mut bonus = Vec::with_capacity(b);
    for t in 0..b {
        let r = offsets[t] as usize..offsets[t + 1] as usize;
        let (path, last) =
            walk_unchecked(&parents[r.clone()], &tokens[r.clone()], &choice[r.clone()]);
        paths.extend_from_slice(&path);
        path_offsets.push(paths.len() as i64);
        bonus.push(last);
    }
    Ok((paths, path_offsets, bonus))
}

/// KV-cache compaction after a step: the accepted `path` (node ids, root first) sits at cache
/// positions `past_len + path[k]` and must move to `past_len + k`.
///
/// Returns `(src, dst)` for the entries that actually move (`src != dst`). A torch gather
/// `cache[..., dst, :] = cache[..., src, :]` is safe because `src > dst` for every entry.
pub fn kv_compaction(path: &[i32], past_len: i64) -> Result<(Vec<i64>, Vec<i64>)> {
    if past_len < 0 {
        return Err(Error::value("past_len", "non-negative", past_len));
    }
    if path.first() != Some(&0) {
        return Err(Error::value(
            "path",
            "a path that starts at the root (node 0)",
            format!("{:?}", path.first()),
        ));
    }
    for k in 1..path.len() {
        if path[k] <= path[k - 1] {
            return Err(Error::value(
                "path",
                "strictly increasing node ids (a root-to-node path)",
                format!("path[{k}] = {} after {}", path[k], path[k - 1]),
            ));
        }
    }
    let last = path.last().map_or(0, |&v| i64::from(v));
    check_positions(past_len, last, "the last node of the path")?;
    let mut src = Vec::new();
    let mut dst = Vec::new();
    for (k, &node) in path.iter().enumerate() {
        if node as usize != k {
            src.push(past_len + node as i64);
            dst.push(past_len + k as i64);
        }
    }
    Ok((src, dst))
}

/// Compaction of a cache laid out by old node ids (e.g. the draft cache during tree growth) to
/// the renumbered tree of `TreeBuilder::finalize`: `(src, dst)` = `past_len + old`,
/// `past_len + old_to_new[old]` for every kept node, ordered by destination.
pub fn remap_compaction(old_to_new: &[i32], past_len: i64) -> Result<(Vec<i64>, Vec<i64>)> {
    if past_len < 0 {
        return Err(Error::value("past_len", "non-negative", past_len));
    }
    let kept = old_to_new.iter().filter(|&&v| v >= 0).count();
    check_positions(past_len, old_to_new.len() as i64, "the number of old ids")?;
    let mut src = vec![-1i64; kept];
    for (old, &new) in old_to_new.iter().enumerate() {
        if new < 0 {
            if new != -1 {
                return Err(Error::value("old_to_new", "-1 or a new id", new));
            }
            continue;
        }
        let new = new as usize;
        if new >= kept || src[new] != -1 {
            return Err(Error::value(
                "old_to_new",
                format!("a one-to-one map onto 0..{kept}"),
                format!("old_to_new[{old}] = {new}"),
            ));
        }
        src[new] = past_len + old as i64;
    }
    let dst = (0..kept as i64).map(|k| past_len + k).collect();
    Ok((src, dst))
}

/// EAGLE-style retrieval paths: one row per leaf (in index order) holding the node ids from
/// the root to that leaf, padded with `-1` to `max_depth + 1`. Returns `(rows, width)`.
pub fn leaf_paths(parents: &[i32]) -> Result<(Vec<i32>, usize)> {
    validate_parents(parents)?;
    let n = parents.len();
    let depth = depths_unchecked(parents);
    let width = depth.iter().copied().max().unwrap_or(0) as usize + 1;
    let mut has_child = vec![false; n];
    for &p in &parents[1..] {
        has_child[p as usize] = true;
    }
    // A broom (a long handle, then many leaves) makes this quadratic in the input.
    let leaves = has_child.iter().filter(|&&h| !h).count();
    let mut rows = try_with_capacity(
        "parents",
        &format!("the {leaves} x {width} leaf paths"),
        leaves.saturating_mul(width),
    )?;
    for leaf in (0..n).filter(|&i| !has_child[i]) {
        let start = rows.len();
        rows.resize(start + width, -1);
        let mut cur = leaf as i32;
        let mut d = depth[leaf] as usize;
        loop {
            rows[start + d] = cur;
            if cur == 0 {
                break;
            }
            cur = parents[cur as usize];
            d -= 1;
        }
    }
    Ok((rows, width))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn quadratic_outputs_are_refused_before_they_are_allocated() {
        // A 200 000-node chain: a 40 GB mask, over the default limit; an error, not an abort.
        let chain: Vec<i32> = (-1..199_999).collect();
        let e = ancestor_mask(&chain).unwrap_err();
        assert!(
            matches!(&e, Error::OutOfMemory { arg, bytes, .. } if arg == "parents" && *bytes == 40_000_000_000),
            "{e}"
        );
        let (mask, b, m) = ancestor_mask_batch(&[-1, 0, -1], &[0, 2, 3]).unwrap();
        assert_eq!((b, m), (2, 2));
        assert_eq!(
            mask,
            vec![true, false, true, true, true, false, false, false]
        );
        // A star tree's children table is n x (n - 1).
        let star: Vec<i32> = std::iter::once(-1)
            .chain(std::iter::repeat_n(0, 150_000))
            .collect();
        assert!(matches!(
            children_table(&star),
            Err(Error::OutOfMemory { .. })
        ));
    }

    #[test]
    fn positions_never_wrap_past_int64() {
        let max = i64::MAX;
        assert_eq!(position_ids(&[-1, 0], max - 1).unwrap(), vec![max - 1, max]);
        let e = position_ids(&[-1, 0], max).unwrap_err();
        assert!(e.to_string().contains("`past_len` must be at most"), "{e}");
        assert!(kv_compaction(&[0, 2], max - 1).is_err());
        assert_eq!(
            kv_compaction(&[0, 2], max - 2).unwrap(),
            (vec![max], vec![max - 1])
        );
        assert!(remap_compaction(&[0, 1], max - 1).is_err());
        assert!(remap_compaction(&[0, 1], max - 2).is_ok());
    }

    fn reference_mask(parents: &[i32]) -> Vec<bool> {
        let n = parents.len();
        let mut m = vec![false; n * n];
        for i in 0..n {
            let mut cur = i as i32;
            while cur >= 0 {
                m[i * n + cur as usize] = true;
                cur = parents[cur as usize];
            }
        }
        m
    }

    fn arb_tree(max_n: usize) -> impl Strategy<Value = Vec<i32>> {
        prop::collection::vec(any::<u32>(), 0..max_n).prop_map(|r| {
            let mut parents = vec![-1i32];
            for (i, x) in r.into_iter().enumerate() {
                parents.push((x as usize % (i + 1)) as i32);
            }
            parents
        })
    }

    #[test]
    fn validation_names_the_problem() {
        let msg = |p: &[i32]| validate_parents(p).unwrap_err().to_string();
        assert!(msg(&[]).contains("non-empty"));
        assert!(msg(&[0]).contains("-1 at index 0"));
        assert!(msg(&[-1, 0, -1]).contains("single root"));
        assert!(msg(&[-1, 5]).contains("[0, 2)"));
        assert!(msg(&[-1, 2, 1]).contains("cycle"));
        assert!(msg(&[-1, 1]).contains("cycle"));
        assert!(msg(&[-1, 2, 0]).contains("topological"));
        assert!(validate_parents(&[-1, 0, 0, 1]).is_ok());
    }

    #[test]
    fn walk_follows_matching_children_and_returns_bonus() {
        // 0 -> 1 (tok 5), 2 (tok 6); 1 -> 3 (tok 7); 2 -> 4 (tok 7)
        let parents = [-1, 0, 0, 1, 2];
        let tokens = [9, 5, 6, 7, 7];
        let choice = [6, 0, 7, 0, 3];
        let (path, bonus) = walk(&parents, &tokens, &choice).unwrap();
        assert_eq!(path, vec![0, 2, 4]);
        assert_eq!(bonus, 3);
        let (path, bonus) = walk(&parents, &tokens, &[8, 0, 0, 0, 0]).unwrap();
        assert_eq!((path, bonus), (vec![0], 8));
    }

    #[test]
    fn compaction_moves_path_into_place() {
        let (src, dst) = kv_compaction(&[0, 2, 5], 10).unwrap();
        assert_eq!(src, vec![12, 15]);
        assert_eq!(dst, vec![11, 12]);
        assert!(kv_compaction(&[1, 2], 0).is_err());
        let (src, dst) = remap_compaction(&[0, -1, 2, 1], 3).unwrap();
        assert_eq!(src, vec![3, 6, 5]);
        assert_eq!(dst, vec![3, 4, 5]);
        assert!(remap_compaction(&[0, 0], 0).is_err());
    }

    #[test]
    fn leaf_paths_pad_with_minus_one() {
        let (rows, w) = leaf_paths(&[-1, 0, 0, 1]).unwrap();
        assert_eq!(w, 3);
        assert_eq!(rows, vec![0, 2, -1, 0, 1, 3]);
    }

    #[test]
    fn batch_helpers_match_single_tree_ones() {
        let parents = [-1, 0, 0, -1, 0, 1, 2];
        let offsets = [0i64, 3, 7];
        let mut out = vec![0u8; 2 * 16];
        assert_eq!(
            ancestor_mask_batch_into(&parents, &offsets, &mut out).unwrap(),
            4
        );
        let second: Vec<bool> = out[16..].iter().map(|&b| b != 0).collect();
        assert_eq!(second, reference_mask(&[-1, 0, 1, 2]));
        assert_eq!(&out[..4], &[1, 0, 0, 0]);
        assert!(validate_batch(&parents, &[0, 3, 6]).is_err());
        assert!(validate_batch(&parents, &[0, 3, 3, 7]).is_err());
    }

    #[test]
    fn subtree_helpers_on_a_small_tree() {
        // 0 -> 1, 2; 1 -> 3; 2 -> 4; 3 -> 5
        let parents = [-1, 0, 0, 1, 2, 3];
        let keep = [true, true, true, false, true, true];
        assert_eq!(
            restrict(&parents, &keep).unwrap(),
            (vec![0, 1, 2, 4], vec![-1, 0, 0, 2])
        );
        assert_eq!(
            restrict(&parents, &[false; 6]).unwrap(),
            (vec![0], vec![-1])
        );
        assert!(restrict(&parents, &[true; 5]).is_err());
        let (off, anc) = ancestors(&parents, &[5, 0, 4]).unwrap();
        assert_eq!((off, anc), (vec![0, 3, 3, 5], vec![3, 1, 0, 2, 0]));
        assert!(ancestors(&parents, &[6]).is_err());
        let (off, kids) = children_by_rank(&[-1, 0, 0, 0], &[0, 2, 0, 1]).unwrap();
        assert_eq!((off, kids), (vec![0, 3, 3, 3, 3], vec![2, 3, 1]));
        let (table, width) = children_table_batch(&[-1, 0, -1, 0, 0], &[0, 2, 5]).unwrap();
        assert_eq!(width, 2);
        assert_eq!(table, vec![1, -1, -1, -1, 3, 4, -1, -1, -1, -1]);
        assert!(children_table_batch(&[-1, 0, 0], &[0, 2]).is_err());
    }

    proptest! {
        #[test]
        fn restrict_keeps_exactly_the_ancestor_closed_nodes(
            parents in arb_tree(80),
            seed in any::<u64>(),
        ) {
            let n = parents.len();
            let keep: Vec<bool> = (0..n).map(|i| i == 0 || (seed >> (i % 64)) & 1 == 1).collect();
            let (old, sub) = restrict(&parents, &keep).unwrap();
            let closed = |i: usize| {
                let mut cur = i as i32;
                while cur >= 0 {
                    if !keep[cur as usize] {
                        return false;
                    }
                    cur = parents[cur as usize];
                }
                true
            };
            let want: Vec<i32> = (0..n).filter(|&i| closed(i)).map(|i| i as i32).collect();
            prop_assert_eq!(&old, &want);
            validate_parents(&sub).unwrap();
            for k in 1..old.len() {
                prop_assert_eq!(old[sub[k] as usize], parents[old[k] as usize]);
            }
        }

        #[test]
        fn ancestors_and_children_match_naive_versions(parents in arb_tree(80)) {
            let n = parents.len();
            let nodes: Vec<i32> = (0..n as i32).rev().collect();
            let (off, anc) = ancestors(&parents, &nodes).unwrap();
            for (k, &node) in nodes.iter().enumerate() {
                let got = &anc[off[k] as usize..off[k + 1] as usize];
                let mask = &reference_mask(&parents)[node as usize * n..(node as usize + 1) * n];
                let mut want: Vec<i32> =
                    (0..node).filter(|&j| mask[j as usize]).collect();
                want.reverse();
                prop_assert_eq!(got, &want[..]);
            }
            let rank: Vec<i32> = (0..n as i32).map(|i| (i * 7) % 5).collect();
            let (off, kids) = children_by_rank(&parents, &rank).unwrap();
            let (table, width) = children_table(&parents).unwrap();
            for p in 0..n {
                let mut want: Vec<i32> =
                    (1..n as i32).filter(|&c| parents[c as usize] == p as i32).collect();
                let by_index: Vec<i32> = table[p * width..(p + 1) * width]
                    .iter().copied().filter(|&c| c >= 0).collect();
                prop_assert_eq!(&by_index, &want);
                want.sort_by_key(|&c| rank[c as usize]);
                prop_assert_eq!(&kids[off[p] as usize..off[p + 1] as usize], &want[..]);
            }
            let twice: Vec<i32> = parents.iter().chain(&parents).copied().collect();
            let (batch, bw) = children_table_batch(&twice, &[0, n as i64, 2 * n as i64]).unwrap();
            prop_assert_eq!(bw, width);
            for (j, &c) in batch[n * width..].iter().enumerate() {
                prop_assert_eq!(c, if table[j] < 0 { -1 } else { table[j] + n as i32 });
            }
        }

        #[test]
        fn mask_equals_reference(parents in arb_tree(300)) {
            prop_assert_eq!(ancestor_mask(&parents).unwrap(), reference_mask(&parents));
        }

        #[test]
        fn depth_and_rank_are_consistent(parents in arb_tree(100)) {
            let d = depths(&parents).unwrap();
            let r = ranks(&parents).unwrap();
            for i in 1..parents.len() {
                prop_assert_eq!(d[i], d[parents[i] as usize] + 1);
                let earlier = (1..i).filter(|&j| parents[j] == parents[i]).count();
                prop_assert_eq!(r[i] as usize, earlier);
            }
        }

        #[test]
        fn walk_path_is_a_chain_of_matching_tokens(
            parents in arb_tree(60),
            seed in any::<u64>(),
        ) {
            let n = parents.len();
            let tokens: Vec<i32> = (0..n).map(|i| ((i as u64 * 7 + seed) % 3) as i32).collect();
            let choice: Vec<i64> = (0..n).map(|i| ((i as u64 * 13 + seed / 3) % 4) as i64).collect();
            let (path, bonus) = walk(&parents, &tokens, &choice).unwrap();
            prop_assert_eq!(path[0], 0);
            for k in 1..path.len() {
                let (c, p) = (path[k] as usize, path[k - 1] as usize);
                prop_assert_eq!(parents[c] as usize, p);
                prop_assert_eq!(tokens[c] as i64, choice[p]);
            }
            let last = *path.last().unwrap() as usize;
            prop_assert_eq!(bonus, choice[last]);
            prop_assert!(!(1..n).any(|c| parents[c] as usize == last && tokens[c] as i64 == bonus));
        }
    }
}
