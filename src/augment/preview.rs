//! Contact sheet of augmented views for eyeballing: one row per validator level and a weather row.

use std::path::Path;

use anyhow::{Context, Result};
use image::{imageops, DynamicImage, Rgb, RgbImage};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::validator::validator_challenge;
use super::weather::{WeatherKind, WeatherOp};
use crate::config::AugmentConfig;

/// Side of one tile in the sheet.
pub const TILE: u32 = 112;
const MARGIN: u32 = 28;
const GAP: u32 = 2;

/// 3x5 glyphs for the row labels.
fn glyph(ch: char) -> [u8; 5] {
    match ch {
        'L' => [0b100, 0b100, 0b100, 0b100, 0b111],
        'W' => [0b101, 0b101, 0b101, 0b111, 0b101],
        'X' => [0b101, 0b101, 0b010, 0b101, 0b101],
        '0' => [0b111, 0b101, 0b101, 0b101, 0b111],
        '1' => [0b010, 0b110, 0b010, 0b010, 0b111],
        '2' => [0b111, 0b001, 0b111, 0b100, 0b111],
        '3' => [0b111, 0b001, 0b111, 0b001, 0b111],
        _ => [0; 5],
    }
}

fn draw_label(sheet: &mut RgbImage, text: &str, x0: u32, y0: u32) {
    const PX: u32 = 3;
    for (k, ch) in text.chars().enumerate() {
        let g = glyph(ch);
        for (row, bits) in g.iter().enumerate() {
            for col in 0..3u32 {
                if bits & (0b100 >> col) != 0 {
                    for dy in 0..PX {
                        for dx in 0..PX {
                            let x = x0 + (k as u32 * 4 + col) * PX + dx;
                            let y = y0 + row as u32 * PX + dy;
                            if x < sheet.width() && y < sheet.height() {
                                sheet.put_pixel(x, y, Rgb([255, 255, 255]));
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Rows = validator levels 0..=3 plus one weather row (labelled `L0`..`L3`, `WX`), `per_level`
/// columns cycling through `images`. Deterministic given `seed`. Images that fail to augment
/// leave a dark tile rather than aborting the preview.
pub fn contact_sheet(
    images: &[DynamicImage],
    per_level: usize,
    cfg: &AugmentConfig,
    seed: u64,
) -> RgbImage {
    let cols = per_level.max(1) as u32;
    let width = MARGIN + cols * (TILE + GAP);
    let height = 5 * (TILE + GAP);
    let mut sheet = RgbImage::from_pixel(width, height, Rgb([24, 24, 24]));
    if images.is_empty() {
        return sheet;
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    for row in 0..5u32 {
        let label = if row < 4 {
            format!("L{row}")
        } else {
            "WX".to_string()
        };
        draw_label(&mut sheet, &label, 3, row * (TILE + GAP) + TILE / 2 - 7);
        for col in 0..cols {
            let src = &images[(col as usize) % images.len()];
            let tile = if row < 4 {
                validator_challenge(src, Some(row as u8), cfg, &mut rng)
                    .ok()
                    .map(|c| c.image)
            } else {
                let kind = WeatherKind::ALL[col as usize % WeatherKind::ALL.len()];
                let mut op = WeatherOp::sample(&mut rng);
                op.kind = kind;
                validator_challenge(src, Some(0), cfg, &mut rng)
                    .ok()
                    .and_then(|c| op.apply(&c.image).ok())
            };
            if let Some(t) = tile {
                let t = imageops::resize(&t, TILE, TILE, imageops::FilterType::Triangle);
                imageops::replace(
                    &mut sheet,
                    &t,
                    (MARGIN + col * (TILE + GAP)) as i64,
                    (row * (TILE + GAP)) as i64,
                );
            }
        }
    }
    sheet
}

/// Writes a contact sheet to `path` as PNG, atomically.
pub fn write_contact_sheet(
    path: &Path,
    images: &[DynamicImage],
    per_level: usize,
    cfg: &AugmentConfig,
    seed: u64,
) -> Result<()> {
    let sheet = contact_sheet(images, per_level, cfg, seed);
    let mut bytes = Vec::new();
    sheet
        .write_to(
            &mut std::io::Cursor::new(&mut bytes),
            image::ImageFormat::Png,
        )
        .context("PNG encoding of the contact sheet failed")?;
    crate::util::fsx::write_atomic(path, &bytes)
        .with_context(|| format!("cannot write contact sheet {}", path.display()))
}
