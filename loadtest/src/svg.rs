//! --svg: per second of the run, latency percentiles, accepted readings/s against the
//! target, requests/s (on an axis of its own: with batches it is far below readings/s) and,
//! with --verify, the ingest-to-queryable lag of the readings sent in that second.

use std::path::Path;

use anyhow::{anyhow, Result};
use plotters::prelude::*;

use crate::stats::Second;
use crate::verify::LagSecond;

const WIDTH: u32 = 1000;
/// Height of one panel.
const PANEL: u32 = 330;

/// Draws `timeline` (and `lag`, when given) to an SVG file at `path`; `title` heads the
/// picture.
pub fn draw(
    path: &Path,
    title: &str,
    target_rate: f64,
    timeline: &[Second],
    lag: Option<&[LagSecond]>,
) -> Result<()> {
    draw_inner(path, title, target_rate, timeline, lag)
        .map_err(|e| anyhow!("writing {}: {e}", path.display()))
}

/// A line: its legend, its colour, and its value in a second.
type Series<T> = (&'static str, RGBColor, fn(&T) -> f64);

type Plot<'a> = DrawingArea<SVGBackend<'a>, plotters::coord::Shift>;

/// A point in time of the picture: the middle of a second.
trait AtSecond {
    fn at(&self) -> f64;
}

impl AtSecond for Second {
    fn at(&self) -> f64 {
        self.second as f64 + 0.5
    }
}

impl AtSecond for LagSecond {
    fn at(&self) -> f64 {
        self.second as f64 + 0.5
    }
}

fn draw_inner(
    path: &Path,
    title: &str,
    target_rate: f64,
    timeline: &[Second],
    lag: Option<&[LagSecond]>,
) -> Result<(), Box<dyn std::error::Error>> {
    let panels = if lag.is_some() { 4 } else { 3 };
    let root = SVGBackend::new(path, (WIDTH, PANEL * panels + 40)).into_drawing_area();
    root.fill(&WHITE)?;
    let root = root.titled(title, ("sans-serif", 20))?;
    let areas = root.split_evenly((panels as usize, 1));
    // A last second that the run barely entered holds a few stragglers: its rates would
    // plunge to near zero, so it is left out of the picture (not out of the totals).
    let timeline = match timeline.split_last() {
        Some((last, rest)) if last.length < 0.5 => rest,
        _ => timeline,
    };
    let seconds = timeline.len().max(1) as f64;

    // Drawn in this order, so p99 stays visible where it equals the maximum.
    let latency: [Series<Second>; 3] = [
        ("max", RED, |s| s.max_ms),
        ("p99", RGBColor(230, 120, 0), |s| s.p99_ms),
        ("p50", BLUE, |s| s.p50_ms),
    ];
    chart(
        &areas[0],
        "latency per second (ms, from the scheduled send time)",
        seconds,
        timeline,
        &latency,
        None,
    )?;
    let readings: [Series<Second>; 1] = [("accepted readings/s", RGBColor(0, 140, 60), |s| {
        s.readings as f64
    })];
    chart(
        &areas[1],
        "throughput per second: readings",
        seconds,
        timeline,
        &readings,
        Some(("target readings/s", target_rate)),
    )?;
    let requests: [Series<Second>; 1] =
        [("requests/s", RGBColor(120, 120, 120), |s| s.requests as f64)];
    chart(
        &areas[2],
        "throughput per second: requests",
        seconds,
        timeline,
        &requests,
        None,
    )?;
    if let Some(lag) = lag {
        let lag_series: [Series<LagSecond>; 2] = [
            ("p99", RGBColor(230, 120, 0), |s| s.p99_ms),
            ("p50", BLUE, |s| s.p50_ms),
        ];
        let seconds = seconds.max(lag.last().map_or(0.0, |l| l.second as f64 + 1.0));
        chart(
            &areas[3],
            "ingest-to-queryable lag of the readings sent in each second (ms)",
            seconds,
            lag,
            &lag_series,
            None,
        )?;
    }
    root.present()?;
    Ok(())
}

/// One chart: a line per series over the seconds of the run.
fn chart<T: AtSecond>(
    area: &Plot,
    caption: &str,
    seconds: f64,
    timeline: &[T],
    series: &[Series<T>],
    reference: Option<(&str, f64)>,
) -> Result<(), Box<dyn std::error::Error>> {
    let top = timeline
        .iter()
        .flat_map(|s| series.iter().map(move |(_, _, f)| f(s)))
        .chain(reference.map(|(_, v)| v))
        .fold(0.0_f64, f64::max);
    let mut chart = ChartBuilder::on(area)
        .caption(caption, ("sans-serif", 16))
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..seconds, 0.0..(top * 1.1).max(1.0))?;
    chart
        .configure_mesh()
        .x_desc("seconds")
        .light_line_style(WHITE.mix(0.0))
        .draw()?;
    if let Some((name, value)) = reference {
        let color = RGBColor(0, 140, 60).mix(0.35);
        chart
            .draw_series(LineSeries::new([(0.0, value), (seconds, value)], color))?
            .label(name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
    }
    for (name, color, value) in series {
        let color = *color;
        chart
            .draw_series(LineSeries::new(
                // Each second's value at its middle.
                timeline.iter().map(|s| (s.at(), value(s))),
                color.stroke_width(2),
            ))?
            .label(*name)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperLeft)
        .draw()?;
    Ok(())
}
