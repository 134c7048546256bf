//! The report plots render with text (title, axis labels, ticks, legends) from the embedded font.

use std::path::Path;

use image::{Rgb, RgbImage};
use sv72::eval::plots::{self, HEIGHT, TITLE_BAND, WIDTH};
use sv72::metrics::{Confusion, ReliabilityBin};

const BLUE: [u8; 3] = [31, 119, 180];

fn open(path: &Path) -> RgbImage {
    let bytes = std::fs::read(path).unwrap();
    assert_eq!(
        &bytes[..8],
        b"\x89PNG\r\n\x1a\n",
        "{} is not a PNG",
        path.display()
    );
    image::load_from_memory(&bytes).unwrap().to_rgb8()
}

/// Pixels in the rectangle [x0, x1) × [y0, y1) for which `pred` holds.
fn count(
    img: &RgbImage,
    (x0, y0, x1, y1): (u32, u32, u32, u32),
    pred: impl Fn(&Rgb<u8>) -> bool,
) -> usize {
    (y0..y1)
        .flat_map(|y| (x0..x1).map(move |x| (x, y)))
        .filter(|&(x, y)| pred(img.get_pixel(x, y)))
        .count()
}

/// Text is drawn in black (anti-aliased); the series colours and the grid are all lighter.
fn ink(p: &Rgb<u8>) -> bool {
    p.0.iter().all(|&c| c < 90)
}

fn near(c: [u8; 3]) -> impl Fn(&Rgb<u8>) -> bool {
    move |p| p.0.iter().zip(c).all(|(&a, b)| a.abs_diff(b) < 12)
}

/// The checks every plot must pass: a PNG of the documented size with a title, a y-axis title
/// and tick labels on the left and an x-axis title and tick labels at the bottom.
fn assert_readable(img: &RgbImage, what: &str) {
    assert_eq!(img.dimensions(), (WIDTH, HEIGHT), "{what}");
    let title = count(img, (0, 0, WIDTH, TITLE_BAND), ink);
    assert!(
        title > 150,
        "{what}: no title ({title} ink pixels in the top band)"
    );
    let left = count(img, (0, TITLE_BAND, 70, HEIGHT - 50), ink);
    assert!(left > 150, "{what}: no y-axis labels ({left} ink pixels)");
    let bottom = count(img, (70, HEIGHT - 50, WIDTH, HEIGHT), ink);
    assert!(
        bottom > 200,
        "{what}: no x-axis labels ({bottom} ink pixels)"
    );
    // Still mostly background, i.e. not a solid fill.
    let white = count(img, (0, 0, WIDTH, HEIGHT), |p| p.0 == [255, 255, 255]);
    assert!(
        white > (WIDTH * HEIGHT / 3) as usize,
        "{what}: {white} white pixels"
    );
}

/// Ink in the legend row under the title.
fn legend_ink(img: &RgbImage) -> usize {
    count(img, (0, TITLE_BAND, WIDTH, TITLE_BAND + 22), ink)
}

#[test]
fn roc_has_title_axes_legend_and_curve() {
    let dir = tempfile::tempdir().unwrap();
    let curve = [(0.0, 0.0), (0.1, 0.6), (0.3, 0.85), (1.0, 1.0)];
    let (a, b) = (dir.path().join("a.png"), dir.path().join("b.png"));
    plots::roc_png(&a, &curve, Some(0.874)).unwrap();
    plots::roc_png(&b, &curve, None).unwrap();
    let (ia, ib) = (open(&a), open(&b));
    assert_readable(&ia, "roc");
    assert!(legend_ink(&ia) > 100, "roc: no legend");
    assert!(
        count(&ia, (0, 0, WIDTH, HEIGHT), near(BLUE)) > 300,
        "roc: no curve"
    );
    // The AUC is printed in the legend: only that row differs.
    let band = |img: &RgbImage, y0, y1| count(img, (0, y0, WIDTH, y1), ink);
    assert_ne!(
        band(&ia, TITLE_BAND, TITLE_BAND + 22),
        band(&ib, TITLE_BAND, TITLE_BAND + 22)
    );
    assert_eq!(
        band(&ia, TITLE_BAND + 24, HEIGHT),
        band(&ib, TITLE_BAND + 24, HEIGHT)
    );
}

#[test]
fn reliability_has_bars_dots_and_legend() {
    let dir = tempfile::tempdir().unwrap();
    let bins: Vec<ReliabilityBin> = (0..10)
        .map(|i| {
            let lo = f64::from(i) / 10.0;
            ReliabilityBin {
                lo,
                hi: lo + 0.1,
                count: if i == 4 { 0 } else { 10 + i as usize },
                mean_pred: lo + 0.05,
                frac_pos: (lo + 0.02).min(1.0),
            }
        })
        .collect();
    let path = dir.path().join("r.png");
    plots::reliability_png(&path, &bins).unwrap();
    let img = open(&path);
    assert_readable(&img, "reliability");
    assert!(legend_ink(&img) > 150, "reliability: no legend");
    let orange = count(
        &img,
        (0, TITLE_BAND + 24, WIDTH, HEIGHT),
        near([255, 127, 14]),
    );
    assert!(
        orange > 9 * 40,
        "reliability: {orange} dot pixels for 9 bins"
    );
}

#[test]
fn score_by_level_names_each_level() {
    let dir = tempfile::tempdir().unwrap();
    let levels = [
        (0, 0.7, 0.5, 0.85),
        (1, 0.6, 0.4, 0.8),
        (2, 0.5, 0.3, 0.7),
        (3, 0.3, 0.1, 0.5),
    ];
    let path = dir.path().join("s.png");
    plots::score_by_level_png(&path, &levels).unwrap();
    let img = open(&path);
    assert_readable(&img, "score by level");
    assert!(legend_ink(&img) > 150, "score by level: no legend");
    // A tick label under each of the four bars.
    let plot_w = WIDTH - 64 - 24;
    for i in 0..4 {
        let cx = 64 + 12 + plot_w * (2 * i + 1) / 8;
        let under = count(&img, (cx - 30, HEIGHT - 52, cx + 30, HEIGHT - 30), ink);
        assert!(under > 30, "no label under level {i} ({under} ink pixels)");
    }
    // No levels: still a labelled frame, with a note in the middle.
    let empty = dir.path().join("e.png");
    plots::score_by_level_png(&empty, &[]).unwrap();
    let img = open(&empty);
    let note = count(
        &img,
        (100, HEIGHT / 2 - 60, WIDTH - 20, HEIGHT / 2 + 20),
        |p| near([150, 150, 150])(p),
    );
    assert!(note > 50, "empty score plot has no note ({note})");
}

#[test]
fn confusion_prints_counts() {
    let dir = tempfile::tempdir().unwrap();
    let m = Confusion {
        tp: 61,
        fp: 9,
        tn: 51,
        fn_: 19,
    };
    let path = dir.path().join("c.png");
    plots::confusion_png(&path, &m).unwrap();
    let img = open(&path);
    assert_eq!(img.dimensions(), (WIDTH, HEIGHT));
    assert!(
        count(&img, (0, 0, WIDTH, TITLE_BAND), ink) > 150,
        "no title"
    );
    assert!(
        count(&img, (0, TITLE_BAND, 80, HEIGHT - 50), ink) > 150,
        "no row labels"
    );
    assert!(
        count(&img, (80, HEIGHT - 50, WIDTH, HEIGHT), ink) > 200,
        "no column labels"
    );
    // The dark true-positive cell (bottom right) carries its count in white.
    let cell = (WIDTH / 2 + 60, HEIGHT / 2 + 40, WIDTH - 40, HEIGHT - 80);
    let white_text = count(&img, cell, |p| p.0.iter().all(|&c| c > 230));
    assert!(white_text > 40, "no count in the TP cell ({white_text})");
    // Another matrix draws other numbers.
    let other = dir.path().join("o.png");
    plots::confusion_png(&other, &Confusion { tp: 7, ..m }).unwrap();
    assert_ne!(open(&other), img);
}

#[test]
fn paired_bars_legend_names_both_models() {
    let dir = tempfile::tempdir().unwrap();
    let groups: Vec<(String, f64, f64)> = ["overall", "level 0", "level 1"]
        .iter()
        .zip([(0.8, 0.85), (0.9, 0.92), (0.7, 0.78)])
        .map(|(n, (a, b))| (n.to_string(), a, b))
        .collect();
    let (p1, p2) = (dir.path().join("1.png"), dir.path().join("2.png"));
    plots::paired_bars_png(&p1, "Accuracy", &groups, ["A: old", "B: new"]).unwrap();
    plots::paired_bars_png(
        &p2,
        "Accuracy",
        &groups,
        ["A: a much longer name", "B: new"],
    )
    .unwrap();
    let (i1, i2) = (open(&p1), open(&p2));
    assert_readable(&i1, "paired bars");
    assert!(
        legend_ink(&i2) > legend_ink(&i1),
        "the legend does not show the model names"
    );
    assert!(
        count(&i1, (0, TITLE_BAND + 24, WIDTH, HEIGHT), near(BLUE)) > 1000,
        "no B bars"
    );
    assert!(
        count(
            &i1,
            (0, TITLE_BAND + 24, WIDTH, HEIGHT),
            near([150, 150, 150])
        ) > 1000,
        "no A bars"
    );
}
