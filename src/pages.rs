//! Large read-mostly tables on transparent huge pages.
//!
//! The query path reads the cell table and the ranking cache at random
//! places: under a mix of client subnets nearly every query touches a page
//! the TLB no longer holds, and in a virtual machine each such miss is a
//! two-dimensional page walk. Profiles showed the batch prefetches of those
//! tables stalling on exactly that. On 2 MiB pages the tables need a few
//! dozen TLB entries instead of thousands.
//!
//! Linux grants huge pages to anonymous memory marked `MADV_HUGEPAGE`
//! (when `transparent_hugepage` is `madvise`, the usual default) if the
//! mark comes before the first touch, for each 2 MiB-aligned extent. So a
//! [`HugeSlice`] maps its memory itself, aligned to 2 MiB, marks it, and only
//! then writes the values. The mapping is rounded up to 4 KiB only, so the
//! tail that fills no whole extent stays on small pages and RSS does not grow.
//! Where the kernel refuses, the slice lives on the ordinary heap: huge pages
//! are a speed-up, never a requirement.

use std::ops::{Deref, DerefMut};
use std::ptr::NonNull;

/// A huge page's size (x86-64 and most aarch64 kernels).
const HUGE: usize = 2 << 20;

/// Tables smaller than this stay on the heap: they cannot fill an extent.
const MIN_BYTES: usize = HUGE;

/// A fixed-length slice of `Copy` values, on huge pages where the kernel allows.
pub struct HugeSlice<T: Copy> {
    store: Store<T>,
}

enum Store<T> {
    Mapped { ptr: NonNull<T>, len: usize, bytes: usize },
    Heap(Box<[T]>),
}

// SAFETY: a HugeSlice owns its values like a Box<[T]> does.
unsafe impl<T: Copy + Send> Send for HugeSlice<T> {}
// SAFETY: shared access only hands out &T, as Box<[T]> does.
unsafe impl<T: Copy + Sync> Sync for HugeSlice<T> {}

impl<T: Copy> HugeSlice<T> {
    /// `len` copies of `value`.
    pub fn filled(value: T, len: usize) -> HugeSlice<T> {
        Self::from_exact(std::iter::repeat_n(value, len))
    }

    /// The values of `iter`, written straight into their final place (a
    /// table built through a Vec would be held twice at load).
    pub fn from_exact<I: ExactSizeIterator<Item = T>>(iter: I) -> HugeSlice<T> {
        let want = iter.len();
        let Some((ptr, bytes)) = Self::map(want) else {
            return HugeSlice { store: Store::Heap(iter.collect()) };
        };
        let mut len = 0;
        // An iterator that yields fewer items than it announced leaves a shorter slice; extra ones are ignored.
        for v in iter.take(want) {
            // SAFETY: len < want, inside the mapping (page aligned, and T's alignment is at most a page).
            unsafe { ptr.as_ptr().add(len).write(v) };
            len += 1;
        }
        HugeSlice { store: Store::Mapped { ptr, len, bytes } }
    }

    /// Whether the values live in a mapping marked for huge pages.
    pub fn is_mapped(&self) -> bool {
        matches!(self.store, Store::Mapped { .. })
    }

    /// Map room for `len` values at a 2 MiB boundary and mark it for huge
    /// pages; `None` for small tables and wherever the kernel says no.
    fn map(len: usize) -> Option<(NonNull<T>, usize)> {
        let want = len.checked_mul(size_of::<T>())?;
        if want < MIN_BYTES || align_of::<T>() > 4096 || !cfg!(target_os = "linux") {
            return None;
        }
        let bytes = want.checked_add(4095)? & !4095;
        let span = bytes.checked_add(HUGE)?;
        // SAFETY: an anonymous private mapping at an address of the kernel's choosing.
        let raw = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                span,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if raw == libc::MAP_FAILED {
            return None;
        }
        // Keep the 2 MiB-aligned part; hand the rest back.
        let start = raw as usize;
        let aligned = (start + HUGE - 1) & !(HUGE - 1);
        let head = aligned - start;
        let tail = span - head - bytes;
        // SAFETY: both ranges lie inside the mapping just made and are page aligned.
        unsafe {
            if head > 0 {
                libc::munmap(raw, head);
            }
            if tail > 0 {
                libc::munmap((aligned + bytes) as *mut libc::c_void, tail);
            }
            // Advice only: where it is refused the pages are small, still correct.
            libc::madvise(aligned as *mut libc::c_void, bytes, libc::MADV_HUGEPAGE);
        }
        NonNull::new(aligned as *mut T).map(|p| (p, bytes))
    }
}

impl<T: Copy> Deref for HugeSlice<T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        match &self.store {
            // SAFETY: `len` values were written at `ptr` when the slice was made.
            Store::Mapped { ptr, len, .. } => unsafe { std::slice::from_raw_parts(ptr.as_ptr(), *len) },
            Store::Heap(b) => b,
        }
    }
}

impl<T: Copy> DerefMut for HugeSlice<T> {
    fn deref_mut(&mut self) -> &mut [T] {
        match &mut self.store {
            // SAFETY: as in deref; `&mut self` makes the access exclusive.
            Store::Mapped { ptr, len, .. } => unsafe { std::slice::from_raw_parts_mut(ptr.as_ptr(), *len) },
            Store::Heap(b) => b,
        }
    }
}

impl<T: Copy> Drop for HugeSlice<T> {
    fn drop(&mut self) {
        if let Store::Mapped { ptr, bytes, .. } = self.store {
            // SAFETY: the mapping was made by `map` with this length and is not used after this.
            unsafe { libc::munmap(ptr.as_ptr().cast(), bytes) };
        }
    }
}

impl<T: Copy + std::fmt::Debug> std::fmt::Debug for HugeSlice<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HugeSlice").field("len", &self.len()).field("mapped", &self.is_mapped()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_tables_stay_on_the_heap() {
        let s = HugeSlice::from_exact([1u32, 2, 3].into_iter());
        assert!(!s.is_mapped());
        assert_eq!(&*s, &[1, 2, 3]);
    }

    #[test]
    fn large_tables_are_mapped_aligned_and_hold_their_values() {
        let values: Vec<u64> = (0..(5 << 20) / 8 + 3).map(|i| i * 7 + 1).collect();
        let s = HugeSlice::from_exact(values.iter().copied());
        assert!(s.is_mapped(), "mmap refused on this machine");
        assert_eq!(s.as_ptr() as usize % HUGE, 0);
        assert_eq!(&*s, &values[..]);
        let mut f = HugeSlice::filled((3u8, 9u32), (3 << 20) / 8);
        assert!(f.iter().all(|&v| v == (3, 9)));
        f[12345] = (1, 2);
        assert_eq!(f[12345], (1, 2));
        assert_eq!(f.iter().filter(|&&v| v != (3, 9)).count(), 1);
    }

    #[test]
    fn the_kernel_backs_marked_tables_with_huge_pages_where_it_offers_them() {
        let thp = std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled").unwrap_or_default();
        if !(thp.contains("[madvise]") || thp.contains("[always]")) {
            eprintln!("SKIP: transparent huge pages are off here ({thp:?}): nothing to observe");
            return;
        }
        let s = HugeSlice::filled(1u64, (8 << 20) / 8);
        let begin = s.as_ptr() as usize;
        let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap_or_default();
        // The VMA that holds the slice: its AnonHugePages line.
        let mut in_vma = false;
        let mut huge_kb = None;
        for line in smaps.lines() {
            if let Some((range, _)) = line.split_once(' ')
                && let Some((a, b)) = range.split_once('-')
                && let (Ok(a), Ok(b)) = (usize::from_str_radix(a, 16), usize::from_str_radix(b, 16))
            {
                in_vma = a <= begin && begin < b;
            } else if in_vma && line.starts_with("AnonHugePages:") {
                huge_kb = line.split_whitespace().nth(1).and_then(|v| v.parse::<usize>().ok());
            }
        }
        let huge_kb = huge_kb.expect("the slice's mapping is listed in smaps");
        assert!(huge_kb >= 2048, "no huge page backs the marked table ({huge_kb} kB)");
    }
}
