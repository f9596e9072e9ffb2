//! Ancestor masks of draft trees: bitsets built in one pass over the parents, spread into
//! byte masks (AVX2 where the CPU has it), single trees and CSR batches. Re-exported by
//! [`super::tree`], whose format they take.

use super::tree::{validate_batch, validate_parents};
use crate::buffer::try_vec;
use crate::Result;

/// Sets one byte per bit: `SPREAD[b]` holds byte `k` = bit `k` of `b`.
const SPREAD: [u64; 256] = {
    let mut table = [0u64; 256];
    let mut b = 0;
    while b < 256 {
        let mut v = 0u64;
        let mut k = 0;
        while k < 8 {
            if b & (1 << k) != 0 {
                v |= 1u64 << (8 * k);
            }
            k += 1;
        }
        table[b] = v;
        b += 1;
    }
    table
};

/// Ancestor bitsets: `words` u64 per row, row `i` has bit `j` set iff `j` is `i` or an ancestor.
///
/// Row `i` is row `parents[i]` plus bit `i`; since parents come first, one pass suffices and a
/// row only touches the words up to its own index.
pub fn ancestor_bitsets(parents: &[i32]) -> Result<(Vec<u64>, usize)> {
    validate_parents(parents)?;
    let n = parents.len();
    let words = n.div_ceil(64);
    let mut bits = try_vec(
        "parents",
        &format!("the ancestor bitsets of {n} nodes"),
        n.saturating_mul(words),
        0u64,
    )?;
    for i in 0..n {
        let used = i / 64 + 1;
        if i > 0 {
            let p = parents[i] as usize;
            let (before, row) = bits.split_at_mut(i * words);
            row[..used].copy_from_slice(&before[p * words..p * words + used]);
        }
        bits[i * words + i / 64] |= 1u64 << (i % 64);
    }
    Ok((bits, words))
}

/// Writes the `[n, n]` ancestor mask of `parents` as bytes (1 = attend) into `out` (row-major).
///
/// `mask[i][j] = 1` iff `j` is `i` or an ancestor of `i`. Built from bitsets; every byte of
/// `out` is written (it may arrive uninitialised-but-allocated or dirty).
pub fn ancestor_mask_into(parents: &[i32], out: &mut [u8]) -> Result<()> {
    let n = parents.len();
    let (bits, words) = ancestor_bitsets(parents)?;
    crate::error::check_len("out", out.len(), n * n)?;
    let wide = wide_spread_available();
    for i in 0..n {
        let row = &mut out[i * n..(i + 1) * n];
        let used = (i / 64 + 1).min(words);
        let row_bits = &bits[i * words..i * words + used];
        let (row, rest) = row.split_at_mut((used * 64).min(n));
        rest.fill(0);
        if wide {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `wide_spread_available` checked AVX2 on this CPU.
            unsafe {
                spread_row_avx2(row_bits, row)
            };
        } else {
            spread_row(row_bits, row);
        }
    }
    Ok(())
}

fn wide_spread_available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx2")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// One mask row from its bitset words: byte `j` of `out` = bit `j`.
fn spread_row(words: &[u64], out: &mut [u8]) {
    for (w, &word) in words.iter().enumerate() {
        let start = w * 64;
        let end = (start + 64).min(out.len());
        spread_word(word, &mut out[start..end]);
    }
}

/// [`spread_row`] with AVX2: each 32-bit half of a word is broadcast, every byte lane picks
/// the source byte holding its bit (`vpshufb`), tests its bit and keeps 1 where set.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn spread_row_avx2(words: &[u64], out: &mut [u8]) {
    use std::arch::x86_64::{
        _mm256_and_si256, _mm256_cmpeq_epi8, _mm256_set1_epi32, _mm256_set1_epi64x,
        _mm256_set1_epi8, _mm256_setr_epi8, _mm256_shuffle_epi8, _mm256_storeu_si256,
    };
    let pick = _mm256_setr_epi8(
        0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3,
        3, 3,
    );
    let bit = _mm256_set1_epi64x(0x8040_2010_0804_0201u64 as i64);
    let one = _mm256_set1_epi8(1);
    for (w, &word) in words.iter().enumerate() {
        let start = w * 64;
        if out.len() - start >= 64 {
            for half in 0..2 {
                let v = _mm256_set1_epi32((word >> (32 * half)) as u32 as i32);
                let bytes = _mm256_shuffle_epi8(v, pick);
                let set = _mm256_cmpeq_epi8(_mm256_and_si256(bytes, bit), bit);
                let ones = _mm256_and_si256(set, one);
                // SAFETY: `start + 32 * half + 32 <= start + 64 <= out.len()`; unaligned store.
                unsafe {
                    _mm256_storeu_si256(out.as_mut_ptr().add(start + 32 * half).cast(), ones)
                };
            }
        } else {
            spread_word(word, &mut out[start..]);
        }
    }
}

#[inline]
fn spread_word(word: u64, out: &mut [u8]) {
    for (k, chunk) in out.chunks_mut(8).enumerate() {
        let byte = ((word >> (8 * k)) & 0xff) as usize;
        let v = SPREAD[byte].to_le_bytes();
        chunk.copy_from_slice(&v[..chunk.len()]);
    }
}

/// A bool buffer seen as the bytes the mask writers fill.
fn bool_bytes(values: &mut [bool]) -> &mut [u8] {
    // SAFETY: bool and u8 have the same size and alignment, and the writers only store 0 or 1,
    // the two valid bool bit patterns.
    unsafe { std::slice::from_raw_parts_mut(values.as_mut_ptr().cast::<u8>(), values.len()) }
}

/// The `[n, n]` ancestor mask as a fresh `Vec<bool>` (row-major). The tree is validated before
/// the `n^2` bytes are allocated, and the allocation is fallible (see [`crate::alloc_limit`]).
pub fn ancestor_mask(parents: &[i32]) -> Result<Vec<bool>> {
    validate_parents(parents)?;
    let n = parents.len();
    let mut mask = try_vec(
        "parents",
        &format!("the {n} x {n} ancestor mask"),
        n.saturating_mul(n),
        false,
    )?;
    ancestor_mask_into(parents, bool_bytes(&mut mask))?;
    Ok(mask)
}

/// The ancestor masks of a CSR batch as one fresh `[B, m, m]` `Vec<bool>`, with `(B, m)`.
pub fn ancestor_mask_batch(parents: &[i32], offsets: &[i64]) -> Result<(Vec<bool>, usize, usize)> {
    let b = validate_batch(parents, offsets)?;
    let m = max_tree_size(offsets);
    let mut mask = try_vec(
        "parents",
        &format!("the {b} x {m} x {m} ancestor masks"),
        b.saturating_mul(m).saturating_mul(m),
        false,
    )?;
    ancestor_mask_batch_into(parents, offsets, bool_bytes(&mut mask))?;
    Ok((mask, b, m))
}

/// Ancestor masks of a CSR batch, padded to `[B, m, m]` with `m` = the largest tree (padding
/// rows and columns are 0), written into zeroed `out`; returns `m`.
pub fn ancestor_mask_batch_into(parents: &[i32], offsets: &[i64], out: &mut [u8]) -> Result<usize> {
    let b = validate_batch(parents, offsets)?;
    let m = max_tree_size(offsets);
    crate::error::check_len("out", out.len(), b * m * m)?;
    for t in 0..b {
        let tree = &parents[offsets[t] as usize..offsets[t + 1] as usize];
        let n = tree.len();
        let mut local = try_vec(
            "parents",
            &format!("the ancestor mask of tree {t}"),
            n * n,
            0u8,
        )?;
        ancestor_mask_into(tree, &mut local)?;
        let block = &mut out[t * m * m..(t + 1) * m * m];
        for i in 0..n {
            block[i * m..i * m + n].copy_from_slice(&local[i * n..(i + 1) * n]);
        }
    }
    Ok(m)
}

/// Largest tree size of valid CSR `offsets`.
pub fn max_tree_size(offsets: &[i64]) -> usize {
    offsets
        .windows(2)
        .map(|w| (w[1] - w[0]) as usize)
        .max()
        .unwrap_or(0)
}
