//! `Content-Encoding: gzip` bodies, decompressed within a limit: a gzip bomb costs at most the
//! limit in memory before it is refused. Ingest reads every body through [`gunzip_limited`]; the
//! fuzz target `gzip` checks it against an unbounded decoder.

use std::io::Read;

/// Why a gzip body was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GzipError {
    #[error("the body exceeds {limit} bytes")]
    TooLarge { limit: usize },
    #[error("the body is not valid gzip: {0}")]
    Invalid(String),
}

/// Decompresses a gzip body (one or more members), stopping at `limit` bytes.
pub fn gunzip_limited(compressed: &[u8], limit: usize) -> Result<Vec<u8>, GzipError> {
    let mut out = Vec::with_capacity(compressed.len().saturating_mul(4).min(limit));
    flate2::read::MultiGzDecoder::new(compressed)
        .take(limit as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| GzipError::Invalid(e.to_string()))?;
    if out.len() > limit {
        return Err(GzipError::TooLarge { limit });
    }
    Ok(out)
}

/// What the fuzz target `gzip` runs on each input, and `make test` on each input of its corpus:
/// the first two bytes are the limit (little endian), the rest the body. The limited decoder
/// never panics, never answers more than the limit, and agrees with a decoder without one.
#[doc(hidden)]
pub fn fuzz_gunzip(data: &[u8]) {
    let Some((limit, body)) = data.split_first_chunk::<2>() else { return };
    let limit = usize::from(u16::from_le_bytes(*limit));
    let limited = gunzip_limited(body, limit);
    // The same body without a limit (but within a bound, as the fuzzer's memory is finite).
    let mut whole = Vec::new();
    let unlimited = flate2::read::MultiGzDecoder::new(body)
        .take(1 << 20)
        .read_to_end(&mut whole)
        .map(|_| whole);
    match (&limited, &unlimited) {
        (Ok(out), Ok(all)) => assert_eq!(out, all, "the limited decoder lost or changed bytes"),
        (Ok(out), Err(e)) => panic!("only the limited decoder read it ({} bytes): {e}", out.len()),
        (Err(GzipError::TooLarge { .. }), Ok(all)) => assert!(all.len() > limit),
        (Err(GzipError::Invalid(e)), Ok(_)) => panic!("only the limited decoder refused it: {e}"),
        // Too large, and invalid further on; or invalid for both.
        (Err(_), Err(_)) => {}
    }
    if let Ok(out) = limited {
        assert!(out.len() <= limit);
    }
}
