//! The audit's output files: `audit.json` (every score), `grid.png` (originals and the strongest
//! reconstruction per split, side by side) and `chart.png` (SSIM per attack and the model's
//! accuracy on the strongest reconstructions, against the split). Text is drawn with a bundled
//! DejaVu Sans Mono (assets/DejaVu-LICENSE.txt), so no system fonts are needed.

use std::path::{Path, PathBuf};
use std::sync::Once;

use plotters::prelude::*;
use plotters::style::FontStyle;

use crate::audit::{AuditReport, Gallery};
use crate::AuditError;

static FONT: &[u8] = include_bytes!("../assets/DejaVuSansMono.ttf");
const FAMILY: &str = "origami-mono";

/// The bundled font's family name for plotters, registered on first use (other charts, such
/// as `origami bench --chart`, draw with it too).
pub fn font_family() -> &'static str {
    font();
    FAMILY
}

fn font() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        plotters::style::register_font(FAMILY, FontStyle::Normal, FONT)
            .unwrap_or_else(|_| panic!("the bundled font parses"));
    });
}

fn err(e: impl std::fmt::Display) -> AuditError {
    AuditError::Report(e.to_string())
}

/// Reads an `audit.json`.
pub fn load(path: &Path) -> Result<AuditReport, AuditError> {
    let text =
        std::fs::read_to_string(path).map_err(|e| err(format!("{}: {e}", path.display())))?;
    serde_json::from_str(&text).map_err(|e| err(format!("{}: {e}", path.display())))
}

/// Writes `audit.json`, `grid.png` and `chart.png` into `dir` (created if needed); returns the
/// paths. Each file is written to a temporary name and renamed, so none is left half-written.
pub fn write(
    report: &AuditReport,
    gallery: &Gallery,
    dir: &Path,
) -> Result<Vec<PathBuf>, AuditError> {
    std::fs::create_dir_all(dir).map_err(|e| err(format!("{}: {e}", dir.display())))?;
    let json = serde_json::to_string_pretty(report).map_err(err)? + "\n";
    let paths = [
        dir.join("audit.json"),
        dir.join("grid.png"),
        dir.join("chart.png"),
    ];
    let grid = grid(report, gallery)?;
    let chart = chart(report)?;
    let write = |p: &Path, f: &dyn Fn(&Path) -> Result<(), AuditError>| {
        origami_model::atomic::write_with(p, f, |p, e| err(format!("{}: {e}", p.display())))
    };
    write(&paths[0], &|p| {
        std::fs::write(p, &json).map_err(|e| err(format!("{}: {e}", p.display())))
    })?;
    write(&paths[1], &|p| save_png(&grid, p))?;
    write(&paths[2], &|p| save_png(&chart, p))?;
    Ok(paths.to_vec())
}

fn save_png(img: &image::RgbImage, p: &Path) -> Result<(), AuditError> {
    img.save_with_format(p, image::ImageFormat::Png)
        .map_err(|e| err(format!("{}: {e}", p.display())))
}

/// Originals in the first column, then per split the strongest attack's reconstructions.
pub fn grid(report: &AuditReport, gallery: &Gallery) -> Result<image::RgbImage, AuditError> {
    font();
    // Every image is shown 84 pixels tall (28×28 at 3×), nearest-sampled; RGB in colour.
    let (side, gap, head) = (84u32, 6u32, 44u32);
    let [ic, ih, iw] = gallery.shape;
    let plane = ih * iw;
    let cols = 1 + gallery.rows.len() as u32;
    let rows = gallery.originals.len() as u32;
    let (w, h) = (gap + cols * (side + gap), head + rows * (side + gap));
    let mut buf = vec![255u8; (w * h * 3) as usize];
    let mut blit = |col: u32, row: u32, px: &[f32]| {
        let (x0, y0) = (gap + col * (side + gap), head + row * (side + gap));
        for y in 0..side {
            for x in 0..side {
                let (sy, sx) = (
                    y as usize * ih / side as usize,
                    x as usize * iw / side as usize,
                );
                let o = (((y0 + y) * w + x0 + x) * 3) as usize;
                for k in 0..3 {
                    let v = px[(k % ic) * plane + sy * iw + sx];
                    buf[o + k] = (v.clamp(0.0, 1.0) * 255.0).round() as u8;
                }
            }
        }
    };
    for (r, x) in gallery.originals.iter().enumerate() {
        blit(0, r as u32, x);
    }
    for (c, (_, _, recons)) in gallery.rows.iter().enumerate() {
        for (r, x) in recons.iter().enumerate() {
            blit(1 + c as u32, r as u32, x);
        }
    }
    {
        let root = BitMapBackend::with_buffer(&mut buf, (w, h)).into_drawing_area();
        let big = (FAMILY, 15).into_font().color(&BLACK);
        let small = (FAMILY, 12).into_font().color(&RGBColor(60, 60, 60));
        let x_of = |c: u32| (gap + c * (side + gap)) as i32;
        root.draw_text("input", &big, (x_of(0), 6)).map_err(err)?;
        for (c, (split, attack, _)) in gallery.rows.iter().enumerate() {
            let ssim = report
                .layers
                .iter()
                .find(|l| l.split == *split)
                .map_or(f64::NAN, |l| l.strongest().ssim);
            let x = x_of(1 + c as u32);
            root.draw_text(&format!("split {split}"), &big, (x, 6))
                .map_err(err)?;
            root.draw_text(&format!("{attack} {ssim:.2}"), &small, (x, 24))
                .map_err(err)?;
        }
        root.present().map_err(err)?;
    }
    image::RgbImage::from_raw(w, h, buf).ok_or_else(|| err("grid buffer size"))
}

/// SSIM of each attack, the model's accuracy on the strongest reconstructions and the highest
/// identification rate per split,
/// with the policy's SSIM threshold and the class-mean baseline.
pub fn chart(report: &AuditReport) -> Result<image::RgbImage, AuditError> {
    font();
    let (w, h) = (880u32, 520u32);
    let mut buf = vec![255u8; (w * h * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut buf, (w, h)).into_drawing_area();
        let splits: Vec<usize> = report.layers.iter().map(|l| l.split).collect();
        let x_max = splits.iter().copied().max().unwrap_or(0) as f64 + 0.5;
        let title = format!(
            "{}: attacks per split ({} scored images)",
            report.model, report.eval_images
        );
        let mut ch = ChartBuilder::on(&root)
            .caption(title, (FAMILY, 18))
            .margin(12)
            .x_label_area_size(44)
            .y_label_area_size(52)
            .build_cartesian_2d(-0.5f64..x_max, 0f64..1.05f64)
            .map_err(err)?;
        let names: Vec<(usize, String)> = report
            .layers
            .iter()
            .map(|l| (l.split, l.last_node.clone()))
            .collect();
        ch.configure_mesh()
            .x_labels(splits.len() + 1)
            .x_label_formatter(&|x| {
                let k = x.round() as usize;
                match names.iter().find(|(s, _)| *s == k) {
                    Some((s, n)) if (x - *s as f64).abs() < 1e-6 => format!("{s} ({n})"),
                    _ => String::new(),
                }
            })
            .x_desc("split: linear layers in the enclave (last enclave node)")
            .y_desc("score")
            .label_style((FAMILY, 12))
            .axis_desc_style((FAMILY, 14))
            .draw()
            .map_err(err)?;
        let attacks = [
            ("decoder", RGBColor(31, 119, 180)),
            ("cgan", RGBColor(214, 39, 40)),
            ("white-box", RGBColor(44, 160, 44)),
            ("combined", RGBColor(255, 127, 14)),
        ];
        for (name, color) in attacks {
            let pts: Vec<(f64, f64)> = report
                .layers
                .iter()
                .filter_map(|l| {
                    l.attacks
                        .iter()
                        .find(|a| a.attack == name)
                        .map(|a| (l.split as f64, a.ssim))
                })
                .collect();
            ch.draw_series(LineSeries::new(pts.clone(), color.stroke_width(2)))
                .map_err(err)?
                .label(format!("SSIM, {name}"))
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
                });
            ch.draw_series(pts.iter().map(|&p| Circle::new(p, 4, color.filled())))
                .map_err(err)?;
        }
        let acc: Vec<(f64, f64)> = report
            .layers
            .iter()
            .map(|l| (l.split as f64, l.strongest().accuracy))
            .collect();
        let purple = RGBColor(148, 103, 189);
        ch.draw_series(LineSeries::new(acc.clone(), purple.stroke_width(2)))
            .map_err(err)?
            .label("model accuracy on strongest reconstructions")
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 18, y)], purple.stroke_width(2))
            });
        ch.draw_series(
            acc.iter()
                .map(|&p| TriangleMarker::new(p, 5, purple.filled())),
        )
        .map_err(err)?;
        // The highest identification rate of any attack per split (audits that measured it).
        let ident: Vec<(f64, f64)> = report
            .layers
            .iter()
            .filter_map(|l| {
                let m = l
                    .attacks
                    .iter()
                    .filter_map(|a| a.identification)
                    .reduce(f64::max)?;
                Some((l.split as f64, m))
            })
            .collect();
        if !ident.is_empty() {
            let brown = RGBColor(140, 86, 75);
            ch.draw_series(LineSeries::new(ident.clone(), brown.stroke_width(2)))
                .map_err(err)?
                .label("identification rate (highest of the attacks)")
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 18, y)], brown.stroke_width(2))
                });
            ch.draw_series(ident.iter().map(|&p| {
                Rectangle::new(
                    [(p.0 - 0.08, p.1 - 0.015), (p.0 + 0.08, p.1 + 0.015)],
                    brown.filled(),
                )
            }))
            .map_err(err)?;
        }
        let hline = |y: f64| vec![(-0.5, y), (x_max, y)];
        let grey = RGBColor(90, 90, 90);
        ch.draw_series(DashedLineSeries::new(
            hline(report.policy.max_ssim),
            8,
            5,
            grey.stroke_width(2),
        ))
        .map_err(err)?
        .label(format!("policy: max SSIM {:.2}", report.policy.max_ssim))
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], grey.stroke_width(2)));
        let light = RGBColor(170, 170, 170);
        ch.draw_series(DashedLineSeries::new(
            hline(report.baselines.class_mean_ssim),
            3,
            4,
            light.stroke_width(2),
        ))
        .map_err(err)?
        .label(format!(
            "SSIM of the class-mean image (label only) {:.2}",
            report.baselines.class_mean_ssim
        ))
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], light.stroke_width(2)));
        if let Some(k) = report.recommended_split {
            let green = RGBColor(0, 120, 0);
            ch.draw_series(std::iter::once(PathElement::new(
                vec![(k as f64, 0.0), (k as f64, 1.05)],
                green.stroke_width(1),
            )))
            .map_err(err)?
            .label(format!("recommended split {k}"))
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 18, y)], green.stroke_width(1))
            });
        }
        ch.configure_series_labels()
            .position(SeriesLabelPosition::LowerLeft)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .label_font((FAMILY, 12))
            .draw()
            .map_err(err)?;
        root.present().map_err(err)?;
    }
    image::RgbImage::from_raw(w, h, buf).ok_or_else(|| err("chart buffer size"))
}
