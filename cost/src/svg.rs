//! `--svg`: dollars per million readings against readings per request, both axes
//! logarithmic, one line per design.

use std::path::Path;

use anyhow::{anyhow, Result};
use plotters::prelude::*;

use crate::model::{Design, Row};

const WIDTH: u32 = 900;
const HEIGHT: u32 = 560;

/// Draws the rows to an SVG file at `path`; `title` heads the picture.
pub fn draw(path: &Path, title: &str, rows: &[Row]) -> Result<()> {
    draw_inner(path, title, rows).map_err(|e| anyhow!("writing {}: {e}", path.display()))
}

fn series(rows: &[Row], design: Design) -> Vec<(f64, f64)> {
    let mut points: Vec<(f64, f64)> = rows
        .iter()
        .filter(|r| r.design == design && r.per_million.total > 0.0)
        .map(|r| (r.batch, r.per_million.total))
        .collect();
    points.sort_by(|a, b| a.0.total_cmp(&b.0));
    points
}

fn draw_inner(path: &Path, title: &str, rows: &[Row]) -> Result<(), Box<dyn std::error::Error>> {
    let batches: Vec<f64> = rows
        .iter()
        .filter(|r| r.design != Design::Tutorial)
        .map(|r| r.batch)
        .collect();
    let lo = batches
        .iter()
        .copied()
        .fold(f64::INFINITY, f64::min)
        .min(1.0);
    let hi = batches.iter().copied().fold(1.0, f64::max).max(lo * 10.0);
    let totals: Vec<f64> = rows
        .iter()
        .map(|r| r.per_million.total)
        .filter(|t| *t > 0.0)
        .collect();
    let ymin = totals.iter().copied().fold(f64::INFINITY, f64::min);
    let ymax = totals.iter().copied().fold(0.0, f64::max);
    let (ymin, ymax) = if ymin.is_finite() && ymax > 0.0 {
        (ymin / 2.0, ymax * 2.0)
    } else {
        (0.001, 1.0)
    };

    let root = SVGBackend::new(path, (WIDTH, HEIGHT)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 18))
        .margin(16)
        .x_label_area_size(44)
        .y_label_area_size(70)
        .build_cartesian_2d((lo..hi).log_scale(), (ymin..ymax).log_scale())?;
    chart
        .configure_mesh()
        .x_desc("readings per request (log scale)")
        .y_desc("$ per million readings (log scale)")
        .x_label_formatter(&|x| crate::report::number(*x))
        .y_label_formatter(&|y| format!("${}", crate::report::number(*y)))
        .label_style(("sans-serif", 13))
        .axis_desc_style(("sans-serif", 14))
        .draw()?;

    let colours = [
        (Design::Pipeline, RGBColor(31, 119, 180)),
        (Design::Service, RGBColor(255, 127, 14)),
    ];
    for (design, colour) in colours {
        let points = series(rows, design);
        if points.is_empty() {
            continue;
        }
        chart
            .draw_series(LineSeries::new(points.clone(), colour.stroke_width(2)))?
            .label(design.label())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], colour.stroke_width(2))
            });
        chart.draw_series(points.iter().map(|p| Circle::new(*p, 4, colour.filled())))?;
    }
    // The tutorial cannot batch: the same cost per reading whatever the client sends.
    if let Some(t) = rows.iter().find(|r| r.design == Design::Tutorial) {
        let y = t.per_million.total;
        if y > 0.0 {
            let grey = RGBColor(90, 90, 90);
            chart
                .draw_series(DashedLineSeries::new(
                    vec![(lo, y), (hi, y)],
                    8,
                    6,
                    grey.stroke_width(2),
                ))?
                .label("tutorial (one reading per request)")
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], grey.stroke_width(2))
                });
            chart.draw_series(std::iter::once(Circle::new((1.0, y), 4, grey.filled())))?;
        }
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.3))
        .label_font(("sans-serif", 13))
        .draw()?;
    root.present()?;
    Ok(())
}
