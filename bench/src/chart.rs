//! One SVG bar chart per workload family: each implementation's time as a ratio to the
//! fastest peer, grouped by case. plotters' SVG backend writes text as `<text>` elements
//! and, without its font features, measures text with its built-in estimate, so drawing
//! needs no font files or system libraries.

use std::path::Path;

use anyhow::{anyhow, Result};
use plotters::prelude::*;

use crate::impls::ImplId;

/// Bars taller than this are cut and labelled with their value.
const CAP: f64 = 4.0;

fn color(id: ImplId) -> RGBColor {
    match id {
        ImplId::NumaslabTyped => RGBColor(214, 39, 40),
        ImplId::NumaslabRaw => RGBColor(255, 127, 14),
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
    let width = (groups as u32 * 110).max(640) + 220;
    let root = SVGBackend::new(path, (width, 420)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| plot(e.to_string()))?;
    let top = series
        .iter()
        .flat_map(|(_, values)| values.iter().flatten())
        .fold(1.0f64, |max, &v| max.max(v.min(CAP)))
        * 1.15;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 18))
        .margin(12)
        .margin_right(200)
        .x_label_area_size(40)
        .y_label_area_size(50)
        .build_cartesian_2d(0f64..groups as f64, 0f64..top)
        .map_err(|e| plot(e.to_string()))?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(0)
        .y_desc("time / fastest peer")
        .y_label_formatter(&|v| format!("{v:.1}"))
        .draw()
        .map_err(|e| plot(e.to_string()))?;

    let bars = series.len().max(1) as f64;
    let slot = 0.8 / bars;
    for (index, (id, values)) in series.iter().enumerate() {
        let fill = color(*id);
        let rectangles = values.iter().enumerate().filter_map(|(group, value)| {
            let value = (*value)?;
            let left = group as f64 + 0.1 + index as f64 * slot;
            Some(Rectangle::new([(left, 0.0), (left + slot * 0.9, value.min(CAP))], fill.filled()))
        });
        chart
            .draw_series(rectangles)
            .map_err(|e| plot(e.to_string()))?
            .label(id.name())
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 10, y + 5)], fill.filled()));
        // Values beyond the cap: print them above the cut bar.
        let cut = values.iter().enumerate().filter_map(|(group, value)| {
            let value = (*value).filter(|v| *v > CAP)?;
            let left = group as f64 + 0.1 + index as f64 * slot;
            Some(Text::new(format!("{value:.1}"), (left, CAP * 1.02), ("sans-serif", 10).into_font()))
        });
        chart.draw_series(cut).map_err(|e| plot(e.to_string()))?;
    }
    // The fastest peer's level.
    chart
        .draw_series(std::iter::once(PathElement::new(
            vec![(0.0, 1.0), (groups as f64, 1.0)],
            BLACK.stroke_width(1),
        )))
        .map_err(|e| plot(e.to_string()))?;
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::Coordinate(width as i32 - 200, 20))
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .draw()
        .map_err(|e| plot(e.to_string()))?;
    // Group labels under the axis, drawn on the root so they are not clipped.
    for (group, label) in labels.iter().enumerate() {
        let (x, y) = chart.backend_coord(&(group as f64 + 0.5, 0.0));
        let style =
            TextStyle::from(("sans-serif", 13).into_font()).pos(plotters::style::text_anchor::Pos::new(
                plotters::style::text_anchor::HPos::Center,
                plotters::style::text_anchor::VPos::Top,
            ));
        root.draw(&Text::new(label.clone(), (x, y + 8), style)).map_err(|e| plot(e.to_string()))?;
    }
    root.present().map_err(|e| plot(e.to_string()))?;
    Ok(())
}
