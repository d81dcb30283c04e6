//! Lowercase hex for the ids the relay makes on every request (request
//! ids, session hashes), without `fmt`'s per-byte formatting.

/// Writes `bytes` as lowercase hex into `out` (twice their length) and
/// returns it as text.
pub(crate) fn encode<'a>(bytes: &[u8], out: &'a mut [u8]) -> &'a str {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for (pair, byte) in out.chunks_exact_mut(2).zip(bytes) {
        pair[0] = DIGITS[usize::from(byte >> 4)];
        pair[1] = DIGITS[usize::from(byte & 0xf)];
    }
    // Only ASCII digits were written.
    std::str::from_utf8(out).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    #[test]
    fn bytes_are_written_as_lowercase_hex() {
        let mut out = [0u8; 8];
        assert_eq!(
            super::encode(&[0x00, 0x0f, 0xa5, 0xff], &mut out),
            "000fa5ff"
        );
    }
}
