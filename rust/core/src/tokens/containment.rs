//! For every token, the longer tokens that contain it.

use aho_corasick::{AhoCorasick, AhoCorasickKind};
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

/// For every token, the longer tokens whose byte string contains its byte string.
///
/// Instead of comparing all pairs (quadratic in the vocabulary), one Aho-Corasick automaton
/// over all token strings finds, in a single pass over each token, every shorter token inside
/// it: the work is linear in the total length of the vocabulary plus the number of matches.
pub(super) fn containment(
    surfaces: &Surfaces,
    max_examples: usize,
    max_bytes: usize,
    cancel: &Cancel<'_>,
) -> Result<Containment> {
    let n = surfaces.offsets.len() - 1;
    let mut pattern_ids: Vec<u32> = Vec::with_capacity(n);
    let mut patterns: Vec<&[u8]> = Vec::with_capacity(n);
    for id in 0..n {
        let s = surfaces.get(id);
        if !s.is_empty() {
            pattern_ids.push(id as u32);
            patterns.push(s);
        }
    }
    let automaton = AhoCorasick::builder()
        .kind(Some(AhoCorasickKind::ContiguousNFA))
        .build(&patterns)
        .map_err(|e| Error::Internal(format!("cannot index the vocabulary: {e}")))?;
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
                    for m in automaton.find_overlapping_iter(s) {
                        if m.len() < s.len() {
                            let inner = pattern_ids[m.pattern().as_usize()];
                            found.push((inner, len, outer as u32));
                        }
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
