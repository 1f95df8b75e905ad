//! A BPF array map (`BPF_F_MMAPABLE`) mapped into ember's memory: ember writes many entries
//! at once, not one `bpf` call each, and the program reads them as they are written.

use std::marker::PhantomData;
use std::os::fd::{AsFd, AsRawFd};

use aya::maps::MapData;

use super::BpfError;

/// The entries of an array map of `T`, mapped here.
pub(super) struct MappedArray<T> {
    /// Kept open: the map lives as long as a descriptor or the program holds it.
    _map: MapData,
    base: std::ptr::NonNull<T>,
    len: usize,
    _entries: PhantomData<T>,
}

// SAFETY: the mapping is owned by this struct and only touched through &mut self.
unsafe impl<T: Send> Send for MappedArray<T> {}

impl<T: Copy> MappedArray<T> {
    /// Map the `len` entries of `map` (`what` names them in an error).
    pub(super) fn map(map: MapData, len: u32, what: &str) -> Result<MappedArray<T>, BpfError> {
        let fd = map.fd().as_fd().as_raw_fd();
        let bytes = Self::bytes_of(len as usize);
        let base = crate::linux::memory::map_shared(fd, bytes)
            .map_err(|e| BpfError::Load(format!("could not map the {what}: {e}")))?;
        Ok(MappedArray {
            _map: map,
            base: base.cast(),
            len: len as usize,
            _entries: PhantomData,
        })
    }

    pub(super) fn entries_mut(&mut self) -> &mut [T] {
        // SAFETY: the mapping holds `len` entries of T and lives as long as self.
        unsafe { std::slice::from_raw_parts_mut(self.base.as_ptr(), self.len) }
    }
}

impl<T> MappedArray<T> {
    /// The bytes mapped for `len` entries: whole pages.
    fn bytes_of(len: usize) -> usize {
        let page = crate::linux::memory::page_size();
        (len * std::mem::size_of::<T>()).div_ceil(page) * page
    }
}

impl<T> Drop for MappedArray<T> {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly what `map` mapped.
        unsafe { libc::munmap(self.base.as_ptr().cast(), Self::bytes_of(self.len)) };
    }
}
