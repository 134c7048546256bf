//! Process-wide allocator settings.
//!
//! Every burn op allocates its output tensor and frees its inputs, so a fine-tuning step frees
//! and re-allocates hundreds of activation buffers of 1–50 MB. glibc's default returns such
//! buffers to the kernel (as `munmap`ped chunks, or by trimming the heap top), and every re-use
//! then page-faults on fresh zeroed pages: `clear_page` was 18 % of a `sv72 bench --train lora`
//! profile (issue #11). Keeping freed memory in the heap for re-use removes those faults; the
//! price is that the process keeps its peak heap instead of giving it back between steps.

/// Keeps freed memory for re-use (glibc only; a no-op elsewhere): allocations up to 32 MiB (glibc's
/// ceiling for the setting) come from the heap, and the heap top is never trimmed.
pub fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: `mallopt` only changes malloc's parameters; it is called before any thread starts.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
        libc::mallopt(libc::M_TOP_PAD, 64 << 20);
    }
}

#[cfg(all(test, target_os = "linux", target_env = "gnu"))]
mod tests {
    /// Minor page faults of the calling thread so far.
    fn faults() -> i64 {
        // SAFETY: `getrusage` fills the struct it is given.
        unsafe {
            let mut u: libc::rusage = std::mem::zeroed();
            libc::getrusage(libc::RUSAGE_THREAD, &mut u);
            u.ru_minflt
        }
    }

    fn touch(len: usize) {
        let mut v = vec![0u8; len];
        for b in v.iter_mut().step_by(4096) {
            *b = 1;
        }
        std::hint::black_box(&v);
    }

    #[test]
    fn a_freed_activation_sized_buffer_is_reused_without_page_faults() {
        super::keep_freed_memory();
        // Glibc's defaults `munmap` a freed 24 MiB buffer and fault its 6,144 pages in again on
        // the next one of the same size.
        let len = 24 << 20;
        let f = std::thread::spawn(move || {
            touch(len);
            let before = faults();
            touch(len);
            faults() - before
        })
        .join()
        .unwrap();
        assert!(
            f < 1000,
            "{f} page faults re-allocating a freed {len}-byte buffer"
        );
    }
}
