//! `report.md`, `report.json` and `revenue_by_rank.png` of `sv72 econ`.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Result;
use plotters::prelude::*;

use super::{Report, DAYS_PER_MONTH, TIERS};
use crate::util::fsx;
use crate::util::plot::{
    chart, err, font, frame, render, save_png, Mark, BLUE, GREY, GRID, HEIGHT, ORANGE, RED, WIDTH,
};

/// The plot's file name.
pub const PLOT: &str = "revenue_by_rank.png";

/// Writes the three files into `dir` (each atomically).
pub fn write(dir: &Path, r: &Report) -> Result<()> {
    fsx::write_json_atomic(&dir.join("report.json"), r)?;
    fsx::write_atomic(&dir.join("report.md"), markdown(r).as_bytes())?;
    revenue_png(&dir.join(PLOT), r)
}

fn usd(v: f64) -> String {
    if v < 0.0 {
        format!("-${:.2}", -v)
    } else {
        format!("${v:.2}")
    }
}

/// The report as Markdown.
pub fn markdown(r: &Report) -> String {
    let p = &r.prices;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "# Mining economics: netuid {} ({}) at block {}\n",
        r.netuid, r.subnet_name, r.block
    );
    let _ = writeln!(s, "**{}**\n", r.verdict);
    let _ = writeln!(s, "![revenue by rank]({PLOT})\n");
    let _ = writeln!(s, "## Prices and pool\n");
    let _ = writeln!(s, "| item | value |\n|---|---|");
    let _ = writeln!(
        s,
        "| alpha price ({}) | {:.6} TAO = {} |",
        p.alpha_source,
        p.alpha_tao,
        usd(p.alpha_usd)
    );
    let _ = writeln!(s, "| pool reserve ratio | {:.6} TAO |", p.reserve_ratio_tao);
    let _ = writeln!(s, "| moving price | {:.6} TAO |", p.moving_price_tao);
    let _ = writeln!(
        s,
        "| TAO/USD ({}) | ${:.2} |",
        p.tao_usd.source, p.tao_usd.usd
    );
    let _ = writeln!(
        s,
        "| pool reserves | {:.3} TAO, {:.3} alpha |",
        r.tao_in, r.alpha_in
    );
    let _ = writeln!(
        s,
        "| tempo | {} blocks ({:.3} epochs a day) |",
        r.tempo, r.epochs_per_day
    );
    let _ = writeln!(
        s,
        "| alpha minted a day | {:.3} (paid to UIDs last epoch, a day: {:.3}; to miners: {:.3}) |",
        r.alpha_minted_per_day, r.alpha_paid_per_day, r.miners_alpha_per_day
    );
    let _ = writeln!(
        s,
        "| registration burn | {:.6} TAO = {} (immunity {:.2} days) |",
        r.registration_burn_tao,
        usd(r.registration_burn_usd),
        r.immunity_days
    );
    let _ = writeln!(
        s,
        "| UIDs | {} of {} ({} miners, {} earning; {} validators) |\n",
        r.uids, r.max_uids, r.miners, r.earning_miners, r.validators
    );
    let c = &r.costs_per_day;
    let _ = writeln!(
        s,
        "## Costs\n\n| item | USD/day | USD/month |\n|---|---|---|"
    );
    for (k, v) in [
        ("serving", c.serving),
        ("training", c.training),
        ("generation", c.generation),
        ("storage", c.storage),
        ("registration (spread)", c.registration),
        ("**total**", c.total),
    ] {
        let _ = writeln!(s, "| {k} | {} | {} |", usd(v), usd(v * DAYS_PER_MONTH));
    }
    let _ = writeln!(s, "\n## Earnings by rank\n");
    let _ = writeln!(
        s,
        "| miner | UID | alpha/day | TAO/day | USD/day | USD/month | net USD/day | net USD/month |\n\
         |---|---|---|---|---|---|---|---|"
    );
    let row = |s: &mut String, label: String, e: &super::Earner| {
        let _ = writeln!(
            s,
            "| {label} | {} | {:.3} | {:.4} | {} | {} | {} | {} |",
            e.uid,
            e.alpha_day,
            e.tao_day,
            usd(e.usd_day),
            usd(e.usd_month),
            usd(e.net_usd_day),
            usd(e.net_usd_month)
        );
    };
    for t in &r.tiers {
        let label = format!(
            "top {}% (rank {})",
            t.top_percent,
            t.earner.rank.unwrap_or(0)
        );
        row(&mut s, label, &t.earner);
    }
    if let Some(t) = &r.target {
        let label = match t.rank {
            Some(k) => format!("**yours** (rank {k})"),
            None => "**yours** (validator)".to_string(),
        };
        row(&mut s, label, t);
    }
    let be = if r.break_even_rank == 0 {
        "none".to_string()
    } else {
        format!("rank {} of {}", r.break_even_rank, r.miners)
    };
    let _ = writeln!(s, "\nBreak-even: {be}.\n");
    let _ = writeln!(s, "## Alpha price sensitivity\n");
    let mut head = "| alpha price | TAO | break-even rank |".to_string();
    let mut rule = "|---|---|---|".to_string();
    for p in TIERS {
        let _ = write!(head, " net/day top {p}% |");
        rule.push_str("---|");
    }
    let _ = writeln!(s, "{head}\n{rule}");
    for x in &r.sensitivity {
        let _ = write!(
            s,
            "| {:+.0}% | {:.6} | {} |",
            (x.factor - 1.0) * 100.0,
            x.alpha_tao,
            x.break_even_rank
        );
        for v in &x.tier_net_usd_day {
            let _ = write!(s, " {} |", usd(*v));
        }
        s.push('\n');
    }
    let _ = writeln!(s, "\n## Assumptions\n");
    for a in &r.assumptions {
        let _ = writeln!(s, "- {a}");
    }
    s
}

/// Miner revenue (USD/day) by rank against the cost line, with the break-even rank and, when
/// given, the target UID marked.
pub fn revenue_png(path: &Path, r: &Report) -> Result<()> {
    let n = r.miners_usd_day.len().max(1);
    let cost = r.costs_per_day.total;
    let top = r
        .miners_usd_day
        .iter()
        .copied()
        .fold(cost, f64::max)
        .max(1e-9)
        * 1.1;
    let cost_label = format!("costs {}/day", usd(cost));
    let be_label = format!("break-even rank {}", r.break_even_rank);
    let target = r
        .target
        .as_ref()
        .and_then(|t| t.rank.map(|k| (k, t.usd_day)));
    let img = render(WIDTH, HEIGHT, |root| {
        let mut legend = vec![
            (Mark::Line(BLUE), "miner revenue"),
            (Mark::Line(RED), cost_label.as_str()),
        ];
        if r.break_even_rank > 0 {
            legend.push((Mark::Line(GREY), be_label.as_str()));
        }
        if target.is_some() {
            legend.push((Mark::Dot(ORANGE), "yours"));
        }
        let title = format!("Revenue by rank, netuid {} @ block {}", r.netuid, r.block);
        let body = frame(root, &title, &legend)?;
        let mut c = chart(&body, 0.5..n as f64 + 0.5, 0.0..top)?;
        c.configure_mesh()
            .x_desc("miner rank (1 = highest emission)")
            .y_desc("USD per day")
            .x_labels(n.min(10))
            .y_labels(8)
            .x_label_formatter(&|v| format!("{v:.0}"))
            .y_label_formatter(&|v| format!("{v:.2}"))
            .label_style(font(13))
            .axis_desc_style(font(16))
            .bold_line_style(GRID)
            .light_line_style(WHITE)
            .draw()
            .map_err(err)?;
        let pts: Vec<(f64, f64)> = r
            .miners_usd_day
            .iter()
            .enumerate()
            .map(|(i, v)| ((i + 1) as f64, *v))
            .collect();
        c.draw_series(LineSeries::new(pts.iter().copied(), BLUE.stroke_width(2)))
            .map_err(err)?;
        if n <= 64 {
            c.draw_series(pts.iter().map(|&p| Circle::new(p, 3, BLUE.filled())))
                .map_err(err)?;
        }
        c.draw_series(LineSeries::new(
            [(0.5, cost), (n as f64 + 0.5, cost)],
            RED.stroke_width(2),
        ))
        .map_err(err)?;
        if r.break_even_rank > 0 {
            let x = r.break_even_rank as f64;
            c.draw_series(LineSeries::new([(x, 0.0), (x, top)], GREY.stroke_width(1)))
                .map_err(err)?;
        }
        if let Some((k, v)) = target {
            c.draw_series(std::iter::once(Circle::new(
                (k as f64, v),
                6,
                ORANGE.filled(),
            )))
            .map_err(err)?;
        }
        Ok(())
    })?;
    save_png(path, &img)
}
