//! Augmentation library: a faithful port of the subnet validators' challenge pipeline (levels
//! 0-3 and the JPEG a miner receives) plus dash-cam weather/capture ops for training.
//!
//! Everything random is drawn from a caller's seeded `ChaCha8Rng` into explicit parameter
//! structs ([`AugParams`], [`WeatherOp`]), so any view can be reproduced and logged.
//!
//! Known quirks of the subnet that are reproduced on purpose (see `ops.rs` for the arithmetic):
//! rotation is NEAREST on the float tensor (the interpolation argument is dropped); the flip
//! transforms never fire (`augment.validator_flips: false`); crops are taken from the rotated
//! full image with black corners; DeeperForensics ops truncate to uint8 and use OpenCV's float
//! YCrCb with delta 0.5 on 0..255 data.

// Per-channel pixel loops index several parallel arrays (pixel, LUT, accumulator, noise) by
// channel; iterator chains there would obscure the reference formulas.
#![allow(clippy::needless_range_loop)]

pub mod ops;
pub mod preview;
pub mod validator;
pub mod weather;

use anyhow::Result;
use image::{DynamicImage, RgbImage};
use rand::Rng;
use rand_chacha::ChaCha8Rng;

pub use ops::CropBox;
pub use preview::{contact_sheet, write_contact_sheet};
pub use validator::{
    apply_params, decode_jpeg, encode_jpeg, sample_params, validator_challenge, AugParams,
    Challenge,
};
pub use weather::{WeatherKind, WeatherOp};

use crate::config::AugmentConfig;

/// One training view: a validator challenge at a level drawn from `cfg.level_probs` (JPEG round
/// trip included, as the miner would see it), plus with probability `cfg.weather_prob` one
/// weather op. Returns the image and its augmentation id (e.g. `v2.r3.1.c10,4,200.cs1cc0jp1+fog0.55`).
pub fn training_view(
    img: &DynamicImage,
    cfg: &AugmentConfig,
    rng: &mut ChaCha8Rng,
) -> Result<(RgbImage, String)> {
    let ch = validator_challenge(img, None, cfg, rng)?;
    let mut id = ch.params.id();
    let mut out = ch.image;
    if cfg.weather_prob > 0.0 && rng.random_bool(cfg.weather_prob.clamp(0.0, 1.0)) {
        let op = WeatherOp::sample(rng);
        out = op.apply(&out)?;
        id.push('+');
        id.push_str(&op.id());
    }
    Ok((out, id))
}
