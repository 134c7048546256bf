//! Pillow's pixel rules, shared by every stage: libjpeg-turbo decoding and encoding with
//! Pillow's settings, and `Image.convert("RGB")`.
//!
//! JPEGs go through the `mozjpeg` crate, which builds libjpeg-turbo's C sources (the library
//! Pillow links) with the C compiler alone. Decoding uses Pillow's settings (accurate integer
//! IDCT, fancy upsampling; 4-channel files read as inverted CMYK, Adobe's convention), so the
//! pixels are Pillow's bit for bit; [`encode_jpeg_pil`] writes the bytes
//! `Image.save(format="JPEG")` writes. `data::decode::decode_rgb` is the crate-wide entry point
//! that adds format sniffing, size limits and the EXIF orientation.

use image::metadata::Orientation;
use image::{DynamicImage, RgbImage};

/// Why libjpeg did not return pixels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JpegError {
    /// The header was read, and the caller's size check refused it.
    Refused(String),
    /// libjpeg could not read the data.
    Corrupt(String),
}

/// Decodes a JPEG to RGB as Pillow's `Image.open(...).convert("RGB")` does, and returns the
/// EXIF orientation of its first `Exif` APP1 segment (not applied). `check(w, h)` sees the
/// header's size before any pixel is decoded.
pub fn decode_jpeg(
    bytes: &[u8],
    check: &dyn Fn(u32, u32) -> Result<(), String>,
) -> Result<(RgbImage, Option<Orientation>), JpegError> {
    // libjpeg reports errors by unwinding out of its error handler (the crate's design).
    let res = std::panic::catch_unwind(std::panic::AssertUnwindSafe(
        || -> Result<(RgbImage, Option<Orientation>), JpegError> {
            let corrupt = |e: std::io::Error| JpegError::Corrupt(e.to_string());
            let d = mozjpeg::Decompress::builder()
                .with_markers(&[mozjpeg::Marker::APP(1)])
                .from_mem(bytes)
                .map_err(corrupt)?;
            let (w, h) = d.size();
            check(w as u32, h as u32).map_err(JpegError::Refused)?;
            let orientation = d
                .markers()
                .filter_map(|m| m.data.strip_prefix(b"Exif\0\0"))
                .next()
                .and_then(Orientation::from_exif_chunk);
            use mozjpeg::ColorSpace as Cs;
            let rgb: Vec<u8> = match d.color_space() {
                Cs::JCS_GRAYSCALE => {
                    let mut s = d.grayscale().map_err(corrupt)?;
                    let l: Vec<u8> = s.read_scanlines().map_err(corrupt)?;
                    s.finish().map_err(corrupt)?;
                    l.iter().flat_map(|&v| [v, v, v]).collect()
                }
                Cs::JCS_CMYK | Cs::JCS_YCCK => {
                    let mut s = d.to_colorspace(Cs::JCS_CMYK).map_err(corrupt)?;
                    let px: Vec<[u8; 4]> = s.read_scanlines().map_err(corrupt)?;
                    s.finish().map_err(corrupt)?;
                    px.iter().flat_map(|p| cmyk_inverted_to_rgb(*p)).collect()
                }
                _ => {
                    let mut s = d.rgb().map_err(corrupt)?;
                    let px: Vec<u8> = s.read_scanlines().map_err(corrupt)?;
                    s.finish().map_err(corrupt)?;
                    px
                }
            };
            let img = RgbImage::from_raw(w as u32, h as u32, rgb)
                .ok_or_else(|| JpegError::Corrupt("short pixel data".into()))?;
            Ok((img, orientation))
        },
    ));
    res.unwrap_or_else(|p| Err(JpegError::Corrupt(panic_text(p))))
}

/// Encodes RGB pixels exactly as Pillow's `Image.save(format="JPEG")` with its defaults:
/// libjpeg's quality 75 (Annex K tables), 4:2:0 chroma, standard Huffman tables, accurate
/// integer DCT, a JFIF header. mozjpeg's "fastest" profile is libjpeg-turbo's encoder with
/// exactly those settings (`make compat`'s neighbour test checks the bytes against Pillow's).
pub fn encode_jpeg_pil(img: &RgbImage) -> Result<Vec<u8>, String> {
    let (w, h) = (img.width() as usize, img.height() as usize);
    if w == 0 || h == 0 {
        return Err("cannot JPEG-encode an empty image".into());
    }
    let res = std::panic::catch_unwind(|| -> std::io::Result<Vec<u8>> {
        let mut c = mozjpeg::Compress::new(mozjpeg::ColorSpace::JCS_RGB);
        c.set_fastest_defaults();
        c.set_quality(75.0);
        c.set_size(w, h);
        let mut started = c.start_compress(Vec::with_capacity(32 * 1024))?;
        started.write_scanlines(img.as_raw())?;
        started.finish()
    });
    match res {
        Ok(r) => r.map_err(|e| e.to_string()),
        Err(p) => Err(panic_text(p)),
    }
}

fn panic_text(p: Box<dyn std::any::Any + Send>) -> String {
    p.downcast_ref::<String>()
        .cloned()
        .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "libjpeg error".into())
}

/// Pillow's reading of a 4-channel JPEG sample: libjpeg's CMYK inverted ("CMYK;I", Adobe's
/// convention), then `cmyk2rgb`: `255 − k` minus `c·(255 − k)/255` with Pillow's rounding.
fn cmyk_inverted_to_rgb(raw: [u8; 4]) -> [u8; 3] {
    let nk = raw[3] as i32; // 255 − (255 − raw k)
    let muldiv255 = |a: i32, b: i32| {
        let t = a * b + 128;
        ((t >> 8) + t) >> 8
    };
    let ch = |v: u8| (nk - muldiv255(255 - v as i32, nk)).clamp(0, 255) as u8;
    [ch(raw[0]), ch(raw[1]), ch(raw[2])]
}

/// Pillow's `convert("RGB")` of a decoded image: alpha dropped, grey replicated, 16-bit grey
/// clipped to 255 (`I;16` → `L`), 16-bit colour reduced to its high byte (`RGB;16B`).
pub fn convert_rgb(img: &DynamicImage) -> RgbImage {
    let (w, h) = (img.width(), img.height());
    let from = |px: Vec<u8>| RgbImage::from_raw(w, h, px).expect("3 bytes per pixel");
    match img {
        DynamicImage::ImageRgb8(rgb) => rgb.clone(),
        DynamicImage::ImageRgba8(p) => from(p.pixels().flat_map(|q| [q[0], q[1], q[2]]).collect()),
        DynamicImage::ImageLuma8(p) => from(p.pixels().flat_map(|q| [q[0]; 3]).collect()),
        DynamicImage::ImageLumaA8(p) => from(p.pixels().flat_map(|q| [q[0]; 3]).collect()),
        DynamicImage::ImageLuma16(p) => {
            from(p.pixels().flat_map(|q| [q[0].min(255) as u8; 3]).collect())
        }
        DynamicImage::ImageLumaA16(p) => {
            from(p.pixels().flat_map(|q| [q[0].min(255) as u8; 3]).collect())
        }
        DynamicImage::ImageRgb16(p) => from(
            p.pixels()
                .flat_map(|q| [(q[0] >> 8) as u8, (q[1] >> 8) as u8, (q[2] >> 8) as u8])
                .collect(),
        ),
        DynamicImage::ImageRgba16(p) => from(
            p.pixels()
                .flat_map(|q| [(q[0] >> 8) as u8, (q[1] >> 8) as u8, (q[2] >> 8) as u8])
                .collect(),
        ),
        other => other.to_rgb8(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cmyk_matches_pillows_integer_formula() {
        // Pillow 10.4: Image.frombytes("CMYK", (1, 1), bytes([c, m, y, k])).convert("RGB"),
        // with the raw libjpeg sample = 255 - Pillow's value.
        let pil =
            |c: u8, m: u8, y: u8, k: u8| cmyk_inverted_to_rgb([255 - c, 255 - m, 255 - y, 255 - k]);
        assert_eq!(pil(0, 0, 0, 0), [255, 255, 255]);
        assert_eq!(pil(255, 255, 255, 0), [0, 0, 0]);
        assert_eq!(pil(0, 0, 0, 255), [0, 0, 0]);
        assert_eq!(pil(100, 50, 200, 60), [119, 157, 42]); // printed by Pillow 10.4.0
    }

    #[test]
    fn convert_drops_alpha_and_clips_16_bit_grey() {
        let rgba = image::RgbaImage::from_raw(2, 1, vec![10, 20, 30, 0, 40, 50, 60, 128]).unwrap();
        let rgb = convert_rgb(&DynamicImage::ImageRgba8(rgba));
        assert_eq!(rgb.as_raw(), &[10, 20, 30, 40, 50, 60]);
        let g16 =
            image::ImageBuffer::<image::Luma<u16>, _>::from_raw(2, 1, vec![200u16, 300]).unwrap();
        let rgb = convert_rgb(&DynamicImage::ImageLuma16(g16));
        assert_eq!(rgb.as_raw(), &[200, 200, 200, 255, 255, 255]);
    }

    #[test]
    fn encoder_round_trips_through_decoder() {
        let img = RgbImage::from_fn(33, 17, |x, y| {
            image::Rgb([(x * 7) as u8, (y * 13) as u8, 90])
        });
        let bytes = encode_jpeg_pil(&img).unwrap();
        assert_eq!(&bytes[..4], &[0xFF, 0xD8, 0xFF, 0xE0], "JFIF header");
        let (back, o) = decode_jpeg(&bytes, &|_, _| Ok(())).unwrap();
        assert_eq!(back.dimensions(), (33, 17));
        assert!(o.is_none());
        assert!(matches!(
            decode_jpeg(&bytes[..40], &|_, _| Ok(())),
            Err(JpegError::Corrupt(_))
        ));
    }
}
