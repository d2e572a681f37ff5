//! Goodput over time as an SVG: one panel per group of comparable runs,
//! every run of the panel a line, with the provider's capacity (dashed) and
//! the offered load (grey) behind them.

use std::path::Path;

use super::run::RunResult;
use super::scenario::{Group, Load};

/// A panel: a title and its runs (same provider and schedule).
pub struct Panel<'a> {
    pub title: String,
    pub runs: Vec<&'a RunResult>,
}

/// The lab's panels: the targets' spikes by multiplier, the slow provider,
/// the fleet.
pub fn panels(runs: &[RunResult]) -> Vec<Panel<'_>> {
    let mut out = Vec::new();
    let mut multipliers: Vec<f64> = runs
        .iter()
        .filter(|r| r.scenario.group == Group::Targets)
        .filter_map(|r| r.scenario.multiplier())
        .collect();
    multipliers.dedup();
    for m in multipliers {
        let of: Vec<&RunResult> = runs
            .iter()
            .filter(|r| r.scenario.group == Group::Targets && r.scenario.multiplier() == Some(m))
            .collect();
        let c = of[0].scenario.provider.capacity();
        out.push(Panel {
            title: format!("{m}x C spike (C = {c:.0} req/s)"),
            runs: of,
        });
    }
    let slow: Vec<&RunResult> = runs
        .iter()
        .filter(|r| r.scenario.group == Group::SlowProvider)
        .collect();
    if let Some(r) = slow.first() {
        if let Load::SlowProvider { before, .. } = r.scenario.load {
            out.push(Panel {
                title: format!(
                    "provider 10x slower after {before:?} (C = {:.0} -> {:.0} req/s)",
                    r.scenario.provider.capacity(),
                    r.scenario.window_capacity()
                ),
                runs: slow,
            });
        }
    }
    let fleet: Vec<&RunResult> = runs
        .iter()
        .filter(|r| r.scenario.group == Group::Fleet)
        .collect();
    if let Some(r) = fleet.first() {
        out.push(Panel {
            title: format!(
                "{} gateways, one provider, {}x C spike (C = {:.0} req/s)",
                r.scenario.instances,
                r.scenario.multiplier().unwrap_or(0.0),
                r.scenario.provider.capacity()
            ),
            runs: fleet,
        });
    }
    out
}

/// Draws `panels` into `path`.
pub fn draw(panels: &[Panel<'_>], path: &Path) -> Result<(), Box<dyn std::error::Error>> {
    use plotters::prelude::*;

    let n = panels.len().max(1);
    let root = SVGBackend::new(path, (960, 320 * n as u32)).into_drawing_area();
    root.fill(&WHITE)?;
    let areas = root.split_evenly((n, 1));
    let colors = [RED, BLUE, MAGENTA, GREEN, BLACK, CYAN];
    for (area, panel) in areas.iter().zip(panels) {
        let Some(first) = panel.runs.first() else {
            continue;
        };
        let s = &first.scenario;
        let secs = s.length().as_secs() as f64;
        let offered: Vec<(f64, f64)> = first
            .timeline
            .iter()
            .filter(|t| (t.second as f64) < secs)
            .map(|t| (t.second as f64 + 0.5, t.offered as f64))
            .collect();
        let capacity: Vec<(f64, f64)> = (0..s.length().as_secs())
            .flat_map(|t| {
                let c = s.capacity_at(t);
                [(t as f64, c), (t as f64 + 1.0, c)]
            })
            .collect();
        let top = panel
            .runs
            .iter()
            .flat_map(|r| r.timeline.iter().map(|t| t.goodput as f64))
            .chain(capacity.iter().map(|p| p.1))
            .fold(1.0f64, f64::max)
            * 1.15;
        let mut chart = ChartBuilder::on(area)
            .caption(&panel.title, ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(32)
            .y_label_area_size(56)
            .build_cartesian_2d(0f64..secs, 0f64..top)?;
        chart
            .configure_mesh()
            .x_desc("second")
            .y_desc("goodput (calls/s)")
            .draw()?;
        let (w0, w1) = s.window();
        chart.draw_series(std::iter::once(Rectangle::new(
            [(w0 as f64, 0.0), (w1 as f64, top)],
            RGBColor(240, 240, 240).filled(),
        )))?;
        let grey = RGBColor(170, 170, 170);
        chart
            .draw_series(LineSeries::new(
                offered.into_iter().map(|(x, y)| (x, y.min(top))),
                grey.stroke_width(1),
            ))?
            .label("offered (clipped)")
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], grey.stroke_width(1))
            });
        chart
            .draw_series(DashedLineSeries::new(capacity, 6, 4, BLACK.stroke_width(1)))?
            .label("provider capacity")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLACK.stroke_width(1)));
        for (i, r) in panel.runs.iter().enumerate() {
            let color = colors[i % colors.len()];
            chart
                .draw_series(LineSeries::new(
                    r.timeline
                        .iter()
                        .filter(|t| (t.second as f64) < secs)
                        .map(|t| (t.second as f64 + 0.5, t.goodput as f64)),
                    color.stroke_width(2),
                ))?
                .label(r.scenario.front.name())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
                });
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .position(SeriesLabelPosition::UpperRight)
            .draw()?;
    }
    root.present()?;
    Ok(())
}
