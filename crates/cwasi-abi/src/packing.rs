//! How `(ptr, len)` ranges cross the ABI: packed in an `i64` (the results of
//! `cwasi_handle` and `cwasi_error`), or written as an 8-byte result slot
//! (what `cwasi.call` and `cwasi.call_wait` write at `out_ptr`).

/// Lowest value of the `cwasi_handle` error range `-4095..=-1`; a result in
/// that range means "the handler failed", anything else is a packed range.
pub const HANDLE_ERROR_MIN: i64 = -4095;

/// Highest value of the `cwasi_handle` error range `-4095..=-1`.
pub const HANDLE_ERROR_MAX: i64 = -1;

/// Size in bytes of the result slot at `out_ptr` of `cwasi.call` and
/// `cwasi.call_wait`: two little-endian `u32`, `resp_ptr` then `resp_len`.
pub const RESULT_SLOT_LEN: usize = 8;

/// Packs a `(ptr, len)` range into the `i64` that `cwasi_handle` and
/// `cwasi_error` return: `(ptr << 32) | len`, read as unsigned. A pointer at
/// or above 2 GiB gives a negative value, which is still a range unless it
/// falls in the error range (see [`is_handle_error`]).
pub const fn pack(ptr: u32, len: u32) -> i64 {
    (((ptr as u64) << 32) | len as u64) as i64
}

/// Splits a packed `i64` back into `(ptr, len)`; the inverse of [`pack`].
pub const fn unpack(packed: i64) -> (u32, u32) {
    let bits = packed as u64;
    ((bits >> 32) as u32, bits as u32)
}

/// Whether a `cwasi_handle` result means "the handler failed"
/// ([`HANDLE_ERROR_MIN`]`..=`[`HANDLE_ERROR_MAX`]) rather than a packed
/// response range.
pub const fn is_handle_error(result: i64) -> bool {
    result >= HANDLE_ERROR_MIN && result <= HANDLE_ERROR_MAX
}

/// The bytes the host writes at `out_ptr` after a successful `cwasi.call` or
/// `cwasi.call_wait`: `resp_ptr` then `resp_len`, each a little-endian `u32`.
pub const fn encode_result_slot(ptr: u32, len: u32) -> [u8; RESULT_SLOT_LEN] {
    let p = ptr.to_le_bytes();
    let l = len.to_le_bytes();
    [p[0], p[1], p[2], p[3], l[0], l[1], l[2], l[3]]
}

/// Reads a result slot written by the host back into `(resp_ptr, resp_len)`;
/// the inverse of [`encode_result_slot`].
pub const fn decode_result_slot(slot: [u8; RESULT_SLOT_LEN]) -> (u32, u32) {
    (
        u32::from_le_bytes([slot[0], slot[1], slot[2], slot[3]]),
        u32::from_le_bytes([slot[4], slot[5], slot[6], slot[7]]),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const RANGES: [(u32, u32); 7] = [
        (0, 0),
        (0, 1),
        (1, 0),
        (0x0001_0000, 42),
        (0x7FFF_FFFF, 0xFFFF_FFFF),
        (0xFFFF_0000, 0x0001_0000),
        (u32::MAX, u32::MAX),
    ];

    #[test]
    fn pack_unpack_round_trip() {
        for (ptr, len) in RANGES {
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
        assert!(!is_handle_error(i64::MIN));
        assert!(!is_handle_error(i64::MAX));
    }

    #[test]
    fn result_slot_layout() {
        assert_eq!(encode_result_slot(0, 0), [0; RESULT_SLOT_LEN]);
        assert_eq!(
            encode_result_slot(0x0403_0201, 0x0807_0605),
            [1, 2, 3, 4, 5, 6, 7, 8]
        );
        for (ptr, len) in RANGES {
            assert_eq!(decode_result_slot(encode_result_slot(ptr, len)), (ptr, len));
        }
    }
}
