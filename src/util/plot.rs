//! Bitmap drawing with text for the report plots and contact sheets: plotters on an RGB buffer,
//! with DejaVu Sans (a 23 KB subset, `assets/fonts/`) compiled in, so text renders the same on a
//! bare machine with no fonts installed; and the frame every report plot shares (title, legend
//! row, chart area, palette).

use std::ops::Range;
use std::path::Path;
use std::sync::Once;

use anyhow::{anyhow, Result};
use image::RgbImage;
use plotters::coord::types::RangedCoordf64;
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

/// Size of the report plots, in pixels.
pub const WIDTH: u32 = 640;
pub const HEIGHT: u32 = 480;
/// Height of the band at the top that holds the title.
pub const TITLE_BAND: u32 = 40;

pub const BLUE: RGBColor = RGBColor(31, 119, 180);
pub const ORANGE: RGBColor = RGBColor(255, 127, 14);
pub const GREEN: RGBColor = RGBColor(44, 160, 44);
pub const RED: RGBColor = RGBColor(214, 39, 40);
pub const GREY: RGBColor = RGBColor(150, 150, 150);
pub const GRID: RGBColor = RGBColor(225, 225, 225);

/// A drawing area on the bitmap.
pub type Area<'a> = DrawingArea<BitMapBackend<'a>, Shift>;
/// A chart with `f64` axes.
pub type Chart<'a, 'b> =
    ChartContext<'a, BitMapBackend<'b>, Cartesian2d<RangedCoordf64, RangedCoordf64>>;

/// How a series looks in the legend.
#[derive(Clone, Copy)]
pub enum Mark {
    Bar(RGBColor),
    Line(RGBColor),
    Dot(RGBColor),
}

/// White background, the title centred in the top [`TITLE_BAND`] pixels and, below it, the
/// legend in one row (outside the plot, so it never covers data); returns the area left for the
/// chart.
pub fn frame<'b>(root: &Area<'b>, title: &str, legend: &[(Mark, &str)]) -> Result<Area<'b>> {
    root.fill(&WHITE).map_err(err)?;
    let centre = Pos::new(HPos::Center, VPos::Center);
    let w = root.dim_in_pixel().0 as i32;
    root.draw_text(title, &font(22).pos(centre), (w / 2, TITLE_BAND as i32 / 2))
        .map_err(err)?;
    if legend.is_empty() {
        return Ok(root.split_vertically(TITLE_BAND).1);
    }
    let style = font(14).pos(Pos::new(HPos::Left, VPos::Center));
    let (mark_w, gap, sep) = (22, 6, 28);
    let widths: Vec<i32> = legend
        .iter()
        .map(|(_, t)| root.estimate_text_size(t, &style).map(|s| s.0 as i32))
        .collect::<Result<_, _>>()
        .map_err(err)?;
    let total: i32 =
        widths.iter().map(|t| mark_w + gap + t).sum::<i32>() + sep * (legend.len() as i32 - 1);
    let y = TITLE_BAND as i32 + 10;
    let mut x = (w - total).max(4) / 2;
    for ((mark, text), tw) in legend.iter().zip(widths) {
        match *mark {
            Mark::Bar(c) => root.draw(&Rectangle::new(
                [(x + 3, y - 7), (x + mark_w - 3, y + 7)],
                c.filled(),
            )),
            Mark::Line(c) => root.draw(&PathElement::new(
                vec![(x, y), (x + mark_w, y)],
                c.stroke_width(2),
            )),
            Mark::Dot(c) => root.draw(&Circle::new((x + mark_w / 2, y), 5, c.filled())),
        }
        .map_err(err)?;
        root.draw_text(text, &style, (x + mark_w + gap, y))
            .map_err(err)?;
        x += mark_w + gap + tw + sep;
    }
    Ok(root.split_vertically(TITLE_BAND + 24).1)
}

/// A chart over `x` × `y` filling `area`.
pub fn chart<'a, 'b>(area: &'a Area<'b>, x: Range<f64>, y: Range<f64>) -> Result<Chart<'a, 'b>> {
    ChartBuilder::on(area)
        .margin(12)
        .margin_top(8)
        .x_label_area_size(52)
        .y_label_area_size(64)
        .build_cartesian_2d(x, y)
        .map_err(err)
}

/// Maps a plotters drawing error (which borrows nothing but is generic) to anyhow.
pub fn err<E: std::fmt::Display>(e: E) -> anyhow::Error {
    anyhow!("drawing the plot failed: {e}")
}
