//! Writing an evaluation: JSON (the reference `check` reads), a Markdown table, PNG curves.

use super::{Measure, Report};
use plotters::prelude::*;
use std::path::{Path, PathBuf};

/// A line of (x, y) points.
pub type Curve = Vec<(f64, f64)>;
/// A legend entry and its curves (one per seed, say), drawn in one colour.
pub type Series<'a> = (&'a str, &'a [Curve]);

/// The Markdown of `report`: a title, then [`measures`].
pub fn markdown(report: &Report) -> String {
    format!("# Evaluation of `{}`\n\n{}", report.model, measures(report))
}

/// What was measured on which images with which settings, and the table of measures.
pub fn measures(report: &Report) -> String {
    let recon = match report.settings.recon_epochs {
        0 => String::new(),
        e => format!(", reconstruction decoders {e} epochs on {} images", report.settings.recon_images),
    };
    let mut s = format!(
        "train: {} ({} images) · test: {} ({} images) · {} seed(s), probe epochs {}, MINE / NDM steps {} / {}{recon}\n\n| measure | mean | std | per seed |\n|---|---|---|---|\n",
        report.train,
        report.train_images,
        report.test,
        report.test_images,
        report.settings.seeds,
        report.settings.probe_epochs,
        report.settings.mine_steps,
        report.settings.ndm_steps
    );
    for m in &report.measures {
        let p = m.unit.decimals();
        let vals: Vec<String> = m.values.iter().map(|v| format!("{v:.p$}")).collect();
        s += &format!("| {} | {:.p$} {} | {:.p$} | {} |\n", m.name, m.mean, m.unit, m.std, vals.join(", "));
    }
    s
}

/// Writes `out` (JSON), `out` with `.md`, and the curve plots `*.probes.png`, `*.estimators.png`.
/// Returns the paths written.
pub fn write(report: &Report, out: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut written = vec![out.to_path_buf(), out.with_extension("md")];
    crate::fs::write_atomic(out, serde_json::to_string_pretty(report)?.as_bytes())?;
    crate::fs::write_atomic(&written[1], markdown(report).as_bytes())?;
    type Pick = fn(&Measure) -> bool;
    let groups: [(&str, &str, Pick); 2] = [
        ("probes", "test accuracy (%) by epoch", |m| m.name.starts_with("probe")),
        ("estimators", "train-batch DV bound (nats) by step", |m| m.unit == super::Unit::Nats),
    ];
    for (suffix, title, pick) in groups {
        let path = out.with_extension(format!("{suffix}.png"));
        let series: Vec<Series> = report.measures.iter().filter(|m| pick(m)).map(|m| (m.name.as_str(), m.curves.as_slice())).collect();
        match plot(&path, title, &series) {
            Ok(()) => written.push(path),
            Err(e) => eprintln!("note: no plot {}: {e}", path.display()),
        }
    }
    Ok(written)
}

/// The font plotters draws text with: DejaVu Sans, compiled in (the `dejavu` crate), so plots
/// come out the same on any OS with no font installed; plotters' `ab_glyph` backend needs the
/// bytes registered once.
fn register_font() -> anyhow::Result<()> {
    static DONE: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    DONE.get_or_init(|| {
        plotters::style::register_font("sans-serif", FontStyle::Normal, dejavu::sans::regular())
            .map_err(|_| "the embedded DejaVu Sans is not a usable font".to_string())
    })
    .clone()
    .map_err(anyhow::Error::msg)
}

/// Size of the charts [`plot`] draws, in pixels.
const PLOT_SIZE: (u32, u32) = (1000, 640);

/// Draws line charts into a PNG file: each series is a name and one or more curves of (x, y)
/// points (one per seed, say), drawn in one colour under one legend entry. plotters draws into
/// memory and `image` encodes the PNG (plotters' own encoder would pull in a second, older
/// `image`); the file is written atomically.
pub fn plot(path: &Path, title: &str, series: &[Series]) -> anyhow::Result<()> {
    let (w, h) = PLOT_SIZE;
    let mut rgb = vec![0u8; w as usize * h as usize * 3];
    draw(&mut rgb, title, series)?;
    let mut png = Vec::new();
    image::ImageEncoder::write_image(image::codecs::png::PngEncoder::new(&mut png), &rgb, w, h, image::ExtendedColorType::Rgb8)?;
    crate::fs::write_atomic(path, &png)
}

fn draw(rgb: &mut [u8], title: &str, series: &[Series]) -> anyhow::Result<()> {
    let points: Vec<&(f64, f64)> = series.iter().flat_map(|(_, curves)| curves.iter().flatten()).collect();
    anyhow::ensure!(!points.is_empty(), "no curves");
    register_font()?;
    let (x0, x1) = points.iter().fold((f64::MAX, f64::MIN), |(a, b), p| (a.min(p.0), b.max(p.0)));
    let (y0, y1) = points.iter().fold((f64::MAX, f64::MIN), |(a, b), p| (a.min(p.1), b.max(p.1)));
    let pad = ((y1 - y0) * 0.05).max(1e-3);
    let root = BitMapBackend::with_buffer(rgb, PLOT_SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(56)
        .build_cartesian_2d(x0..x1.max(x0 + 1.0), (y0 - pad)..(y1 + pad))
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    chart.configure_mesh().draw().map_err(|e| anyhow::anyhow!("{e:?}"))?;
    for (i, &(name, curves)) in series.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        for (s, curve) in curves.iter().enumerate() {
            let drawn = chart.draw_series(LineSeries::new(curve.iter().copied(), color.stroke_width(2))).map_err(|e| anyhow::anyhow!("{e:?}"))?;
            if s == 0 {
                drawn.label(name).legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2)));
            }
            // A few points (accuracy by training epoch) are measurements, not a sampled curve: mark them.
            if curve.len() <= 12 {
                chart.draw_series(curve.iter().map(|&p| Circle::new(p, 4, color.filled()))).map_err(|e| anyhow::anyhow!("{e:?}"))?;
            }
        }
    }
    chart.configure_series_labels().background_style(WHITE.mix(0.8)).border_style(BLACK).draw().map_err(|e| anyhow::anyhow!("{e:?}"))?;
    root.present().map_err(|e| anyhow::anyhow!("{e:?}"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plots_are_pngs_with_the_curves_in_their_colours() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("curves.png");
        let up: Vec<(f64, f64)> = (0..50).map(|i| (i as f64, i as f64)).collect();
        let flat: Vec<(f64, f64)> = (0..50).map(|i| (i as f64, 25.0)).collect();
        plot(&path, "two curves", &[("rising", &[up][..]), ("flat", &[flat][..])]).unwrap();
        let img = image::open(&path).unwrap().to_rgb8();
        assert_eq!(img.dimensions(), PLOT_SIZE);
        for i in 0..2 {
            let c = Palette99::pick(i).to_rgba();
            let want = [c.0, c.1, c.2];
            let n = img.pixels().filter(|p| p.0 == want).count();
            assert!(n > 500, "series {i}: {n} pixels of its colour");
        }
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1, "no temporary file left");
    }
}
