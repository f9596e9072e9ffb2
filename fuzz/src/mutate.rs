//! A small deterministic random source and structure-aware mutations of byte buffers.
//!
//! Besides the classic byte-level mutations (truncation, bit flips, splices), two target the
//! fields that make parsers allocate: little-endian integers that look like lengths or counts
//! (small values at any offset) are overwritten with huge ones, and in text formats digit runs
//! are replaced with huge numbers. The same seed always gives the same sequence of inputs.

/// splitmix64: tiny, fast, and good enough to drive mutations reproducibly.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator starting from `seed`.
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A value in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next_u64() % n as u64) as usize
        }
    }

    /// True with probability `1 / n`.
    pub fn one_in(&mut self, n: usize) -> bool {
        self.below(n) == 0
    }

    /// One element of `items`.
    pub fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len())]
    }
}

/// Values that break size arithmetic: overflow on multiplication by small element sizes, exceed
/// memory, or sit at signed/unsigned boundaries.
pub const HUGE: [u64; 12] = [
    u64::MAX,
    u64::MAX - 7,
    1 << 63,
    (1 << 63) - 1,
    1 << 62,
    1 << 39,
    1 << 36,
    1 << 32,
    (1 << 32) - 1,
    1 << 31,
    1 << 28,
    1 << 24,
];

/// Offsets of little-endian `u64`s in `data` whose value is small and non-zero, the shape of a
/// length or count field.
fn length_fields(data: &[u8], width: usize) -> Vec<usize> {
    let limit: u64 = if width == 8 { 1 << 24 } else { 1 << 16 };
    (0..data.len().saturating_sub(width - 1))
        .filter(|&i| {
            let mut b = [0u8; 8];
            b[..width].copy_from_slice(&data[i..i + width]);
            let v = u64::from_le_bytes(b);
            v > 0 && v < limit
        })
        .collect()
}

/// Applies one to four random mutations to `data`; `text` adds the digit-run mutation.
pub fn mutate(rng: &mut Rng, data: &mut Vec<u8>, text: bool) {
    let rounds = 1 + rng.below(4);
    for _ in 0..rounds {
        match rng.below(if text { 9 } else { 8 }) {
            0 => {
                // Truncate (half the time near the end, where the last field gets cut).
                let at = if rng.one_in(2) {
                    data.len().saturating_sub(1 + rng.below(16))
                } else {
                    rng.below(data.len() + 1)
                };
                data.truncate(at);
            }
            1 => {
                for _ in 0..1 + rng.below(8) {
                    if data.is_empty() {
                        break;
                    }
                    let i = rng.below(data.len());
                    data[i] ^= 1 << rng.below(8);
                }
            }
            2 => {
                if !data.is_empty() {
                    let i = rng.below(data.len());
                    data[i] = rng.pick(&[0u8, 0xff, 0x7f, 0x80, b'"', b'\\', b'\n', 0xc3]);
                }
            }
            3 | 4 => {
                // A huge length or count in place of a plausible one.
                let width = if rng.one_in(3) { 4 } else { 8 };
                let fields = length_fields(data, width);
                if fields.is_empty() {
                    continue;
                }
                let at = fields[rng.below(fields.len())];
                let v = rng.pick(&HUGE).to_le_bytes();
                data[at..at + width].copy_from_slice(&v[..width]);
            }
            5 => {
                // Delete a range.
                if !data.is_empty() {
                    let a = rng.below(data.len());
                    let b = (a + 1 + rng.below(64)).min(data.len());
                    data.drain(a..b);
                }
            }
            6 => {
                // Duplicate a range somewhere else (repeated entries, shifted fields).
                if !data.is_empty() && data.len() < 1 << 22 {
                    let a = rng.below(data.len());
                    let b = (a + 1 + rng.below(256)).min(data.len());
                    let chunk = data[a..b].to_vec();
                    let at = rng.below(data.len() + 1);
                    data.splice(at..at, chunk);
                }
            }
            7 => {
                // Random bytes inserted.
                if data.len() < 1 << 22 {
                    let at = rng.below(data.len() + 1);
                    let extra: Vec<u8> = (0..1 + rng.below(16))
                        .map(|_| rng.next_u64() as u8)
                        .collect();
                    data.splice(at..at, extra);
                }
            }
            _ => {
                // Text: a digit run becomes a huge, negative or fractional number.
                let runs: Vec<usize> = (0..data.len())
                    .filter(|&i| {
                        data[i].is_ascii_digit() && (i == 0 || !data[i - 1].is_ascii_digit())
                    })
                    .collect();
                if runs.is_empty() {
                    continue;
                }
                let start = runs[rng.below(runs.len())];
                let end = (start..data.len())
                    .find(|&i| !data[i].is_ascii_digit())
                    .unwrap_or(data.len());
                let huge = rng.pick(&HUGE).to_string();
                let replacement = match rng.below(4) {
                    0 => huge,
                    1 => format!("-{huge}"),
                    2 => "1e309".to_string(),
                    _ => "4294967296".to_string(),
                };
                data.splice(start..end, replacement.into_bytes());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_mutations() {
        let seed_input: Vec<u8> = (0..200u8).collect();
        let run = |seed| {
            let mut rng = Rng::new(seed);
            let mut data = seed_input.clone();
            for _ in 0..50 {
                mutate(&mut rng, &mut data, true);
            }
            data
        };
        assert_eq!(run(7), run(7));
        assert_ne!(run(7), run(8));
    }

    #[test]
    fn length_fields_find_small_counts() {
        let mut data = vec![0xffu8; 4];
        data.extend_from_slice(&5u64.to_le_bytes());
        assert!(length_fields(&data, 8).contains(&4));
    }
}
