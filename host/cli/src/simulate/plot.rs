//! The `--plot` picture: calls arriving over time, one line per strategy, above the clients done
//! over time. One SVG, drawn with plotters, readable in a README.

use std::path::Path;

use plotters::coord::Shift;
use plotters::prelude::*;

use super::{SimError, SimResult, SimStrategy};

/// Width and height of the picture, in pixels.
const SIZE: (u32, u32) = (1000, 860);
/// Width of the key on the right, beside both panels (so it never hides a line).
const KEY_WIDTH: u32 = 210;
/// Most points drawn per line; longer runs merge buckets (peak arrivals, last completion count).
const MAX_POINTS: usize = 1500;

/// A colour per strategy (Okabe–Ito, distinguishable with colour blindness), in
/// [`SimStrategy::ALL`] order.
const COLOURS: [RGBColor; 6] = [
    RGBColor(213, 94, 0),    // exponential: vermillion
    RGBColor(230, 159, 0),   // proportional: orange
    RGBColor(0, 114, 178),   // full: blue
    RGBColor(86, 180, 233),  // equal: sky blue
    RGBColor(204, 121, 167), // decorrelated: reddish purple
    RGBColor(0, 158, 115),   // slots: bluish green
];

/// One point of a line: seconds, count.
type Point = (f64, u64);

fn colour(strategy: &str, index: usize) -> RGBColor {
    let known = SimStrategy::ALL.iter().position(|s| s.name() == strategy);
    COLOURS[known.unwrap_or(index) % COLOURS.len()]
}

/// Merges every `group` consecutive points into one, taking `merge` of the group.
fn thin(points: &[Point], group: usize, merge: fn(&[Point]) -> Point) -> Vec<Point> {
    points.chunks(group.max(1)).map(merge).collect()
}

fn peak(group: &[Point]) -> Point {
    let t = group.first().map_or(0.0, |p| p.0);
    (t, group.iter().map(|p| p.1).max().unwrap_or(0))
}

fn last(group: &[Point]) -> Point {
    group.last().copied().unwrap_or((0.0, 0))
}

/// Writes `results` (runs of one model, one per strategy) as an SVG at `path` under `title`: calls
/// arriving per slot over time, one line per strategy, above the cumulative successes. Time is on a
/// log axis, so the early herd and the long tail of plain backoff both stay readable.
pub fn write_svg(path: &Path, results: &[SimResult], title: &str) -> Result<(), SimError> {
    if results.is_empty() {
        return Err(SimError::NoResults);
    }
    let fail = |e: &dyn std::fmt::Display| SimError::Plot {
        path: path.to_path_buf(),
        message: e.to_string(),
    };
    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    draw(&root, results, title).map_err(|e| fail(&e))?;
    root.present().map_err(|e| fail(&e))
}

type DrawResult<T> =
    Result<T, DrawingAreaErrorKind<<SVGBackend<'static> as DrawingBackend>::ErrorType>>;

fn draw(
    root: &DrawingArea<SVGBackend<'_>, Shift>,
    results: &[SimResult],
    title: &str,
) -> DrawResult<()> {
    root.fill(&WHITE)?;
    let root = root.titled(title, ("sans-serif", 26))?;
    let (charts, key_area) = root.split_horizontally(SIZE.0 - KEY_WIDTH);
    let (upper, lower) = charts.split_vertically(SIZE.1 / 2 - 20);
    key(&key_area, results)?;

    let bucket_s = results[0].bucket_s;
    let bucket_ms = bucket_s * 1e3;
    let longest = results.iter().map(|r| r.arrivals.len()).max().unwrap_or(0);
    let merged = longest.div_ceil(MAX_POINTS).max(1);
    // Arrivals are drawn at the middle of their bucket, completions at its end: both after 0,
    // as a log axis needs.
    let arrivals: Vec<Vec<Point>> = results
        .iter()
        .map(|r| {
            let mid: Vec<_> = r
                .arrivals
                .iter()
                .map(|&(t, n)| (t + r.bucket_s / 2.0, n))
                .collect();
            thin(&mid, merged, peak)
        })
        .collect();
    let completions: Vec<Vec<Point>> = results
        .iter()
        .map(|r| thin(&r.completions, merged, last))
        .collect();
    let x_min = bucket_s / 2.0;
    let x_max = completions
        .iter()
        .flatten()
        .map(|p| p.0)
        .fold(x_min * 10.0, f64::max);

    let y_max = arrivals
        .iter()
        .flatten()
        .map(|p| p.1)
        .max()
        .unwrap_or(0)
        .max(1);
    let arrivals_caption = if merged == 1 {
        format!("Calls arriving per {bucket_ms:.0} ms slot")
    } else {
        format!("Calls arriving per {bucket_ms:.0} ms slot (peak of every {merged} slots)")
    };
    let x = x_min..x_max;
    panel(
        &upper,
        &arrivals_caption,
        "calls per slot",
        x.clone(),
        y_max,
        (results, &arrivals),
    )?;
    let clients = results
        .iter()
        .map(|r| u64::from(r.clients))
        .max()
        .unwrap_or(0)
        .max(1);
    panel(
        &lower,
        "Clients done (cumulative successes)",
        "clients succeeded",
        x,
        clients,
        (results, &completions),
    )?;
    Ok(())
}

/// Seconds as a tick label, on 1-2-5 steps of the log axis only (the other grid lines stay
/// unlabelled, like log paper); no trailing zeros.
fn seconds_label(s: &f64) -> String {
    let mantissa = s / libm::pow(10.0, libm::floor(libm::log10(*s)));
    if ![1.0, 2.0, 5.0].iter().any(|m| (mantissa - m).abs() < 1e-6) {
        return String::new();
    }
    let text = format!("{s:.3}");
    text.trim_end_matches('0').trim_end_matches('.').to_string()
}

fn panel(
    area: &DrawingArea<SVGBackend<'_>, Shift>,
    caption: &str,
    y_desc: &str,
    x: std::ops::Range<f64>,
    y_max: u64,
    (results, series): (&[SimResult], &[Vec<Point>]),
) -> DrawResult<()> {
    let mut chart = ChartBuilder::on(area)
        .caption(caption, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(44)
        .y_label_area_size(70)
        .build_cartesian_2d(x.log_scale(), 0.0..(y_max as f64 * 1.05))?;
    chart
        .configure_mesh()
        .x_desc("time since the herd started (s, log scale)")
        .x_labels(20)
        .x_label_formatter(&seconds_label)
        .y_label_formatter(&|y| format!("{y:.0}"))
        .y_desc(y_desc)
        .axis_desc_style(("sans-serif", 16))
        .label_style(("sans-serif", 14))
        .light_line_style(WHITE.mix(0.0))
        .draw()?;
    for (i, (result, points)) in results.iter().zip(series).enumerate() {
        chart.draw_series(LineSeries::new(
            points.iter().map(|&(t, n)| (t, n as f64)),
            line_style(result, i),
        ))?;
    }
    Ok(())
}

fn line_style(result: &SimResult, index: usize) -> ShapeStyle {
    let width = if result.strategy == SimStrategy::Slots.name() {
        3
    } else {
        2
    };
    colour(result.strategy, index).stroke_width(width)
}

/// The key: each strategy's line and name, with its headline numbers under it.
fn key(area: &DrawingArea<SVGBackend<'_>, Shift>, results: &[SimResult]) -> DrawResult<()> {
    let name_font = ("sans-serif", 16).into_font();
    let figures_font = ("sans-serif", 12).into_font().color(&RGBColor(90, 90, 90));
    area.draw(&Text::new("strategy", (8, 70), name_font.clone()))?;
    let mut y = 110;
    for (i, result) in results.iter().enumerate() {
        area.draw(&PathElement::new([(8, y), (36, y)], line_style(result, i)))?;
        area.draw(&Text::new(result.strategy, (44, y - 9), name_font.clone()))?;
        let mut figures = vec![format!(
            "{} calls, peak {}",
            result.calls, result.peak_per_slot
        )];
        if result.gave_up > 0 {
            figures.push(format!("{} gave up", result.gave_up));
        }
        for line in figures {
            y += 15;
            area.draw(&Text::new(line, (44, y - 5), figures_font.clone()))?;
        }
        y += 34;
    }
    let bucket_ms = results.first().map_or(0.0, |r| r.bucket_s * 1e3);
    for line in [
        "peak: most retries in one".to_string(),
        format!("{bucket_ms:.0} ms slot (first calls"),
        "excluded)".to_string(),
    ] {
        area.draw(&Text::new(line, (8, y), figures_font.clone()))?;
        y += 15;
    }
    Ok(())
}
