//! Calibration: the f32 encoder's activation ranges over calibration images, which set the
//! scales of the quantized activations.

use crate::export::Layers;
use dim_runtime::INPUT_LEN;

/// Calibrated ranges of the quantized activations.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Ranges {
    pub relu: [f32; 3],
    pub pool: Option<f32>,
    pub fc: f32,
    /// Largest |y| over the calibration images (the scale y is printed with as int8).
    pub y_abs: f32,
}

pub(crate) fn percentile(mut v: Vec<f32>, p: f64) -> f32 {
    if v.is_empty() {
        return 1.0;
    }
    let k = (((v.len() - 1) as f64) * p / 100.0).round() as usize;
    let (_, x, _) = v.select_nth_unstable_by(k, f32::total_cmp);
    x.max(1e-6)
}

/// Runs the f32 encoder on `images` (`[n, 3, 32, 32]`) and returns the activation ranges.
pub fn calibrate(layers: &Layers, images: &[f32], pct: f64) -> anyhow::Result<Ranges> {
    let mut names = vec!["relu1", "relu2", "relu3", "fc_relu"];
    if layers.global_pool {
        names.push("pool");
    }
    // The same runtime a device uses, asked for the intermediate activations too.
    let bytes = layers.to_onnx(&names);
    let encoder = dim_runtime::Encoder::from_bytes_with_layers(&bytes, &names)?;
    let mut values: Vec<Vec<f32>> = vec![Vec::new(); names.len()];
    let mut y_abs = 0f32;
    let bar = crate::progress::bar(true, images.len() / INPUT_LEN, "images calibrated");
    for chunk in images.chunks(64 * INPUT_LEN) {
        let out = encoder.embed_layers(chunk)?;
        y_abs = out[0].iter().fold(y_abs, |m, v| m.max(v.abs()));
        for (v, layer) in values.iter_mut().zip(&out[1..]) {
            v.extend_from_slice(layer);
        }
        bar.inc((chunk.len() / INPUT_LEN) as u64);
    }
    bar.finish_and_clear();
    let mut r = values.into_iter().map(|v| percentile(v, pct));
    Ok(Ranges { relu: [r.next().unwrap(), r.next().unwrap(), r.next().unwrap()], fc: r.next().unwrap(), pool: r.next(), y_abs })
}
