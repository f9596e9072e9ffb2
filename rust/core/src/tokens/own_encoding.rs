//! Which BPE tokens are their own encoding, decided from the merge list alone.
//!
//! Scanning asks, for every token `t`, whether BPE turns the text of `t` back into `[t]`.
//! Running BPE on each token's text costs a dozen lookups in a merge table of hundreds of
//! thousands of pairs (cache misses), for every token, on every scan. Most of that work is
//! shared: the run on `t`'s text contains the runs on the texts of its parts. This module
//! derives the answer once per tokenizer, from the merges, with a few lookups per token.
//!
//! BPE repeatedly merges the adjacent pair with the lowest merge rank, the leftmost one when
//! the same pair occurs several times. Suppose BPE turns the text of `t` into `[t]`. Its last
//! step merged two symbols `x` and `y` (`text(x) + text(y) = text(t)`), and until then no
//! merge crossed the boundary between them: the run was the runs on `text(x)` and `text(y)`,
//! interleaved, each ending in one symbol. So `t` is its own encoding exactly when, for one
//! merge `(x, y) -> t`, both parts are their own encodings and no pair across the boundary is
//! merged before both parts are complete.
//!
//! Call a run *monotone* when the ranks of its merges never decrease. Two monotone runs
//! interleave by rank (the left one first on equal ranks, since equal ranks mean the same pair
//! and BPE takes the leftmost), and appending the final merge keeps the result monotone when
//! that merge ranks above every merge of the parts. For monotone runs the boundary question
//! has an exact answer that needs no simulation. Only the symbols next to the boundary matter:
//! the last symbol `u` of the left part and the first symbol `v` of the right part. `u` walks
//! up the right spine of `x`'s merge tree (the last character, then the merge that absorbs it,
//! ... up to `x`), `v` up the left spine of `y`'s tree. The pair `(u, v)`, with merge rank
//! `c`, exists from the moment both are built until `u` or `v` is absorbed, at the ranks `du`
//! and `dv` of the merges that absorb them. The pending merges on each side only grow in rank,
//! so the pair is merged, spoiling `t`, exactly when `c < du` (an equal rank on the left is the
//! same pair further left, which wins) and `c <= dv` (an equal rank on the right is the same
//! pair further right, which loses). Walking both spines down from `(x, y)`, undoing the later
//! of the two spine merges each time (the right one on equal ranks), visits every such pair.
//!
//! Going through the merges in rank order therefore decides every token whose run is monotone:
//! when a merge `(x, y) -> t` comes up, a monotone `x` or `y` has already been decided (its own
//! merges rank lower), and the walk settles the boundary. Tokens that this leaves undecided
//! (a better-ranked merge needed inside a worse-ranked part, no merge path at all, text the
//! normaliser changes) are not claimed either way: the scan runs the full BPE on them. The
//! property test beside the scanner tests checks the claim exactly: a token is accepted here
//! if and only if a plain BPE turns its text into itself with merges of non-decreasing rank.

/// Marks an id that is not known to be its own encoding.
const UNDECIDED: u32 = u32::MAX;

/// For every token id, whether BPE turns the token's text into the token itself (as far as the
/// monotone rule above decides it).
pub(crate) struct OwnEncodings {
    /// Per id: 0 for a start symbol (one character), `rank + 1` of the merge BPE ends with on
    /// the token's text, or [`UNDECIDED`].
    built_at: Vec<u32>,
    /// Per decided id built by a merge: the two parts that merge.
    parts: Vec<(u32, u32)>,
}

impl OwnEncodings {
    /// Decides every id below `n_ids`.
    ///
    /// `start_symbols`: the ids BPE starts from, one per character (a token whose text is one
    /// character); `merges`: `(left, right, merged)` in rank order, where a merge with an id
    /// of `n_ids` or more is skipped (for a pair listed twice, BPE uses one rank: the caller
    /// leaves only that one); `rank`: the rank BPE uses for an adjacent pair, if any.
    pub(crate) fn new(
        n_ids: usize,
        start_symbols: impl IntoIterator<Item = u32>,
        merges: &[(u32, u32, u32)],
        rank: impl Fn(u32, u32) -> Option<u32>,
    ) -> Self {
        let mut own = OwnEncodings {
            built_at: vec![UNDECIDED; n_ids],
            parts: vec![(0, 0); n_ids],
        };
        for id in start_symbols {
            if let Some(slot) = own.built_at.get_mut(id as usize) {
                *slot = 0;
            }
        }
        for (r, &(x, y, t)) in merges.iter().enumerate() {
            let r = r as u32;
            let in_range = [x, y, t].iter().all(|&id| (id as usize) < n_ids);
            if !in_range || own.built_at[t as usize] != UNDECIDED {
                continue;
            }
            if own.built_at[x as usize] == UNDECIDED || own.built_at[y as usize] == UNDECIDED {
                continue;
            }
            if own.boundary_holds(x, y, &rank) {
                own.built_at[t as usize] = r + 1;
                own.parts[t as usize] = (x, y);
            }
        }
        own
    }

    /// Whether no pair across the `x | y` boundary is merged before `x` and `y` are complete
    /// (both decided, monotone runs).
    fn boundary_holds(&self, x: u32, y: u32, rank: &impl Fn(u32, u32) -> Option<u32>) -> bool {
        let (mut u, mut v) = (x, y);
        // When the current u and v are absorbed (`rank + 1`); never, for x and y themselves.
        let (mut u_until, mut v_until) = (u32::MAX, u32::MAX);
        loop {
            let (u_built, v_built) = (self.built_at[u as usize], self.built_at[v as usize]);
            if u_built == 0 && v_built == 0 {
                return true;
            }
            if v_built >= u_built {
                v_until = v_built;
                v = self.parts[v as usize].0;
            } else {
                u_until = u_built;
                u = self.parts[u as usize].1;
            }
            if let Some(c) = rank(u, v) {
                let c = c + 1;
                if c < u_until && c <= v_until {
                    return false;
                }
            }
        }
    }

    /// Whether BPE is known to turn the text of `id` into `[id]`.
    #[inline]
    pub(crate) fn contains(&self, id: u32) -> bool {
        self.built_at
            .get(id as usize)
            .is_some_and(|&b| b != UNDECIDED)
    }
}
