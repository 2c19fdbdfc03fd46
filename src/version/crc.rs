//! CRC-32 (IEEE 802.3, the polynomial and bit order of `crc32fast::hash`)
//! for the short inputs of context tokens.
//!
//! A get's token is about 20 bytes. `crc32fast::hash` spends most of its
//! time on such an input before the first byte: it asks which CPU features
//! the machine has and sets up its vector state, which only pays off past
//! 64 bytes (about 236 instructions per token in the server's GET profile,
//! BENCHMARKS §2l). This table-driven loop ("slicing by 8", eight bytes per
//! step from eight 256-entry tables built at compile time) computes the same
//! value with no set-up. The token's format is unchanged: the checksum is
//! the same CRC-32, so tokens written before and after verify alike
//! (`tests::same_as_crc32fast`).

/// The reflected IEEE polynomial.
const POLYNOMIAL: u32 = 0xedb8_8320;

/// `TABLES[0][b]` is the CRC of byte `b`; `TABLES[k][b]` that of `b`
/// followed by `k` zero bytes, so eight bytes are folded in one step.
static TABLES: [[u32; 256]; 8] = tables();

const fn tables() -> [[u32; 256]; 8] {
    let mut tables = [[0u32; 256]; 8];
    let mut byte = 0;
    while byte < 256 {
        let mut crc = byte as u32;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ POLYNOMIAL
            } else {
                crc >> 1
            };
            bit += 1;
        }
        tables[0][byte] = crc;
        byte += 1;
    }
    let mut k = 1;
    while k < 8 {
        let mut byte = 0;
        while byte < 256 {
            let previous = tables[k - 1][byte];
            tables[k][byte] = (previous >> 8) ^ tables[0][(previous & 0xff) as usize];
            byte += 1;
        }
        k += 1;
    }
    tables
}

/// The CRC-32 of `bytes`: equal to `crc32fast::hash(bytes)`.
pub(crate) fn crc32(bytes: &[u8]) -> u32 {
    crc32_finish(crc32_update(CRC32_START, bytes))
}

/// The CRC register before any byte.
pub(crate) const CRC32_START: u32 = !0;

/// The register's CRC-32 value.
pub(crate) fn crc32_finish(crc: u32) -> u32 {
    !crc
}

/// The register `crc` after `bytes`: `crc32_update(crc32_update(CRC32_START,
/// a), b)` is the register after `a` then `b`, so a fixed prefix's register
/// can be computed once.
pub(crate) fn crc32_update(mut crc: u32, bytes: &[u8]) -> u32 {
    let mut chunks = bytes.chunks_exact(8);
    for chunk in &mut chunks {
        let low = crc ^ u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        let high = u32::from_le_bytes([chunk[4], chunk[5], chunk[6], chunk[7]]);
        crc = TABLES[7][(low & 0xff) as usize]
            ^ TABLES[6][((low >> 8) & 0xff) as usize]
            ^ TABLES[5][((low >> 16) & 0xff) as usize]
            ^ TABLES[4][(low >> 24) as usize]
            ^ TABLES[3][(high & 0xff) as usize]
            ^ TABLES[2][((high >> 8) & 0xff) as usize]
            ^ TABLES[1][((high >> 16) & 0xff) as usize]
            ^ TABLES[0][(high >> 24) as usize];
    }
    for &byte in chunks.remainder() {
        crc = (crc >> 8) ^ TABLES[0][((crc ^ u32::from(byte)) & 0xff) as usize];
    }
    crc
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_rng::Rng;

    #[test]
    fn same_as_crc32fast() {
        // The standard check value, then every length up to a few chunks
        // at every alignment, of random bytes.
        assert_eq!(crc32(b"123456789"), 0xcbf4_3926);
        assert_eq!(crc32(&[]), crc32fast::hash(&[]));
        let mut rng = Rng(0x00c3_c32e);
        let data: Vec<u8> = (0..400).map(|_| rng.next() as u8).collect();
        for start in 0..8 {
            for end in start..data.len() {
                let bytes = &data[start..end];
                assert_eq!(crc32(bytes), crc32fast::hash(bytes), "{start}..{end}");
                // In two parts, split anywhere.
                let split = (start + end) / 2;
                let register = crc32_update(CRC32_START, &data[start..split]);
                let register = crc32_update(register, &data[split..end]);
                assert_eq!(crc32_finish(register), crc32fast::hash(bytes));
            }
        }
    }
}
