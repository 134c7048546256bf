//! PNG plots for the eval and A/B reports (plotters, embedded font: see [`crate::util::plot`]).
//! Each has a title, labelled axes with ticks and, where it shows more than one series, a legend.

use std::path::Path;

use anyhow::Result;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::metrics::{Confusion, ReliabilityBin};
use crate::util::plot::{
    chart, err, font, frame, render, save_png, Chart, Mark, BLUE, GREY, GRID, ORANGE,
};

pub use crate::util::plot::{HEIGHT, TITLE_BAND, WIDTH};

/// Grid, ticks and axis titles for a chart whose axes both span [0, 1].
fn unit_mesh(c: &mut Chart<'_, '_>, x_desc: &str, y_desc: &str) -> Result<()> {
    c.configure_mesh()
        .x_desc(x_desc)
        .y_desc(y_desc)
        .x_labels(11)
        .y_labels(11)
        .x_label_formatter(&|v| format!("{v:.1}"))
        .y_label_formatter(&|v| format!("{v:.1}"))
        .label_style(font(13))
        .axis_desc_style(font(16))
        .bold_line_style(GRID)
        .light_line_style(WHITE)
        .draw()
        .map_err(err)
}

/// Mesh for bars over named categories at x = 0, 1, …: one tick per name; y ticks 0–1.
fn category_mesh(
    c: &mut Chart<'_, '_>,
    names: &[String],
    x_desc: &str,
    y_desc: &str,
) -> Result<()> {
    let name_at = |v: &f64| {
        let i = v.round();
        if (v - i).abs() < 1e-6 && i >= 0.0 && (i as usize) < names.len() {
            names[i as usize].clone()
        } else {
            String::new()
        }
    };
    c.configure_mesh()
        .disable_x_mesh()
        .x_desc(x_desc)
        .y_desc(y_desc)
        .x_labels(names.len().max(1))
        .y_labels(11)
        .x_label_formatter(&name_at)
        .y_label_formatter(&|v| format!("{v:.1}"))
        .label_style(font(14))
        .axis_desc_style(font(16))
        .bold_line_style(GRID)
        .light_line_style(WHITE)
        .draw()
        .map_err(err)
}

/// A value printed centred above a bar.
fn value_label(c: &mut Chart<'_, '_>, x: f64, y: f64, v: f64) -> Result<()> {
    let style = font(12).pos(Pos::new(HPos::Center, VPos::Bottom));
    c.draw_series(std::iter::once(Text::new(
        format!("{v:.3}"),
        (x, y + 0.01),
        style,
    )))
    .map_err(err)?;
    Ok(())
}

/// ROC curve over the chance diagonal; the legend carries the AUC when known.
pub fn roc_png(path: &Path, curve: &[(f64, f64)], auc: Option<f64>) -> Result<()> {
    let name = auc.map_or("model".to_string(), |a| format!("model (AUC {a:.3})"));
    let img = render(WIDTH, HEIGHT, |root| {
        let legend = [
            (Mark::Line(BLUE), name.as_str()),
            (Mark::Line(GREY), "chance"),
        ];
        let body = frame(root, "ROC curve", &legend)?;
        let mut c = chart(&body, 0.0..1.0, 0.0..1.0)?;
        unit_mesh(&mut c, "false positive rate", "true positive rate")?;
        c.draw_series(LineSeries::new(
            [(0.0, 0.0), (1.0, 1.0)],
            GREY.stroke_width(1),
        ))
        .map_err(err)?;
        c.draw_series(LineSeries::new(curve.iter().copied(), BLUE.stroke_width(2)))
            .map_err(err)?;
        Ok(())
    })?;
    save_png(path, &img)
}

/// Reliability diagram: fraction roadwork per probability bin (bars, labelled with their
/// count), mean predicted probability per bin (dots), perfect calibration (diagonal).
pub fn reliability_png(path: &Path, bins: &[ReliabilityBin]) -> Result<()> {
    let img = render(WIDTH, HEIGHT, |root| {
        let legend = [
            (Mark::Bar(BLUE), "fraction roadwork in bin"),
            (Mark::Dot(ORANGE), "mean predicted probability"),
            (Mark::Line(GREY), "perfect calibration"),
        ];
        let body = frame(root, "Reliability (calibration)", &legend)?;
        let mut c = chart(&body, 0.0..1.0, 0.0..1.0)?;
        unit_mesh(
            &mut c,
            "predicted probability of roadwork",
            "fraction roadwork",
        )?;
        let used: Vec<&ReliabilityBin> = bins.iter().filter(|b| b.count > 0).collect();
        c.draw_series(used.iter().map(|b| {
            let pad = (b.hi - b.lo) * 0.08;
            Rectangle::new(
                [(b.lo + pad, 0.0), (b.hi - pad, b.frac_pos)],
                BLUE.mix(0.75).filled(),
            )
        }))
        .map_err(err)?;
        let count_style = font(11).pos(Pos::new(HPos::Center, VPos::Bottom));
        c.draw_series(used.iter().map(|b| {
            let at = ((b.lo + b.hi) / 2.0, b.frac_pos + 0.01);
            Text::new(format!("n={}", b.count), at, count_style.clone())
        }))
        .map_err(err)?;
        c.draw_series(LineSeries::new(
            [(0.0, 0.0), (1.0, 1.0)],
            GREY.stroke_width(1),
        ))
        .map_err(err)?;
        c.draw_series(
            used.iter()
                .map(|b| Circle::new(((b.lo + b.hi) / 2.0, b.mean_pred), 5, ORANGE.filled())),
        )
        .map_err(err)?;
        Ok(())
    })?;
    save_png(path, &img)
}

/// Top of the y axis of bar charts of values in [0, 1]: room for the value labels, and just
/// short of 1.1 so that 1.0 is the last tick.
const BAR_TOP: f64 = 1.099;

/// Expected subnet score per validator augmentation level: mean (bars) and 5th–95th
/// percentile (whiskers). `levels` holds (level, mean, p05, p95).
pub fn score_by_level_png(path: &Path, levels: &[(u8, f64, f64, f64)]) -> Result<()> {
    let names: Vec<String> = levels.iter().map(|l| format!("level {}", l.0)).collect();
    let img = render(WIDTH, HEIGHT, |root| {
        let legend = [
            (Mark::Bar(BLUE), "mean over simulated sequences"),
            (Mark::Line(ORANGE), "5th–95th percentile"),
        ];
        let body = frame(root, "Expected subnet score by augmentation level", &legend)?;
        let n = names.len().max(1) as f64;
        let mut c = chart(&body, -0.5..n - 0.5, 0.0..BAR_TOP)?;
        category_mesh(
            &mut c,
            &names,
            "validator augmentation level",
            "expected score",
        )?;
        c.draw_series(levels.iter().enumerate().map(|(i, l)| {
            let x = i as f64;
            Rectangle::new([(x - 0.3, 0.0), (x + 0.3, l.1)], BLUE.mix(0.85).filled())
        }))
        .map_err(err)?;
        let whisker = |i: usize, l: &(u8, f64, f64, f64)| {
            let x = i as f64;
            let s = ORANGE.stroke_width(2);
            [
                PathElement::new(vec![(x, l.2), (x, l.3)], s),
                PathElement::new(vec![(x - 0.08, l.2), (x + 0.08, l.2)], s),
                PathElement::new(vec![(x - 0.08, l.3), (x + 0.08, l.3)], s),
            ]
        };
        c.draw_series(levels.iter().enumerate().flat_map(|(i, l)| whisker(i, l)))
            .map_err(err)?;
        for (i, l) in levels.iter().enumerate() {
            value_label(&mut c, i as f64 + 0.17, l.3.max(l.1), l.1)?;
        }
        if levels.is_empty() {
            no_data(&mut c, "no level was scored")?;
        }
        Ok(())
    })?;
    save_png(path, &img)
}

/// Confusion matrix as a 2×2 heat map: rows = true class, columns = predicted; each cell shows
/// its count and its share of the true class, which also sets its shade.
pub fn confusion_png(path: &Path, m: &Confusion) -> Result<()> {
    let img = render(WIDTH, HEIGHT, |root| {
        let total = m.tn + m.fp + m.fn_ + m.tp;
        let body = frame(root, &format!("Confusion matrix ({total} answers)"), &[])?;
        let mut c = chart(&body, -0.5..1.5, -0.5..1.5)?;
        let x_name = |v: &f64| class_tick(*v, ["None", "Roadwork"]);
        // True None is the top row (y = 1).
        let y_name = |v: &f64| class_tick(*v, ["Roadwork", "None"]);
        c.configure_mesh()
            .disable_mesh()
            .x_desc("predicted class (shade = share of the true class)")
            .y_desc("true class")
            .x_labels(2)
            .y_labels(2)
            .x_label_formatter(&x_name)
            .y_label_formatter(&y_name)
            .label_style(font(15))
            .axis_desc_style(font(16))
            .draw()
            .map_err(err)?;
        let rows = [[m.tn, m.fp], [m.fn_, m.tp]];
        for (r, row) in rows.iter().enumerate() {
            let row_total = (row[0] + row[1]).max(1) as f64;
            for (col, &v) in row.iter().enumerate() {
                let share = v as f64 / row_total;
                let shade = |base: u8| (255.0 - (255.0 - f64::from(base)) * share) as u8;
                let fill = RGBColor(shade(BLUE.0), shade(BLUE.1), shade(BLUE.2));
                let (x, y) = (col as f64, 1.0 - r as f64);
                c.draw_series(std::iter::once(Rectangle::new(
                    [(x - 0.49, y - 0.49), (x + 0.49, y + 0.49)],
                    fill.filled(),
                )))
                .map_err(err)?;
                let ink = if share > 0.55 { WHITE } else { BLACK };
                let centre = Pos::new(HPos::Center, VPos::Center);
                c.draw_series([
                    Text::new(
                        v.to_string(),
                        (x, y + 0.07),
                        font(26).color(&ink).pos(centre),
                    ),
                    Text::new(
                        format!("{:.1}% of true", share * 100.0),
                        (x, y - 0.12),
                        font(14).color(&ink).pos(centre),
                    ),
                ])
                .map_err(err)?;
            }
        }
        Ok(())
    })?;
    save_png(path, &img)
}

fn class_tick(v: f64, names: [&str; 2]) -> String {
    if v.abs() < 1e-6 {
        names[0].to_string()
    } else if (v - 1.0).abs() < 1e-6 {
        names[1].to_string()
    } else {
        String::new()
    }
}

fn no_data(c: &mut Chart<'_, '_>, what: &str) -> Result<()> {
    let style = font(16)
        .color(&GREY)
        .pos(Pos::new(HPos::Center, VPos::Center));
    c.draw_series(std::iter::once(Text::new(
        what.to_string(),
        (0.0, 0.5),
        style,
    )))
    .map_err(err)?;
    Ok(())
}

/// Accuracy of models A (grey) and B (blue) side by side per group (`ab-test`: overall, then
/// each level). `groups` holds (name, accuracy A, accuracy B); `names` the two models' legends.
pub fn paired_bars_png(
    path: &Path,
    title: &str,
    groups: &[(String, f64, f64)],
    names: [&str; 2],
) -> Result<()> {
    let labels: Vec<String> = groups.iter().map(|g| g.0.clone()).collect();
    let img = render(WIDTH, HEIGHT, |root| {
        let body = frame(
            root,
            title,
            &[(Mark::Bar(GREY), names[0]), (Mark::Bar(BLUE), names[1])],
        )?;
        let n = labels.len().max(1) as f64;
        let mut c = chart(&body, -0.5..n - 0.5, 0.0..BAR_TOP)?;
        category_mesh(
            &mut c,
            &labels,
            "challenges (all, then by validator augmentation level)",
            "accuracy",
        )?;
        for (k, color) in [GREY, BLUE].into_iter().enumerate() {
            let off = if k == 0 { -0.2 } else { 0.2 };
            let value = |g: &(String, f64, f64)| if k == 0 { g.1 } else { g.2 };
            c.draw_series(groups.iter().enumerate().map(|(i, g)| {
                let x = i as f64 + off;
                Rectangle::new([(x - 0.18, 0.0), (x + 0.18, value(g))], color.filled())
            }))
            .map_err(err)?;
            for (i, g) in groups.iter().enumerate() {
                value_label(&mut c, i as f64 + off, value(g), value(g))?;
            }
        }
        if groups.is_empty() {
            no_data(&mut c, "nothing to compare")?;
        }
        Ok(())
    })?;
    save_png(path, &img)
}
