//! One SVG bar chart per workload family: each implementation's time as a ratio to the
//! fastest peer, grouped by case. plotters' SVG backend writes text as `<text>` elements
//! and, without its font features, measures text with its built-in estimate, so drawing
//! needs no font files or system libraries.

use std::path::Path;

use anyhow::{anyhow, Result};
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::impls::ImplId;

/// Room right of the plot for the legend, in pixels.
const LEGEND_WIDTH: u32 = 200;

fn color(id: ImplId) -> RGBColor {
    match id {
        ImplId::NumaslabTyped => RGBColor(214, 39, 40),
        ImplId::NumaslabRaw => RGBColor(255, 127, 14),
        ImplId::NumaslabRawCas => RGBColor(255, 187, 120),
        ImplId::NumaslabKmalloc => RGBColor(128, 0, 0),
        ImplId::NumaslabGlobal => RGBColor(200, 90, 0),
        ImplId::Glibc => RGBColor(31, 119, 180),
        ImplId::Mimalloc => RGBColor(44, 160, 44),
        ImplId::Jemalloc => RGBColor(148, 103, 189),
        ImplId::Snmalloc => RGBColor(140, 86, 75),
        ImplId::Rpmalloc => RGBColor(227, 119, 194),
        ImplId::LockfreeObjectPool => RGBColor(127, 127, 127),
        ImplId::ShardedSlab => RGBColor(188, 189, 34),
        ImplId::ObjectPool => RGBColor(23, 190, 207),
    }
}

/// Draws the chart into `path`: `labels` name the groups, `series` gives each
/// implementation's ratio per group (`None` where it did not run).
pub(crate) fn family_chart(
    path: &Path,
    title: &str,
    labels: &[String],
    series: &[(ImplId, Vec<Option<f64>>)],
) -> Result<()> {
    let plot = |error: String| anyhow!("drawing {}: {error}", path.display());
    let groups = labels.len().max(1);
    let width = (groups as u32 * 130).max(640) + LEGEND_WIDTH;
    let root = SVGBackend::new(path, (width, 420)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| plot(e.to_string()))?;
    let values = series.iter().flat_map(|(_, values)| values.iter().flatten().copied());
    let (low, high) = values.fold((1.0f64, 1.0f64), |(low, high), v| (low.min(v), high.max(v)));
    // A log scale: ratios run from below 1 to tens, and 1 sits where the eye finds it.
    let bottom = (low * 0.8).min(0.5);
    let top = high * 1.25;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 18))
        .margin(12)
        .margin_right(LEGEND_WIDTH)
        .x_label_area_size(40)
        .y_label_area_size(50)
        .build_cartesian_2d(0f64..groups as f64, (bottom..top).log_scale())
        .map_err(|e| plot(e.to_string()))?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(0)
        .y_desc("time / fastest peer (log scale)")
        .y_label_formatter(&|v| format!("{v:.2}"))
        .draw()
        .map_err(|e| plot(e.to_string()))?;

    let bars = series.len().max(1) as f64;
    let slot = 0.8 / bars;
    for (index, (id, values)) in series.iter().enumerate() {
        let fill = color(*id);
        let rectangles = values.iter().enumerate().filter_map(|(group, value)| {
            let value = (*value)?;
            let left = group as f64 + 0.1 + index as f64 * slot;
            Some(Rectangle::new([(left, bottom), (left + slot * 0.9, value)], fill.filled()))
        });
        chart.draw_series(rectangles).map_err(|e| plot(e.to_string()))?;
    }
    // The fastest peer's level.
    chart
        .draw_series(std::iter::once(PathElement::new(
            vec![(0.0, 1.0), (groups as f64, 1.0)],
            BLACK.stroke_width(1),
        )))
        .map_err(|e| plot(e.to_string()))?;
    // Group labels under the axis and the legend right of the plot, drawn on the root so
    // that nothing is clipped to the plotting area.
    let label_style = TextStyle::from(("sans-serif", 13).into_font()).pos(Pos::new(HPos::Center, VPos::Top));
    for (group, label) in labels.iter().enumerate() {
        let (x, y) = chart.backend_coord(&(group as f64 + 0.5, bottom));
        root.draw(&Text::new(label.clone(), (x, y + 8), label_style.clone()))
            .map_err(|e| plot(e.to_string()))?;
    }
    let legend_x = width as i32 - LEGEND_WIDTH as i32 + 20;
    for (index, (id, _)) in series.iter().enumerate() {
        let y = 40 + index as i32 * 20;
        root.draw(&Rectangle::new([(legend_x, y - 6), (legend_x + 12, y + 6)], color(*id).filled()))
            .map_err(|e| plot(e.to_string()))?;
        let style = TextStyle::from(("sans-serif", 13).into_font()).pos(Pos::new(HPos::Left, VPos::Center));
        root.draw(&Text::new(id.name(), (legend_x + 18, y), style)).map_err(|e| plot(e.to_string()))?;
    }
    root.present().map_err(|e| plot(e.to_string()))?;
    Ok(())
}
