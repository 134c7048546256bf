//! Prompts for external generators (SDXL, Cosmos) describing the scenes of hard cases, built
//! from what is known: the label, the kind of error, the augmentation level and a few measured
//! scene attributes. Deterministic given the seed.

use image::{imageops, RgbImage};
use rand::seq::IndexedRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use super::select::{Case, Reason};
use crate::data::manifest::SourceKind;
use crate::util::hash::stable_u64;

/// Simple measured attributes of an image (on a ≤128 px copy).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct SceneAttrs {
    /// Mean luma, 0–1.
    pub brightness: f64,
    /// Standard deviation of luma, 0–0.5.
    pub contrast: f64,
    /// Mean HSV saturation, 0–1.
    pub saturation: f64,
    /// Share of saturated orange pixels (cones, barriers, high-vis).
    pub orange_share: f64,
}

/// Below this mean luma a scene reads as night.
pub const NIGHT_BRIGHTNESS: f64 = 0.22;
/// Below this (and above night) as dusk.
pub const DUSK_BRIGHTNESS: f64 = 0.38;
/// Low contrast and low saturation together read as fog or haze.
pub const FOG_CONTRAST: f64 = 0.12;
pub const FOG_SATURATION: f64 = 0.18;
/// Orange share above which the scene has notable orange objects.
pub const ORANGE_SHARE: f64 = 0.02;

/// Measures [`SceneAttrs`].
pub fn measure(img: &RgbImage) -> SceneAttrs {
    let small;
    let img = if img.width() > 128 || img.height() > 128 {
        small = imageops::thumbnail(img, 128, 128);
        &small
    } else {
        img
    };
    let n = (img.width() as usize * img.height() as usize).max(1) as f64;
    let (mut sum, mut sum2, mut sat, mut orange) = (0.0, 0.0, 0.0, 0usize);
    for p in img.pixels() {
        let [r, g, b] = p.0.map(|c| f64::from(c) / 255.0);
        let y = 0.299 * r + 0.587 * g + 0.114 * b;
        sum += y;
        sum2 += y * y;
        let (max, min) = (r.max(g).max(b), r.min(g).min(b));
        let s = if max > 0.0 { (max - min) / max } else { 0.0 };
        sat += s;
        if s > 0.5 && max > 0.45 && max == r {
            // Hue between 10° and 45°: orange, not red or yellow.
            let hue = 60.0 * (g - b) / (max - min);
            if (10.0..=45.0).contains(&hue) {
                orange += 1;
            }
        }
    }
    let mean = sum / n;
    SceneAttrs {
        brightness: mean,
        contrast: (sum2 / n - mean * mean).max(0.0).sqrt(),
        saturation: sat / n,
        orange_share: orange as f64 / n,
    }
}

/// Which generator family a prompt is written for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Target {
    /// Text-to-image (SDXL and friends): a still photo description.
    Sdxl,
    /// Video world model (NVIDIA Cosmos): a short driving clip description.
    Cosmos,
}

/// The generator family for a case: Cosmos when the image came from a Cosmos generator,
/// otherwise SDXL.
pub fn target_of(case: &Case) -> Target {
    match &case.row {
        Some(r)
            if r.source == SourceKind::Synthetic
                && r.generator.to_ascii_lowercase().contains("cosmos") =>
        {
            Target::Cosmos
        }
        _ => Target::Sdxl,
    }
}

/// One prompt line of `prompts.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Prompt {
    pub id: String,
    pub target: Target,
    /// `roadwork` or `none`: what the generated image must show.
    pub label: String,
    /// False when the label is only the model's guess (serve-log images).
    pub label_known: bool,
    /// `false_positive`, `false_negative`, or null.
    pub error: Option<String>,
    pub reasons: Vec<Reason>,
    pub level: Option<u8>,
    pub attrs: Option<SceneAttrs>,
    /// Generator seed, derived from the mining seed and the case.
    pub seed: u64,
    pub prompt: String,
    pub negative_prompt: String,
    /// The case's image (absolute path): the source of image-to-image variants.
    pub image: String,
    /// Denoising strength for those variants.
    pub strength: f64,
}

/// Image-to-image strength written with each prompt: half way keeps the layout and light that
/// fooled the model while the generator redraws the scene (`sv72 generate --strength` overrides).
pub const I2I_STRENGTH: f64 = 0.5;

const PLACES: [&str; 6] = [
    "a city street",
    "a suburban road",
    "a two-lane highway",
    "a busy intersection",
    "a residential street",
    "a rural road",
];

const ROADWORK_NEGATIVE: &str = "text, watermark, logo, cartoon, illustration, painting, \
    deformed vehicles, distorted perspective, oversaturated";
const NONE_NEGATIVE: &str = "traffic cones, construction barriers, roadwork signs, workers in \
    high-visibility vests, excavators, road closure, text, watermark, logo, cartoon, illustration";

fn light_phrase(a: &SceneAttrs) -> &'static str {
    if a.brightness < NIGHT_BRIGHTNESS {
        "at night under street lights"
    } else if a.brightness < DUSK_BRIGHTNESS {
        "at dusk in low light"
    } else if a.contrast < FOG_CONTRAST && a.saturation < FOG_SATURATION {
        "in fog, hazy and low-contrast"
    } else {
        "in daylight"
    }
}

/// The prompt for `case`, deterministic in `(seed, case.id)`; `attrs` are the image's measured
/// attributes when it could be read.
pub fn prompt_for(case: &Case, attrs: Option<SceneAttrs>, seed: u64) -> Prompt {
    let gen_seed = stable_u64(&format!("{seed}|{}", case.id));
    let mut rng = ChaCha8Rng::seed_from_u64(gen_seed);
    let place = PLACES.choose(&mut rng).copied().unwrap_or(PLACES[0]);
    let roadwork = case.suggested_label() == 1;
    let fp = case.false_positive();
    let orange = attrs.is_some_and(|a| a.orange_share > ORANGE_SHARE);
    let content = match (roadwork, fp) {
        (true, Some(false)) => "subtle roadwork that is easy to miss: a few small traffic cones \
            far ahead, a partly hidden work-zone sign, a short barrier at the roadside"
            .to_string(),
        (true, _) => {
            let mut s = "active roadwork: traffic cones, striped barriers, a construction sign \
                and workers in high-visibility vests"
                .to_string();
            if orange {
                s.push_str(", bright orange equipment");
            }
            s
        }
        (false, Some(true)) => {
            let decoys = [
                "an orange car",
                "orange autumn trees",
                "a parked delivery truck",
                "red and white street furniture",
            ];
            let d = decoys.choose(&mut rng).copied().unwrap_or(decoys[0]);
            format!("no roadwork at all, but things that resemble it: {d}, ordinary traffic")
        }
        (false, _) => {
            let mut s =
                "ordinary traffic, no construction, no traffic cones, no barriers".to_string();
            if orange {
                s.push_str(", some orange objects that are not roadwork");
            }
            s
        }
    };
    let light = attrs.as_ref().map_or("in daylight", light_phrase);
    let blur = if case.level.is_some_and(|l| l >= 2) {
        ", slightly soft focus"
    } else {
        ""
    };
    let target = target_of(case);
    let prompt = match target {
        Target::Sdxl => format!(
            "dashcam photo of {place} {light}, {content}{blur}, photorealistic, wide angle"
        ),
        Target::Cosmos => format!(
            "A dashcam video: a car drives slowly along {place} {light}. The scene shows {content}{blur}. Realistic, steady camera."
        ),
    };
    Prompt {
        id: case.id.clone(),
        target,
        label: if roadwork { "roadwork" } else { "none" }.into(),
        label_known: case.known_label.is_some(),
        error: fp.map(|fp| {
            if fp {
                "false_positive"
            } else {
                "false_negative"
            }
            .into()
        }),
        reasons: case.reasons.clone(),
        level: case.level,
        attrs,
        seed: gen_seed,
        prompt,
        negative_prompt: if roadwork {
            ROADWORK_NEGATIVE
        } else {
            NONE_NEGATIVE
        }
        .into(),
        image: case
            .path
            .canonicalize()
            .unwrap_or_else(|_| case.path.clone())
            .display()
            .to_string(),
        strength: I2I_STRENGTH,
    }
}
