//! Large zero-initialised scratch buffers.
//!
//! A fresh 100 MB `Vec` costs one page fault per 4 KiB on first touch, which was a third of
//! the AMX distance matrix's time. On Linux, [`Zeroed`] maps anonymous memory (zero-filled
//! by the kernel, so nothing is written twice) and asks for transparent huge pages, one fault
//! per 2 MiB; elsewhere, or if the mapping fails, it is an ordinary zeroed `Vec`.

use std::ops::{Deref, DerefMut};

/// Element types for which all-zero bytes are a valid value.
///
/// # Safety
/// Implementors must be plain data whose all-zero bit pattern is a valid value.
pub(crate) unsafe trait ZeroValid: Copy + Default {}

// SAFETY: zero bits are 0.0 and 0.
unsafe impl ZeroValid for f32 {}
// SAFETY: as above.
unsafe impl ZeroValid for u16 {}

/// Buffers below this size come from the heap: mapping them would not save anything.
const MAP_THRESHOLD: usize = 4 << 20;

/// `len` zeroed values: page-aligned when mapped, aligned as `T` otherwise.
pub(crate) struct Zeroed<T: ZeroValid> {
    storage: Storage<T>,
}

enum Storage<T> {
    Heap(Vec<T>),
    #[cfg(target_os = "linux")]
    Mapped {
        ptr: std::ptr::NonNull<T>,
        len: usize,
    },
}

// SAFETY: a mapping is owned exclusively by its `Zeroed`, like a `Vec`'s heap block.
unsafe impl<T: ZeroValid + Send> Send for Zeroed<T> {}
// SAFETY: shared access only hands out `&[T]`.
unsafe impl<T: ZeroValid + Sync> Sync for Zeroed<T> {}

impl<T: ZeroValid> Zeroed<T> {
    /// `len` zeroed values.
    pub(crate) fn new(len: usize) -> Self {
        let bytes = len.saturating_mul(std::mem::size_of::<T>());
        #[cfg(target_os = "linux")]
        if bytes >= MAP_THRESHOLD {
            if let Some(ptr) = map(bytes) {
                return Zeroed {
                    storage: Storage::Mapped {
                        ptr: ptr.cast(),
                        len,
                    },
                };
            }
        }
        let _ = bytes;
        Zeroed {
            storage: Storage::Heap(vec![T::default(); len]),
        }
    }
}

#[cfg(target_os = "linux")]
fn map(bytes: usize) -> Option<std::ptr::NonNull<u8>> {
    // SAFETY: an anonymous private mapping aliases no existing memory; failure is checked.
    let ptr = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            bytes,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if ptr == libc::MAP_FAILED {
        return None;
    }
    // SAFETY: advice on our own fresh mapping; if the kernel refuses, small pages remain.
    unsafe { libc::madvise(ptr, bytes, libc::MADV_HUGEPAGE) };
    std::ptr::NonNull::new(ptr.cast())
}

impl<T: ZeroValid> Drop for Zeroed<T> {
    fn drop(&mut self) {
        #[cfg(target_os = "linux")]
        if let Storage::Mapped { ptr, len } = self.storage {
            // SAFETY: the mapping was created by `map` with this size and is unmapped once.
            unsafe { libc::munmap(ptr.as_ptr().cast(), len * std::mem::size_of::<T>()) };
        }
    }
}

impl<T: ZeroValid> Deref for Zeroed<T> {
    type Target = [T];

    fn deref(&self) -> &[T] {
        match &self.storage {
            Storage::Heap(v) => v,
            #[cfg(target_os = "linux")]
            // SAFETY: the mapping holds `len` values, zero-filled by the kernel (valid by
            // `ZeroValid`) or written since through `deref_mut`.
            Storage::Mapped { ptr, len } => unsafe {
                std::slice::from_raw_parts(ptr.as_ptr(), *len)
            },
        }
    }
}

impl<T: ZeroValid> DerefMut for Zeroed<T> {
    fn deref_mut(&mut self) -> &mut [T] {
        match &mut self.storage {
            Storage::Heap(v) => v,
            #[cfg(target_os = "linux")]
            // SAFETY: as in `deref`, and `&mut self` makes the access exclusive.
            Storage::Mapped { ptr, len } => unsafe {
                std::slice::from_raw_parts_mut(ptr.as_ptr(), *len)
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_and_mapped_buffers_start_zeroed_and_keep_writes() {
        for len in [0usize, 10, 3 << 20] {
            let mut b = Zeroed::<f32>::new(len);
            assert_eq!(b.len(), len);
            assert!(b.iter().all(|&v| v == 0.0));
            if len > 0 {
                b[len - 1] = 2.5;
                assert_eq!(b[len - 1], 2.5);
            }
        }
        #[cfg(target_os = "linux")]
        {
            let b = Zeroed::<u16>::new(5 << 20);
            assert_eq!(b.as_ptr() as usize % 4096, 0, "a mapping is page-aligned");
        }
    }
}
