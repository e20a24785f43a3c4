//! Non-cryptographic hashing: one FNV-1a for every fingerprint the gateway takes (shared-data
//! shards, hashed quota identities, stable response ids, weighted picks, rate-limit records).

/// FNV-1a 64-bit hash: a cheap, deterministic fingerprint (not cryptographic).
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}
