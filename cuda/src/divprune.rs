//! Launchers for the DivPrune selection kernels (`kernels/divprune.cu`).
//!
//! The caller (the Python layer) builds the `[batch, n, n]` float32 cosine-distance matrices
//! with cuBLAS, allocates every buffer on `launch.device` and checks sizes and dtypes; work is
//! queued on the caller's stream and nothing here synchronises.

use ferrolm_core::{Error, Result};

use crate::kernels::DIVPRUNE;
use crate::launch::{config, Launch, BLOCK};

/// Threads per block of the greedy kernel; must match `FERROLM_DIVPRUNE_BLOCK`.
pub const GREEDY_BLOCK: u32 = 1024;
/// Threads per block of the nearest-neighbour kernel (its shared array holds `FERROLM_BLOCK`
/// floats).
pub const NEAREST_BLOCK: u32 = BLOCK;

fn check(batch: u32, n: u32, k: u32) -> Result<()> {
    if batch == 0 || n == 0 {
        return Err(Error::value(
            "features",
            "non-empty",
            format!("[{batch}, {n}, ...]"),
        ));
    }
    if k == 0 || k > n {
        return Err(Error::value("k", format!("between 1 and {n}"), k));
    }
    if batch > 65_535 {
        return Err(Error::value(
            "features",
            "at most 65535 images per launch",
            batch,
        ));
    }
    Ok(())
}

/// Queues the DivPrune selection of `k` of `n` tokens for each of `batch` images.
///
/// Pointers (device addresses): `dist` `[batch, n, n]` f32 distances; `nn` `[batch, n]` f32
/// scratch for nearest-neighbour distances; `first` `[batch]` i64 (a token, or -1 for the most
/// isolated one); `mind` `[batch, n]` f32 scratch; `out` `[batch, k]` i64 picks in greedy order;
/// `objective` `[batch]` f32.
#[allow(clippy::too_many_arguments)]
pub fn divprune_f32(
    launch: Launch,
    dist: u64,
    nn: u64,
    first: u64,
    mind: u64,
    out: u64,
    objective: u64,
    batch: u32,
    n: u32,
    k: u32,
    needs_nearest: bool,
) -> Result<()> {
    check(batch, n, k)?;
    let nearest = launch.kernel(&DIVPRUNE, "divprune_nearest_f32")?;
    let greedy = launch.kernel(&DIVPRUNE, "divprune_greedy_f32")?;
    // SAFETY: argument lists match the kernel signatures (pointers as u64 device addresses,
    // n and k as unsigned int); the caller guarantees the buffers and their sizes.
    unsafe {
        if needs_nearest {
            nearest.launch(config((n, batch), NEAREST_BLOCK), &[&dist, &n, &nn])?;
        }
        greedy.launch(
            config((batch, 1), GREEDY_BLOCK),
            &[&dist, &nn, &first, &n, &k, &mind, &out, &objective],
        )
    }
}
