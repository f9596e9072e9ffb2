//! For every token, the longer tokens that contain it.

use rayon::prelude::*;

use super::Containment;
use crate::{Cancel, Error, Result};

/// Every token's byte string (the containment report's input).
pub(super) struct Surfaces {
    pub(super) bytes: Vec<u8>,
    /// `bytes[offsets[i]..offsets[i + 1]]` is the surface of the `i`-th token (empty: none).
    pub(super) offsets: Vec<u32>,
}

impl Surfaces {
    pub(super) fn get(&self, i: usize) -> &[u8] {
        &self.bytes[self.offsets[i] as usize..self.offsets[i + 1] as usize]
    }
}

/// A byte trie over every token's surface, walked from each start position of each token.
///
/// Containment needs no failure links (an Aho-Corasick automaton's costly part to build): a
/// token is short, so walking the trie from every one of its start positions finds each
/// contained token directly. The trie is built breadth-first from the sorted surfaces, so
/// that a node's children are adjacent (their edge bytes in order): a walk reads a few small
/// arrays instead of chasing a hash table that does not fit in cache.
struct SurfaceTrie {
    /// Node of each first byte (`NONE`: no token starts with it).
    root: [u32; 256],
    /// Per node, its first child; its children are the next `children[node]` nodes.
    first_child: Vec<u32>,
    children: Vec<u16>,
    /// Per node, the byte of the edge into it.
    byte: Vec<u8>,
    /// Per node, the first token whose surface ends there (`NONE`: none).
    ends: Vec<u32>,
    /// Per token, the next token with the same surface (`NONE`: the last).
    same: Vec<u32>,
}

const NONE: u32 = u32::MAX;

impl SurfaceTrie {
    fn new(surfaces: &Surfaces, n: usize) -> Result<Self> {
        let mut order: Vec<u32> = (0..n as u32)
            .filter(|&i| !surfaces.get(i as usize).is_empty())
            .collect();
        order.par_sort_unstable_by(|&a, &b| surfaces.get(a as usize).cmp(surfaces.get(b as usize)));
        let mut trie = SurfaceTrie {
            root: [NONE; 256],
            first_child: Vec::new(),
            children: Vec::new(),
            byte: Vec::new(),
            ends: Vec::new(),
            same: vec![NONE; n],
        };
        trie.push_node(0)?;
        // (node, the range of `order` whose surfaces start with its path, its depth)
        let mut queue = std::collections::VecDeque::from([(0u32, 0usize, order.len(), 0usize)]);
        while let Some((node, mut lo, hi, depth)) = queue.pop_front() {
            // Shorter surfaces sort first: those that end at this node.
            while lo < hi && surfaces.get(order[lo] as usize).len() == depth {
                let id = order[lo];
                trie.same[id as usize] = trie.ends[node as usize];
                trie.ends[node as usize] = id;
                lo += 1;
            }
            let first = trie.ends.len() as u32;
            let mut count = 0u16;
            while lo < hi {
                let b = surfaces.get(order[lo] as usize)[depth];
                let mut end = lo + 1;
                while end < hi && surfaces.get(order[end] as usize)[depth] == b {
                    end += 1;
                }
                let child = trie.push_node(b)?;
                queue.push_back((child, lo, end, depth + 1));
                count += 1;
                lo = end;
            }
            trie.first_child[node as usize] = first;
            trie.children[node as usize] = count;
        }
        for i in 0..trie.children[0] as u32 {
            let child = 1 + i;
            trie.root[trie.byte[child as usize] as usize] = child;
        }
        Ok(trie)
    }

    fn push_node(&mut self, byte: u8) -> Result<u32> {
        let id = u32::try_from(self.ends.len())
            .ok()
            .filter(|&i| i != NONE)
            .ok_or_else(|| Error::Internal("the vocabulary's trie passes 2^32 nodes".into()))?;
        self.first_child.push(NONE);
        self.children.push(0);
        self.byte.push(byte);
        self.ends.push(NONE);
        Ok(id)
    }

    fn child(&self, node: u32, b: u8) -> u32 {
        let first = self.first_child[node as usize] as usize;
        let bytes = &self.byte[first..first + self.children[node as usize] as usize];
        let at = if bytes.len() <= 16 {
            bytes.iter().position(|&x| x == b)
        } else {
            bytes.binary_search(&b).ok()
        };
        at.map_or(NONE, |i| (first + i) as u32)
    }

    /// Calls `found(token, length)` for every token whose surface is a prefix of `s`.
    fn prefixes_of(&self, s: &[u8], mut found: impl FnMut(u32, usize)) {
        let Some((&b0, rest)) = s.split_first() else {
            return;
        };
        let mut node = self.root[b0 as usize];
        let mut len = 1;
        while node != NONE {
            let mut t = self.ends[node as usize];
            while t != NONE {
                found(t, len);
                t = self.same[t as usize];
            }
            let Some(&b) = rest.get(len - 1) else { break };
            node = self.child(node, b);
            len += 1;
        }
    }
}

/// For every token, the longer tokens whose byte string contains its byte string.
///
/// Instead of comparing all pairs (quadratic in the vocabulary), one trie over all token
/// strings finds every shorter token inside a token by a walk from each of its start
/// positions: the work is the total length of the vocabulary times the depth a walk reaches
/// (a few bytes), plus the number of matches.
pub(super) fn containment(
    surfaces: &Surfaces,
    max_examples: usize,
    max_bytes: usize,
    cancel: &Cancel<'_>,
) -> Result<Containment> {
    let n = surfaces.offsets.len() - 1;
    let trie = SurfaceTrie::new(surfaces, n)?;
    // Searched in rounds, checking `cancel` on the calling thread between them (Ctrl-C).
    const ROUND: usize = 16384;
    let mut pairs: Vec<(u32, u32, u32)> = Vec::new();
    for first in (0..n).step_by(ROUND) {
        cancel.check()?;
        let part: Vec<(u32, u32, u32)> = (first..(first + ROUND).min(n))
            .into_par_iter()
            .with_min_len(256)
            .flat_map_iter(|outer| {
                let mut found: Vec<(u32, u32, u32)> = Vec::new();
                let s = surfaces.get(outer);
                if s.len() <= max_bytes {
                    let len = s.len() as u32;
                    for start in 0..s.len() {
                        trie.prefixes_of(&s[start..], |inner, m| {
                            if m < s.len() {
                                found.push((inner, len, outer as u32));
                            }
                        });
                    }
                }
                found.sort_unstable();
                found.dedup();
                found
            })
            .collect();
        pairs.extend(part);
    }
    cancel.check()?;
    // Grouped by the contained token with a counting sort (linear; a general sort of the
    // millions of pairs of a large vocabulary cost several times more), then each group's
    // `max_examples` shortest containers, ties by id.
    let mut out = Containment {
        count: vec![0; n],
        offsets: Vec::with_capacity(n + 1),
        examples: Vec::new(),
    };
    for &(inner, _, _) in &pairs {
        out.count[inner as usize] += 1;
    }
    let mut next: Vec<usize> = Vec::with_capacity(n);
    let mut total = 0usize;
    for &c in &out.count {
        next.push(total);
        total += c as usize;
    }
    let mut grouped: Vec<(u32, u32)> = vec![(0, 0); pairs.len()];
    for &(inner, len, outer) in &pairs {
        let slot = &mut next[inner as usize];
        grouped[*slot] = (len, outer);
        *slot += 1;
    }
    drop(pairs);
    out.offsets.push(0);
    let mut begin = 0usize;
    for id in 0..n {
        let group = &mut grouped[begin..begin + out.count[id] as usize];
        begin += group.len();
        let keep = group.len().min(max_examples);
        if keep > 0 && keep < group.len() {
            group.select_nth_unstable(keep - 1);
        }
        let best = &mut group[..keep];
        best.sort_unstable();
        out.examples.extend(best.iter().map(|&(_, outer)| outer));
        out.offsets.push(out.examples.len() as u32);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn surfaces(words: &[Vec<u8>]) -> Surfaces {
        let mut s = Surfaces {
            bytes: Vec::new(),
            offsets: vec![0],
        };
        for w in words {
            s.bytes.extend_from_slice(w);
            s.offsets.push(s.bytes.len() as u32);
        }
        s
    }

    /// All pairs: `outer` contains `inner` when it is longer and holds it somewhere.
    fn brute_force(words: &[Vec<u8>], max_examples: usize, max_bytes: usize) -> Containment {
        let mut out = Containment {
            count: vec![0; words.len()],
            offsets: vec![0],
            examples: Vec::new(),
        };
        for (i, inner) in words.iter().enumerate() {
            let mut holders: Vec<(usize, u32)> = words
                .iter()
                .enumerate()
                .filter(|(_, o)| {
                    !inner.is_empty()
                        && o.len() > inner.len()
                        && o.len() <= max_bytes
                        && o.windows(inner.len()).any(|w| w == inner.as_slice())
                })
                .map(|(j, o)| (o.len(), j as u32))
                .collect();
            holders.sort_unstable();
            out.count[i] = holders.len() as u32;
            out.examples
                .extend(holders.iter().take(max_examples).map(|&(_, j)| j));
            out.offsets.push(out.examples.len() as u32);
        }
        out
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]
        /// Equal to comparing all pairs, with repeated, empty and over-long surfaces.
        #[test]
        fn equals_comparing_all_pairs(
            words in prop::collection::vec(prop::collection::vec(0u8..4, 0..7), 0..40),
            max_examples in 0usize..4,
            max_bytes in 1usize..8,
        ) {
            let got = containment(&surfaces(&words), max_examples, max_bytes, &Cancel::never())
                .unwrap();
            prop_assert_eq!(got, brute_force(&words, max_examples, max_bytes));
        }
    }

    #[test]
    fn high_bytes_and_long_runs() {
        let words: Vec<Vec<u8>> = vec![
            vec![0xff; 5],
            vec![0xff],
            vec![0xff, 0xff],
            vec![0x00, 0xff, 0x80],
            vec![0x80],
            vec![0xff, 0x80],
            vec![],
        ];
        let got = containment(&surfaces(&words), 3, 256, &Cancel::never()).unwrap();
        assert_eq!(got, brute_force(&words, 3, 256));
        assert_eq!(got.count[1], 4);
    }
}
