//! Sequoia's dynamic program for the optimal static tree, its heap fast path, the planner and
//! the acceptance-vector estimate.
//!
//! `p[k-1]` is the probability that the `k`-th ranked child of a node is the accepted one.
//! `T[m][l][b]` is the best expected number of accepted nodes (root included) over trees of
//! exactly `m` nodes, depth at most `l` and `b` root children:
//! `T[1][l][0] = 1`, `T[m][l][b] = max_y T[y][l][b-1] + p_b F[m-y][l-1]`, and
//! `F[m][l] = max_b T[m][l][b]`. Cost `O(n^2 D B)`.
//!
//! Performance, all of it exact (every build and thread count gives bit-identical tables):
//! - the split `y` only ranges where both parts are feasible, and infeasible entries are
//!   `-inf`, so no `0 * -inf = NaN` can occur (layers with `p_b = 0` are window maxima);
//! - the small last subtrees (`1..=8` nodes), usually optimal when `p_b` is small, are
//!   evaluated for all sizes of a layer at once, vectorised across sizes;
//! - the rest of each cell is scanned from the top in growing blocks, skipping what a bound
//!   (`T` non-decreasing in the first part, `F` in the last subtree) proves cannot win, and
//!   stopping as soon as the whole remaining range cannot; `F[.][l-1]` is stored reversed so
//!   the scan reads two ascending slices with eight independent accumulators (AVX2 chosen at
//!   run time);
//! - sizes are cut into bands that rayon's threads run as a pipeline: cell `m` reads only
//!   sizes below `m`, so a band can run a row once the lower bands have finished the rows
//!   before it.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use std::sync::atomic::{AtomicUsize, Ordering as AtomicOrdering};

use crate::{Error, Result};

/// Largest `max_nodes` accepted by [`sequoia_dp`].
pub const MAX_NODES: usize = 1 << 16;
/// Largest table (`(max_depth + 1) (B + 1) (max_nodes + 1)` entries) accepted by [`sequoia_dp`].
pub const MAX_TABLE_ENTRIES: usize = 1 << 27;

/// Checks an acceptance vector: non-empty, finite, non-negative, summing to at most 1.
pub fn validate_acceptance(p: &[f64]) -> Result<()> {
    if p.is_empty() {
        return Err(Error::value(
            "p",
            "a non-empty acceptance vector",
            "an empty array",
        ));
    }
    for (k, &v) in p.iter().enumerate() {
        if !v.is_finite() {
            return Err(Error::value(
                "p",
                "finite probabilities",
                format!("p[{k}] = {v}"),
            ));
        }
        if v < 0.0 {
            return Err(Error::value(
                "p",
                "non-negative probabilities",
                format!("p[{k}] = {v}"),
            ));
        }
    }
    let sum: f64 = p.iter().sum();
    if sum > 1.0 + 1e-6 {
        return Err(Error::value(
            "p",
            "probabilities summing to at most 1",
            format!("sum {sum}"),
        ));
    }
    Ok(())
}

/// The solved dynamic program: values for every size and depth, and optimal trees on demand.
#[derive(Debug, Clone)]
pub struct SequoiaTable {
    p: Vec<f64>,
    max_nodes: usize,
    max_depth: usize,
    cap: Vec<usize>,
    /// `t[(l * (B + 1) + b) * (N + 1) + m]`
    t: Vec<f64>,
    /// `f[l * (N + 1) + m]`
    f: Vec<f64>,
}

/// A static tree shape from the DP or the heap: parents, depth and rank (0-based).
#[derive(Debug, Clone, PartialEq)]
pub struct ShapeTree {
    /// `parents[0] = -1`, `parents[i] < i`.
    pub parents: Vec<i32>,
    /// Depth of every node.
    pub depth: Vec<i32>,
    /// Which draft candidate (0 = top-1) each node takes under its parent.
    pub rank: Vec<i32>,
}

#[inline(always)]
fn maxadd_kernel(a: &[f64], f: &[f64], pb: f64) -> f64 {
    let n = a.len().min(f.len());
    let (a, f) = (&a[..n], &f[..n]);
    let mut acc = [f64::NEG_INFINITY; 8];
    let mut ca = a.chunks_exact(8);
    let mut cf = f.chunks_exact(8);
    for (x, y) in (&mut ca).zip(&mut cf) {
        for k in 0..8 {
            let v = x[k] + pb * y[k];
            acc[k] = if v > acc[k] { v } else { acc[k] };
        }
    }
    let mut best = f64::NEG_INFINITY;
    for (x, y) in ca.remainder().iter().zip(cf.remainder()) {
        let v = x + pb * y;
        best = if v > best { v } else { best };
    }
    for v in acc {
        best = if v > best { v } else { best };
    }
    best
}

/// Last-subtree sizes `1..=WINDOW` are evaluated for every size of a layer at once (see
/// [`window_layer_kernel`]); the per-cell scan only covers the larger ones.
const WINDOW: usize = 8;
/// First and largest split block lengths for the bound test in [`cell_max_kernel`].
const FIRST_BLOCK: usize = 16;
const MAX_BLOCK: usize = 64;
/// Slack that keeps the block bound valid despite rounding (values are at most ~1e4).
const BOUND_SLACK: f64 = 1e-9;

/// `max(best, max_{y in lo..=hi} a[y] + pb * fr[y])` where `a` is non-decreasing and `fr`
/// non-increasing over the range (both hold mathematically on feasible ranges: more nodes never
/// hurt). `best` comes from the window pass, the small last subtrees that are usually optimal
/// when `p_b` is small. Blocks are visited from the top, growing from 16 to 64 splits; a block
/// whose bound `a[y1] + pb * fr[y0]` cannot beat the best so far is skipped. That never changes the
/// maximum, and the max itself is exact, so the result is bit-identical to the full scan.
#[inline(always)]
fn cell_max_kernel(a: &[f64], fr: &[f64], pb: f64, lo: usize, hi: usize, mut best: f64) -> f64 {
    let mut y1 = hi + 1;
    let mut block = FIRST_BLOCK;
    let pf_lo = pb * fr[lo];
    while y1 > lo {
        let a_top = a[y1 - 1];
        // No split left in `lo..y1` can beat `best`: stop.
        if a_top + pf_lo + BOUND_SLACK < best {
            break;
        }
        let y0 = y1.saturating_sub(block).max(lo);
        let bound = a_top + pb * fr[y0];
        if bound + BOUND_SLACK >= best {
            let v = maxadd_kernel(&a[y0..y1], &fr[y0..y1], pb);
            if v > best {
                best = v;
            }
        }
        y1 = y0;
        block = (block * 2).min(MAX_BLOCK);
    }
    best
}

/// `win[m] = max_{s in 1..=WINDOW, s <= m} a[m - s] + pf[s]` for `m` in `m0..win.len()`,
/// vectorised across `m` (`pf[s] = p_b F[s][l-1]`, a last subtree of `s` nodes). Infeasible
/// combinations read `-inf` on one side or both (never `0 * -inf`: layers with `p_b = 0` take
/// another path), so they never win over a feasible split.
#[inline(always)]
fn window_layer_kernel(a: &[f64], pf: &[f64], win: &mut [f64], m0: usize) {
    let m1 = win.len();
    let pf: [f64; WINDOW + 1] = std::array::from_fn(|s| pf[s]);
    // Sizes below WINDOW have fewer splits.
    let full = m0.max(WINDOW).min(m1);
    for (m, w) in win.iter_mut().enumerate().take(full).skip(m0) {
        let mut best = f64::NEG_INFINITY;
        for s in 1..=m {
            let v = a[m - s] + pf[s];
            best = if v > best { v } else { best };
        }
        *w = best;
    }
    // Eight sizes at a time in registers, one store each: vectorises without masked stores.
    let mut m = full;
    while m + 8 <= m1 {
        let mut best = [f64::NEG_INFINITY; 8];
        for (s, &ps) in pf.iter().enumerate().skip(1) {
            let src: &[f64; 8] = a[m - s..m - s + 8].try_into().expect("8 values");
            for k in 0..8 {
                let v = src[k] + ps;
                best[k] = if v > best[k] { v } else { best[k] };
            }
        }
        win[m..m + 8].copy_from_slice(&best);
        m += 8;
    }
    for m in m..m1 {
        let mut best = f64::NEG_INFINITY;
        for s in 1..=WINDOW {
            let v = a[m - s] + pf[s];
            best = if v > best { v } else { best };
        }
        win[m] = best;
    }
}

/// The shape of one `(l, b)` layer of the DP.
#[derive(Clone, Copy)]
struct Layer {
    b: usize,
    /// `p_b`, the acceptance probability of rank `b`.
    pb: f64,
    /// Most nodes in one subtree of depth `l - 1`.
    cap: usize,
    /// Most nodes in the first part (root plus `b - 1` subtrees).
    first_part_cap: usize,
    max_nodes: usize,
}

/// Fills `out[k] = T[m_start + k][l][b]` from `prev = T[.][l][b-1]`, the window pass `win`
/// (indexed by size), `g.pb` and `frev[k] = F[max_nodes - k][l-1]` (the sum `T + p_b F` is
/// rounded exactly as the recurrence writes it; the compiler never fuses it into an FMA). Infeasible cells need no
/// special case: every split of theirs reads `-inf`, so the window's value is already `-inf`.
#[inline(always)]
fn fill_layer_kernel(
    prev: &[f64],
    frev: &[f64],
    win: &[f64],
    out: &mut [f64],
    m_start: usize,
    g: Layer,
) {
    for (k, o) in out.iter_mut().enumerate() {
        let m = m_start + k;
        let lo = g.b.max(m.saturating_sub(g.cap));
        *o = if m <= WINDOW + lo || m - 1 - WINDOW < lo || lo > g.first_part_cap {
            // The window covered every feasible split.
            win[m]
        } else {
            let hi = (m - 1 - WINDOW).min(g.first_part_cap);
            let off = g.max_nodes - m;
            cell_max_kernel(&prev[..=hi], &frev[off..=off + hi], g.pb, lo, hi, win[m])
        };
    }
}

/// `out[m] = max(prev[lo(m)..=hi(m)])` for a layer whose `p_b` is 0.
fn window_max_layer(prev: &[f64], out: &mut [f64], m_start: usize, g: Layer) {
    let m_end = m_start + out.len();
    if m_end <= g.b + g.cap {
        // The window starts at `b` for every size here: a running prefix maximum.
        let mut run = f64::NEG_INFINITY;
        let mut next = g.b;
        for (k, o) in out.iter_mut().enumerate() {
            let m = m_start + k;
            if m < 2 || g.b > (m - 1).min(g.first_part_cap) {
                *o = f64::NEG_INFINITY;
                continue;
            }
            let hi = (m - 1).min(g.first_part_cap);
            while next <= hi {
                run = if prev[next] > run { prev[next] } else { run };
                next += 1;
            }
            *o = run;
        }
        return;
    }
    let mut deque: std::collections::VecDeque<usize> = std::collections::VecDeque::new();
    // Window starts never move left, so splits below the first cell's are never needed.
    let mut next = g.b.max(m_start.saturating_sub(g.cap));
    for (k, o) in out.iter_mut().enumerate() {
        let m = m_start + k;
        let lo = g.b.max(m.saturating_sub(g.cap));
        if m < 2 || lo > (m - 1).min(g.first_part_cap) {
            *o = f64::NEG_INFINITY;
            continue;
        }
        let hi = (m - 1).min(g.first_part_cap);
        while next <= hi {
            while deque.back().is_some_and(|&y| prev[y] <= prev[next]) {
                deque.pop_back();
            }
            deque.push_back(next);
            next += 1;
        }
        while deque.front().is_some_and(|&y| y < lo) {
            deque.pop_front();
        }
        *o = deque.front().map_or(f64::NEG_INFINITY, |&y| prev[y]);
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn fill_layer_avx2(
    prev: &[f64],
    frev: &[f64],
    win: &[f64],
    out: &mut [f64],
    m_start: usize,
    g: Layer,
) {
    fill_layer_kernel(prev, frev, win, out, m_start, g)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn window_layer_avx2(a: &[f64], pf: &[f64], win: &mut [f64], m0: usize) {
    window_layer_kernel(a, pf, win, m0)
}

#[derive(Clone, Copy)]
enum Simd {
    Avx2,
    Portable,
}

fn detect_simd() -> Simd {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx2") {
            return Simd::Avx2;
        }
    }
    Simd::Portable
}

/// [`fill_layer_kernel`] compiled for the best instruction set the CPU has.
fn fill_layer(
    simd: Simd,
    prev: &[f64],
    frev: &[f64],
    win: &[f64],
    out: &mut [f64],
    m_start: usize,
    g: Layer,
) {
    match simd {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `detect_simd` found AVX2 on this CPU.
        Simd::Avx2 => unsafe { fill_layer_avx2(prev, frev, win, out, m_start, g) },
        _ => fill_layer_kernel(prev, frev, win, out, m_start, g),
    }
}

/// [`window_layer_kernel`] compiled for the best instruction set the CPU has.
fn window_layer(simd: Simd, a: &[f64], pf: &[f64], win: &mut [f64], m0: usize) {
    match simd {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `detect_simd` found AVX2 on this CPU.
        Simd::Avx2 => unsafe { window_layer_avx2(a, pf, win, m0) },
        _ => window_layer_kernel(a, pf, win, m0),
    }
}

/// Fewest sizes per band: below this, bands cost more in hand-offs than they save.
const MIN_BAND: usize = 96;

/// The DP table shared by the bands: each band writes only its own sizes of each row and of
/// `F`, and reads other bands' cells only after their `done` counter (release/acquire) says
/// the rows are finished.
struct SharedTable {
    t: *mut f64,
    f: *mut f64,
}

// SAFETY: the bands write disjoint cells and synchronise every cross-band read (see
// `solve_band`); the pointers outlive the scope that uses them.
unsafe impl Sync for SharedTable {}

/// Static description of the DP being solved.
struct Problem<'a> {
    p: &'a [f64],
    cap: &'a [usize],
    max_nodes: usize,
    max_depth: usize,
    simd: Simd,
}

/// Marks a band as finished, also when it unwinds, so that no other band waits forever.
struct DoneOnDrop<'a>(&'a AtomicUsize);

impl Drop for DoneOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(usize::MAX, AtomicOrdering::Release);
    }
}

/// Waits until `counter >= target`, spinning briefly and then yielding the core.
fn wait_for(counter: &AtomicUsize, target: usize) {
    let mut spins = 0u32;
    while counter.load(AtomicOrdering::Acquire) < target {
        if spins < 2048 {
            std::hint::spin_loop();
            spins += 1;
        } else {
            std::thread::yield_now();
        }
    }
}

/// Solves sizes `m0..m1` of every row `(l, b)` in order. Cell `m` of a row reads only sizes
/// below `m`: the previous row of the same depth and `F` of the depth below. So band `j` may
/// run row `r` as soon as every lower band has finished rows `0..r` (the bands form a
/// pipeline), and it publishes `done[j] = r + 1` after each row, with `F` of a depth written
/// before that depth's last row is published.
///
/// # Safety
/// `table` must point to the `t` and `f` arrays of this problem; no other band may cover
/// sizes in `m0..m1`; bands below `band` must cover exactly `0..m0`.
unsafe fn solve_band(
    pr: &Problem<'_>,
    table: &SharedTable,
    done: &[AtomicUsize],
    band: usize,
    m0: usize,
    m1: usize,
) {
    let _guard = DoneOnDrop(&done[band]);
    let (n, width) = (pr.max_nodes, pr.p.len());
    let n1 = n + 1;
    let layer = (width + 1) * n1;
    let mut frev = vec![f64::NEG_INFINITY; n1];
    let mut pf = [f64::NEG_INFINITY; WINDOW + 1];
    let mut win = vec![f64::NEG_INFINITY; m1];
    let mut row = 0usize;
    for l in 1..=pr.max_depth {
        let c = pr.cap[l - 1];
        for b in 1..=width {
            for d in &done[..band] {
                wait_for(d, row);
            }
            let pb = pr.p[b - 1];
            // SAFETY: sizes below `m1` of `F[l-1]` are finished (own band, or lower bands past
            // row `row`, which is after depth `l-1`); nobody writes them any more.
            let f_prev = unsafe { std::slice::from_raw_parts(table.f.add((l - 1) * n1), m1) };
            if b == 1 {
                for (k, &x) in f_prev.iter().enumerate() {
                    frev[n - k] = x;
                }
            }
            for (o, &x) in pf.iter_mut().zip(f_prev) {
                *o = pb * x;
            }
            let row_base = l * layer + b * n1;
            // SAFETY: row `(l, b-1)` is finished below `m1` (same argument); row `(l, b)` is
            // written only by this band in `m0..m1`.
            let prev = unsafe { std::slice::from_raw_parts(table.t.add(row_base - n1), m1) };
            let out =
                unsafe { std::slice::from_raw_parts_mut(table.t.add(row_base + m0), m1 - m0) };
            let g = Layer {
                b,
                pb,
                cap: c,
                first_part_cap: 1 + (b - 1).saturating_mul(c),
                max_nodes: n,
            };
            if pb == 0.0 {
                // `0 * F` adds exactly 0, so the cell is a plain window maximum of `prev`; both
                // window ends only move right as m grows: a monotone deque, O(1) per cell.
                window_max_layer(prev, out, m0, g);
            } else {
                window_layer(pr.simd, prev, &pf, &mut win, m0);
                fill_layer(pr.simd, prev, &frev, &win, out, m0, g);
            }
            if b == width {
                // SAFETY: `F[l]` in `m0..m1` belongs to this band; the rows it reads are its own.
                let fl =
                    unsafe { std::slice::from_raw_parts_mut(table.f.add(l * n1 + m0), m1 - m0) };
                for bb in 0..=width {
                    let r = unsafe {
                        std::slice::from_raw_parts(table.t.add(l * layer + bb * n1 + m0), m1 - m0)
                    };
                    for (o, &x) in fl.iter_mut().zip(r) {
                        if x > *o {
                            *o = x;
                        }
                    }
                }
            }
            row += 1;
            done[band].store(row, AtomicOrdering::Release);
        }
    }
}

/// Solves the DP for every size up to `max_nodes` and depth up to `max_depth`.
///
/// The sizes are cut into bands that rayon's threads solve as a pipeline (see `solve_band`);
/// every band computes exactly what the sequential recurrence would, so the table does not
/// depend on the number of threads.
pub fn sequoia_dp(p: &[f64], max_nodes: usize, max_depth: usize) -> Result<SequoiaTable> {
    validate_acceptance(p)?;
    if max_nodes == 0 || max_nodes > MAX_NODES {
        return Err(Error::value(
            "max_nodes",
            format!("in [1, {MAX_NODES}]"),
            max_nodes,
        ));
    }
    let width = p.len();
    let entries = (max_depth + 1)
        .saturating_mul(width + 1)
        .saturating_mul(max_nodes + 1);
    if max_depth > 4096 || entries > MAX_TABLE_ENTRIES {
        return Err(Error::value(
            "max_depth",
            format!("small enough for a table of at most {MAX_TABLE_ENTRIES} entries"),
            format!("max_depth {max_depth} with max_nodes {max_nodes} and {width} ranks"),
        ));
    }
    let n1 = max_nodes + 1;
    let mut cap = vec![1usize; max_depth + 1];
    for l in 1..=max_depth {
        cap[l] = (1 + width.saturating_mul(cap[l - 1])).min(max_nodes);
    }
    let bands = rayon::current_num_threads().clamp(1, (n1 / MIN_BAND).max(1));
    Ok(solve(p, max_nodes, max_depth, cap, bands))
}

/// Solves a validated problem with `bands` bands.
fn solve(
    p: &[f64],
    max_nodes: usize,
    max_depth: usize,
    cap: Vec<usize>,
    bands: usize,
) -> SequoiaTable {
    let (width, n1) = (p.len(), max_nodes + 1);
    let layer = (width + 1) * n1;
    // Layers with l >= 1 and b >= 1 are written in full by the recurrence, so only the depth-0
    // layer and the b = 0 rows are initialised here (a zeroed allocation costs no extra pass).
    let mut t = vec![0.0f64; (max_depth + 1) * layer];
    t[..layer].fill(f64::NEG_INFINITY);
    for l in 0..=max_depth {
        t[l * layer..l * layer + n1].fill(f64::NEG_INFINITY);
        t[l * layer + 1] = 1.0;
    }
    let mut f = vec![f64::NEG_INFINITY; (max_depth + 1) * n1];
    f[1] = 1.0;
    let problem = Problem {
        p,
        cap: &cap,
        max_nodes,
        max_depth,
        simd: detect_simd(),
    };
    // Larger sizes cost more per cell (longer split ranges): bands get sizes in proportion to
    // about `m^(1/3)`, which measured best at n = 256 and 1024.
    let bounds: Vec<usize> = (0..=bands)
        .map(|j| ((j as f64 / bands as f64).powf(0.75) * n1 as f64).round() as usize)
        .collect();
    let done: Vec<AtomicUsize> = (0..bands).map(|_| AtomicUsize::new(0)).collect();
    let table = SharedTable {
        t: t.as_mut_ptr(),
        f: f.as_mut_ptr(),
    };
    // Bands are claimed in order by whichever thread comes first, so a band only ever waits
    // for bands that a running thread has claimed: no deadlock even on one thread.
    let next = AtomicUsize::new(0);
    let work = || loop {
        let j = next.fetch_add(1, AtomicOrdering::Relaxed);
        if j >= bands {
            break;
        }
        // SAFETY: `table` points into `t` and `f`, alive until the scope ends; band `j`
        // covers `bounds[j]..bounds[j + 1]` and the lower bands cover everything below.
        unsafe { solve_band(&problem, &table, &done, j, bounds[j], bounds[j + 1]) };
    };
    if bands == 1 {
        work();
    } else {
        rayon::in_place_scope(|scope| {
            for _ in 1..bands {
                scope.spawn(|_| work());
            }
            work();
        });
    }
    SequoiaTable {
        p: p.to_vec(),
        max_nodes,
        max_depth,
        cap,
        t,
        f,
    }
}

impl SequoiaTable {
    /// Largest size solved.
    pub fn max_nodes(&self) -> usize {
        self.max_nodes
    }

    /// Largest depth solved.
    pub fn max_depth(&self) -> usize {
        self.max_depth
    }

    /// The acceptance vector the table was solved for.
    pub fn acceptance(&self) -> &[f64] {
        &self.p
    }

    fn check(&self, n: usize, d: usize) -> Result<()> {
        if n == 0 || n > self.max_nodes {
            return Err(Error::value("n", format!("in [1, {}]", self.max_nodes), n));
        }
        if d > self.max_depth {
            return Err(Error::value("d", format!("in [0, {}]", self.max_depth), d));
        }
        Ok(())
    }

    /// `F[n][d]`: expected accepted nodes (root included) of the best tree of exactly `n` nodes
    /// and depth at most `d`; `-inf` when no such tree exists (`n` too large for `d` and B).
    pub fn value(&self, n: usize, d: usize) -> Result<f64> {
        self.check(n, d)?;
        Ok(self.f[d * (self.max_nodes + 1) + n])
    }

    /// All values as `[max_nodes + 1, max_depth + 1]` row-major (row 0 is `-inf`).
    pub fn values(&self) -> Vec<f64> {
        let n1 = self.max_nodes + 1;
        let d1 = self.max_depth + 1;
        let mut out = vec![f64::NEG_INFINITY; n1 * d1];
        for m in 0..n1 {
            for l in 0..d1 {
                out[m * d1 + l] = self.f[l * n1 + m];
            }
        }
        out
    }

    fn t_at(&self, m: usize, l: usize, b: usize) -> f64 {
        let n1 = self.max_nodes + 1;
        self.t[(l * (self.p.len() + 1) + b) * n1 + m]
    }

    fn f_at(&self, m: usize, l: usize) -> f64 {
        self.f[l * (self.max_nodes + 1) + m]
    }

    /// Sizes of the root subtrees (rank order) of the optimal tree of `m` nodes, depth <= `l`.
    fn split(&self, m: usize, l: usize) -> Vec<usize> {
        let width = self.p.len();
        let target = self.f_at(m, l);
        let mut b = (0..=width)
            .find(|&b| self.t_at(m, l, b) == target)
            .unwrap_or(0);
        let mut sizes = vec![0usize; b];
        let mut rest = m;
        while b >= 1 {
            let c = self.cap[l - 1];
            let pb = self.p[b - 1];
            let lo = b.max(rest.saturating_sub(c));
            let hi = (rest - 1).min(1 + (b - 1).saturating_mul(c));
            let mut best = f64::NEG_INFINITY;
            let mut best_y = lo;
            for y in lo..=hi {
                let v = self.t_at(y, l, b - 1) + pb * self.f_at(rest - y, l - 1);
                if v > best {
                    best = v;
                    best_y = y;
                }
            }
            sizes[b - 1] = rest - best_y;
            rest = best_y;
            b -= 1;
        }
        sizes
    }

    /// The optimal tree of exactly `n` nodes and depth at most `d`, breadth-first with siblings
    /// in rank order.
    pub fn tree(&self, n: usize, d: usize) -> Result<ShapeTree> {
        self.check(n, d)?;
        if self.f_at(n, d) == f64::NEG_INFINITY {
            return Err(Error::value(
                "n",
                format!(
                    "at most {} nodes for depth {d} with {} ranks",
                    self.cap[d],
                    self.p.len()
                ),
                n,
            ));
        }
        let mut out = ShapeTree {
            parents: vec![-1],
            depth: vec![0],
            rank: vec![0],
        };
        let mut queue = vec![(n, d)];
        let mut head = 0;
        while head < queue.len() {
            let (m, l) = queue[head];
            if m > 1 {
                for (r, s) in self.split(m, l).into_iter().enumerate() {
                    out.parents.push(head as i32);
                    out.depth.push(out.depth[head] + 1);
                    out.rank.push(r as i32);
                    queue.push((s, l - 1));
                }
            }
            head += 1;
        }
        Ok(out)
    }
}

/// Expected accepted nodes of any tree: the sum over nodes of the product of `p[rank]` along
/// the path from the root.
pub fn tree_value(p: &[f64], parents: &[i32]) -> Result<f64> {
    validate_acceptance(p)?;
    super::tree::validate_parents(parents)?;
    let ranks = super::tree::ranks(parents)?;
    let mut prod = vec![1.0f64; parents.len()];
    for i in 1..parents.len() {
        let r = ranks[i] as usize;
        let pr = if r < p.len() { p[r] } else { 0.0 };
        prod[i] = prod[parents[i] as usize] * pr;
    }
    Ok(prod.iter().sum())
}

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

/// The planner's choice.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Plan {
    /// Tree size.
    pub n: usize,
    /// Tree depth (draft steps per verification).
    pub d: usize,
    /// Expected tokens per target call, `F[n][d]`.
    pub tokens_per_step: f64,
    /// Predicted seconds per generated token, `(d t_draft + t_verify(n)) / F[n][d]`.
    pub s_per_token: f64,
    /// `t_autoregressive / s_per_token`.
    pub speedup: f64,
}

/// Picks `(n, d)` minimising `(d * t_draft + t_verify(n)) / F[n][d]` over the measured `sizes`
/// and every depth of the table. `t_autoregressive` is the time of one plain decoding step;
/// `None` takes `t_verify` of the smallest size.
pub fn plan(
    table: &SequoiaTable,
    sizes: &[usize],
    t_verify: &[f64],
    t_draft: f64,
    t_autoregressive: Option<f64>,
) -> Result<Plan> {
    if sizes.is_empty() {
        return Err(Error::value("sizes", "at least one tree size", "none"));
    }
    crate::error::check_len("t_verify_s", t_verify.len(), sizes.len())?;
    if t_draft.is_nan() || t_draft < 0.0 || t_draft.is_infinite() {
        return Err(Error::value("t_draft_s", "a finite time >= 0", t_draft));
    }
    for (i, (&n, &tv)) in sizes.iter().zip(t_verify).enumerate() {
        if n == 0 || n > table.max_nodes {
            return Err(Error::value(
                "sizes",
                format!("sizes in [1, {}] (the table's max_nodes)", table.max_nodes),
                format!("sizes[{i}] = {n}"),
            ));
        }
        if tv.is_nan() || tv <= 0.0 || tv.is_infinite() {
            return Err(Error::value(
                "t_verify_s",
                "finite times > 0",
                format!("t_verify_s[{i}] = {tv}"),
            ));
        }
    }
    let smallest = (0..sizes.len()).min_by_key(|&i| sizes[i]).unwrap_or(0);
    let t_ar = t_autoregressive.unwrap_or(t_verify[smallest]);
    if t_ar.is_nan() || t_ar <= 0.0 || t_ar.is_infinite() {
        return Err(Error::value(
            "t_autoregressive_s",
            "a finite time > 0",
            t_ar,
        ));
    }
    let mut best: Option<Plan> = None;
    for (&n, &tv) in sizes.iter().zip(t_verify) {
        for d in 0..=table.max_depth {
            let tokens = table.f_at(n, d);
            if tokens <= 0.0 {
                continue;
            }
            let s = (d as f64 * t_draft + tv) / tokens;
            if best.is_none_or(|b| s < b.s_per_token) {
                best = Some(Plan {
                    n,
                    d,
                    tokens_per_step: tokens,
                    s_per_token: s,
                    speedup: t_ar / s,
                });
            }
        }
    }
    best.ok_or_else(|| Error::value("sizes", "at least one size with a feasible tree", "none"))
}

/// Estimates `p` from observed accepted ranks: `ranks[i]` is the 0-based rank of the child
/// accepted at one verified node, or `-1` when none of its children was accepted.
/// `p[k] = count(rank == k) / len(ranks)`.
pub fn acceptance_from_ranks(ranks: &[i64], width: usize) -> Result<Vec<f64>> {
    if width == 0 {
        return Err(Error::value("width", "at least 1", width));
    }
    if ranks.is_empty() {
        return Err(Error::value(
            "accepted_ranks",
            "at least one observation",
            "none",
        ));
    }
    let mut counts = vec![0u64; width];
    for (i, &r) in ranks.iter().enumerate() {
        if r == -1 {
            continue;
        }
        if r < -1 || r as usize >= width {
            return Err(Error::value(
                "accepted_ranks",
                format!("ranks in [0, {width}) or -1 (none accepted)"),
                format!("accepted_ranks[{i}] = {r}"),
            ));
        }
        counts[r as usize] += 1;
    }
    let total = ranks.len() as f64;
    Ok(counts.into_iter().map(|c| c as f64 / total).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Best value over every recursive tree (all parent arrays with parents[i] < i).
    fn brute_force(p: &[f64], n: usize, d: usize) -> f64 {
        fn rec(p: &[f64], d: usize, parents: &mut Vec<i32>, n: usize, best: &mut f64) {
            if parents.len() == n {
                let depth = crate::speculative::tree::depths(parents).unwrap();
                let ranks = crate::speculative::tree::ranks(parents).unwrap();
                if depth.iter().any(|&x| x as usize > d)
                    || ranks.iter().any(|&r| r as usize >= p.len())
                {
                    return;
                }
                let v = tree_value(p, parents).unwrap();
                if v > *best {
                    *best = v;
                }
                return;
            }
            for q in 0..parents.len() {
                parents.push(q as i32);
                rec(p, d, parents, n, best);
                parents.pop();
            }
        }
        let mut best = f64::NEG_INFINITY;
        rec(p, d, &mut vec![-1], n, &mut best);
        best
    }

    fn close(a: f64, b: f64) -> bool {
        (a == b) || (a - b).abs() <= 1e-9 * (1.0 + a.abs().max(b.abs()))
    }

    #[test]
    fn rejects_bad_acceptance_vectors_and_sizes() {
        assert!(sequoia_dp(&[], 4, 2).is_err());
        assert!(sequoia_dp(&[-0.1, 0.2], 4, 2)
            .unwrap_err()
            .to_string()
            .contains("non-negative"));
        assert!(sequoia_dp(&[0.7, 0.6], 4, 2)
            .unwrap_err()
            .to_string()
            .contains("at most 1"));
        assert!(sequoia_dp(&[f64::NAN], 4, 2)
            .unwrap_err()
            .to_string()
            .contains("finite"));
        assert!(sequoia_dp(&[0.5], 0, 2).is_err());
        let t = sequoia_dp(&[0.5, 0.2], 8, 2).unwrap();
        assert!(t.value(9, 1).is_err());
        assert!(t.value(3, 3).is_err());
        assert!(t
            .tree(8, 1)
            .unwrap_err()
            .to_string()
            .contains("at most 3 nodes"));
        assert!(sequoia_heap(&[0.2, 0.5], 4, 2).is_err());
    }

    #[test]
    fn zero_entries_in_p_match_brute_force() {
        let p = [0.5, 0.0, 0.3, 0.0];
        let t = sequoia_dp(&p, 7, 3).unwrap();
        for n in 1..=7 {
            for d in 0..=3 {
                let brute = brute_force(&p, n, d);
                assert!(close(t.value(n, d).unwrap(), brute), "n {n} d {d}");
            }
        }
    }

    #[test]
    fn chain_and_star_values() {
        let t = sequoia_dp(&[0.5], 5, 4).unwrap();
        // a chain: 1 + .5 + .25 + .125 + .0625
        assert!(close(t.value(5, 4).unwrap(), 1.9375));
        assert_eq!(t.value(5, 3).unwrap(), f64::NEG_INFINITY);
        let t = sequoia_dp(&[0.5, 0.3, 0.1], 4, 1).unwrap();
        assert!(close(t.value(4, 1).unwrap(), 1.9));
        let tree = t.tree(4, 1).unwrap();
        assert_eq!(tree.parents, vec![-1, 0, 0, 0]);
        assert_eq!(tree.rank, vec![0, 0, 1, 2]);
    }

    #[test]
    fn dp_trees_achieve_their_values_on_the_sequoia_vector() {
        let p: Vec<f64> = vec![
            0.634, 0.108, 0.057, 0.0225, 0.0195, 0.015, 0.0045, 0.003, 0.012,
        ];
        let t = sequoia_dp(&p, 200, 8).unwrap();
        for &(n, d) in &[(1, 0), (7, 3), (64, 6), (200, 8), (80, 2)] {
            let tree = t.tree(n, d).unwrap();
            assert_eq!(tree.parents.len(), n);
            assert!(tree.depth.iter().all(|&x| x as usize <= d));
            assert_eq!(
                crate::speculative::tree::ranks(&tree.parents).unwrap(),
                tree.rank
            );
            assert!(close(
                tree_value(&p, &tree.parents).unwrap(),
                t.value(n, d).unwrap()
            ));
        }
        // more nodes or depth never hurt
        for n in 2..=200 {
            assert!(t.value(n, 8).unwrap() >= t.value(n - 1, 8).unwrap());
            assert!(t.value(n, 8).unwrap() >= t.value(n, 7).unwrap());
        }
    }

    #[test]
    fn plan_prefers_cheap_verification() {
        let t = sequoia_dp(&[0.8, 0.1], 64, 6).unwrap();
        let sizes = [1, 8, 64];
        let pl = plan(&t, &sizes, &[1.0, 1.0, 1.0], 0.01, None).unwrap();
        assert_eq!(pl.n, 64);
        assert!(close(pl.speedup, 1.0 / pl.s_per_token));
        let pl = plan(&t, &sizes, &[1.0, 1.0, 100.0], 0.01, None).unwrap();
        assert_eq!(pl.n, 8);
        assert!(plan(&t, &[65], &[1.0], 0.0, None).is_err());
        assert!(plan(&t, &[8], &[-1.0], 0.0, None).is_err());
    }

    #[test]
    fn acceptance_estimate_counts_ranks() {
        let p = acceptance_from_ranks(&[0, 0, 1, -1], 3).unwrap();
        assert_eq!(p, vec![0.5, 0.25, 0.0]);
        assert!(acceptance_from_ranks(&[3], 3).is_err());
        assert!(acceptance_from_ranks(&[], 3).is_err());
    }

    /// The recurrence with a full scan over every split and no pruning, window or bands.
    fn plain_dp(p: &[f64], n: usize, d: usize) -> Vec<f64> {
        let w = p.len();
        let idx = |m: usize, l: usize, b: usize| (l * (w + 1) + b) * (n + 1) + m;
        let mut t = vec![f64::NEG_INFINITY; (d + 1) * (w + 1) * (n + 1)];
        let mut f = vec![f64::NEG_INFINITY; (d + 1) * (n + 1)];
        for l in 0..=d {
            t[idx(1, l, 0)] = 1.0;
        }
        f[1] = 1.0;
        for l in 1..=d {
            for b in 1..=w {
                for m in 2..=n {
                    let mut best = f64::NEG_INFINITY;
                    for y in 1..m {
                        let (a, fl) = (t[idx(y, l, b - 1)], f[(l - 1) * (n + 1) + m - y]);
                        if a > f64::NEG_INFINITY && fl > f64::NEG_INFINITY {
                            best = best.max(a + p[b - 1] * fl);
                        }
                    }
                    t[idx(m, l, b)] = best;
                }
            }
            for m in 0..=n {
                f[l * (n + 1) + m] = (0..=w)
                    .map(|b| t[idx(m, l, b)])
                    .fold(f[l * (n + 1) + m], f64::max);
            }
        }
        f
    }

    #[test]
    fn bands_and_pruning_reproduce_the_plain_recurrence_bit_for_bit() {
        let text =
            include_str!("../../../../python/ferrolm/speculative/sequoia_acceptance_vector.txt");
        let sequoia: Vec<f64> = text
            .split_whitespace()
            .skip(1)
            .map(|x| x.parse().unwrap())
            .collect();
        let mut rng = 0x2545f4914f6cdd1du64;
        let mut uniform = move || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            (rng >> 11) as f64 / (1u64 << 53) as f64
        };
        for case in 0..6 {
            let p: Vec<f64> = if case == 0 {
                sequoia[..12].to_vec()
            } else {
                // Unsorted, with exact zeros (the p_b = 0 path) and a sum below 1.
                let raw: Vec<f64> = (0..3 + 2 * case)
                    .map(|i| if i % 4 == 3 { 0.0 } else { uniform().powi(3) })
                    .collect();
                let s = raw.iter().sum::<f64>() * (1.0 + uniform());
                raw.iter().map(|x| x / s).collect()
            };
            let (n, d) = (150 + 37 * case, 2 + case);
            let plain = plain_dp(&p, n, d);
            let cap = |w: usize| {
                let mut c = vec![1usize; d + 1];
                for l in 1..=d {
                    c[l] = (1 + w.saturating_mul(c[l - 1])).min(n);
                }
                c
            };
            for bands in [1, 2, 3, 7] {
                let table = solve(&p, n, d, cap(p.len()), bands);
                assert_eq!(table.f, plain, "case {case}, {bands} bands");
            }
        }
    }

    proptest! {
        #[test]
        fn dp_equals_brute_force_for_small_trees(
            raw in prop::collection::vec(0.0f64..1.0, 1..4),
            n in 1usize..7,
            d in 0usize..4,
        ) {
            let s: f64 = raw.iter().sum::<f64>() + 0.1;
            let p: Vec<f64> = raw.iter().map(|x| x / s).collect();
            let t = sequoia_dp(&p, 7, 4).unwrap();
            let brute = brute_force(&p, n, d);
            prop_assert!(close(t.value(n, d).unwrap(), brute), "dp {} brute {}", t.value(n, d).unwrap(), brute);
            if brute > f64::NEG_INFINITY {
                let tree = t.tree(n, d).unwrap();
                prop_assert!(close(tree_value(&p, &tree.parents).unwrap(), brute));
            }
        }

        #[test]
        fn heap_equals_dp_for_sorted_p(
            raw in prop::collection::vec(0.0f64..1.0, 1..6),
            n in 1usize..120,
            d in 0usize..7,
        ) {
            let mut p: Vec<f64> = raw.clone();
            p.sort_by(|a, b| b.partial_cmp(a).unwrap());
            let s: f64 = p.iter().sum::<f64>() + 0.05;
            let p: Vec<f64> = p.iter().map(|x| x / s).collect();
            let t = sequoia_dp(&p, 120, 6).unwrap();
            let d = d.min(6);
            let (tree, values) = sequoia_heap(&p, n, d).unwrap();
            for m in 1..=n {
                prop_assert!(close(values[m - 1], t.value(m, d).unwrap()), "m {} heap {} dp {}", m, values[m - 1], t.value(m, d).unwrap());
            }
            if values[n - 1] > f64::NEG_INFINITY {
                crate::speculative::tree::validate_parents(&tree.parents).unwrap();
                prop_assert_eq!(crate::speculative::tree::ranks(&tree.parents).unwrap(), tree.rank.clone());
                prop_assert!(close(tree_value(&p, &tree.parents).unwrap(), values[n - 1]));
            }
        }
    }
}
