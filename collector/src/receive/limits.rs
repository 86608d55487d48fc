//! Bounded body handling shared by the HTTP receivers: read at most `max` bytes of a body and
//! inflate gzip into at most `max_decompressed` bytes, refusing early (a gzip bomb is never
//! inflated into memory past the limit).

use std::io::Read;

use axum::body::Body;
use bytes::Bytes;

use crate::error::IngestError;

/// Reads a request body, refusing it once it passes `max` bytes.
pub async fn read_capped(body: Body, max: usize) -> Result<Bytes, IngestError> {
    axum::body::to_bytes(body, max)
        .await
        .map_err(|_| IngestError::TooLarge {
            what: "request body",
            limit: max,
        })
}

/// Applies the request's `Content-Encoding`: identity passes through, gzip is inflated into
/// at most `max_decompressed` bytes, anything else is refused.
pub fn decode_content(
    encoding: Option<&str>,
    body: Bytes,
    max_decompressed: usize,
) -> Result<Bytes, IngestError> {
    match encoding.map(|e| e.trim().to_ascii_lowercase()) {
        None => Ok(body),
        Some(e) if e.is_empty() || e == "identity" => Ok(body),
        Some(e) if e == "gzip" || e == "x-gzip" => gunzip_capped(&body, max_decompressed),
        Some(e) => Err(IngestError::UnsupportedEncoding(e)),
    }
}

/// Inflates gzip data, stopping as soon as the output would pass `max` bytes.
pub fn gunzip_capped(data: &[u8], max: usize) -> Result<Bytes, IngestError> {
    let mut out = Vec::with_capacity(data.len().saturating_mul(4).min(max));
    let decoder = flate2::read::MultiGzDecoder::new(data);
    let mut limited = decoder.take(max as u64 + 1);
    limited
        .read_to_end(&mut out)
        .map_err(|e| IngestError::InvalidPayload(format!("gzip body cannot be decoded: {e}")))?;
    if out.len() > max {
        return Err(IngestError::TooLarge {
            what: "decompressed request body",
            limit: max,
        });
    }
    Ok(Bytes::from(out))
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn gz(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn gzip_round_trip_and_bomb() {
        let ok = gunzip_capped(&gz(b"hello"), 10).unwrap();
        assert_eq!(&ok[..], b"hello");
        let bomb = gz(&vec![0u8; 10_000_000]);
        assert!(bomb.len() < 20_000);
        match gunzip_capped(&bomb, 1_000_000) {
            Err(IngestError::TooLarge { limit, .. }) => assert_eq!(limit, 1_000_000),
            other => panic!("unexpected {other:?}"),
        }
        assert!(matches!(
            gunzip_capped(b"not gzip", 100),
            Err(IngestError::InvalidPayload(_))
        ));
        assert!(matches!(
            decode_content(Some("br"), Bytes::new(), 10),
            Err(IngestError::UnsupportedEncoding(_))
        ));
    }
}
