//! The banded pipeline that fills the DP table: sizes are cut into bands that rayon's threads
//! run concurrently, each band waiting only for the rows of the bands below it.

use std::sync::atomic::{AtomicUsize, Ordering as AtomicOrdering};

use super::kernels::{
    detect_simd, fill_layer, window_layer, window_max_layer, Layer, LayerInputs, Simd, WINDOW,
};
use super::table::SequoiaTable;
use crate::buffer::try_vec;
use crate::{Cancel, Result};

/// Fewest sizes per band: below this, bands cost more in hand-offs than they save.
pub(super) const MIN_BAND: usize = 96;

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
    cancel: &'a Cancel<'a>,
}

/// Marks a band as finished, also when it unwinds, so that no other band waits forever.
struct DoneOnDrop<'a>(&'a AtomicUsize);

impl Drop for DoneOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(usize::MAX, AtomicOrdering::Release);
    }
}

/// Waits until `counter >= target`, spinning briefly and then yielding the core; gives up
/// (returns false) when the computation is cancelled, so that a waiting thread also polls.
fn wait_for(counter: &AtomicUsize, target: usize, cancel: &Cancel<'_>) -> bool {
    let mut spins = 0u32;
    while counter.load(AtomicOrdering::Acquire) < target {
        if cancel.check().is_err() {
            return false;
        }
        if spins < 2048 {
            std::hint::spin_loop();
            spins += 1;
        } else {
            std::thread::yield_now();
        }
    }
    true
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
    // Band buffers are O(max_nodes), which `sequoia_dp` bounds: plain allocations.
    let mut frev = vec![f64::NEG_INFINITY; n1];
    let mut pf = [f64::NEG_INFINITY; WINDOW + 1];
    let mut win = vec![f64::NEG_INFINITY; m1];
    let mut row = 0usize;
    for l in 1..=pr.max_depth {
        let c = pr.cap[l - 1];
        for b in 1..=width {
            // A cancelled band stops here; `DoneOnDrop` releases the bands above it, which stop
            // at their next check. The table is then discarded.
            if pr.cancel.check().is_err() {
                return;
            }
            for d in &done[..band] {
                if !wait_for(d, row, pr.cancel) {
                    return;
                }
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
                let inputs = LayerInputs {
                    prev,
                    frev: &frev,
                    win: &win,
                };
                fill_layer(pr.simd, inputs, out, m0, g);
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

/// Solves a validated problem with `bands` bands; [`crate::Error::Interrupted`] when `cancel`
/// fires.
pub(super) fn solve(
    p: &[f64],
    max_nodes: usize,
    max_depth: usize,
    cap: Vec<usize>,
    bands: usize,
    cancel: &Cancel<'_>,
) -> Result<SequoiaTable> {
    let (width, n1) = (p.len(), max_nodes + 1);
    let layer = (width + 1) * n1;
    // Layers with l >= 1 and b >= 1 are written in full by the recurrence, so only the depth-0
    // layer and the b = 0 rows are initialised here (a zeroed allocation costs no extra pass).
    let mut t = try_vec(
        "max_depth",
        "the Sequoia DP table",
        (max_depth + 1) * layer,
        0.0f64,
    )?;
    t[..layer].fill(f64::NEG_INFINITY);
    for l in 0..=max_depth {
        t[l * layer..l * layer + n1].fill(f64::NEG_INFINITY);
        t[l * layer + 1] = 1.0;
    }
    let mut f = try_vec(
        "max_depth",
        "the Sequoia DP values",
        (max_depth + 1) * n1,
        f64::NEG_INFINITY,
    )?;
    f[1] = 1.0;
    let problem = Problem {
        p,
        cap: &cap,
        max_nodes,
        max_depth,
        simd: detect_simd(),
        cancel,
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
    cancel.check()?;
    Ok(SequoiaTable {
        p: p.to_vec(),
        max_nodes,
        max_depth,
        cap,
        t,
        f,
    })
}
