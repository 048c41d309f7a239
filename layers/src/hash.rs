//! A fast hash for map keys that the gateway makes or configures itself.

use std::hash::{BuildHasherDefault, Hasher};

/// Multiply-and-rotate (rustc's hash), for keys that no client chooses: the gateway's own ids
/// and labels from its configuration. The standard SipHash resists keys chosen to collide, at
/// about ten times the cost on short keys; a map may be looked up with a client's key (a session
/// id from a header), since what it holds was not chosen by one.
///
/// ```
/// use std::collections::HashMap;
/// use mcp_gateway_layers::hash::OwnKeys;
/// let mut calls: HashMap<u64, &str, OwnKeys> = HashMap::default();
/// calls.insert(7, "tools/call");
/// assert_eq!(calls.get(&7), Some(&"tools/call"));
/// ```
#[derive(Debug, Default, Clone, Copy)]
pub struct OwnKeyHasher(u64);

/// Builds [`OwnKeyHasher`]s, for `HashMap<K, V, OwnKeys>`.
pub type OwnKeys = BuildHasherDefault<OwnKeyHasher>;

impl Hasher for OwnKeyHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut words = bytes.chunks_exact(8);
        for word in &mut words {
            let mut eight = [0u8; 8];
            eight.copy_from_slice(word);
            self.write_u64(u64::from_le_bytes(eight));
        }
        let rest = words.remainder();
        if !rest.is_empty() {
            let mut eight = [0u8; 8];
            eight[..rest.len()].copy_from_slice(rest);
            self.write_u64(u64::from_le_bytes(eight));
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0xf135_7aea_2e62_a9c5);
    }

    fn write_u8(&mut self, n: u8) {
        self.write_u64(u64::from(n));
    }

    fn write_usize(&mut self, n: usize) {
        self.write_u64(n as u64);
    }

    fn finish(&self) -> u64 {
        // The multiply leaves its best bits high; the table indexes by the low ones.
        self.0.rotate_left(26)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::hash::BuildHasher;

    #[test]
    fn keys_that_differ_hash_apart() {
        let hash = |key: &str| OwnKeys::default().hash_one(key);
        let ids = [
            "",
            "a",
            "ab",
            "abcdefgh",
            "abcdefgi",
            "abcdefghi",
            "bbcdefgh",
        ];
        for (i, a) in ids.iter().enumerate() {
            for b in &ids[i + 1..] {
                assert_ne!(hash(a), hash(b), "{a:?} {b:?}");
            }
        }
        // Sequential call ids spread over a table's low bits.
        let low: std::collections::HashSet<u64> = (0..64u64)
            .map(|id| OwnKeys::default().hash_one(id) & 63)
            .collect();
        assert!(low.len() > 32, "{}", low.len());
    }
}
