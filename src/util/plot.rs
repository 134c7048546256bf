//! Bitmap drawing with text for the report plots and contact sheets: plotters on an RGB buffer,
//! with DejaVu Sans (a 23 KB subset, `assets/fonts/`) compiled in, so text renders the same on a
//! bare machine with no fonts installed.

use std::path::Path;
use std::sync::Once;

use anyhow::{anyhow, Result};
use image::RgbImage;
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::fsx;

pub use plotters::style::{RGBColor, TextStyle};

/// The embedded font (see `assets/fonts/LICENSE-DejaVu.txt`).
static FONT: &[u8] = include_bytes!("../../assets/fonts/DejaVuSans-subset.ttf");

/// The family name every text style here uses; registered to [`FONT`].
pub const FAMILY: &str = "sans-serif";

fn register_font() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // The bytes are a TrueType file checked by the plot tests; a failure here is a build
        // defect, not bad input.
        if plotters::style::register_font(FAMILY, FontStyle::Normal, FONT).is_err() {
            panic!("embedded font assets/fonts/DejaVuSans-subset.ttf does not parse");
        }
    });
}

/// A text style in the embedded font.
pub fn font(size: u32) -> TextStyle<'static> {
    register_font();
    (FAMILY, size).into_font().color(&BLACK)
}

/// Draws on a `width`×`height` white canvas with `f` and returns the image.
pub fn render<F>(width: u32, height: u32, f: F) -> Result<RgbImage>
where
    F: FnOnce(&DrawingArea<BitMapBackend<'_>, Shift>) -> Result<()>,
{
    register_font();
    let mut buf = vec![255u8; width as usize * height as usize * 3];
    {
        let root = BitMapBackend::with_buffer(&mut buf, (width, height)).into_drawing_area();
        f(&root)?;
        root.present().map_err(|e| anyhow!("drawing failed: {e}"))?;
    }
    RgbImage::from_raw(width, height, buf).ok_or_else(|| anyhow!("plot buffer has the wrong size"))
}

/// Writes `img` as PNG, atomically.
pub fn save_png(path: &Path, img: &RgbImage) -> Result<()> {
    let mut bytes = Vec::new();
    img.write_to(
        &mut std::io::Cursor::new(&mut bytes),
        image::ImageFormat::Png,
    )?;
    fsx::write_atomic(path, &bytes)
}

/// Writes `text` onto `img` with its top-left corner at (`x`, `y`).
pub fn draw_text(
    img: &mut RgbImage,
    text: &str,
    x: i32,
    y: i32,
    style: &TextStyle<'_>,
) -> Result<()> {
    let (w, h) = img.dimensions();
    let root = BitMapBackend::with_buffer(img.as_mut(), (w, h)).into_drawing_area();
    root.draw(&Text::new(
        text.to_string(),
        (x, y),
        style.pos(Pos::new(HPos::Left, VPos::Top)),
    ))
    .map_err(|e| anyhow!("drawing text failed: {e}"))?;
    root.present().map_err(|e| anyhow!("drawing failed: {e}"))
}

/// Width in pixels of `text` set in `style`.
pub fn text_width(text: &str, style: &TextStyle<'_>) -> Result<u32> {
    let (w, _) = style
        .font
        .box_size(text)
        .map_err(|e| anyhow!("measuring text failed: {e}"))?;
    Ok(w)
}

/// Maps a plotters drawing error (which borrows nothing but is generic) to anyhow.
pub fn err<E: std::fmt::Display>(e: E) -> anyhow::Error {
    anyhow!("drawing the plot failed: {e}")
}
