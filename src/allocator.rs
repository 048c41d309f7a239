//! The binary's allocator: mimalloc, asked the way its own `malloc` is whenever the alignment
//! allows.
//!
//! The `mimalloc` crate passes every allocation to `mi_malloc_aligned`. In mimalloc v3 that has a
//! fast path only for a block of at most 1 KiB whose page has a free one at hand; the others (a
//! proxied call's futures and buffers over 1 KiB among them, seven allocations a call) take a
//! generic path that looks the size up and, unless its class is a power of two, over-allocates:
//! about 1k of a HTTP→HTTP call's 48.7k instructions (docs/PERFORMANCE.md).
//! Every block mimalloc hands out is aligned to a machine word at least, so a layout that asks
//! no more than that takes the plain entry points.

use std::alloc::{GlobalAlloc, Layout};

use libmimalloc_sys as mi;

/// The alignment every mimalloc block has: its size classes are whole words, and a page's first
/// block is 16-byte aligned.
const WORD: usize = std::mem::size_of::<usize>();

/// mimalloc, through `mi_malloc` for word-aligned layouts and `mi_malloc_aligned` for the rest.
pub struct MiMalloc;

// SAFETY: each call goes to the mimalloc function that honours the layout: the plain ones give
// word-aligned blocks (asked only for alignments up to a word), the aligned ones any power of
// two. A block is freed and resized by the same family that made it, chosen by the same
// alignment, which `GlobalAlloc` passes unchanged.
unsafe impl GlobalAlloc for MiMalloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: mimalloc's allocation functions accept any size and return null on failure.
        unsafe {
            if layout.align() <= WORD {
                mi::mi_malloc(layout.size()).cast()
            } else {
                mi::mi_malloc_aligned(layout.size(), layout.align()).cast()
            }
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as in `alloc`.
        unsafe {
            if layout.align() <= WORD {
                mi::mi_zalloc(layout.size()).cast()
            } else {
                mi::mi_zalloc_aligned(layout.size(), layout.align()).cast()
            }
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        // SAFETY: `ptr` came from this allocator (the caller's contract); `mi_free` frees blocks
        // of both families.
        unsafe { mi::mi_free(ptr.cast()) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: `ptr` was allocated here with `layout`, so by the family this alignment picks.
        unsafe {
            if layout.align() <= WORD {
                mi::mi_realloc(ptr.cast(), new_size).cast()
            } else {
                mi::mi_realloc_aligned(ptr.cast(), new_size, layout.align()).cast()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every size a call's allocations come in (and past the 1 KiB where mimalloc's aligned entry
    /// changes path), at every alignment: the block is aligned, usable to its end, and resizes
    /// keeping its contents.
    #[test]
    fn blocks_are_aligned_usable_and_resize_keeping_their_bytes() {
        let sizes = (1..=300).chain([1000, 1023, 1024, 1025, 1100, 3544, 4096, 70_000]);
        for size in sizes {
            for align in [1, 2, 4, 8, 16, 32, 64, 128, 4096] {
                let layout = Layout::from_size_align(size, align).unwrap();
                // SAFETY: the layout's size is not zero; the block is written within its size
                // and freed with the layout it was made with.
                unsafe {
                    for zeroed in [false, true] {
                        let p = if zeroed {
                            MiMalloc.alloc_zeroed(layout)
                        } else {
                            MiMalloc.alloc(layout)
                        };
                        assert!(!p.is_null());
                        assert_eq!(p as usize % align, 0, "size {size} align {align}");
                        if zeroed {
                            assert!(std::slice::from_raw_parts(p, size).iter().all(|&b| b == 0));
                        }
                        std::ptr::write_bytes(p, 0xa5, size);
                        let grown = MiMalloc.realloc(p, layout, size * 3);
                        assert!(!grown.is_null());
                        assert_eq!(
                            grown as usize % align,
                            0,
                            "grown: size {size} align {align}"
                        );
                        assert!(
                            std::slice::from_raw_parts(grown, size)
                                .iter()
                                .all(|&b| b == 0xa5)
                        );
                        MiMalloc.dealloc(grown, Layout::from_size_align(size * 3, align).unwrap());
                    }
                }
            }
        }
    }
}
