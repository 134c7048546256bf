//! Query images: base64 → bytes → header probe → a bounded decode → RGB pixels.
//!
//! Memory stays bounded under a flood of decompression bombs: the pixel count comes from the
//! header before anything is allocated, images over `serve.max_image_pixels` are refused there,
//! and the rest take one of two lanes with a fixed number of places: small images (validators'
//! 224² challenges) and large ones (up to `serve.max_image_pixels`). A place is held from the
//! decode until the image leaves inference, so a few large images cannot delay the small ones
//! behind them, and at most `max_large_images` large images are in memory at once.
//!
//! Every wait is bounded by the request's answer deadline; the caller answers the fallback when
//! it passes. A decode that outlives its deadline finishes in the background, still holding its
//! place.

use std::io::Cursor;
use std::sync::Arc;
use std::time::Instant;

use base64::Engine as _;
use image::{ImageDecoder as _, ImageReader, RgbImage};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::options::ImageLimits;
use crate::data::decode::{
    decode_rgb, format_names, jpeg_complete, DecodeLimits, Reason, Rejection,
};

/// Base64 texts up to this length are decoded on the request's task; longer ones on the
/// blocking pool.
const INLINE_BASE64: usize = 256 * 1024;

/// Which lane an image took.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lane {
    Small,
    Large,
}

/// A decoded query image.
pub struct Decoded {
    pub image: RgbImage,
    /// The image file (for the low-confidence store).
    pub bytes: Vec<u8>,
    /// Content hash of the file.
    pub hash: String,
    pub lane: Lane,
    pub width: u32,
    pub height: u32,
    /// The lane place; hold it until inference is done with the image.
    pub place: OwnedSemaphorePermit,
}

/// Why an image got the fallback: a stable label, a detail, and the hash of what was received.
#[derive(Debug, Clone)]
pub struct Failed {
    pub reason: &'static str,
    pub detail: String,
    pub hash: String,
}

fn failed(reason: &'static str, detail: impl Into<String>, hash: &str) -> Failed {
    Failed {
        reason,
        detail: detail.into(),
        hash: hash.to_string(),
    }
}

impl From<(Rejection, &str)> for Failed {
    fn from((r, hash): (Rejection, &str)) -> Self {
        failed(r.reason.code(), r.detail, hash)
    }
}

/// What the header says, read before any pixel is decoded.
#[derive(Debug, Clone, Copy)]
pub struct Probe {
    pub width: u32,
    pub height: u32,
}

/// Reads format and size from the header; refuses unsupported formats, too many pixels and
/// JPEGs that end before their end-of-image marker (Pillow refuses those too, and the subnet's
/// own miner would answer nothing; the caller answers the fallback and logs `image_partial`).
pub fn probe(bytes: &[u8], limits: &DecodeLimits) -> Result<Probe, Rejection> {
    crate::data::decode::check_len(bytes.len() as u64, limits)?;
    let reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| Rejection::new(Reason::Corrupt, e.to_string()))?;
    let format = reader.format().filter(|f| format_names(*f).is_some());
    let Some(format) = format else {
        return Err(Rejection::new(
            Reason::UnsupportedFormat,
            "not a JPEG, PNG, WebP, BMP, GIF or TIFF image",
        ));
    };
    let decoder = reader
        .into_decoder()
        .map_err(|e| Rejection::new(Reason::Corrupt, e.to_string()))?;
    let (width, height) = decoder.dimensions();
    if width == 0 || height == 0 {
        return Err(Rejection::new(
            Reason::ZeroDimensions,
            format!("header declares {width}x{height}"),
        ));
    }
    let pixels = width as u64 * height as u64;
    if pixels > limits.max_pixels {
        return Err(Rejection::new(
            Reason::OverMaxPixels,
            format!(
                "{width}x{height} = {pixels} pixels > serve.max_image_pixels = {}",
                limits.max_pixels
            ),
        ));
    }
    if format == image::ImageFormat::Jpeg && !jpeg_complete(bytes) {
        return Err(Rejection::new(
            Reason::Truncated,
            format!("{width}x{height} JPEG data ends before its end-of-image marker"),
        ));
    }
    Ok(Probe { width, height })
}

/// Base64 as Python's `b64decode` reads it: characters outside the alphabet are dropped.
fn base64_decode(b64: &str) -> Result<Vec<u8>, String> {
    let engine = base64::engine::general_purpose::STANDARD;
    match engine.decode(b64) {
        Ok(b) => Ok(b),
        Err(_) => {
            let cleaned: String = b64
                .chars()
                .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '/' | '='))
                .collect();
            engine.decode(cleaned).map_err(|e| e.to_string())
        }
    }
}

/// The two lanes and the limits.
pub struct ImageLanes {
    limits: ImageLimits,
    small: Arc<Semaphore>,
    large: Arc<Semaphore>,
}

impl ImageLanes {
    pub fn new(limits: ImageLimits) -> Self {
        Self {
            small: Arc::new(Semaphore::new(limits.max_small)),
            large: Arc::new(Semaphore::new(limits.max_large)),
            limits,
        }
    }

    fn decode_limits(&self) -> DecodeLimits {
        DecodeLimits {
            max_pixels: self.limits.max_pixels,
            max_file_bytes: self.limits.max_bytes as u64,
        }
    }

    /// Decodes one query image by `deadline`; `Err` means answer the fallback.
    pub async fn decode(&self, b64: String, deadline: Instant) -> Result<Decoded, Failed> {
        let text_hash = || crate::util::hash::content_hash(b64.as_bytes());
        if b64.len() / 4 * 3 > self.limits.max_bytes + 3 {
            return Err(failed(
                "image_too_large",
                format!("{} base64 characters", b64.len()),
                &text_hash(),
            ));
        }
        let deadline = tokio::time::Instant::from_std(deadline);
        let limits = self.decode_limits();
        let (bytes, hash, probed) = if b64.len() <= INLINE_BASE64 {
            let bytes = base64_decode(&b64).map_err(|e| failed("bad_base64", e, &text_hash()))?;
            let hash = crate::util::hash::content_hash(&bytes);
            let p = probe(&bytes, &limits);
            (bytes, hash, p)
        } else {
            let job = tokio::task::spawn_blocking(move || {
                let bytes = base64_decode(&b64).map_err(|e| {
                    failed(
                        "bad_base64",
                        e,
                        &crate::util::hash::content_hash(b64.as_bytes()),
                    )
                })?;
                let hash = crate::util::hash::content_hash(&bytes);
                let p = probe(&bytes, &limits);
                Ok::<_, Failed>((bytes, hash, p))
            });
            match tokio::time::timeout_at(deadline, job).await {
                Ok(Ok(r)) => r?,
                Ok(Err(e)) => return Err(failed("decode_panicked", e.to_string(), "")),
                Err(_) => return Err(failed("decode_timeout", "base64 not decoded in time", "")),
            }
        };
        let probe = probed.map_err(|r| Failed::from((r, hash.as_str())))?;
        let pixels = probe.width as u64 * probe.height as u64;
        let (lane, sem) = if pixels > self.limits.large_pixels {
            (Lane::Large, &self.large)
        } else {
            (Lane::Small, &self.small)
        };
        let place = match tokio::time::timeout_at(deadline, sem.clone().acquire_owned()).await {
            Ok(Ok(p)) => p,
            _ => {
                return Err(failed(
                    "decode_busy",
                    format!("no {lane:?} image lane place before the deadline"),
                    &hash,
                ))
            }
        };
        let job = tokio::task::spawn_blocking(move || {
            let r = decode_rgb(&bytes, &limits).map(|d| d.rgb);
            (r, bytes, place)
        });
        match tokio::time::timeout_at(deadline, job).await {
            Ok(Ok((Ok(image), bytes, place))) => Ok(Decoded {
                image,
                bytes,
                hash,
                lane,
                width: probe.width,
                height: probe.height,
                place,
            }),
            Ok(Ok((Err(r), _, _))) => Err(Failed::from((r, hash.as_str()))),
            Ok(Err(e)) => Err(failed("decode_panicked", e.to_string(), &hash)),
            Err(_) => Err(failed(
                "decode_timeout",
                format!(
                    "{}x{} not decoded before the deadline",
                    probe.width, probe.height
                ),
                &hash,
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn png(w: u32, h: u32) -> Vec<u8> {
        let mut buf = Cursor::new(Vec::new());
        RgbImage::new(w, h)
            .write_to(&mut buf, image::ImageFormat::Png)
            .unwrap();
        buf.into_inner()
    }

    fn b64(b: &[u8]) -> String {
        base64::engine::general_purpose::STANDARD.encode(b)
    }

    fn decoder(max_pixels: u64, large: u64, max_large: usize) -> ImageLanes {
        ImageLanes::new(ImageLimits {
            max_bytes: 1 << 20,
            max_pixels,
            large_pixels: large,
            max_large,
            max_small: 4,
        })
    }

    /// A PNG header declaring `w`×`h` RGBA16 with no pixel data: a bomb's header.
    fn bomb_header(w: u32, h: u32) -> Vec<u8> {
        let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
        let mut ihdr = b"IHDR".to_vec();
        ihdr.extend(w.to_be_bytes());
        ihdr.extend(h.to_be_bytes());
        ihdr.extend([16, 6, 0, 0, 0]);
        out.extend(13u32.to_be_bytes());
        out.extend(&ihdr);
        out.extend(crc32(&ihdr).to_be_bytes());
        // One IDAT holding an empty zlib stream: the decoder stops reading the header there.
        let idat = b"IDAT\x78\x9c\x03\x00\x00\x00\x00\x01";
        out.extend(8u32.to_be_bytes());
        out.extend(idat);
        out.extend(crc32(idat).to_be_bytes());
        out.extend(0u32.to_be_bytes());
        out.extend(b"IEND");
        out.extend(crc32(b"IEND").to_be_bytes());
        out
    }

    fn crc32(b: &[u8]) -> u32 {
        let mut c = !0u32;
        for &x in b {
            c ^= x as u32;
            for _ in 0..8 {
                c = if c & 1 != 0 {
                    0xEDB88320 ^ (c >> 1)
                } else {
                    c >> 1
                };
            }
        }
        !c
    }

    #[tokio::test(flavor = "current_thread")]
    async fn pixel_limit_is_read_from_the_header() {
        let d = decoder(1_000_000, 100_000, 1);
        let deadline = Instant::now() + Duration::from_secs(5);
        let ok = d.decode(b64(&png(640, 480)), deadline).await.unwrap();
        assert_eq!((ok.image.width(), ok.lane), (640, Lane::Large));
        assert_eq!(
            d.decode(b64(&png(32, 32)), deadline).await.unwrap().lane,
            Lane::Small
        );
        // 40 MP declared: refused from the header, nothing decoded.
        let e = d
            .decode(b64(&bomb_header(6324, 6324)), deadline)
            .await
            .err()
            .unwrap();
        assert_eq!(e.reason, "over_max_pixels", "{e:?}");
        assert!(e.detail.contains("6324x6324"), "{}", e.detail);
        for (text, reason) in [
            (b64(b"not an image at all"), "unsupported_format"),
            ("!!!a".to_string(), "bad_base64"),
            (String::new(), "empty_file"),
        ] {
            assert_eq!(d.decode(text, deadline).await.err().unwrap().reason, reason);
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_full_lane_answers_busy_by_the_deadline() {
        let d = decoder(1_000_000, 100_000, 1);
        let held = d
            .decode(b64(&png(640, 480)), Instant::now() + Duration::from_secs(5))
            .await
            .unwrap();
        let t = Instant::now();
        let e = d
            .decode(b64(&png(640, 480)), t + Duration::from_millis(100))
            .await
            .err()
            .unwrap();
        assert_eq!(e.reason, "decode_busy");
        assert!(t.elapsed() < Duration::from_secs(2));
        // The small lane is not blocked by the large one.
        assert!(d
            .decode(b64(&png(8, 8)), t + Duration::from_secs(5))
            .await
            .is_ok());
        drop(held);
        assert!(d
            .decode(b64(&png(640, 480)), Instant::now() + Duration::from_secs(5))
            .await
            .is_ok());
    }

    #[test]
    fn truncated_jpeg_is_refused_before_decoding() {
        let jpg = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/images/rgb_224x224.jpg"
        ))
        .unwrap();
        let lim = DecodeLimits {
            max_pixels: 1 << 20,
            max_file_bytes: 1 << 20,
        };
        let p = probe(&jpg, &lim).unwrap();
        assert_eq!((p.width, p.height), (224, 224));
        assert_eq!(decode_rgb(&jpg, &lim).unwrap().rgb.dimensions(), (224, 224));
        let cut = &jpg[..jpg.len() * 2 / 3];
        let r = probe(cut, &lim).unwrap_err();
        assert_eq!(r.reason, Reason::Truncated, "{}", r.detail);
    }
}
