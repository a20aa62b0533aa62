//! Counter-based hashing used for deterministic initialisation and sampling.

/// The murmur3 64-bit finaliser: a bijective, full-avalanche mix.
#[inline(always)]
pub fn mix64(mut x: u64) -> u64 {
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    x ^ (x >> 33)
}

/// splitmix64 of a pair: a well-mixed hash of (a, b).
#[inline(always)]
pub fn hash2(a: u64, b: u64) -> u64 {
    mix64(
        a.wrapping_add(0x9e37_79b9_7f4a_7c15)
            .wrapping_mul(0xbf58_476d_1ce4_e5b9)
            ^ mix64(b),
    )
}

/// Uniform in [0, 1) from the top 24 bits of a hash.
#[inline(always)]
pub fn unit_f32(h: u64) -> f32 {
    (h >> 40) as f32 * (1.0 / (1u64 << 24) as f32)
}

/// Hasher for u64 keys in std/hashbrown maps: the murmur3 finaliser.
#[derive(Default, Clone, Copy)]
pub struct IdHasher(u64);

impl std::hash::Hasher for IdHasher {
    fn finish(&self) -> u64 {
        mix64(self.0)
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }
    fn write_u64(&mut self, x: u64) {
        self.0 ^= x;
    }
}

#[derive(Default, Clone, Copy)]
pub struct IdHashBuilder;

impl std::hash::BuildHasher for IdHashBuilder {
    type Hasher = IdHasher;
    fn build_hasher(&self) -> IdHasher {
        IdHasher(0)
    }
}
