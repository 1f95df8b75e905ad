//! A sample's raw callchain as the kernel writes it: u64 entries, addresses and the context
//! markers between them (entries at or above [`PERF_CONTEXT_MAX`] are markers).

pub use perf_event_open_sys::bindings::{PERF_CONTEXT_KERNEL, PERF_CONTEXT_MAX, PERF_CONTEXT_USER};

/// One entry of a callchain: an address, and whether it is in the kernel or in user space.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChainEntry {
    Kernel(u64),
    User(u64),
}

/// The raw u64 entries of a callchain, markers included.
pub fn raw_entries(raw: &[u8]) -> impl Iterator<Item = u64> + '_ {
    raw.chunks_exact(8)
        .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
}

/// The addresses of a callchain, each with the context the markers before it name (entries
/// before any marker count as kernel ones, as the kernel writes its part first).
pub fn entries(raw: &[u8]) -> impl Iterator<Item = ChainEntry> + '_ {
    let mut in_user = false;
    raw_entries(raw).filter_map(move |addr| {
        if addr >= PERF_CONTEXT_MAX {
            in_user = addr != PERF_CONTEXT_KERNEL;
            return None;
        }
        Some(if in_user {
            ChainEntry::User(addr)
        } else {
            ChainEntry::Kernel(addr)
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_split_kernel_from_user_addresses() {
        let words = [
            PERF_CONTEXT_KERNEL,
            0xffff_1000,
            PERF_CONTEXT_USER,
            0x401000,
            0x402000,
        ];
        let raw: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
        let got: Vec<ChainEntry> = entries(&raw).collect();
        assert_eq!(
            got,
            vec![
                ChainEntry::Kernel(0xffff_1000),
                ChainEntry::User(0x401000),
                ChainEntry::User(0x402000)
            ]
        );
    }
}
