//! The embedded demo set: procedurally drawn dash-cam road scenes, with and without roadwork.
//!
//! No real data can be shipped, so `sv72 demo-data` draws it: sky, horizon, a road in
//! perspective with lane markings, verges, buildings, trees and cars; positives add traffic
//! cones, striped barriers, work signs and workers in high-vis. Scenes are drawn in a ground-plane
//! camera model (objects shrink with distance) and vary lighting, camera pitch and yaw, object
//! count, scale and position. Negatives sometimes carry orange distractors (orange cars, autumn
//! trees, dusk skies, brick) so colour alone does not separate the classes.
//!
//! Two styles mimic the real/synthetic split miners face: `real` has sensor noise, vignetting,
//! hard edges and stronger JPEG compression; `synthetic` has smooth shading, a saturated graded
//! palette, soft edges, no noise and high JPEG quality.
//!
//! Everything is deterministic in the seed: one RNG per image, so the output does not depend on
//! thread scheduling.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use image::codecs::jpeg::JpegEncoder;
use image::RgbImage;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};
use rayon::prelude::*;
use serde::Serialize;

use crate::data::manifest::SourceKind;
use crate::util::{fsx, hash::stable_u64, progress};

/// Width of every demo image.
pub const WIDTH: u32 = 320;
/// Height of every demo image.
pub const HEIGHT: u32 = 240;
/// First line of `README.txt`; marks a folder `demo-data` may replace.
pub const README_MARKER: &str = "sv72 generated demo set";

/// What `generate_demo` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DemoOptions {
    pub seed: u64,
    /// Images per source (real and synthetic each), split half roadwork, half none
    /// (roadwork gets the odd one).
    pub count: usize,
    /// Also plant 2 exact duplicates and 1 corrupt file in the real set (dedup/quarantine demo).
    pub extras: bool,
}

impl Default for DemoOptions {
    fn default() -> Self {
        Self {
            seed: 72,
            count: 160,
            extras: true,
        }
    }
}

/// What was written, for the CLI summary and tests.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct DemoSummary {
    pub out: PathBuf,
    /// Generated scenes per (source, class folder).
    pub scenes: Vec<(String, String, usize)>,
    /// Exact duplicate files written into the real set (relative paths).
    pub duplicates: Vec<String>,
    /// Corrupt files written into the real set (relative paths).
    pub corrupt: Vec<String>,
}

type Rgb = [f32; 3];

/// A float RGB canvas (0..255) with the few primitives the scenes need.
struct Canvas {
    w: usize,
    h: usize,
    px: Vec<Rgb>,
}

impl Canvas {
    fn new(w: u32, h: u32) -> Self {
        Self {
            w: w as usize,
            h: h as usize,
            px: vec![[0.0; 3]; (w * h) as usize],
        }
    }

    fn blend(&mut self, x: usize, y: usize, c: Rgb, a: f32) {
        let p = &mut self.px[y * self.w + x];
        for k in 0..3 {
            p[k] = p[k] * (1.0 - a) + c[k] * a;
        }
    }

    /// Vertical gradient over rows `y0..y1`.
    fn vgradient(&mut self, y0: f32, y1: f32, top: Rgb, bottom: Rgb) {
        let (a, b) = (
            y0.max(0.0) as usize,
            (y1.min(self.h as f32)).max(0.0) as usize,
        );
        for y in a..b {
            let t = (y as f32 - y0) / (y1 - y0).max(1.0);
            let c = lerp(top, bottom, t);
            for x in 0..self.w {
                self.px[y * self.w + x] = c;
            }
        }
    }

    /// Even-odd scanline fill of a polygon, sampled at pixel centres.
    fn polygon(&mut self, pts: &[(f32, f32)], c: Rgb, alpha: f32) {
        if pts.len() < 3 {
            return;
        }
        let ymin = pts.iter().map(|p| p.1).fold(f32::INFINITY, f32::min);
        let ymax = pts.iter().map(|p| p.1).fold(f32::NEG_INFINITY, f32::max);
        let y0 = (ymin - 0.5).ceil().max(0.0) as usize;
        let y1 = ((ymax - 0.5).floor() as i64).min(self.h as i64 - 1);
        if y1 < 0 {
            return;
        }
        let mut xs: Vec<f32> = Vec::with_capacity(8);
        for y in y0..=y1 as usize {
            let sy = y as f32 + 0.5;
            xs.clear();
            for i in 0..pts.len() {
                let (a, b) = (pts[i], pts[(i + 1) % pts.len()]);
                if (a.1 <= sy && b.1 > sy) || (b.1 <= sy && a.1 > sy) {
                    xs.push(a.0 + (sy - a.1) / (b.1 - a.1) * (b.0 - a.0));
                }
            }
            xs.sort_by(|a, b| a.total_cmp(b));
            for pair in xs.chunks_exact(2) {
                let xa = (pair[0] - 0.5).ceil().max(0.0) as usize;
                let xb = ((pair[1] - 0.5).floor() as i64).min(self.w as i64 - 1);
                if xb < 0 {
                    continue;
                }
                for x in xa..=xb as usize {
                    self.blend(x, y, c, alpha);
                }
            }
        }
    }

    fn rect(&mut self, x0: f32, y0: f32, x1: f32, y1: f32, c: Rgb) {
        self.polygon(&[(x0, y0), (x1, y0), (x1, y1), (x0, y1)], c, 1.0);
    }

    fn circle(&mut self, cx: f32, cy: f32, r: f32, c: Rgb, alpha: f32) {
        let y0 = (cy - r).floor().max(0.0) as usize;
        let y1 = ((cy + r).ceil() as i64).min(self.h as i64 - 1);
        let x0 = (cx - r).floor().max(0.0) as usize;
        let x1 = ((cx + r).ceil() as i64).min(self.w as i64 - 1);
        if y1 < 0 || x1 < 0 {
            return;
        }
        for y in y0..=y1 as usize {
            for x in x0..=x1 as usize {
                let (dx, dy) = (x as f32 + 0.5 - cx, y as f32 + 0.5 - cy);
                if dx * dx + dy * dy <= r * r {
                    self.blend(x, y, c, alpha);
                }
            }
        }
    }

    /// A line of width `w` as a quad.
    fn line(&mut self, a: (f32, f32), b: (f32, f32), w: f32, c: Rgb) {
        let (dx, dy) = (b.0 - a.0, b.1 - a.1);
        let len = (dx * dx + dy * dy).sqrt().max(1e-3);
        let (nx, ny) = (-dy / len * w / 2.0, dx / len * w / 2.0);
        self.polygon(
            &[
                (a.0 + nx, a.1 + ny),
                (b.0 + nx, b.1 + ny),
                (b.0 - nx, b.1 - ny),
                (a.0 - nx, a.1 - ny),
            ],
            c,
            1.0,
        );
    }

    /// 3x3 box blur, `passes` times (soft edges of generator output).
    fn box_blur(&mut self, passes: usize) {
        let (w, h) = (self.w, self.h);
        let mut tmp = self.px.clone();
        for _ in 0..passes {
            for y in 0..h {
                for x in 0..w {
                    let (xa, xb) = (x.saturating_sub(1), (x + 1).min(w - 1));
                    let row = &self.px[y * w..(y + 1) * w];
                    let mut s = [0.0; 3];
                    for k in 0..3 {
                        s[k] = (row[xa][k] + row[x][k] + row[xb][k]) / 3.0;
                    }
                    tmp[y * w + x] = s;
                }
            }
            for y in 0..h {
                let (ya, yb) = (y.saturating_sub(1), (y + 1).min(h - 1));
                for x in 0..w {
                    let mut s = [0.0; 3];
                    for k in 0..3 {
                        s[k] = (tmp[ya * w + x][k] + tmp[y * w + x][k] + tmp[yb * w + x][k]) / 3.0;
                    }
                    self.px[y * w + x] = s;
                }
            }
        }
    }

    fn to_image(&self) -> RgbImage {
        let mut img = RgbImage::new(self.w as u32, self.h as u32);
        for (dst, src) in img.pixels_mut().zip(&self.px) {
            dst.0 = src.map(|v| v.round().clamp(0.0, 255.0) as u8);
        }
        img
    }
}

fn lerp(a: Rgb, b: Rgb, t: f32) -> Rgb {
    let t = t.clamp(0.0, 1.0);
    [
        a[0] + (b[0] - a[0]) * t,
        a[1] + (b[1] - a[1]) * t,
        a[2] + (b[2] - a[2]) * t,
    ]
}

fn scale(c: Rgb, k: f32) -> Rgb {
    [c[0] * k, c[1] * k, c[2] * k]
}

fn jitter(rng: &mut ChaCha8Rng, c: Rgb, amount: f32) -> Rgb {
    [
        c[0] + rng.random_range(-amount..=amount),
        c[1] + rng.random_range(-amount..=amount),
        c[2] + rng.random_range(-amount..=amount),
    ]
}

const CONE_ORANGE: Rgb = [240.0, 110.0, 20.0];
const HIVIS_YELLOW: Rgb = [215.0, 235.0, 40.0];
const HIVIS_ORANGE: Rgb = [250.0, 120.0, 30.0];
const WHITE: Rgb = [235.0, 235.0, 235.0];
const SIGN_RED: Rgb = [200.0, 30.0, 30.0];
const BLACK: Rgb = [25.0, 25.0, 25.0];

/// A pinhole camera over a flat ground plane: metres to pixels.
struct Camera {
    /// Focal length in pixels.
    f: f32,
    /// Camera height above the road in metres.
    h: f32,
    /// Horizon row (camera pitch).
    horizon: f32,
    /// Column of the vanishing point (camera yaw).
    vx: f32,
    /// Lateral camera position in metres right of the road centre (the ego lane).
    x0: f32,
}

impl Camera {
    /// Screen position of a ground point `x` metres right of the lane centre, `d` metres ahead.
    fn ground(&self, x: f32, d: f32) -> (f32, f32) {
        (
            self.vx + self.f * (x - self.x0) / d,
            self.horizon + self.f * self.h / d,
        )
    }

    /// Pixels per metre at distance `d`.
    fn ppm(&self, d: f32) -> f32 {
        self.f / d
    }

    /// Distance of the ground at the bottom image row.
    fn d_near(&self) -> f32 {
        self.f * self.h / (HEIGHT as f32 - self.horizon).max(1.0)
    }
}

/// Something standing on the ground, drawn far to near.
enum Prop {
    Cone {
        x: f32,
        d: f32,
        h: f32,
    },
    Barrier {
        x: f32,
        d: f32,
        len: f32,
        orange: bool,
    },
    WorkSign {
        x: f32,
        d: f32,
        diamond: bool,
    },
    Worker {
        x: f32,
        d: f32,
        vest: Rgb,
    },
    Car {
        x: f32,
        d: f32,
        color: Rgb,
    },
    Tree {
        x: f32,
        d: f32,
        crown: Rgb,
    },
    Building {
        x: f32,
        d: f32,
        w: f32,
        h: f32,
        color: Rgb,
    },
    RoadSign {
        x: f32,
        d: f32,
        blue: bool,
    },
}

impl Prop {
    fn distance(&self) -> f32 {
        match *self {
            Prop::Cone { d, .. }
            | Prop::Barrier { d, .. }
            | Prop::WorkSign { d, .. }
            | Prop::Worker { d, .. }
            | Prop::Car { d, .. }
            | Prop::Tree { d, .. }
            | Prop::Building { d, .. }
            | Prop::RoadSign { d, .. } => d,
        }
    }
}

/// Scene-wide choices.
struct Scene {
    cam: Camera,
    road_half: f32,
    light: f32,
    tint: Rgb,
    props: Vec<Prop>,
}

/// Draws one scene (`roadwork` decides the class) in one style; deterministic in `seed`.
pub fn render_scene(seed: u64, roadwork: bool, source: SourceKind) -> RgbImage {
    render_scene_canvas(seed, roadwork, source).to_image()
}

fn render_scene_canvas(seed: u64, roadwork: bool, source: SourceKind) -> Canvas {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let (w, h) = (WIDTH as f32, HEIGHT as f32);
    let cam = Camera {
        f: rng.random_range(230.0..300.0),
        h: rng.random_range(1.2..1.7),
        horizon: rng.random_range(0.34..0.52) * h,
        vx: w / 2.0 + rng.random_range(-45.0..45.0),
        x0: 0.0,
    };
    // Time of day: 0 day, 1 overcast, 2 dusk, 3 bright.
    let tod = rng.random_range(0..4u8);
    let light = match tod {
        0 => rng.random_range(0.9..1.1),
        1 => rng.random_range(0.7..0.9),
        2 => rng.random_range(0.55..0.75),
        _ => rng.random_range(1.05..1.2),
    };
    let tint: Rgb = match tod {
        2 => [1.04, 0.97, 0.93],
        1 => [0.97, 0.99, 1.03],
        _ => [
            rng.random_range(0.95..1.05),
            1.0,
            rng.random_range(0.95..1.05),
        ],
    };
    let road_half = rng.random_range(3.2..5.5);
    let mut cam = cam;
    cam.x0 = road_half * rng.random_range(0.3..0.6);
    let mut scene = Scene {
        cam,
        road_half,
        light,
        tint,
        props: Vec::new(),
    };
    let mut c = Canvas::new(WIDTH, HEIGHT);

    // Sky and ground.
    let (sky_top, sky_bottom): (Rgb, Rgb) = match tod {
        1 => ([150.0, 155.0, 165.0], [200.0, 202.0, 205.0]),
        2 => ([70.0, 80.0, 140.0], [225.0, 165.0, 135.0]),
        _ => (
            jitter(&mut rng, [70.0, 130.0, 215.0], 15.0),
            jitter(&mut rng, [185.0, 210.0, 235.0], 10.0),
        ),
    };
    let hz = scene.cam.horizon;
    c.vgradient(0.0, hz + 1.0, sky_top, sky_bottom);
    let grass = if rng.random_bool(0.3) {
        jitter(&mut rng, [140.0, 125.0, 80.0], 12.0)
    } else {
        jitter(&mut rng, [80.0, 120.0, 55.0], 15.0)
    };
    c.vgradient(hz, h, scale(grass, 0.8), grass);

    // Road surface.
    let asphalt = jitter(&mut rng, [95.0, 95.0, 100.0], 12.0);
    let far = 400.0;
    let dn = scene.cam.d_near() * 0.5;
    let road = [
        scene.cam.ground(-road_half, dn),
        scene.cam.ground(road_half, dn),
        scene.cam.ground(road_half, far),
        scene.cam.ground(-road_half, far),
    ];
    c.polygon(&road, asphalt, 1.0);
    // Darker far road so the gradient reads as distance (haze works the other way on grass).
    let mut d = dn;
    while d < far {
        let d2 = d * 1.6;
        let t = ((d - dn) / 60.0).min(1.0);
        c.polygon(
            &[
                scene.cam.ground(-road_half, d),
                scene.cam.ground(road_half, d),
                scene.cam.ground(road_half, d2),
                scene.cam.ground(-road_half, d2),
            ],
            lerp(asphalt, sky_bottom, 0.35),
            0.25 * t,
        );
        d = d2;
    }

    // Lane markings: solid edges, dashed centre.
    let edge_col = if rng.random_bool(0.2) {
        [220.0, 190.0, 60.0]
    } else {
        WHITE
    };
    for side in [-1.0, 1.0] {
        let x = side * (road_half - 0.3);
        c.polygon(
            &[
                scene.cam.ground(x - 0.08, dn),
                scene.cam.ground(x + 0.08, dn),
                scene.cam.ground(x + 0.08, far),
                scene.cam.ground(x - 0.08, far),
            ],
            edge_col,
            0.9,
        );
    }
    let phase = rng.random_range(0.0..12.0);
    let mut d = dn + phase;
    while d < 120.0 {
        c.polygon(
            &[
                scene.cam.ground(-0.07, d),
                scene.cam.ground(0.07, d),
                scene.cam.ground(0.07, d + 3.0),
                scene.cam.ground(-0.07, d + 3.0),
            ],
            WHITE,
            0.9,
        );
        d += 12.0;
    }

    // Surroundings.
    let autumn = rng.random_bool(0.15);
    for _ in 0..rng.random_range(0..7) {
        let side = if rng.random_bool(0.5) { -1.0 } else { 1.0 };
        let palette: [Rgb; 5] = [
            [170.0, 90.0, 60.0],
            [200.0, 195.0, 180.0],
            [150.0, 150.0, 155.0],
            [215.0, 200.0, 160.0],
            [120.0, 105.0, 95.0],
        ];
        let base = palette[rng.random_range(0..palette.len())];
        let color = jitter(&mut rng, base, 12.0);
        scene.props.push(Prop::Building {
            x: side * (road_half + rng.random_range(6.0..20.0)),
            d: rng.random_range(25.0..120.0),
            w: rng.random_range(8.0..25.0),
            h: rng.random_range(6.0..25.0),
            color,
        });
    }
    for _ in 0..rng.random_range(0..8) {
        let side = if rng.random_bool(0.5) { -1.0 } else { 1.0 };
        let crown = if autumn && rng.random_bool(0.5) {
            jitter(&mut rng, [205.0, 115.0, 35.0], 20.0)
        } else {
            jitter(&mut rng, [50.0, 100.0, 45.0], 15.0)
        };
        scene.props.push(Prop::Tree {
            x: side * (road_half + rng.random_range(2.0..12.0)),
            d: rng.random_range(8.0..90.0),
            crown,
        });
    }
    for _ in 0..rng.random_range(0..4) {
        let orange_car = rng.random_bool(if roadwork { 0.05 } else { 0.15 });
        let palette: [Rgb; 6] = [
            [180.0, 30.0, 30.0],
            [30.0, 60.0, 150.0],
            [220.0, 220.0, 220.0],
            [40.0, 40.0, 45.0],
            [140.0, 140.0, 145.0],
            [60.0, 110.0, 70.0],
        ];
        let color = if orange_car {
            jitter(&mut rng, [235.0, 120.0, 30.0], 10.0)
        } else {
            let base = palette[rng.random_range(0..palette.len())];
            jitter(&mut rng, base, 10.0)
        };
        let lane = if rng.random_bool(0.5) { -1.0 } else { 1.0 };
        scene.props.push(Prop::Car {
            x: lane * road_half * 0.5 + rng.random_range(-0.4..0.4),
            d: rng.random_range(9.0..70.0),
            color,
        });
    }
    if rng.random_bool(0.35) {
        scene.props.push(Prop::RoadSign {
            x: (road_half + rng.random_range(0.8..2.5))
                * if rng.random_bool(0.5) { 1.0 } else { -1.0 },
            d: rng.random_range(10.0..45.0),
            blue: rng.random_bool(0.5),
        });
    }

    if roadwork {
        add_roadwork(&mut rng, &mut scene);
    }

    scene
        .props
        .sort_by(|a, b| b.distance().total_cmp(&a.distance()));
    for p in &scene.props {
        draw_prop(&mut c, &scene.cam, p);
    }

    finish(&mut c, &mut rng, &scene, source);
    c
}

/// Roadwork: a closed-lane taper of cones or barriers, plus signs and workers.
fn add_roadwork(rng: &mut ChaCha8Rng, s: &mut Scene) {
    let side = if rng.random_bool(0.5) { -1.0 } else { 1.0 };
    let start = rng.random_range(s.cam.d_near() + 0.5..16.0);
    let kind = rng.random_range(0..3u8);
    let n = rng.random_range(3..10);
    let spacing = rng.random_range(2.5..6.0);
    let cone_h = rng.random_range(0.7..1.0);
    for i in 0..n {
        let d = start + i as f32 * spacing;
        // Taper from the verge into the lane.
        let x = side * (s.road_half - 0.4 - (i as f32 * 0.35).min(s.road_half * 0.6));
        match kind {
            0 => s.props.push(Prop::Cone { x, d, h: cone_h }),
            1 if i % 2 == 0 => s.props.push(Prop::Barrier {
                x,
                d,
                len: rng.random_range(1.5..3.0),
                orange: rng.random_bool(0.5),
            }),
            1 => {}
            _ => {
                if i % 3 == 0 {
                    s.props.push(Prop::Barrier {
                        x,
                        d,
                        len: 2.0,
                        orange: true,
                    });
                } else {
                    s.props.push(Prop::Cone { x, d, h: cone_h });
                }
            }
        }
    }
    if rng.random_bool(0.7) {
        s.props.push(Prop::WorkSign {
            x: side * (s.road_half + rng.random_range(0.5..1.8)),
            d: (start - rng.random_range(0.0..5.0)).max(s.cam.d_near() + 1.0),
            diamond: rng.random_bool(0.5),
        });
    }
    for _ in 0..rng.random_range(0..3) {
        let vest = if rng.random_bool(0.5) {
            HIVIS_YELLOW
        } else {
            HIVIS_ORANGE
        };
        s.props.push(Prop::Worker {
            x: side * (s.road_half + rng.random_range(-2.0..1.5)),
            d: start + rng.random_range(0.0..15.0),
            vest,
        });
    }
}

fn draw_prop(c: &mut Canvas, cam: &Camera, p: &Prop) {
    match *p {
        Prop::Cone { x, d, h } => {
            let (bx, by) = cam.ground(x, d);
            let k = cam.ppm(d);
            let (hw, ht) = (0.2 * k, h * k);
            c.rect(bx - hw * 1.2, by - 0.05 * k, bx + hw * 1.2, by, BLACK);
            c.polygon(
                &[
                    (bx - hw, by),
                    (bx + hw, by),
                    (bx + hw * 0.15, by - ht),
                    (bx - hw * 0.15, by - ht),
                ],
                CONE_ORANGE,
                1.0,
            );
            // Reflective band.
            let (t0, t1) = (0.45, 0.62);
            let wa = hw * (1.0 - t0 * 0.85);
            let wb = hw * (1.0 - t1 * 0.85);
            c.polygon(
                &[
                    (bx - wa, by - ht * t0),
                    (bx + wa, by - ht * t0),
                    (bx + wb, by - ht * t1),
                    (bx - wb, by - ht * t1),
                ],
                WHITE,
                1.0,
            );
        }
        Prop::Barrier { x, d, len, orange } => {
            let (bx, by) = cam.ground(x, d);
            let k = cam.ppm(d);
            let (hw, top, bh) = (len * 0.5 * k, 1.0 * k, 0.3 * k);
            // Legs.
            c.rect(
                bx - hw,
                by - top,
                bx - hw + 0.06 * k,
                by,
                [60.0, 60.0, 60.0],
            );
            c.rect(
                bx + hw - 0.06 * k,
                by - top,
                bx + hw,
                by,
                [60.0, 60.0, 60.0],
            );
            let stripe = if orange { CONE_ORANGE } else { SIGN_RED };
            c.rect(bx - hw, by - top, bx + hw, by - top + bh, WHITE);
            // Diagonal stripes.
            let n = ((len / 0.35).round() as usize).max(2);
            let sw = 2.0 * hw / n as f32;
            for i in (0..n).step_by(2) {
                let x0 = bx - hw + i as f32 * sw;
                c.polygon(
                    &[
                        (x0, by - top + bh),
                        ((x0 + sw).min(bx + hw), by - top + bh),
                        ((x0 + sw * 1.6).min(bx + hw), by - top),
                        ((x0 + sw * 0.6).min(bx + hw), by - top),
                    ],
                    stripe,
                    1.0,
                );
            }
        }
        Prop::WorkSign { x, d, diamond } => {
            let (bx, by) = cam.ground(x, d);
            let k = cam.ppm(d);
            let pole = 1.6 * k;
            c.rect(
                bx - 0.04 * k,
                by - pole,
                bx + 0.04 * k,
                by,
                [90.0, 90.0, 95.0],
            );
            let s = 0.45 * k;
            let cy = by - pole - s;
            if diamond {
                c.polygon(
                    &[(bx, cy - s), (bx + s, cy), (bx, cy + s), (bx - s, cy)],
                    BLACK,
                    1.0,
                );
                let i = s * 0.85;
                c.polygon(
                    &[(bx, cy - i), (bx + i, cy), (bx, cy + i), (bx - i, cy)],
                    CONE_ORANGE,
                    1.0,
                );
            } else {
                c.polygon(
                    &[(bx - s, cy + s * 0.8), (bx + s, cy + s * 0.8), (bx, cy - s)],
                    SIGN_RED,
                    1.0,
                );
                let i = s * 0.65;
                c.polygon(
                    &[
                        (bx - i, cy + s * 0.8 - 0.12 * s),
                        (bx + i, cy + s * 0.8 - 0.12 * s),
                        (bx, cy - i),
                    ],
                    WHITE,
                    1.0,
                );
            }
            // The "man at work" glyph, reduced to a figure and a mound.
            c.circle(bx - 0.05 * s, cy - 0.2 * s, 0.09 * s, BLACK, 1.0);
            c.line(
                (bx - 0.05 * s, cy - 0.1 * s),
                (bx + 0.1 * s, cy + 0.3 * s),
                0.08 * s,
                BLACK,
            );
            c.polygon(
                &[
                    (bx + 0.05 * s, cy + 0.45 * s),
                    (bx + 0.35 * s, cy + 0.45 * s),
                    (bx + 0.25 * s, cy + 0.25 * s),
                ],
                BLACK,
                1.0,
            );
        }
        Prop::Worker { x, d, vest } => {
            let (bx, by) = cam.ground(x, d);
            let k = cam.ppm(d);
            let trousers = [40.0, 45.0, 70.0];
            c.rect(bx - 0.18 * k, by - 0.9 * k, bx - 0.03 * k, by, trousers);
            c.rect(bx + 0.03 * k, by - 0.9 * k, bx + 0.18 * k, by, trousers);
            c.rect(
                bx - 0.24 * k,
                by - 1.5 * k,
                bx + 0.24 * k,
                by - 0.85 * k,
                vest,
            );
            c.rect(
                bx - 0.24 * k,
                by - 1.2 * k,
                bx + 0.24 * k,
                by - 1.13 * k,
                [210.0, 210.0, 200.0],
            );
            c.circle(bx, by - 1.62 * k, 0.12 * k, [200.0, 160.0, 130.0], 1.0);
            // Hard hat.
            c.polygon(
                &[
                    (bx - 0.15 * k, by - 1.66 * k),
                    (bx + 0.15 * k, by - 1.66 * k),
                    (bx + 0.1 * k, by - 1.78 * k),
                    (bx - 0.1 * k, by - 1.78 * k),
                ],
                [240.0, 240.0, 235.0],
                1.0,
            );
        }
        Prop::Car { x, d, color } => {
            let (bx, by) = cam.ground(x, d);
            let k = cam.ppm(d);
            let hw = 0.9 * k;
            c.polygon(
                &[
                    (bx - hw * 1.1, by + 0.03 * k),
                    (bx + hw * 1.1, by + 0.03 * k),
                    (bx + hw, by - 0.15 * k),
                    (bx - hw, by - 0.15 * k),
                ],
                [20.0, 20.0, 22.0],
                0.6,
            );
            c.rect(bx - hw * 0.95, by - 0.3 * k, bx - hw * 0.55, by, BLACK);
            c.rect(bx + hw * 0.55, by - 0.3 * k, bx + hw * 0.95, by, BLACK);
            c.rect(bx - hw, by - 0.95 * k, bx + hw, by - 0.15 * k, color);
            c.polygon(
                &[
                    (bx - hw * 0.8, by - 0.95 * k),
                    (bx + hw * 0.8, by - 0.95 * k),
                    (bx + hw * 0.65, by - 1.4 * k),
                    (bx - hw * 0.65, by - 1.4 * k),
                ],
                scale(color, 0.9),
                1.0,
            );
            c.polygon(
                &[
                    (bx - hw * 0.72, by - 1.0 * k),
                    (bx + hw * 0.72, by - 1.0 * k),
                    (bx + hw * 0.6, by - 1.33 * k),
                    (bx - hw * 0.6, by - 1.33 * k),
                ],
                [60.0, 70.0, 85.0],
                1.0,
            );
            c.rect(
                bx - hw * 0.9,
                by - 0.75 * k,
                bx - hw * 0.65,
                by - 0.6 * k,
                [180.0, 20.0, 20.0],
            );
            c.rect(
                bx + hw * 0.65,
                by - 0.75 * k,
                bx + hw * 0.9,
                by - 0.6 * k,
                [180.0, 20.0, 20.0],
            );
            c.rect(
                bx - hw * 0.25,
                by - 0.55 * k,
                bx + hw * 0.25,
                by - 0.42 * k,
                [230.0, 230.0, 230.0],
            );
        }
        Prop::Tree { x, d, crown } => {
            let (bx, by) = cam.ground(x, d);
            let k = cam.ppm(d);
            c.rect(
                bx - 0.15 * k,
                by - 2.5 * k,
                bx + 0.15 * k,
                by,
                [90.0, 65.0, 40.0],
            );
            c.circle(bx, by - 3.5 * k, 1.6 * k, crown, 1.0);
            c.circle(bx - 0.7 * k, by - 3.0 * k, 1.1 * k, scale(crown, 0.85), 1.0);
            c.circle(bx + 0.6 * k, by - 4.1 * k, 1.0 * k, scale(crown, 1.1), 1.0);
        }
        Prop::Building { x, d, w, h, color } => {
            let (bx, by) = cam.ground(x, d);
            let k = cam.ppm(d);
            let (x0, x1, y0) = (bx - w * 0.5 * k, bx + w * 0.5 * k, by - h * k);
            c.rect(x0, y0, x1, by, color);
            c.rect(x0, y0 - 0.4 * k, x1, y0, scale(color, 0.7));
            let win = [70.0, 85.0, 105.0];
            let (nx, ny) = ((w / 3.0) as usize, (h / 3.0) as usize);
            for i in 0..nx {
                for j in 0..ny {
                    let wx = x0 + (i as f32 * 3.0 + 1.0) * k;
                    let wy = y0 + (j as f32 * 3.0 + 1.0) * k;
                    c.rect(wx, wy, wx + 1.2 * k, wy + 1.4 * k, win);
                }
            }
        }
        Prop::RoadSign { x, d, blue } => {
            let (bx, by) = cam.ground(x, d);
            let k = cam.ppm(d);
            c.rect(
                bx - 0.04 * k,
                by - 2.0 * k,
                bx + 0.04 * k,
                by,
                [90.0, 90.0, 95.0],
            );
            if blue {
                c.circle(bx, by - 2.3 * k, 0.35 * k, [30.0, 80.0, 170.0], 1.0);
                c.line(
                    (bx - 0.2 * k, by - 2.3 * k),
                    (bx + 0.2 * k, by - 2.3 * k),
                    0.08 * k,
                    WHITE,
                );
            } else {
                c.circle(bx, by - 2.3 * k, 0.35 * k, SIGN_RED, 1.0);
                c.circle(bx, by - 2.3 * k, 0.27 * k, WHITE, 1.0);
                c.rect(
                    bx - 0.12 * k,
                    by - 2.4 * k,
                    bx + 0.12 * k,
                    by - 2.2 * k,
                    BLACK,
                );
            }
        }
    }
}

/// Lighting, then the real or synthetic "camera".
fn finish(c: &mut Canvas, rng: &mut ChaCha8Rng, s: &Scene, source: SourceKind) {
    let (w, h) = (c.w as f32, c.h as f32);
    match source {
        SourceKind::Real => {
            let sigma = rng.random_range(3.0..9.0);
            let noise = Normal::new(0.0f32, sigma).expect("positive sigma");
            let vignette = rng.random_range(0.15..0.35);
            for y in 0..c.h {
                for x in 0..c.w {
                    let (dx, dy) = (x as f32 / w - 0.5, y as f32 / h - 0.5);
                    let v = 1.0 - vignette * (dx * dx + dy * dy) * 2.0;
                    let p = &mut c.px[y * c.w + x];
                    // Luma noise plus weaker chroma noise, like a small sensor.
                    let n = noise.sample(rng);
                    for (ch, tint) in p.iter_mut().zip(s.tint) {
                        *ch = *ch * s.light * tint * v + n + noise.sample(rng) * 0.35;
                    }
                }
            }
        }
        SourceKind::Synthetic => {
            c.box_blur(1);
            let sat = rng.random_range(1.12..1.3);
            let contrast = rng.random_range(1.05..1.2);
            // Generator look: teal shadows, warm highlights, a soft glow from the sky.
            let glow_x = rng.random_range(0.2..0.8) * w;
            for y in 0..c.h {
                for x in 0..c.w {
                    let p = &mut c.px[y * c.w + x];
                    let mut q = [0.0; 3];
                    for k in 0..3 {
                        q[k] = p[k] * s.light.powf(0.6) * s.tint[k];
                    }
                    let l = 0.299 * q[0] + 0.587 * q[1] + 0.114 * q[2];
                    for ch in q.iter_mut() {
                        *ch = 128.0 + (l + (*ch - l) * sat - 128.0) * contrast;
                    }
                    let t = (l / 255.0).clamp(0.0, 1.0);
                    q[0] += 10.0 * t - 6.0 * (1.0 - t);
                    q[2] += 8.0 * (1.0 - t) - 6.0 * t;
                    let (dx, dy) = ((x as f32 - glow_x) / w, y as f32 / h);
                    q = lerp(
                        q,
                        [255.0, 245.0, 225.0],
                        0.18 * (-(dx * dx + dy * dy) * 6.0).exp(),
                    );
                    *p = q;
                }
            }
        }
    }
}

fn encode_jpeg(img: &RgbImage, quality: u8) -> Result<Vec<u8>> {
    let mut buf = Vec::with_capacity(32 * 1024);
    JpegEncoder::new_with_quality(&mut buf, quality)
        .encode_image(img)
        .context("cannot encode a demo JPEG")?;
    Ok(buf)
}

/// The seed of one image: independent of generation order.
fn image_seed(seed: u64, source: SourceKind, roadwork: bool, i: usize) -> u64 {
    stable_u64(&format!("sv72-demo/{seed}/{source}/{roadwork}/{i}"))
}

/// The encoded JPEG of demo image `i` of one class and source.
pub fn demo_jpeg(seed: u64, source: SourceKind, roadwork: bool, i: usize) -> Result<Vec<u8>> {
    let s = image_seed(seed, source, roadwork, i);
    let img = render_scene(s, roadwork, source);
    let mut rng = ChaCha8Rng::seed_from_u64(s ^ 0x9e37_79b9_7f4a_7c15);
    let q = match source {
        SourceKind::Real => rng.random_range(68..=88),
        SourceKind::Synthetic => rng.random_range(92..=97),
    };
    encode_jpeg(&img, q)
}

/// Refuses to replace a folder that is not an earlier demo set.
fn check_out_dir(out: &Path) -> Result<()> {
    if !out.exists() {
        return Ok(());
    }
    if !out.is_dir() {
        bail!(
            "{} exists and is not a folder; choose another --out",
            out.display()
        );
    }
    let readme = out.join("README.txt");
    let is_demo = fs::read_to_string(&readme)
        .map(|t| t.starts_with(README_MARKER))
        .unwrap_or(false);
    let empty = fs::read_dir(out)
        .with_context(|| format!("cannot list {}", out.display()))?
        .next()
        .is_none();
    if !is_demo && !empty {
        bail!(
            "{} exists, is not empty and is not an sv72 demo set (no README.txt starting with \
             {README_MARKER:?}); choose an empty or new --out folder",
            out.display()
        );
    }
    Ok(())
}

fn readme_text(opts: &DemoOptions, summary: &DemoSummary) -> String {
    let mut t = format!(
        "{README_MARKER}\n\n\
         THIS IS NOT REAL DATA. Every image here was drawn procedurally by `sv72 demo-data \
         --seed {} --count {}` (dash-cam road scenes with and without roadwork). It exists so \
         the pipeline can be demonstrated and tested without downloading anything; a model \
         trained on it says nothing about real validator traffic.\n\n\
         Layout:\n  \
         real/roadwork, real/none            \"real\" style: sensor noise, vignetting, hard \
         edges, JPEG quality 68-88\n  \
         synthetic/roadwork, synthetic/none  \"synthetic\" style: smooth, saturated, soft \
         edges, no noise, JPEG quality 92-97\n\n\
         Scenes per folder:\n",
        opts.seed, opts.count
    );
    for (src, class, n) in &summary.scenes {
        t.push_str(&format!("  {src}/{class}: {n}\n"));
    }
    if opts.extras {
        t.push_str("\nPlanted on purpose in the real set, so ingest shows dedup and quarantine:\n");
        for d in &summary.duplicates {
            t.push_str(&format!(
                "  {d}: an exact byte copy of another image (duplicate)\n"
            ));
        }
        for d in &summary.corrupt {
            t.push_str(&format!("  {d}: not a decodable image (corrupt)\n"));
        }
    }
    t
}

/// Writes the demo set into `out` (replaced atomically; an existing `out` must be an earlier demo
/// set or empty).
pub fn generate_demo(out: &Path, opts: &DemoOptions) -> Result<DemoSummary> {
    if opts.count < 2 {
        bail!(
            "--count {} is too small: need at least 2 images per source (one per class)",
            opts.count
        );
    }
    check_out_dir(out)?;
    let pos = opts.count - opts.count / 2;
    let neg = opts.count / 2;
    let mut jobs: Vec<(SourceKind, bool, usize)> = Vec::new();
    for source in [SourceKind::Real, SourceKind::Synthetic] {
        for (roadwork, n) in [(true, pos), (false, neg)] {
            jobs.extend((0..n).map(|i| (source, roadwork, i)));
        }
    }
    let bar = progress::bar(jobs.len() as u64, "demo-data");
    let class_dir = |roadwork: bool| if roadwork { "roadwork" } else { "none" };
    let file_name = |source: SourceKind, roadwork: bool, i: usize| {
        format!(
            "{}/{}/{}_{:04}.jpg",
            source,
            class_dir(roadwork),
            class_dir(roadwork),
            i
        )
    };
    let mut summary = DemoSummary {
        out: out.to_path_buf(),
        scenes: vec![
            ("real".into(), "roadwork".into(), pos),
            ("real".into(), "none".into(), neg),
            ("synthetic".into(), "roadwork".into(), pos),
            ("synthetic".into(), "none".into(), neg),
        ],
        duplicates: Vec::new(),
        corrupt: Vec::new(),
    };
    if opts.extras {
        summary.duplicates = vec![
            "real/roadwork/roadwork_0000_copy.jpg".into(),
            "real/none/none_0000_copy.jpg".into(),
        ];
        summary.corrupt = vec!["real/none/none_corrupt.jpg".into()];
    }
    let readme = readme_text(opts, &summary);
    fsx::write_dir_atomic(out, |tmp| {
        for src in ["real", "synthetic"] {
            for class in ["roadwork", "none"] {
                let d = tmp.join(src).join(class);
                fs::create_dir_all(&d).with_context(|| format!("cannot create {}", d.display()))?;
            }
        }
        jobs.par_iter()
            .try_for_each(|&(source, roadwork, i)| -> Result<()> {
                let bytes = demo_jpeg(opts.seed, source, roadwork, i)?;
                let p = tmp.join(file_name(source, roadwork, i));
                fs::write(&p, bytes).with_context(|| format!("cannot write {}", p.display()))?;
                bar.inc(1);
                Ok(())
            })?;
        if opts.extras {
            for (dup, class) in summary.duplicates.iter().zip([true, false]) {
                let src = tmp.join(file_name(SourceKind::Real, class, 0));
                fs::copy(&src, tmp.join(dup))
                    .with_context(|| format!("cannot copy {}", src.display()))?;
            }
            // A JPEG start marker followed by garbage: looks like a JPEG, decodes to nothing.
            let mut junk = vec![0xFF, 0xD8, 0xFF, 0xE0];
            let mut rng = ChaCha8Rng::seed_from_u64(opts.seed);
            junk.extend((0..2000).map(|_| rng.random::<u8>()));
            fs::write(tmp.join(&summary.corrupt[0]), junk)?;
        }
        fs::write(tmp.join("README.txt"), &readme)?;
        Ok(())
    })?;
    bar.finish_and_clear();
    Ok(summary)
}
