//! A job's metrics on the owner's machine: what the program reported, decrypted from the
//! job's events, as a table (CSV or JSON lines) and as training curves (SVG and PNG).
//!
//! Nothing here reaches the host: the events arrive encrypted under the owner's key and the
//! files are written locally.

use std::io::Write;

use chiron_proto::owner::OwnerEvent;
use plotters::prelude::*;
use serde::Serialize;
use thiserror::Error;

/// One value the program reported.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct MetricPoint {
    /// The epoch it belongs to (0-based, as the program reports it).
    pub epoch: u32,
    /// The metric's name.
    pub name: String,
    /// Its value.
    pub value: f32,
}

/// Every metric of a job, in the order reported.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct History {
    /// The points, in event order.
    pub points: Vec<MetricPoint>,
}

/// Why a curve could not be drawn or a file written.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum HistoryError {
    /// Writing failed.
    #[error("cannot write the metrics: {0}")]
    Io(#[from] std::io::Error),
    /// The drawing library failed.
    #[error("cannot draw the training curves: {0}")]
    Plot(String),
}

/// Width of the curves' picture, in pixels.
const WIDTH: u32 = 800;
/// Height of one metric's panel, in pixels.
const PANEL_HEIGHT: u32 = 260;

/// The colour of the points on the curve of the `panel`-th metric (in the order of
/// [`History::series`]): a darker shade of its line's colour, so that every point stands
/// apart from the line in the pictures, for the eye and for a program reading them back.
pub fn point_colour(panel: usize) -> [u8; 3] {
    let RGBColor(r, g, b) = line_colour(panel);
    [r / 2, g / 2, b / 2]
}

fn line_colour(panel: usize) -> RGBColor {
    let (r, g, b) = Palette99::pick(panel).rgb();
    RGBColor(r, g, b)
}

impl History {
    /// The metrics among `events`.
    ///
    /// A metric reported again for an epoch replaces the earlier value: after a distributed
    /// job's rank 0 was replaced ([`OwnerEvent::Resumed`]), its replacement's program counts
    /// its epochs from the first again, on the parameters trained so far.
    pub fn from_events<'a>(events: impl IntoIterator<Item = &'a OwnerEvent>) -> Self {
        let mut points: Vec<MetricPoint> = Vec::new();
        let mut at: std::collections::HashMap<(String, u32), usize> = Default::default();
        for event in events {
            if let OwnerEvent::Metric { name, epoch, value } = event {
                match at.get(&(name.clone(), *epoch)) {
                    Some(&i) => points[i].value = *value,
                    None => {
                        at.insert((name.clone(), *epoch), points.len());
                        points.push(MetricPoint {
                            epoch: *epoch,
                            name: name.clone(),
                            value: *value,
                        });
                    }
                }
            }
        }
        Self { points }
    }

    /// Whether the program reported nothing.
    pub fn is_empty(&self) -> bool {
        self.points.is_empty()
    }

    /// Each metric's `(epoch, value)` points, metrics in the order first reported.
    pub fn series(&self) -> Vec<(String, Vec<(u32, f32)>)> {
        let mut series: Vec<(String, Vec<(u32, f32)>)> = Vec::new();
        for p in &self.points {
            match series.iter_mut().find(|(name, _)| *name == p.name) {
                Some((_, values)) => values.push((p.epoch, p.value)),
                None => series.push((p.name.clone(), vec![(p.epoch, p.value)])),
            }
        }
        series
    }

    /// The table as CSV: `epoch,metric,value`, a row per point.
    pub fn write_csv(&self, mut out: impl Write) -> Result<(), HistoryError> {
        writeln!(out, "epoch,metric,value")?;
        for p in &self.points {
            // Metric names are the program's: quote them as CSV needs.
            let name = if p.name.contains([',', '"', '\n', '\r']) {
                format!("\"{}\"", p.name.replace('"', "\"\""))
            } else {
                p.name.clone()
            };
            writeln!(out, "{},{name},{}", p.epoch, p.value)?;
        }
        Ok(())
    }

    /// The table as JSON lines: `{"epoch":0,"name":"train_loss","value":0.41}` per point.
    pub fn write_jsonl(&self, mut out: impl Write) -> Result<(), HistoryError> {
        for p in &self.points {
            serde_json::to_writer(&mut out, p).map_err(std::io::Error::other)?;
            writeln!(out)?;
        }
        Ok(())
    }

    /// The training curves as an SVG document: a panel per metric, a point per epoch.
    pub fn to_svg(&self) -> Result<String, HistoryError> {
        let mut svg = String::new();
        {
            let root =
                SVGBackend::with_string(&mut svg, (WIDTH, self.height())).into_drawing_area();
            self.draw(&root)?;
            root.present().map_err(plot_error)?;
        }
        Ok(svg)
    }

    /// The training curves as a PNG picture (the same drawing as [`History::to_svg`]).
    pub fn to_png(&self) -> Result<Vec<u8>, HistoryError> {
        let height = self.height();
        let mut rgb = vec![0u8; WIDTH as usize * height as usize * 3];
        {
            let root = BitMapBackend::with_buffer(&mut rgb, (WIDTH, height)).into_drawing_area();
            self.draw(&root)?;
            root.present().map_err(plot_error)?;
        }
        let mut png = Vec::new();
        {
            let mut encoder = png::Encoder::new(&mut png, WIDTH, height);
            encoder.set_color(png::ColorType::Rgb);
            encoder.set_depth(png::BitDepth::Eight);
            let mut writer = encoder
                .write_header()
                .map_err(|e| HistoryError::Plot(e.to_string()))?;
            writer
                .write_image_data(&rgb)
                .map_err(|e| HistoryError::Plot(e.to_string()))?;
        }
        Ok(png)
    }

    fn height(&self) -> u32 {
        let panels = u32::try_from(self.series().len()).unwrap_or(1).max(1);
        PANEL_HEIGHT.saturating_mul(panels)
    }

    fn draw<B: DrawingBackend>(
        &self,
        root: &DrawingArea<B, plotters::coord::Shift>,
    ) -> Result<(), HistoryError> {
        register_font();
        root.fill(&WHITE).map_err(plot_error)?;
        let series = self.series();
        if series.is_empty() {
            root.draw(&Text::new(
                "no metrics reported",
                (20, 20),
                ("sans-serif", 16).into_font(),
            ))
            .map_err(plot_error)?;
            return Ok(());
        }
        let panels = root.split_evenly((series.len(), 1));
        for (i, ((name, points), panel)) in series.iter().zip(&panels).enumerate() {
            // Epochs shown 1-based, as the CLI reports them.
            let x_max = points.iter().map(|(e, _)| e + 1).max().unwrap_or(1).max(2);
            let (lo, hi) = points
                .iter()
                .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), (_, v)| {
                    (lo.min(*v), hi.max(*v))
                });
            let pad = ((hi - lo).abs() * 0.1).max(1e-3);
            let y_range = (lo - pad)..(hi + pad);
            let mut chart = ChartBuilder::on(panel)
                .caption(name.as_str(), ("sans-serif", 18).into_font())
                .margin(12)
                .x_label_area_size(32)
                .y_label_area_size(60)
                .build_cartesian_2d(1u32..x_max, y_range)
                .map_err(plot_error)?;
            chart
                .configure_mesh()
                .x_desc("epoch")
                .x_labels(x_max.min(12) as usize)
                .y_labels(6)
                .draw()
                .map_err(plot_error)?;
            let line: Vec<(u32, f32)> = points.iter().map(|(e, v)| (e + 1, *v)).collect();
            chart
                .draw_series(LineSeries::new(
                    line.iter().copied(),
                    line_colour(i).stroke_width(2),
                ))
                .map_err(plot_error)?;
            let [r, g, b] = point_colour(i);
            chart
                .draw_series(
                    line.iter()
                        .map(|&p| Circle::new(p, 4, RGBColor(r, g, b).filled())),
                )
                .map_err(plot_error)?;
        }
        Ok(())
    }
}

fn plot_error(e: impl std::fmt::Display) -> HistoryError {
    HistoryError::Plot(e.to_string())
}

/// Text in the pictures is drawn with a font the crate carries, so that they look the same
/// on every machine and need no system fonts.
fn register_font() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // The font is a valid TrueType file shipped inside the crate: this cannot fail, and
        // if it did the labels would be missing, not the curves.
        let _ = plotters::style::register_font(
            "sans-serif",
            FontStyle::Normal,
            epaint_default_fonts::UBUNTU_LIGHT,
        );
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn history() -> History {
        let mut events = vec![OwnerEvent::Started {
            train_count: 9,
            valid_count: 1,
        }];
        for epoch in 0..3 {
            events.push(OwnerEvent::Metric {
                name: "train_loss".into(),
                epoch,
                value: 1.0 / (epoch as f32 + 1.0),
            });
            events.push(OwnerEvent::Metric {
                name: "valid_accuracy".into(),
                epoch,
                value: 0.5 + 0.1 * epoch as f32,
            });
        }
        History::from_events(&events)
    }

    #[test]
    fn an_epoch_reported_again_replaces_its_point() {
        let metric = |epoch, value| OwnerEvent::Metric {
            name: "valid_accuracy".into(),
            epoch,
            value,
        };
        // Rank 0 reported two epochs, was replaced, and its replacement reports from the
        // first again.
        let events = [
            metric(0, 0.5),
            metric(1, 0.6),
            OwnerEvent::Resumed,
            metric(0, 0.7),
            metric(1, 0.8),
            metric(2, 0.9),
        ];
        let series = History::from_events(&events).series();
        assert_eq!(
            series,
            vec![(
                "valid_accuracy".to_owned(),
                vec![(0, 0.7), (1, 0.8), (2, 0.9)]
            )]
        );
    }

    #[test]
    fn the_table_has_a_row_per_point() {
        let mut csv = Vec::new();
        history().write_csv(&mut csv).expect("writes");
        let csv = String::from_utf8(csv).expect("utf-8");
        assert_eq!(csv.lines().count(), 7, "{csv}");
        assert!(
            csv.starts_with("epoch,metric,value\n0,train_loss,1\n"),
            "{csv}"
        );
        let mut jsonl = Vec::new();
        history().write_jsonl(&mut jsonl).expect("writes");
        let first: serde_json::Value = serde_json::from_str(
            String::from_utf8(jsonl)
                .expect("utf-8")
                .lines()
                .next()
                .expect("a line"),
        )
        .expect("json");
        assert_eq!(first["name"], "train_loss");
    }

    #[test]
    fn the_curves_have_a_point_per_epoch() {
        let svg = history().to_svg().expect("draws");
        assert_eq!(
            svg.matches("<circle").count(),
            6,
            "two metrics × three epochs"
        );
        assert!(svg.contains("valid_accuracy"), "the panels are named");
        let png = history().to_png().expect("draws");
        let decoder = png::Decoder::new(std::io::Cursor::new(png));
        let mut reader = decoder.read_info().expect("a PNG");
        let mut pixels = vec![0; reader.output_buffer_size().expect("a frame size")];
        let info = reader.next_frame(&mut pixels).expect("a frame");
        assert_eq!((info.width, info.height), (WIDTH, 2 * PANEL_HEIGHT));
        assert!(pixels.iter().any(|&b| b < 128), "something is drawn");
    }
}
