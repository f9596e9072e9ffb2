//! The DP's inner loops: the per-cell split scan with its block bound, the window pass over
//! small last subtrees, the `p_b = 0` window maximum, and their AVX2 builds chosen at run time.

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
pub(super) const WINDOW: usize = 8;
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
pub(super) struct Layer {
    pub(super) b: usize,
    /// `p_b`, the acceptance probability of rank `b`.
    pub(super) pb: f64,
    /// Most nodes in one subtree of depth `l - 1`.
    pub(super) cap: usize,
    /// Most nodes in the first part (root plus `b - 1` subtrees).
    pub(super) first_part_cap: usize,
    pub(super) max_nodes: usize,
}

/// The finished rows one `(l, b)` row of the DP is computed from.
#[derive(Clone, Copy)]
pub(super) struct LayerInputs<'a> {
    /// `T[.][l][b-1]`, the previous row of the same depth.
    pub(super) prev: &'a [f64],
    /// `frev[k] = F[max_nodes - k][l-1]`, stored reversed so the scan reads ascending slices.
    pub(super) frev: &'a [f64],
    /// The window pass over the small last subtrees, indexed by size.
    pub(super) win: &'a [f64],
}

/// Fills `out[k] = T[m_start + k][l][b]` from the inputs and `g.pb` (the sum `T + p_b F` is
/// rounded exactly as the recurrence writes it; the compiler never fuses it into an FMA).
/// Infeasible cells need no special case: every split of theirs reads `-inf`, so the window's
/// value is already `-inf`.
#[inline(always)]
fn fill_layer_kernel(inputs: LayerInputs<'_>, out: &mut [f64], m_start: usize, g: Layer) {
    let LayerInputs { prev, frev, win } = inputs;
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
pub(super) fn window_max_layer(prev: &[f64], out: &mut [f64], m_start: usize, g: Layer) {
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
unsafe fn fill_layer_avx2(inputs: LayerInputs<'_>, out: &mut [f64], m_start: usize, g: Layer) {
    fill_layer_kernel(inputs, out, m_start, g)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn window_layer_avx2(a: &[f64], pf: &[f64], win: &mut [f64], m0: usize) {
    window_layer_kernel(a, pf, win, m0)
}

#[derive(Clone, Copy)]
pub(super) enum Simd {
    Avx2,
    Portable,
}

pub(super) fn detect_simd() -> Simd {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx2") {
            return Simd::Avx2;
        }
    }
    Simd::Portable
}

/// [`fill_layer_kernel`] compiled for the best instruction set the CPU has.
pub(super) fn fill_layer(
    simd: Simd,
    inputs: LayerInputs<'_>,
    out: &mut [f64],
    m_start: usize,
    g: Layer,
) {
    match simd {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `detect_simd` found AVX2 on this CPU.
        Simd::Avx2 => unsafe { fill_layer_avx2(inputs, out, m_start, g) },
        _ => fill_layer_kernel(inputs, out, m_start, g),
    }
}

/// [`window_layer_kernel`] compiled for the best instruction set the CPU has.
pub(super) fn window_layer(simd: Simd, a: &[f64], pf: &[f64], win: &mut [f64], m0: usize) {
    match simd {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `detect_simd` found AVX2 on this CPU.
        Simd::Avx2 => unsafe { window_layer_avx2(a, pf, win, m0) },
        _ => window_layer_kernel(a, pf, win, m0),
    }
}
