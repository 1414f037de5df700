//! Scatter charts of quality against size or speed (plotters), written as PNG and SVG.
//!
//! The PNG text uses a DejaVu Sans subset embedded in the binary (`assets/`), so charts need
//! no system fonts; the SVG names the family and leaves the glyphs to the viewer.

use std::path::{Path, PathBuf};
use std::sync::Once;

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

/// The embedded font.
static FONT: &[u8] = include_bytes!("../assets/DejaVuSans-subset.ttf");
const FAMILY: &str = "sans-serif";

fn register_font() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // The font is ours and known good; a failure would only lose the text.
        let _ = plotters::style::register_font(FAMILY, FontStyle::Normal, FONT);
    });
}

/// One point of a series.
#[derive(Clone, Debug)]
pub struct ChartPoint {
    /// x.
    pub x: f64,
    /// y.
    pub y: f64,
    /// The label drawn next to it.
    pub label: String,
}

/// A named series; `line` joins its points in x order (e.g. the dense quantization frontier).
#[derive(Clone, Debug)]
pub struct Series {
    /// Legend name.
    pub name: String,
    /// Points.
    pub points: Vec<ChartPoint>,
    /// Join the points with a line.
    pub line: bool,
}

/// An axis.
#[derive(Clone, Debug)]
pub struct Axis {
    /// Description.
    pub title: String,
    /// Logarithmic.
    pub log: bool,
    /// Smaller values are better (drawn as a note in the caption).
    pub lower_is_better: bool,
}

/// A chart: title, axes and series.
#[derive(Clone, Debug)]
pub struct Chart {
    /// Caption.
    pub title: String,
    /// x axis.
    pub x: Axis,
    /// y axis.
    pub y: Axis,
    /// The series, drawn in order.
    pub series: Vec<Series>,
}

const COLORS: [RGBColor; 8] = [
    RGBColor(40, 40, 40),
    RGBColor(214, 39, 40),
    RGBColor(31, 119, 180),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
    RGBColor(255, 127, 14),
    RGBColor(23, 190, 207),
    RGBColor(140, 86, 75),
];

fn range(v: impl Iterator<Item = f64>, log: bool) -> (f64, f64) {
    let v: Vec<f64> = v.filter(|x| x.is_finite() && (!log || *x > 0.0)).collect();
    if v.is_empty() {
        return if log { (0.1, 10.0) } else { (0.0, 1.0) };
    }
    let (lo, hi) = v.iter().fold((f64::MAX, f64::MIN), |a, &x| (a.0.min(x), a.1.max(x)));
    if log {
        (lo / 1.4, hi * 1.4)
    } else {
        let pad = ((hi - lo) * 0.08).max(hi.abs() * 0.02).max(1e-6);
        (lo - pad, hi + pad)
    }
}

/// A tick label with as many digits as its size needs.
fn tick(v: f64) -> String {
    let a = v.abs();
    if a == 0.0 {
        "0".into()
    } else if a >= 100.0 {
        format!("{v:.0}")
    } else if a >= 10.0 {
        format!("{v:.1}").trim_end_matches(".0").to_string()
    } else if a >= 0.1 {
        let s = format!("{v:.2}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        format!("{v:.1e}")
    }
}

fn draw<DB: DrawingBackend>(root: DrawingArea<DB, Shift>, c: &Chart) -> Result<(), String> {
    let err = |e: DrawingAreaErrorKind<DB::ErrorType>| e.to_string();
    root.fill(&WHITE).map_err(err)?;
    let all = || c.series.iter().flat_map(|s| s.points.iter());
    let (x0, x1) = range(all().map(|p| p.x), c.x.log);
    let (y0, y1) = range(all().map(|p| p.y), c.y.log);
    let note = |a: &Axis| if a.lower_is_better { " (lower is better)" } else { " (higher is better)" };
    let mut b = ChartBuilder::on(&root);
    b.caption(&c.title, (FAMILY, 22)).margin(18).x_label_area_size(52).y_label_area_size(72);
    // One body for the four combinations of linear and log axes.
    macro_rules! body {
        ($chart:expr) => {{
            let mut chart = $chart.map_err(err)?;
            chart
                .configure_mesh()
                .x_desc(format!("{}{}", c.x.title, note(&c.x)))
                .y_desc(format!("{}{}", c.y.title, note(&c.y)))
                .label_style((FAMILY, 14))
                .axis_desc_style((FAMILY, 16))
                .light_line_style(RGBColor(235, 235, 235))
                .x_labels(14)
                .y_labels(12)
                .x_label_formatter(&|v| tick(*v))
                .y_label_formatter(&|v| tick(*v))
                .draw()
                .map_err(err)?;
            for (i, s) in c.series.iter().enumerate() {
                let color = COLORS[i % COLORS.len()];
                let mut pts: Vec<(f64, f64)> = s
                    .points
                    .iter()
                    .filter(|p| {
                        p.x.is_finite()
                            && p.y.is_finite()
                            && (!c.x.log || p.x > 0.0)
                            && (!c.y.log || p.y > 0.0)
                    })
                    .map(|p| (p.x, p.y))
                    .collect();
                if s.line && pts.len() > 1 {
                    pts.sort_by(|a, b| a.0.total_cmp(&b.0));
                    chart.draw_series(LineSeries::new(pts.clone(), color.stroke_width(1))).map_err(err)?;
                }
                let shape = i % 4;
                let name = s.name.clone();
                match shape {
                    0 => {
                        chart
                            .draw_series(pts.iter().map(|&p| Circle::new(p, 5, color.filled())))
                            .map_err(err)?
                            .label(name)
                            .legend(move |(x, y)| Circle::new((x + 8, y), 5, color.filled()));
                    }
                    1 => {
                        chart
                            .draw_series(pts.iter().map(|&p| TriangleMarker::new(p, 7, color.filled())))
                            .map_err(err)?
                            .label(name)
                            .legend(move |(x, y)| TriangleMarker::new((x + 8, y), 7, color.filled()));
                    }
                    2 => {
                        chart
                            .draw_series(pts.iter().map(|&p| Cross::new(p, 5, color.stroke_width(2))))
                            .map_err(err)?
                            .label(name)
                            .legend(move |(x, y)| Cross::new((x + 8, y), 5, color.stroke_width(2)));
                    }
                    _ => {
                        chart
                            .draw_series(pts.iter().map(|&p| {
                                EmptyElement::at(p) + Rectangle::new([(-4, -4), (4, 4)], color.filled())
                            }))
                            .map_err(err)?
                            .label(name)
                            .legend(move |(x, y)| {
                                Rectangle::new([(x + 4, y - 4), (x + 12, y + 4)], color.filled())
                            });
                    }
                }
                for p in s.points.iter().filter(|p| pts.contains(&(p.x, p.y))) {
                    chart
                        .draw_series(std::iter::once(Text::new(
                            p.label.clone(),
                            (p.x, p.y),
                            (FAMILY, 12).into_font().color(&color).pos(Pos::new(HPos::Left, VPos::Bottom)),
                        )))
                        .map_err(err)?;
                }
            }
            chart
                .configure_series_labels()
                .position(SeriesLabelPosition::UpperRight)
                .label_font((FAMILY, 14))
                .background_style(WHITE.mix(0.85))
                .border_style(RGBColor(180, 180, 180))
                .draw()
                .map_err(err)?;
        }};
    }
    match (c.x.log, c.y.log) {
        (false, false) => body!(b.build_cartesian_2d(x0..x1, y0..y1)),
        (true, false) => body!(b.build_cartesian_2d((x0..x1).log_scale(), y0..y1)),
        (false, true) => body!(b.build_cartesian_2d(x0..x1, (y0..y1).log_scale())),
        (true, true) => body!(b.build_cartesian_2d((x0..x1).log_scale(), (y0..y1).log_scale())),
    }
    root.present().map_err(err)?;
    Ok(())
}

/// Size of every chart, in pixels.
pub const SIZE: (u32, u32) = (1000, 650);

/// Writes `chart` to `stem.png` and `stem.svg`; returns both paths.
pub fn write(chart: &Chart, stem: &Path) -> Result<Vec<PathBuf>, (PathBuf, String)> {
    register_font();
    let png = stem.with_extension("png");
    let svg = stem.with_extension("svg");
    draw(BitMapBackend::new(&png, SIZE).into_drawing_area(), chart).map_err(|e| (png.clone(), e))?;
    draw(SVGBackend::new(&svg, SIZE).into_drawing_area(), chart).map_err(|e| (svg.clone(), e))?;
    Ok(vec![png, svg])
}
