//! `shapes`: a built-in, procedurally generated image set so the main job runs on a machine with
//! no data. Ten classes, each a shape in its own hue family, with random size, position,
//! saturation and brightness over a random textured background. Image `i` depends only on
//! `(seed, i)`, so any subset can be made on demand, in any order, on any thread.

use super::{DataError, ImageSource, Rgb32};
use rand::{Rng, SeedableRng, rngs::StdRng};

const NAMES: [&str; 10] = ["disc", "square", "triangle", "cross", "ring", "hbar", "vbar", "diamond", "x", "checker"];

pub struct Shapes {
    len: usize,
    seed: u64,
    classes: Vec<String>,
}

impl Shapes {
    pub fn new(len: usize, seed: u64) -> Self {
        Self { len, seed, classes: NAMES.iter().map(|s| s.to_string()).collect() }
    }
}

/// Whether point `(dx, dy)` (relative to the centre, in units of the radius `r`) is inside shape `class`.
fn inside(class: usize, dx: f32, dy: f32, r: f32) -> bool {
    let (ax, ay) = (dx.abs(), dy.abs());
    match class {
        0 => dx * dx + dy * dy <= r * r,
        1 => ax <= r * 0.8 && ay <= r * 0.8,
        2 => dy <= r * 0.7 && dy >= -r && ax <= (dy + r) * 0.6,
        3 => (ax <= r * 0.25 && ay <= r) || (ay <= r * 0.25 && ax <= r),
        4 => (dx * dx + dy * dy).sqrt() <= r && (dx * dx + dy * dy).sqrt() >= r * 0.55,
        5 => ay <= r * 0.3 && ax <= r,
        6 => ax <= r * 0.3 && ay <= r,
        7 => ax + ay <= r,
        8 => (ax - ay).abs() <= r * 0.3 && ax <= r,
        _ => ax <= r && ay <= r && (((dx + r) / (r * 0.5)) as i32 + ((dy + r) / (r * 0.5)) as i32) % 2 == 0,
    }
}

impl ImageSource for Shapes {
    fn len(&self) -> usize {
        self.len
    }
    fn label(&self, i: usize) -> usize {
        i % 10
    }
    fn classes(&self) -> &[String] {
        &self.classes
    }
    fn load(&self, i: usize) -> Result<Rgb32, DataError> {
        let mut rng = StdRng::seed_from_u64(self.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ i as u64);
        let class = self.label(i);
        let bg: [f32; 3] = std::array::from_fn(|_| rng.random_range(0.0..110.0));
        // The class sets the shape and the hue family of the foreground (class × 36°, ± 12°),
        // so both form and colour carry the label; background, texture and layout do not.
        let hue = class as f32 * 36.0 + rng.random_range(-12.0..12.0f32);
        let (sat, val) = (rng.random_range(0.6..1.0f32), rng.random_range(180.0..255.0f32));
        let fg: [f32; 3] = std::array::from_fn(|c| {
            let k = (hue / 60.0 + [5.0, 3.0, 1.0][c]) % 6.0;
            val * (1.0 - sat * k.min(4.0 - k).clamp(0.0, 1.0))
        });
        let (freq, phase, angle) = (rng.random_range(0.2..1.2f32), rng.random_range(0.0..6.3f32), rng.random_range(0.0..3.2f32));
        let r = rng.random_range(7.0..13.0f32);
        let (cx, cy) = (rng.random_range(r..32.0 - r), rng.random_range(r..32.0 - r));
        let mut out = [0u8; super::IMAGE_BYTES];
        for y in 0..32 {
            for x in 0..32 {
                let (fx, fy) = (x as f32 + 0.5, y as f32 + 0.5);
                let stripe = ((fx * angle.cos() + fy * angle.sin()) * freq + phase).sin() * 25.0;
                let noise: f32 = rng.random_range(-12.0..12.0);
                let on = inside(class, fx - cx, fy - cy, r);
                for c in 0..3 {
                    let v = if on { fg[c] + noise * 0.5 } else { bg[c] + stripe + noise };
                    out[(y * 32 + x) * 3 + c] = v.clamp(0.0, 255.0) as u8;
                }
            }
        }
        Ok(out)
    }
    fn describe(&self) -> String {
        format!("built-in synthetic shapes, {} images (seed {})", self.len, self.seed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_varied_and_labelled() {
        let a = Shapes::new(100, 1);
        assert_eq!(a.load(17).unwrap(), Shapes::new(100, 1).load(17).unwrap());
        assert_ne!(a.load(17).unwrap(), Shapes::new(100, 2).load(17).unwrap());
        assert_ne!(a.load(17).unwrap(), a.load(27).unwrap());
        assert_eq!(a.label(17), 7);
        // Foreground covers a real share of the image for every class.
        for class in 0..10 {
            let r = 10.0;
            let n = (0..32 * 32).filter(|p| inside(class, (p % 32) as f32 - 16.0, (p / 32) as f32 - 16.0, r)).count();
            assert!((40..500).contains(&n), "class {class} covers {n} pixels");
        }
    }
}
