//! Order keys of the two heaps and the selection helpers over them.

/// Maps a finite or infinite f32 to a u32 with the same order.
#[inline]
pub(super) fn order_bits(x: f32) -> u32 {
    let b = x.to_bits();
    if b & 0x8000_0000 != 0 {
        !b
    } else {
        b | 0x8000_0000
    }
}

/// Heap key: higher is better (score first, then the older id).
#[inline]
pub(super) fn key(score: f32, id: u32) -> u64 {
    ((order_bits(score) as u64) << 32) | (u32::MAX - id) as u64
}

#[inline]
pub(super) fn key_id(k: u64) -> usize {
    (u32::MAX - (k & 0xffff_ffff) as u32) as usize
}

/// The first token seen twice, if any (tokens are >= 0). Small rows use an on-stack
/// open-addressing set (linear in the row), large ones a sort.
pub(super) fn repeated_token(tokens: impl ExactSizeIterator<Item = i32>) -> Option<i32> {
    const SLOTS: usize = 128;
    if tokens.len() <= 8 {
        let mut seen = [0i32; 8];
        for (i, t) in tokens.enumerate() {
            if seen[..i].contains(&t) {
                return Some(t);
            }
            seen[i] = t;
        }
        return None;
    }
    if tokens.len() > SLOTS / 2 {
        let mut v: Vec<i32> = tokens.collect();
        v.sort_unstable();
        return v.windows(2).find(|w| w[0] == w[1]).map(|w| w[0]);
    }
    let mut table = [-1i32; SLOTS];
    for t in tokens {
        let mut slot = ((t as u32).wrapping_mul(0x9E37_79B9) >> 25) as usize;
        loop {
            if table[slot] == -1 {
                table[slot] = t;
                break;
            }
            if table[slot] == t {
                return Some(t);
            }
            slot = (slot + 1) % SLOTS;
        }
    }
    None
}

/// The `k`-th largest (0-based) of the keys of `a` and `b` together. Radix selection, 11
/// bits at a time from the top (the sign, exponent and two mantissa bits of the score first):
/// a histogram pass over both sources, then only the keys of the bucket holding the answer are
/// gathered (no copy of everything), narrowed the same way and finished by a quickselect once
/// few are left.
#[inline(always)]
pub(super) fn kth_largest(
    a: impl Iterator<Item = u64> + Clone,
    b: impl Iterator<Item = u64> + Clone,
    mut k: usize,
) -> u64 {
    const BITS: u32 = 11;
    const SMALL: usize = 128;
    const MASK: u64 = (1 << BITS) - 1;
    let mut hist = vec![0u32; 1 << BITS];
    /// The bucket holding the `k`-th largest; `k` becomes the rank inside it.
    fn pick(hist: &[u32], k: &mut usize) -> u64 {
        let mut bucket = hist.len() - 1;
        while *k >= hist[bucket] as usize {
            *k -= hist[bucket] as usize;
            bucket -= 1;
        }
        bucket as u64
    }
    let mut shift = 64 - BITS;
    for x in a.clone().chain(b.clone()) {
        hist[(x >> shift) as usize] += 1;
    }
    let top = pick(&hist, &mut k);
    let mut keys: Vec<u64> = Vec::with_capacity(hist[top as usize] as usize);
    for x in a {
        if x >> shift == top {
            keys.push(x);
        }
    }
    for x in b {
        if x >> shift == top {
            keys.push(x);
        }
    }
    while keys.len() > SMALL && shift >= BITS {
        shift -= BITS;
        hist.fill(0);
        for &x in &keys {
            hist[((x >> shift) & MASK) as usize] += 1;
        }
        let digit = pick(&hist, &mut k);
        keys.retain(|&x| (x >> shift) & MASK == digit);
    }
    keys.select_nth_unstable_by(k, |x, y| y.cmp(x));
    keys[k]
}
