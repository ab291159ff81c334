//! `origami bench --chart`: one stacked bar per placement — time in the enclave, in the
//! blinded layers on the accelerator, in the plain tail, and the rest (host-side copies,
//! sealing, scheduling) — with its median and its ratios to the all-in-TEE baselines written
//! above it, so a reader sees where a private request's time goes.

use std::path::Path;

use anyhow::{anyhow, Context, Result};
use origami_host::bench::PlacementResult;
use plotters::prelude::*;

/// Draws the chart of `results` (ratios as `bench` computed them) into the PNG `path`.
pub fn write(
    title: &str,
    results: &[PlacementResult],
    ratios: &serde_json::Map<String, serde_json::Value>,
    path: &Path,
) -> Result<()> {
    let img = draw(title, results, ratios)?;
    origami_model::atomic::write_with(
        path,
        |p| {
            img.save_with_format(p, image::ImageFormat::Png)
                .map_err(|e| anyhow!("{}: {e}", p.display()))
        },
        |p, e| anyhow!("{}: {e}", p.display()),
    )
    .with_context(|| format!("writing {}", path.display()))
}

fn draw(
    title: &str,
    results: &[PlacementResult],
    ratios: &serde_json::Map<String, serde_json::Value>,
) -> Result<image::RgbImage> {
    let family = origami_audit::report::font_family();
    let n = results.len().max(1);
    let (w, h) = (160 * n as u32 + 160, 560u32);
    let mut buf = vec![255u8; (w * h * 3) as usize];
    let err = |e: &dyn std::fmt::Display| anyhow!("drawing the chart: {e}");
    {
        let root = BitMapBackend::with_buffer(&mut buf, (w, h)).into_drawing_area();
        let top = results
            .iter()
            .map(|r| r.per_image_ms)
            .fold(1.0f64, f64::max)
            * 1.3;
        let mut ch = ChartBuilder::on(&root)
            .caption(title, (family, 16))
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(60)
            .build_cartesian_2d(0f64..n as f64, 0f64..top)
            .map_err(|e| err(&e))?;
        let names: Vec<String> = results.iter().map(|r| r.placement.clone()).collect();
        ch.configure_mesh()
            .disable_x_mesh()
            .x_labels(n * 2 + 1)
            .x_label_formatter(&|x| {
                let i = x.floor() as usize;
                if (x - i as f64 - 0.5).abs() < 1e-6 {
                    names.get(i).cloned().unwrap_or_default()
                } else {
                    String::new()
                }
            })
            .y_desc("ms per image (median)")
            .label_style((family, 12))
            .axis_desc_style((family, 13))
            .draw()
            .map_err(|e| err(&e))?;
        let parts = [
            ("enclave", RGBColor(31, 119, 180)),
            ("blinded layers (accelerator)", RGBColor(255, 127, 14)),
            ("plain tail (accelerator)", RGBColor(44, 160, 44)),
            ("other (host)", RGBColor(170, 170, 170)),
        ];
        for (pi, &(label, color)) in parts.iter().enumerate() {
            let bars: Vec<Rectangle<(f64, f64)>> = results
                .iter()
                .enumerate()
                .map(|(i, r)| {
                    let b = r.batch.max(1) as f64;
                    let seg = [
                        r.enclave_ms / b,
                        r.field_ms / b,
                        r.tail_ms / b,
                        (r.per_image_ms - (r.enclave_ms + r.field_ms + r.tail_ms) / b).max(0.0),
                    ];
                    let y0: f64 = seg[..pi].iter().sum();
                    let x = i as f64;
                    Rectangle::new([(x + 0.2, y0), (x + 0.8, y0 + seg[pi])], color.filled())
                })
                .collect();
            ch.draw_series(bars)
                .map_err(|e| err(&e))?
                .label(label)
                .legend(move |(x, y)| {
                    Rectangle::new([(x, y - 5), (x + 12, y + 5)], color.filled())
                });
        }
        for (i, r) in results.iter().enumerate() {
            let mut lines = vec![format!("{:.1} ms", r.per_image_ms)];
            for base in ["enclave", origami_host::bench::TEE_PLAIN] {
                if let Some(v) = ratios
                    .get(&format!("{base}/{}", r.placement))
                    .and_then(|v| v.as_f64())
                {
                    lines.push(format!("{base}/this {v:.2}x"));
                }
            }
            for (li, line) in lines.iter().enumerate() {
                let y = r.per_image_ms + top * (0.02 + 0.045 * (lines.len() - 1 - li) as f64);
                ch.draw_series(std::iter::once(Text::new(
                    line.clone(),
                    (i as f64 + 0.12, y + top * 0.03),
                    (family, 11).into_font(),
                )))
                .map_err(|e| err(&e))?;
            }
        }
        ch.configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .label_font((family, 12))
            .draw()
            .map_err(|e| err(&e))?;
        root.present().map_err(|e| err(&e))?;
    }
    image::RgbImage::from_raw(w, h, buf).ok_or_else(|| anyhow!("chart buffer size"))
}
