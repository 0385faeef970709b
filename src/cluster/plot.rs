//! Line charts as SVG for `tara bench` and the benches (plotters, no system libraries).

use std::path::Path;

use plotters::coord::ranged1d::{AsRangedCoord, ValueFormatter};
use plotters::prelude::*;

/// One line: a label and (x, y) points in drawing order.
pub struct Series {
    /// The legend entry.
    pub label: String,
    /// The points, in drawing order.
    pub points: Vec<(f64, f64)>,
}

/// Draws `series` into an SVG file at `path`, both axes linear from 0.
pub fn line_chart(path: &Path, title: &str, x_label: &str, y_label: &str, series: &[Series]) -> Result<(), String> {
    let all = series.iter().flat_map(|s| s.points.iter());
    let x_max = all.clone().map(|p| p.0).fold(0.0f64, f64::max).max(1e-9) * 1.05;
    let y_max = all.map(|p| p.1).fold(0.0f64, f64::max).max(1e-9) * 1.05;
    draw(path, title, (x_label, y_label), (0.0..x_max, 0.0..y_max), series)
}

/// Draws `series` into an SVG file at `path`, both axes on log scales: for throughput against
/// latency, where the systems compared differ by orders of magnitude. Points at or below zero
/// are left out.
pub fn log_chart(path: &Path, title: &str, x_label: &str, y_label: &str, series: &[Series]) -> Result<(), String> {
    let positive: Vec<Series> = series
        .iter()
        .map(|s| Series {
            label: s.label.clone(),
            points: s.points.iter().copied().filter(|p| p.0 > 0.0 && p.1 > 0.0).collect(),
        })
        .collect();
    let all = positive.iter().flat_map(|s| s.points.iter());
    let (x_min, x_max) = all.clone().fold((f64::MAX, 1e-9f64), |(lo, hi), p| (lo.min(p.0), hi.max(p.0)));
    let (y_min, y_max) = all.fold((f64::MAX, 1e-9f64), |(lo, hi), p| (lo.min(p.1), hi.max(p.1)));
    let x = ((x_min.min(x_max) / 1.5)..(x_max * 1.5)).log_scale();
    let y = ((y_min.min(y_max) / 1.5)..(y_max * 1.5)).log_scale();
    draw(path, title, (x_label, y_label), (x, y), &positive)
}

/// The chart on coordinates `ranges`, with a line and points per series and a legend.
fn draw<X, Y>(path: &Path, title: &str, labels: (&str, &str), ranges: (X, Y), series: &[Series]) -> Result<(), String>
where
    X: AsRangedCoord<Value = f64>,
    Y: AsRangedCoord<Value = f64>,
    X::CoordDescType: ValueFormatter<f64>,
    Y::CoordDescType: ValueFormatter<f64>,
{
    let root = SVGBackend::new(path, (900, 560)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(ranges.0, ranges.1)
        .map_err(|e| e.to_string())?;
    chart.configure_mesh().x_desc(labels.0).y_desc(labels.1).draw().map_err(|e| e.to_string())?;
    for (i, s) in series.iter().enumerate().filter(|(_, s)| !s.points.is_empty()) {
        let color = Palette99::pick(i).to_rgba();
        chart
            .draw_series(LineSeries::new(s.points.iter().copied(), color.stroke_width(2)))
            .map_err(|e| e.to_string())?
            .label(s.label.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2)));
        chart.draw_series(s.points.iter().map(|p| Circle::new(*p, 3, color.filled()))).map_err(|e| e.to_string())?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(|e| e.to_string())?;
    root.present().map_err(|e| e.to_string())
}
