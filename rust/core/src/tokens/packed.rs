//! Many short strings in one buffer, and the parallel joins that build the scan's outputs.

use std::mem::MaybeUninit;

use rayon::prelude::*;

/// Strings stored one after another in one buffer: string `i` is
/// `text[offsets[i]..offsets[i + 1]]`. A vocabulary's strings this way take two allocations
/// instead of one per string, and cross to Python as two arrays.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackedStrings {
    /// The strings, concatenated (at most 4 GiB, like every offset list of the scan).
    pub text: String,
    /// Byte offsets of the strings in `text`: one more than there are strings, from 0 to
    /// `text.len()`, each on a character boundary.
    pub offsets: Vec<u32>,
}

impl Default for PackedStrings {
    fn default() -> Self {
        Self::with_capacity(0, 0)
    }
}

impl PackedStrings {
    /// No strings yet, with room for `strings` strings of `bytes` bytes in all.
    pub fn with_capacity(strings: usize, bytes: usize) -> Self {
        let mut offsets = Vec::with_capacity(strings + 1);
        offsets.push(0);
        PackedStrings {
            text: String::with_capacity(bytes),
            offsets,
        }
    }

    /// Number of strings.
    pub fn len(&self) -> usize {
        self.offsets.len() - 1
    }

    /// Whether there are no strings.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// String `i`, if there is one.
    pub fn get(&self, i: usize) -> Option<&str> {
        let (&start, &end) = (self.offsets.get(i)?, self.offsets.get(i + 1)?);
        self.text.get(start as usize..end as usize)
    }

    /// Appends one string.
    ///
    /// # Panics
    /// When the text would pass 4 GiB.
    pub fn push(&mut self, s: &str) {
        self.text.push_str(s);
        self.end_string();
    }

    /// Ends the string written to `text` since the last one ended.
    pub(crate) fn end_string(&mut self) {
        let end = u32::try_from(self.text.len()).expect("packed strings pass 4 GiB");
        self.offsets.push(end);
    }

    /// Appends all strings of `other`.
    ///
    /// # Panics
    /// When the text would pass 4 GiB.
    pub fn append(&mut self, other: &PackedStrings) {
        let fits = u32::try_from(self.text.len() + other.text.len()).is_ok();
        assert!(fits, "packed strings pass 4 GiB");
        let base = self.text.len() as u32;
        self.text.push_str(&other.text);
        self.offsets
            .extend(other.offsets[1..].iter().map(|&o| base + o));
    }

    /// The strings in order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = &str> + '_ {
        self.offsets
            .windows(2)
            .map(|w| &self.text[w[0] as usize..w[1] as usize])
    }
}

impl std::ops::Index<usize> for PackedStrings {
    type Output = str;

    fn index(&self, i: usize) -> &str {
        &self.text[self.offsets[i] as usize..self.offsets[i + 1] as usize]
    }
}

impl<S: AsRef<str>> FromIterator<S> for PackedStrings {
    fn from_iter<I: IntoIterator<Item = S>>(strings: I) -> Self {
        let mut packed = PackedStrings::default();
        for s in strings {
            packed.push(s.as_ref());
        }
        packed
    }
}

// The joins below write the scan's outputs, about 10 MB for a 262k vocabulary, into memory
// that is fresh on the first scan (page faults) or recycled (a zero-fill first would be a
// serial pass for nothing): so they write each element once, from all threads.

/// A vector made of pieces written in parallel: piece `k` has `lens[k]` elements, taken in
/// order from `piece(k)`.
///
/// # Panics
/// When a piece yields fewer elements than its length.
pub(crate) fn collect_parallel<T, I, F>(lens: &[usize], piece: F) -> Vec<T>
where
    T: Send,
    I: Iterator<Item = T>,
    F: Fn(usize) -> I + Sync,
{
    let total: usize = lens.iter().sum();
    let mut out: Vec<T> = Vec::with_capacity(total);
    let mut rest = &mut out.spare_capacity_mut()[..total];
    let mut jobs: Vec<(usize, &mut [MaybeUninit<T>])> = Vec::with_capacity(lens.len());
    for (k, &n) in lens.iter().enumerate() {
        let (head, tail) = std::mem::take(&mut rest).split_at_mut(n);
        jobs.push((k, head));
        rest = tail;
    }
    jobs.into_par_iter().for_each(|(k, dst)| {
        let mut written = 0;
        for (slot, x) in dst.iter_mut().zip(piece(k)) {
            slot.write(x);
            written += 1;
        }
        assert_eq!(written, dst.len(), "piece {k} is shorter than its length");
    });
    // SAFETY: the pieces tile the first `total` elements, and each piece was written in full
    // (checked above; a panic in a piece reaches here as a panic, before this line).
    unsafe { out.set_len(total) };
    out
}

/// Elements per piece when one long slice is copied in parallel.
const PIECE: usize = 1 << 16;

/// `parts` one after another, copied in parallel (long parts in several pieces).
pub(crate) fn concat<T: Copy + Send + Sync>(parts: &[&[T]]) -> Vec<T> {
    let pieces: Vec<&[T]> = parts.iter().flat_map(|p| p.chunks(PIECE)).collect();
    let lens: Vec<usize> = pieces.iter().map(|p| p.len()).collect();
    collect_parallel(&lens, |k| pieces[k].iter().copied())
}

/// CSR offset lists (each from 0, one more entry than items) joined into one, in parallel.
pub(crate) fn concat_offsets(parts: &[&[u32]]) -> Vec<u32> {
    if parts.is_empty() {
        return vec![0];
    }
    let mut bases = Vec::with_capacity(parts.len());
    let mut base = 0u32;
    for part in parts {
        bases.push(base);
        base += part[part.len() - 1];
    }
    let lens: Vec<usize> = parts
        .iter()
        .enumerate()
        .map(|(k, p)| p.len() - 1 + usize::from(k == 0))
        .collect();
    collect_parallel(&lens, |k| {
        let first = (k == 0).then_some(0);
        let base = bases[k];
        let rebased = parts[k][1..].iter().map(move |&o| base + o);
        first.into_iter().chain(rebased)
    })
}

/// `parts` one after another, copied in parallel; `None` past 4 GiB of text.
pub(crate) fn concat_strings(parts: &[&PackedStrings]) -> Option<PackedStrings> {
    let bytes: usize = parts.iter().map(|p| p.text.len()).sum();
    u32::try_from(bytes).ok()?;
    let text: Vec<&[u8]> = parts.iter().map(|p| p.text.as_bytes()).collect();
    // SAFETY: a concatenation of `String`s, each valid UTF-8, is valid UTF-8.
    let text = unsafe { String::from_utf8_unchecked(concat(&text)) };
    let offsets: Vec<&[u32]> = parts.iter().map(|p| p.offsets.as_slice()).collect();
    Some(PackedStrings {
        text,
        offsets: concat_offsets(&offsets),
    })
}

/// A copy of `p`, made in parallel.
pub(crate) fn copy_strings(p: &PackedStrings) -> PackedStrings {
    // SAFETY: a copy of a `String`'s bytes is valid UTF-8.
    let text = unsafe { String::from_utf8_unchecked(concat(&[p.text.as_bytes()])) };
    PackedStrings {
        text,
        offsets: concat(&[&p.offsets]),
    }
}
