//! The greedy max-min loop shared by both algorithms.

use crate::{Error, Result};

/// How the first token is chosen, after the options are resolved against `n`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FirstChoice {
    /// DivPrune's rule: the token whose nearest neighbour is farthest.
    MostIsolated,
    /// A given token.
    Token(usize),
}

/// Index of the largest value, the lowest index among equal maxima (0 for an empty slice).
pub(crate) fn nearest_neighbour_argmax(values: &[f32]) -> usize {
    argmax(values).0
}

/// `(index, value)` of the largest entry; ties go to the lowest index. `-inf` entries are
/// never larger than anything, so masked tokens are only returned when all are masked.
pub(crate) fn argmax(values: &[f32]) -> (usize, f32) {
    // Two passes: the max reduction vectorises; the search for its first position is a
    // short scan that stops early.
    let max = values
        .iter()
        .fold(f32::NEG_INFINITY, |m, &v| if v > m { v } else { m });
    let index = values.iter().position(|&v| v == max).unwrap_or(0);
    (index, max)
}

/// `min_dist[j] = min(min_dist[j], row[j])`; chosen tokens hold `-inf` and keep it.
pub(crate) fn update_min(min_dist: &mut [f32], row: &[f32]) {
    for (m, &r) in min_dist.iter_mut().zip(row) {
        if r < *m {
            *m = r;
        }
    }
}

/// Greedy farthest-point selection of `k` of `n` tokens starting from `first`.
///
/// `row(c, min_dist, out)` writes the distances from token `c` to every token into `out`
/// (length `n`); it also sees the current running minimum distances (chosen tokens at
/// `-inf`), which the matrix-free algorithm uses to decide which rows to compute ahead.
/// Returns the picks in greedy order and the objective (the smallest distance between two
/// picks, `+inf` when `k == 1`).
pub(crate) fn greedy<F>(n: usize, k: usize, first: usize, row: F) -> Result<(Vec<usize>, f32)>
where
    F: FnMut(usize, &[f32], &mut [f32]) -> Result<()>,
{
    let (picks, values) = greedy_with(n, k, first, row, |min_dist, _| Ok(argmax(min_dist)))?;
    Ok((picks, values.iter().fold(f32::INFINITY, |m, &v| m.min(v))))
}

/// [`greedy`] with the choice of each next pick left to `choose(min_dist, picks)`, which
/// returns the pick and its value ([`argmax`] for the plain greedy). Returns the picks and the
/// value of every pick after the first.
pub(crate) fn greedy_with<F, C>(
    n: usize,
    k: usize,
    first: usize,
    mut row: F,
    mut choose: C,
) -> Result<(Vec<usize>, Vec<f32>)>
where
    F: FnMut(usize, &[f32], &mut [f32]) -> Result<()>,
    C: FnMut(&[f32], &[usize]) -> Result<(usize, f32)>,
{
    if first >= n || k == 0 || k > n {
        return Err(Error::Internal(format!(
            "greedy called with first={first}, k={k}, n={n}"
        )));
    }
    let mut chosen = vec![false; n];
    let mut picks = Vec::with_capacity(k);
    let mut values = Vec::with_capacity(k - 1);
    let mut min_dist = vec![f32::INFINITY; n];
    let mut buf = vec![0.0f32; n];
    let mut pick = first;
    loop {
        chosen[pick] = true;
        picks.push(pick);
        min_dist[pick] = f32::NEG_INFINITY;
        if picks.len() == k {
            break;
        }
        row(pick, &min_dist, &mut buf)?;
        update_min(&mut min_dist, &buf);
        let (next, value) = choose(&min_dist, &picks)?;
        if chosen[next] {
            return Err(Error::Internal(format!(
                "greedy picked token {next} twice (k={k}, n={n})"
            )));
        }
        values.push(value);
        pick = next;
    }
    Ok((picks, values))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argmax_prefers_the_lowest_index_among_ties() {
        assert_eq!(argmax(&[0.1, 0.5, 0.5, 0.2]), (1, 0.5));
        assert_eq!(argmax(&[f32::NEG_INFINITY, 0.0, 0.0]), (1, 0.0));
    }

    #[test]
    fn greedy_on_points_of_a_line_picks_the_far_ends_first() {
        // distance |i - j| on 5 points; start at 2: next is 0 (tie with 4, lower index), then 4.
        let n = 5;
        let (picks, objective) = greedy(n, 3, 2, |c, _, out| {
            for (j, o) in out.iter_mut().enumerate() {
                *o = (c as f32 - j as f32).abs();
            }
            Ok(())
        })
        .unwrap();
        assert_eq!(picks, vec![2, 0, 4]);
        assert_eq!(objective, 2.0);
    }

    #[test]
    fn duplicates_are_taken_after_every_distinct_token() {
        // tokens 0 and 1 coincide, token 2 is far: picks 0, 2, then the duplicate 1 at distance 0.
        let dist = [[0.0f32, 0.0, 1.0], [0.0, 0.0, 1.0], [1.0, 1.0, 0.0]];
        let (picks, objective) = greedy(3, 3, 0, |c, _, out| {
            out.copy_from_slice(&dist[c]);
            Ok(())
        })
        .unwrap();
        assert_eq!(picks, vec![0, 2, 1]);
        assert_eq!(objective, 0.0);
    }
}
