//! Pure helpers for the wire-level conventions of docs/abi.md, kept apart from
//! the imports so they can be unit-tested on any target.

/// The ABI version this SDK implements (the version in docs/abi.md).
pub const ABI_VERSION: u32 = 1;

/// Name of the Wasm import module that holds the host functions.
pub const IMPORT_MODULE: &str = "cwasi";

/// Longest target name the host accepts, in bytes.
pub const MAX_TARGET_LEN: usize = 255;

/// Lowest value of the `cwasi_handle` error range `-4095..=-1`.
pub const HANDLE_ERROR_MIN: i64 = -4095;

/// Packs a `(ptr, len)` range into the `i64` that `cwasi_handle` and
/// `cwasi_error` return: `(ptr << 32) | len`, read as unsigned.
pub const fn pack(ptr: u32, len: u32) -> i64 {
    (((ptr as u64) << 32) | len as u64) as i64
}

/// Splits a packed `i64` back into `(ptr, len)`; the inverse of [`pack`].
pub const fn unpack(packed: i64) -> (u32, u32) {
    let bits = packed as u64;
    ((bits >> 32) as u32, bits as u32)
}

/// Whether a `cwasi_handle` result means "the handler failed" rather than a
/// packed response range.
pub const fn is_handle_error(result: i64) -> bool {
    result >= HANDLE_ERROR_MIN && result <= -1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pack_unpack_round_trip() {
        let cases = [
            (0, 0),
            (0, 1),
            (1, 0),
            (0x0001_0000, 42),
            (0x7FFF_FFFF, 0xFFFF_FFFF),
            (0xFFFF_0000, 0x0001_0000),
            (u32::MAX, u32::MAX),
        ];
        for (ptr, len) in cases {
            assert_eq!(unpack(pack(ptr, len)), (ptr, len));
        }
    }

    #[test]
    fn pack_layout() {
        assert_eq!(pack(0, 0), 0);
        assert_eq!(pack(0x10, 0x20), 0x0000_0010_0000_0020);
        assert_eq!(pack(1, 0), 1 << 32);
        // Pointers at or above 2 GiB give negative values, which are still
        // ranges unless they fall in -4095..=-1.
        assert!(pack(0x8000_0000, 5) < 0);
        assert!(!is_handle_error(pack(0x8000_0000, 5)));
        assert!(!is_handle_error(pack(0xFFFF_0000, 0x1_0000)));
    }

    #[test]
    fn error_range() {
        assert!(is_handle_error(-1));
        assert!(is_handle_error(-4095));
        assert!(!is_handle_error(-4096));
        assert!(!is_handle_error(0));
        assert!(!is_handle_error(pack(0, 7)));
    }
}
