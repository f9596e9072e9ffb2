//! Several trees grown together, their expansions run in parallel.

use rayon::prelude::*;

use super::expand::Rows;
use super::{BuilderConfig, FinalTree, TreeBuilder};
use crate::{Error, Result};

/// `B` independent [`TreeBuilder`]s driven together; expansions run in parallel over trees.
#[derive(Debug, Clone)]
pub struct BatchTreeBuilder {
    trees: Vec<TreeBuilder>,
}

impl BatchTreeBuilder {
    /// One builder per root token, all with the same limits.
    pub fn new(root_tokens: &[i32], cfg: BuilderConfig) -> Result<Self> {
        if root_tokens.is_empty() {
            return Err(Error::value("root_tokens", "at least one root", "none"));
        }
        let trees = root_tokens
            .iter()
            .map(|&t| TreeBuilder::new(t, cfg))
            .collect::<Result<Vec<_>>>()?;
        Ok(BatchTreeBuilder { trees })
    }

    /// The builders.
    pub fn trees(&self) -> &[TreeBuilder] {
        &self.trees
    }

    /// Up to `k` frontier nodes per tree: `(tree index, old id)` pairs, tree by tree.
    pub fn frontier(&mut self, k: usize) -> (Vec<i32>, Vec<i32>) {
        let mut tree_ids = Vec::new();
        let mut node_ids = Vec::new();
        for (t, b) in self.trees.iter_mut().enumerate() {
            for id in b.frontier(k) {
                tree_ids.push(t as i32);
                node_ids.push(id);
            }
        }
        (tree_ids, node_ids)
    }

    /// Whether every tree is done.
    pub fn done(&mut self) -> bool {
        self.trees.iter_mut().all(|b| b.done())
    }

    /// Expands rows `r` of tree `tree_ids[r]` under node `parent_ids[r]`; same layout and
    /// result as [`TreeBuilder::expand`]. Nothing changes if any row is invalid.
    pub fn expand(
        &mut self,
        tree_ids: &[i32],
        parent_ids: &[i32],
        child_tokens: &[i32],
        child_logprobs: &[f32],
        width: usize,
    ) -> Result<Vec<i32>> {
        let m = parent_ids.len();
        crate::error::check_len("tree_ids", tree_ids.len(), m)?;
        Rows::new(parent_ids, child_tokens, child_logprobs, width)?;
        let b = self.trees.len();
        let mut rows: Vec<Vec<usize>> = vec![Vec::new(); b];
        for (r, &t) in tree_ids.iter().enumerate() {
            if t < 0 || t as usize >= b {
                return Err(Error::value(
                    "tree_ids",
                    format!("tree indices in [0, {b})"),
                    format!("tree_ids[{r}] = {t}"),
                ));
            }
            rows[t as usize].push(r);
        }
        let gather = |rs: &[usize]| {
            let parents: Vec<i32> = rs.iter().map(|&r| parent_ids[r]).collect();
            let mut toks = Vec::with_capacity(rs.len() * width);
            let mut lps = Vec::with_capacity(rs.len() * width);
            for &r in rs {
                toks.extend_from_slice(&child_tokens[r * width..(r + 1) * width]);
                lps.extend_from_slice(&child_logprobs[r * width..(r + 1) * width]);
            }
            (parents, toks, lps)
        };
        let inputs: Vec<_> = rows.iter().map(|rs| gather(rs)).collect();
        /// One tree's gathered rows as an expansion input.
        fn view(input: &(Vec<i32>, Vec<i32>, Vec<f32>), width: usize) -> Rows<'_> {
            Rows {
                parent_ids: &input.0,
                child_tokens: &input.1,
                child_logprobs: &input.2,
                width,
            }
        }
        for (t, input) in inputs.iter().enumerate() {
            self.trees[t]
                .validate_expand(view(input, width))
                .map_err(|e| prefix_tree(e, t))?;
        }
        let plans = self
            .trees
            .par_iter()
            .zip(inputs.par_iter())
            .map(|(tree, input)| tree.plan_expand(view(input, width)))
            .collect::<Vec<Result<_>>>()
            .into_iter()
            .enumerate()
            .map(|(t, r)| r.map_err(|e| prefix_tree(e, t)))
            .collect::<Result<Vec<_>>>()?;
        let results: Vec<Vec<i32>> = self
            .trees
            .par_iter_mut()
            .zip(inputs.par_iter())
            .zip(plans)
            .map(|((tree, input), plan)| tree.apply(view(input, width), plan))
            .collect();
        let mut out = vec![-1i32; m * width];
        for (rs, res) in rows.iter().zip(results) {
            for (j, &r) in rs.iter().enumerate() {
                out[r * width..(r + 1) * width].copy_from_slice(&res[j * width..(j + 1) * width]);
            }
        }
        Ok(out)
    }

    /// Every tree finalized.
    pub fn finalize(&self) -> Vec<(FinalTree, Vec<i32>)> {
        self.trees.par_iter().map(|b| b.finalize()).collect()
    }
}

fn prefix_tree(e: Error, t: usize) -> Error {
    match e {
        Error::InvalidValue { arg, expected, got } => Error::InvalidValue {
            arg,
            expected,
            got: format!("{got} (tree {t})"),
        },
        other => other,
    }
}
