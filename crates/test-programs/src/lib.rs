//! Shared helpers of the CWASI test programs: a deterministic payload
//! generator and a fast checksum, so that a producer and a sink (and the
//! host's tests) agree on data without shipping it around.
//!
//! This library does not use `cwasi-guest`, so programs that must not link
//! the SDK (the prototype-style ones) can still use it.

/// FNV-1a 64 offset basis.
const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
/// FNV-1a 64 prime.
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// Deterministic pseudo-random bytes: the same `size` always gives the same
/// bytes, so tests can regenerate a payload instead of storing it.
///
/// An xorshift64 stream seeded from `size`; each step yields 8 bytes
/// (little-endian), so 100 MiB takes well under a second even in Wasm.
pub fn generate(size: usize) -> Vec<u8> {
    let mut state = seed(size as u64);
    let mut out = vec![0u8; size];
    let mut chunks = out.chunks_exact_mut(8);
    for chunk in &mut chunks {
        state = xorshift64(state);
        chunk.copy_from_slice(&state.to_le_bytes());
    }
    let tail = chunks.into_remainder();
    if !tail.is_empty() {
        state = xorshift64(state);
        let len = tail.len();
        tail.copy_from_slice(&state.to_le_bytes()[..len]);
    }
    out
}

/// Seed of [`generate`]: never zero (xorshift would stay at zero).
fn seed(size: u64) -> u64 {
    let s = (size ^ 0x9E37_79B9_7F4A_7C15).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    if s == 0 {
        0x2545_F491_4F6C_DD1D
    } else {
        s
    }
}

/// One xorshift64 step (Marsaglia 13/7/17).
fn xorshift64(mut x: u64) -> u64 {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    x
}

/// Checksum of `data`, used to compare payloads across functions.
///
/// FNV-1a 64 arithmetic, made fast for 100 MiB payloads: four independent
/// lanes each absorb one little-endian `u64` word per step (lane `i` takes
/// words `i, i+4, ...` of every 32-byte block, then rotates left by 29), the
/// lanes are folded into one FNV-1a state, then the tail bytes and the length
/// are absorbed one at a time.
pub fn checksum(data: &[u8]) -> u64 {
    checksum_masked(data, 0)
}

/// [`checksum`] of `data` with every byte XOR-ed with `mask`, computed
/// without a copy: `checksum_masked(d, m) == checksum(&xor(d, m))`.
pub fn checksum_masked(data: &[u8], mask: u8) -> u64 {
    let word_mask = u64::from_ne_bytes([mask; 8]);
    let mut lanes = [FNV_OFFSET, FNV_OFFSET ^ 1, FNV_OFFSET ^ 2, FNV_OFFSET ^ 3];
    let mut blocks = data.chunks_exact(32);
    for block in &mut blocks {
        for (i, lane) in lanes.iter_mut().enumerate() {
            let mut word = [0u8; 8];
            word.copy_from_slice(&block[i * 8..i * 8 + 8]);
            let word = u64::from_le_bytes(word) ^ word_mask;
            *lane = ((*lane ^ word).wrapping_mul(FNV_PRIME)).rotate_left(29);
        }
    }
    let mut hash = FNV_OFFSET;
    for lane in lanes {
        hash = (hash ^ lane).wrapping_mul(FNV_PRIME);
    }
    for &byte in blocks.remainder() {
        hash = (hash ^ u64::from(byte ^ mask)).wrapping_mul(FNV_PRIME);
    }
    (hash ^ data.len() as u64).wrapping_mul(FNV_PRIME)
}

/// `data` with every byte XOR-ed with `mask` (what `transform` does with
/// `0xA5`).
pub fn xor(data: &[u8], mask: u8) -> Vec<u8> {
    data.iter().map(|b| b ^ mask).collect()
}

/// The byte `transform` XORs with.
pub const TRANSFORM_MASK: u8 = 0xA5;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generate_is_deterministic_and_sized() {
        for size in [0, 1, 7, 8, 9, 31, 32, 33, 1000] {
            let a = generate(size);
            assert_eq!(a.len(), size);
            assert_eq!(a, generate(size));
        }
        assert_ne!(generate(64), generate(65)[..64]);
    }

    #[test]
    fn checksum_masked_matches_copy() {
        for size in [0, 1, 31, 32, 33, 100, 4097] {
            let data = generate(size);
            assert_eq!(
                checksum_masked(&data, TRANSFORM_MASK),
                checksum(&xor(&data, TRANSFORM_MASK))
            );
        }
    }

    #[test]
    fn checksum_sees_changes() {
        let data = generate(1000);
        let base = checksum(&data);
        for i in [0, 7, 31, 32, 500, 999] {
            let mut d = data.clone();
            d[i] ^= 0x80;
            assert_ne!(checksum(&d), base, "flip at {i}");
        }
        assert_ne!(checksum(&data[..999]), base);
        assert_ne!(checksum(&[]), checksum(&[0]));
    }
}
