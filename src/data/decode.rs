//! Decoding an encoded image into the RGB pixels a model sees, the one rule every stage uses
//! (ingest, embed, train, eval, serve, `export --selfcheck`), and ingest's per-image checks.
//!
//! The rule is the subnet miner's: `Image.open(BytesIO(bytes))` then transformers'
//! image-classification pipeline, whose `load_image` (4.45.2 and 5.x alike) runs
//! `PIL.ImageOps.exif_transpose` and `convert("RGB")` before the image processor. So:
//! * the EXIF orientation is applied;
//! * alpha is dropped, not composited (`RGBA`/`LA` → `RGB` keeps the colour channels);
//! * grey is replicated, palettes are expanded;
//! * CMYK JPEGs are read inverted (Pillow assumes Adobe's convention) and converted with Pillow's
//!   `cmyk2rgb`; 16-bit grey is clipped to 255 and 16-bit colour keeps its high byte, as
//!   Pillow's converters do.
//!
//! JPEGs are decoded by libjpeg-turbo's decoder (the `mozjpeg` crate, built from source with the
//! C compiler only), the library Pillow links, with Pillow's settings (accurate integer IDCT,
//! fancy upsampling), so the pixels are PIL's bit for bit; other formats go through the `image`
//! crate.
//!
//! Every way an input can be unusable maps to one [`Reason`] so the quarantine report says what
//! to fix. Size limits are checked before any pixel is decoded: the file size first, then the
//! dimensions from the header, so a decompression bomb never allocates its pixels.

use std::fmt;
use std::io::Cursor;

use image::metadata::Orientation;
use image::{DynamicImage, ImageDecoder, ImageError, ImageFormat, ImageReader, Limits, RgbImage};

use super::phash;
use crate::util::pil;

/// Why an input was quarantined. The string codes are stable: they appear in `quarantine.csv`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reason {
    /// A CSV row (or Parquet `path`) names a file that does not exist.
    MissingFile,
    /// The file exists but could not be read.
    ReadError,
    /// Zero bytes (or a null Parquet cell).
    EmptyFile,
    /// Larger than `ingest.max_file_bytes`.
    OverMaxFileBytes,
    /// Not an image format sv72 decodes (e.g. text, HEIC, AVIF).
    UnsupportedFormat,
    /// The header declares a zero width or height.
    ZeroDimensions,
    /// The header declares more than `ingest.max_pixels` pixels.
    OverMaxPixels,
    /// The file ends before the image data does.
    Truncated,
    /// The data does not follow its format.
    Corrupt,
}

impl Reason {
    /// Every reason, in report order.
    pub const ALL: [Reason; 9] = [
        Reason::MissingFile,
        Reason::ReadError,
        Reason::EmptyFile,
        Reason::OverMaxFileBytes,
        Reason::UnsupportedFormat,
        Reason::ZeroDimensions,
        Reason::OverMaxPixels,
        Reason::Truncated,
        Reason::Corrupt,
    ];

    /// Stable code written to `quarantine.csv`.
    pub fn code(self) -> &'static str {
        match self {
            Reason::MissingFile => "missing_file",
            Reason::ReadError => "read_error",
            Reason::EmptyFile => "empty_file",
            Reason::OverMaxFileBytes => "over_max_file_bytes",
            Reason::UnsupportedFormat => "unsupported_format",
            Reason::ZeroDimensions => "zero_dimensions",
            Reason::OverMaxPixels => "over_max_pixels",
            Reason::Truncated => "truncated",
            Reason::Corrupt => "corrupt",
        }
    }

    /// Parses a code written by [`Reason::code`].
    pub fn from_code(s: &str) -> Option<Reason> {
        Reason::ALL.into_iter().find(|r| r.code() == s)
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// An input that cannot be ingested, with a human-readable detail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub reason: Reason,
    pub detail: String,
}

impl Rejection {
    pub fn new(reason: Reason, detail: impl Into<String>) -> Self {
        Self {
            reason,
            detail: detail.into(),
        }
    }
}

/// Size limits applied before decoding.
#[derive(Debug, Clone, Copy)]
pub struct DecodeLimits {
    pub max_pixels: u64,
    pub max_file_bytes: u64,
}

/// What ingest keeps of a decoded image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageInfo {
    /// Width after EXIF orientation.
    pub width: u32,
    /// Height after EXIF orientation.
    pub height: u32,
    /// Format name (`jpeg`, `png`, ...).
    pub format: &'static str,
    /// File extension used in the content-addressed store.
    pub ext: &'static str,
    /// pHash of the oriented image.
    pub phash: u64,
}

/// Format name and store extension of the formats sv72 decodes.
pub fn format_names(f: ImageFormat) -> Option<(&'static str, &'static str)> {
    Some(match f {
        ImageFormat::Jpeg => ("jpeg", "jpg"),
        ImageFormat::Png => ("png", "png"),
        ImageFormat::WebP => ("webp", "webp"),
        ImageFormat::Bmp => ("bmp", "bmp"),
        ImageFormat::Gif => ("gif", "gif"),
        ImageFormat::Tiff => ("tiff", "tif"),
        _ => return None,
    })
}

/// Checks the byte-size limits of an input of `len` bytes.
pub fn check_len(len: u64, limits: &DecodeLimits) -> Result<(), Rejection> {
    if len == 0 {
        return Err(Rejection::new(Reason::EmptyFile, "the file has zero bytes"));
    }
    if len > limits.max_file_bytes {
        return Err(Rejection::new(
            Reason::OverMaxFileBytes,
            format!(
                "{len} bytes > ingest.max_file_bytes = {}",
                limits.max_file_bytes
            ),
        ));
    }
    Ok(())
}

/// A decoded image: RGB pixels after the EXIF orientation, and what it was.
#[derive(Debug, Clone)]
pub struct Decoded {
    pub rgb: RgbImage,
    /// Format name (`jpeg`, `png`, ...).
    pub format: &'static str,
    /// File extension used in the content-addressed store.
    pub ext: &'static str,
}

/// Decodes `bytes` (format sniffed from the content, never the file name) into the RGB pixels
/// the subnet miner's pipeline would see (see the module docs).
pub fn decode_rgb(bytes: &[u8], limits: &DecodeLimits) -> Result<Decoded, Rejection> {
    check_len(bytes.len() as u64, limits)?;
    let format = image::guess_format(bytes).map_err(|_| {
        Rejection::new(
            Reason::UnsupportedFormat,
            format!("not a known image format (starts with {})", magic(bytes)),
        )
    })?;
    let (format_name, ext) = format_names(format).ok_or_else(|| {
        Rejection::new(
            Reason::UnsupportedFormat,
            format!("{format:?} images are not supported"),
        )
    })?;
    let rgb = if format == ImageFormat::Jpeg {
        decode_jpeg(bytes, limits)?
    } else {
        decode_other(bytes, format, limits)?
    };
    Ok(Decoded {
        rgb,
        format: format_name,
        ext,
    })
}

/// [`decode_rgb`] with ingest's default limits, for callers that read their own files (embed,
/// train, selfcheck) and report errors as `anyhow` errors.
pub fn decode_rgb_any(bytes: &[u8]) -> anyhow::Result<RgbImage> {
    const LIMITS: DecodeLimits = DecodeLimits {
        max_pixels: 100_000_000,
        max_file_bytes: 1 << 30,
    };
    decode_rgb(bytes, &LIMITS)
        .map(|d| d.rgb)
        .map_err(|r| anyhow::anyhow!("{}: {}", r.reason, r.detail))
}

fn check_dims(w: u64, h: u64, limits: &DecodeLimits) -> Result<(), Rejection> {
    if w == 0 || h == 0 {
        return Err(Rejection::new(
            Reason::ZeroDimensions,
            format!("header declares {w}x{h}"),
        ));
    }
    if w * h > limits.max_pixels {
        return Err(Rejection::new(
            Reason::OverMaxPixels,
            format!(
                "{w}x{h} = {} pixels > ingest.max_pixels = {}",
                w * h,
                limits.max_pixels
            ),
        ));
    }
    Ok(())
}

/// libjpeg-turbo's decoder, as Pillow drives it, then the EXIF orientation.
fn decode_jpeg(bytes: &[u8], limits: &DecodeLimits) -> Result<RgbImage, Rejection> {
    if !jpeg_complete(bytes) {
        return Err(Rejection::new(
            Reason::Truncated,
            "JPEG data ends before its end-of-image marker",
        ));
    }
    // The size check's own rejection (zero size or too many pixels) is kept as it is.
    let refused = std::cell::RefCell::new(None);
    let check = |w: u32, h: u32| {
        check_dims(w as u64, h as u64, limits).map_err(|r| {
            let detail = r.detail.clone();
            *refused.borrow_mut() = Some(r);
            detail
        })
    };
    let (img, orientation) = match pil::decode_jpeg(bytes, &check) {
        Ok(v) => v,
        Err(pil::JpegError::Refused(d)) => {
            return Err(refused
                .take()
                .unwrap_or_else(|| Rejection::new(Reason::OverMaxPixels, d)))
        }
        Err(pil::JpegError::Corrupt(d)) => return Err(Rejection::new(Reason::Corrupt, d)),
    };
    let mut dynimg = DynamicImage::ImageRgb8(img);
    dynimg.apply_orientation(orientation.unwrap_or(Orientation::NoTransforms));
    Ok(dynimg.into_rgb8())
}

fn decode_other(
    bytes: &[u8],
    format: ImageFormat,
    limits: &DecodeLimits,
) -> Result<RgbImage, Rejection> {
    let mut reader = ImageReader::with_format(Cursor::new(bytes), format);
    let mut lim = Limits::default();
    // Our own pixel check below is the real guard; this only stops the decoder from refusing
    // legitimate images just under max_pixels with wide pixel types.
    lim.max_alloc = Some((limits.max_pixels.saturating_mul(16)).max(512 << 20));
    reader.limits(lim);
    let classify = |e: ImageError| classify_error(e, format, bytes);
    let mut decoder = reader.into_decoder().map_err(classify)?;
    let (w, h) = decoder.dimensions();
    check_dims(w as u64, h as u64, limits)?;
    let orientation = decoder.orientation().unwrap_or(Orientation::NoTransforms);
    let img = DynamicImage::from_decoder(decoder).map_err(classify)?;
    let mut rgb = DynamicImage::ImageRgb8(pil::convert_rgb(&img));
    drop(img);
    rgb.apply_orientation(orientation);
    Ok(rgb.into_rgb8())
}

/// Decodes `bytes` by [`decode_rgb`] and returns the oriented size and pHash.
pub fn analyze(bytes: &[u8], limits: &DecodeLimits) -> Result<ImageInfo, Rejection> {
    let d = decode_rgb(bytes, limits)?;
    let luma = DynamicImage::ImageLuma8(DynamicImage::ImageRgb8(d.rgb).to_luma8());
    Ok(ImageInfo {
        width: luma.width(),
        height: luma.height(),
        format: d.format,
        ext: d.ext,
        phash: phash::phash(&luma),
    })
}

fn classify_error(e: ImageError, format: ImageFormat, bytes: &[u8]) -> Rejection {
    let detail = e.to_string();
    match e {
        ImageError::Unsupported(_) => Rejection::new(Reason::UnsupportedFormat, detail),
        ImageError::Limits(_) => Rejection::new(Reason::OverMaxPixels, detail),
        // Completeness was already checked on the markers; any other failure is bad data.
        _ if format == ImageFormat::Jpeg => Rejection::new(Reason::Corrupt, detail),
        ImageError::IoError(ref io) if io.kind() == std::io::ErrorKind::UnexpectedEof => {
            Rejection::new(Reason::Truncated, detail)
        }
        _ if format == ImageFormat::Png && !bytes.ends_with(PNG_TRAILER) => Rejection::new(
            Reason::Truncated,
            format!("PNG without IEND trailer: {detail}"),
        ),
        _ if detail.to_ascii_lowercase().contains("eof")
            || detail.to_ascii_lowercase().contains("end of") =>
        {
            Rejection::new(Reason::Truncated, detail)
        }
        _ => Rejection::new(Reason::Corrupt, detail),
    }
}

const PNG_TRAILER: &[u8] = &[0, 0, 0, 0, b'I', b'E', b'N', b'D', 0xAE, 0x42, 0x60, 0x82];

/// True when a JPEG's last scan is followed by an end-of-image marker. Decoders fill missing
/// scan data with grey instead of failing, so truncation has to be detected on the bytes.
/// Entropy-coded data stuffs every 0xFF with 0x00, so marker bytes cannot occur inside a scan.
pub fn jpeg_complete(bytes: &[u8]) -> bool {
    // Fast path: a normal file ends with EOI, perhaps followed by padding.
    let trimmed = bytes
        .iter()
        .rposition(|&b| b != 0 && b != b'\n' && b != b'\r' && b != b' ')
        .map_or(&bytes[..0], |i| &bytes[..=i]);
    if trimmed.ends_with(&[0xFF, 0xD9]) {
        return true;
    }
    // Some cameras append data after EOI: accept an EOI anywhere after the last scan start.
    let last_sos = bytes.windows(2).rposition(|w| w == [0xFF, 0xDA]);
    match last_sos {
        Some(i) => bytes[i..].windows(2).any(|w| w == [0xFF, 0xD9]),
        None => false,
    }
}

fn magic(bytes: &[u8]) -> String {
    let head: Vec<String> = bytes.iter().take(8).map(|b| format!("{b:02x}")).collect();
    head.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIM: DecodeLimits = DecodeLimits {
        max_pixels: 40_000_000,
        max_file_bytes: 1 << 26,
    };

    fn fixture(name: &str) -> Vec<u8> {
        std::fs::read(format!(
            "{}/tests/fixtures/images/{name}",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap()
    }

    #[test]
    fn fixtures_decode_with_their_sizes() {
        for (name, w, h, fmt) in [
            ("rgb_640x480.jpg", 640, 480, "jpeg"),
            ("rgba_257x199.png", 257, 199, "png"),
            ("gray_180x240.png", 180, 240, "png"),
        ] {
            let info = analyze(&fixture(name), &LIM).unwrap();
            assert_eq!(
                (info.width, info.height, info.format),
                (w, h, fmt),
                "{name}"
            );
        }
    }

    #[test]
    fn bad_inputs_get_distinct_reasons() {
        let jpg = fixture("rgb_640x480.jpg");
        let png = fixture("rgb_300x500.png");
        let r = |b: &[u8], l: &DecodeLimits| analyze(b, l).unwrap_err().reason;
        assert_eq!(r(b"", &LIM), Reason::EmptyFile);
        assert_eq!(r(b"hello, I am text", &LIM), Reason::UnsupportedFormat);
        assert_eq!(r(&jpg[..jpg.len() / 2], &LIM), Reason::Truncated);
        assert_eq!(r(&png[..png.len() / 2], &LIM), Reason::Truncated);
        let mut garbage = jpg[..4].to_vec();
        garbage.extend(std::iter::repeat_n(0x5Au8, 5000));
        garbage.extend([0xFF, 0xD9]);
        assert_eq!(r(&garbage, &LIM), Reason::Corrupt);
        let small = DecodeLimits {
            max_pixels: 640 * 480 - 1,
            ..LIM
        };
        assert_eq!(r(&jpg, &small), Reason::OverMaxPixels);
        let tiny = DecodeLimits {
            max_file_bytes: 1000,
            ..LIM
        };
        assert_eq!(r(&jpg, &tiny), Reason::OverMaxFileBytes);
        for reason in Reason::ALL {
            assert_eq!(Reason::from_code(reason.code()), Some(reason));
        }
    }
}
