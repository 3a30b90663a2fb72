//! Unique-viewer sketches: HyperLogLog with a fixed hash and a fixed byte
//! format, so the same viewers give the same bytes on every run and machine
//! (runs must be byte-identical) and days and months merge without rescanning.
//!
//! Written here rather than with the `hyperloglogplus` crate: its serialized
//! form goes through hash sets whose order is not fixed, which would break
//! byte-identical reruns. Precision 12 (4 096 registers, ±1.6 %). Format v1:
//! `[1, 12, 0, n_hi, n_lo, (idx_hi, idx_lo, rank) * n]` (sparse, sorted) or
//! `[1, 12, 1, rank * 4096]` (dense, when sparse would be larger).

const P: u32 = 12;
const M: usize = 1 << P;

/// A HyperLogLog sketch.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sketch {
    /// The non-zero registers, sorted by index (most sketches are small:
    /// one video-hour's viewers).
    registers: Vec<(u16, u8)>,
}

impl Sketch {
    /// Adds one value.
    pub fn insert(&mut self, value: &[u8]) {
        self.insert_hash(value_hash(value));
    }

    /// Adds one value by its [`value_hash`] (computed once per distinct
    /// value by callers that insert the same values many times).
    pub fn insert_hash(&mut self, h: u64) {
        let idx = (h >> (64 - P)) as u16;
        let rest = (h << P) | (1 << (P - 1));
        let rank = rest.leading_zeros() as u8 + 1;
        self.raise(idx, rank);
    }

    /// Sets register `idx` to at least `rank`.
    fn raise(&mut self, idx: u16, rank: u8) {
        match self.registers.binary_search_by_key(&idx, |&(i, _)| i) {
            Ok(at) => self.registers[at].1 = self.registers[at].1.max(rank),
            Err(at) => self.registers.insert(at, (idx, rank)),
        }
    }

    /// Merges another sketch in (register-wise max).
    pub fn merge(&mut self, other: &Sketch) {
        for &(i, r) in &other.registers {
            self.raise(i, r);
        }
    }

    /// Bytes this sketch holds on the heap (for memory accounting).
    pub fn heap_bytes(&self) -> usize {
        self.registers.capacity() * std::mem::size_of::<(u16, u8)>()
    }

    /// Estimated distinct count.
    pub fn estimate(&self) -> f64 {
        let m = M as f64;
        let zeros = (M - self.registers.len()) as f64;
        let sum: f64 = self
            .registers
            .iter()
            .map(|&(_, r)| 2f64.powi(-i32::from(r)))
            .sum::<f64>()
            + zeros;
        let alpha = 0.7213 / (1.0 + 1.079 / m);
        let raw = alpha * m * m / sum;
        if raw <= 2.5 * m && zeros > 0.0 {
            m * (m / zeros).ln()
        } else {
            raw
        }
    }

    /// The fixed byte form.
    pub fn to_bytes(&self) -> Vec<u8> {
        let n = self.registers.len();
        if n * 3 + 5 < M + 3 {
            let mut out = Vec::with_capacity(5 + n * 3);
            out.extend_from_slice(&[1, P as u8, 0]);
            out.extend_from_slice(&(n as u16).to_be_bytes());
            for &(i, r) in &self.registers {
                out.extend_from_slice(&i.to_be_bytes());
                out.push(r);
            }
            out
        } else {
            let mut out = vec![0u8; 3 + M];
            out[..3].copy_from_slice(&[1, P as u8, 1]);
            for &(i, r) in &self.registers {
                out[3 + i as usize] = r;
            }
            out
        }
    }

    /// Parses [`Self::to_bytes`].
    pub fn from_bytes(b: &[u8]) -> Option<Self> {
        let (&[1, p, kind], rest) = b.split_first_chunk::<3>()? else {
            return None;
        };
        if u32::from(p) != P {
            return None;
        }
        let mut sketch = Sketch::default();
        match kind {
            0 => {
                let (n, pairs) = rest.split_first_chunk::<2>()?;
                let n = u16::from_be_bytes(*n) as usize;
                if pairs.len() != n * 3 {
                    return None;
                }
                for c in pairs.chunks_exact(3) {
                    let i = u16::from_be_bytes([c[0], c[1]]);
                    if usize::from(i) >= M || c[2] == 0 {
                        return None;
                    }
                    sketch.raise(i, c[2]);
                }
            }
            1 if rest.len() == M => {
                for (i, &r) in rest.iter().enumerate() {
                    if r > 0 {
                        sketch.raise(i as u16, r);
                    }
                }
            }
            _ => return None,
        }
        Some(sketch)
    }
}

/// The sketch's hash of a value (fixed: part of the byte format's
/// meaning); defined beside the rules, which know users by it too.
pub use schemas::fraud::value_hash;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn estimates_are_close_and_bytes_round_trip() {
        for n in [0usize, 1, 10, 1_000, 50_000] {
            let mut s = Sketch::default();
            for i in 0..n {
                s.insert(format!("user-{i}").as_bytes());
            }
            let e = s.estimate();
            let err = if n == 0 {
                e
            } else {
                (e - n as f64).abs() / n as f64
            };
            assert!(err < 0.05, "n={n} estimate={e}");
            assert_eq!(Sketch::from_bytes(&s.to_bytes()), Some(s.clone()));
        }
    }

    /// Pinned: the sketch bytes of fixed viewers, sparse and dense, and the
    /// value hash. Changing the hash or the format fails here instead of
    /// silently changing every published views file.
    #[test]
    fn golden_bytes() {
        assert_eq!(value_hash(b"user-1"), GOLDEN_HASH);
        let mut s = Sketch::default();
        for u in ["user-1", "user-2", "user-3"] {
            s.insert(u.as_bytes());
        }
        assert_eq!(hex(&s.to_bytes()), GOLDEN_SPARSE);
        let mut dense = Sketch::default();
        for i in 0..5_000 {
            dense.insert(format!("user-{i}").as_bytes());
        }
        let bytes = dense.to_bytes();
        assert_eq!((bytes.len(), &bytes[..3]), (3 + M, &[1u8, 12, 1][..]));
        assert_eq!(crate::layout::sha256(&bytes), GOLDEN_DENSE_SHA256);
    }

    // Computed independently (a few lines of Python following the module
    // doc's format), not copied from this code's output.
    const GOLDEN_HASH: u64 = 4_729_620_347_622_785_477;
    const GOLDEN_SPARSE: &str = "010c00000302cc07041a030a9f02";
    const GOLDEN_DENSE_SHA256: &str =
        "dad8d9562e28df7c2f4fb7e78ee0de6d107f9237eca4ddb77d7fb9ab479a5900";

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    #[test]
    fn merge_is_union() {
        let (mut a, mut b, mut both) = (Sketch::default(), Sketch::default(), Sketch::default());
        for i in 0..3_000 {
            let v = format!("u{i}");
            if i < 2_000 {
                a.insert(v.as_bytes());
            }
            if i >= 1_000 {
                b.insert(v.as_bytes());
            }
            both.insert(v.as_bytes());
        }
        a.merge(&b);
        assert_eq!(a, both);
    }
}
