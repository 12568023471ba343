//! Reading a request body within its limits and splitting it into one element per event.

use std::io::Read;

use serde_json::value::RawValue;

/// Why a whole request was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BodyError {
    #[error("the body exceeds {limit} bytes")]
    TooLarge { limit: usize },
    #[error("the body holds {count} events; at most {limit} are allowed per request")]
    TooManyEvents { count: usize, limit: usize },
    #[error("the body is not valid gzip: {0}")]
    BadGzip(String),
    #[error("the body is not JSON: {0}")]
    NotJson(String),
    #[error("the body is empty")]
    Empty,
    #[error("unsupported Content-Encoding {0:?}; use gzip or none")]
    UnsupportedEncoding(String),
}

/// Decompresses a gzip body, stopping at `limit` bytes: a gzip bomb costs at most `limit` bytes
/// of memory before it is refused.
pub fn gunzip_limited(compressed: &[u8], limit: usize) -> Result<Vec<u8>, BodyError> {
    let mut out = Vec::with_capacity(compressed.len().saturating_mul(4).min(limit));
    flate2::read::MultiGzDecoder::new(compressed)
        .take(limit as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| BodyError::BadGzip(e.to_string()))?;
    if out.len() > limit {
        return Err(BodyError::TooLarge { limit });
    }
    Ok(out)
}

/// One element of a batch: the raw JSON of one event, or why its line could not be parsed.
pub type Element<'a> = Result<&'a RawValue, serde_json::Error>;

/// Splits a body into events. `ndjson` is chosen by the content type; otherwise the body is a
/// single JSON object or a JSON array of them.
pub fn split(body: &[u8], ndjson: bool, max_events: usize) -> Result<Vec<Element<'_>>, BodyError> {
    let text = std::str::from_utf8(body).map_err(|e| BodyError::NotJson(e.to_string()))?;
    let trimmed = text.trim_start();
    if trimmed.is_empty() {
        return Err(BodyError::Empty);
    }
    let elements: Vec<Element<'_>> = if ndjson {
        text.lines()
            .filter(|line| !line.trim().is_empty())
            .map(serde_json::from_str::<&RawValue>)
            .collect()
    } else if trimmed.starts_with('[') {
        let items: Vec<&RawValue> =
            serde_json::from_str(text).map_err(|e| BodyError::NotJson(e.to_string()))?;
        items.into_iter().map(Ok).collect()
    } else {
        let one: &RawValue =
            serde_json::from_str(text).map_err(|e| BodyError::NotJson(e.to_string()))?;
        vec![Ok(one)]
    };
    if elements.len() > max_events {
        return Err(BodyError::TooManyEvents { count: elements.len(), limit: max_events });
    }
    if ndjson && !elements.is_empty() && elements.iter().all(|e| e.is_err()) {
        let first = elements.into_iter().next().expect("non-empty").expect_err("all errors");
        return Err(BodyError::NotJson(first.to_string()));
    }
    if elements.is_empty() {
        return Err(BodyError::Empty);
    }
    Ok(elements)
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::write::GzEncoder;
    use std::io::Write;

    #[test]
    fn shapes() {
        assert_eq!(split(br#"{"a":1}"#, false, 10).unwrap().len(), 1);
        assert_eq!(split(br#"[{"a":1},{"b":2}, 3]"#, false, 10).unwrap().len(), 3);
        let nd = split(b"{\"a\":1}\n\n{oops\n{\"c\":3}\n", true, 10).unwrap();
        assert_eq!(nd.len(), 3);
        assert!(nd[1].is_err());
        assert!(matches!(split(b"not json", false, 10), Err(BodyError::NotJson(_))));
        assert!(matches!(split(b"nope\nnope", true, 10), Err(BodyError::NotJson(_))));
        assert_eq!(split(b"  ", false, 10).unwrap_err(), BodyError::Empty);
        assert_eq!(split(b"[]", false, 10).unwrap_err(), BodyError::Empty);
        assert_eq!(
            split(b"[1,2,3]", false, 2).unwrap_err(),
            BodyError::TooManyEvents { count: 3, limit: 2 }
        );
    }

    #[test]
    fn a_gzip_bomb_is_cut_off_at_the_limit() {
        let mut gz = GzEncoder::new(Vec::new(), flate2::Compression::best());
        let zeros = vec![b' '; 1 << 20];
        for _ in 0..64 {
            gz.write_all(&zeros).unwrap();
        }
        let bomb = gz.finish().unwrap();
        assert!(bomb.len() < 200_000);
        assert_eq!(gunzip_limited(&bomb, 1 << 20), Err(BodyError::TooLarge { limit: 1 << 20 }));
        assert!(matches!(gunzip_limited(b"not gzip", 100), Err(BodyError::BadGzip(_))));
    }
}
