//! Random views of a training image: crop, flip, and (for two-view training) the stronger
//! changes contrastive methods rely on — a resized crop, colour jitter, grey.
//!
//! A view is drawn in a fixed order, each step drawing from the generator only when it is on:
//!
//! ```text
//!   resized crop ─▶ padded crop + flip ─▶ colour jitter ─▶ grey
//!   (min_scale)     (crop_padding, hflip)  (color_jitter)    (grayscale)
//! ```
//!
//! so a config without the newer steps draws exactly what it drew before they existed, and a
//! run saved before them resumes on the same batches.

use super::{IMAGE_BYTES, Rgb32};
use image::{RgbImage, imageops};
use rand::{Rng, rngs::StdRng};

/// How a training view is drawn from an image. Every field is off by default, and a config's
/// `[augment]` table names only the ones it turns on.
#[derive(Debug, Clone, Copy, Default, serde::Serialize, serde::Deserialize, PartialEq)]
#[serde(default)]
pub struct Augment {
    /// Pixels of zero padding before a random 32×32 crop (0 = off).
    pub crop_padding: usize,
    /// Flip horizontally with probability 0.5.
    pub hflip: bool,
    /// Random resized crop: a region of `min_scale..=1` of the area, aspect ratio 3/4..4/3,
    /// resized back to 32×32 (bilinear). 0 = off.
    #[serde(skip_serializing_if = "is_zero")]
    pub min_scale: f32,
    /// Strength `s` of colour jitter: brightness, contrast and saturation each scaled by a
    /// factor drawn from `[1 − s, 1 + s]` (hue is left alone). 0 = off.
    #[serde(skip_serializing_if = "is_zero")]
    pub color_jitter: f32,
    /// Probability of turning the view grey (its luma in all three channels).
    #[serde(skip_serializing_if = "is_zero")]
    pub grayscale: f32,
}

fn is_zero(v: &f32) -> bool {
    *v == 0.0
}

/// ITU-R BT.601 luma, as torchvision's `rgb_to_grayscale`.
fn luma(p: [f32; 3]) -> f32 {
    0.299 * p[0] + 0.587 * p[1] + 0.114 * p[2]
}

impl Augment {
    /// Whether any step is on (an identity `Augment` leaves images and the generator alone).
    pub fn is_identity(&self) -> bool {
        *self == Self::default()
    }

    /// A random view of `img`, and whether it was mirrored (a distillation teacher that embedded
    /// the mirrored image too hands the student the matching row).
    pub fn apply(&self, img: &Rgb32, rng: &mut StdRng) -> (Rgb32, bool) {
        let resized;
        let img = if self.min_scale > 0.0 {
            resized = resized_crop(img, self.min_scale, rng);
            &resized
        } else {
            img
        };
        let (mut out, flip) = self.crop_and_flip(img, rng);
        if self.color_jitter > 0.0 {
            jitter_colour(&mut out, self.color_jitter, rng);
        }
        if self.grayscale > 0.0 && rng.random_bool(f64::from(self.grayscale.min(1.0))) {
            to_grey(&mut out);
        }
        (out, flip)
    }

    fn crop_and_flip(&self, img: &Rgb32, rng: &mut StdRng) -> (Rgb32, bool) {
        let p = self.crop_padding as isize;
        let (ox, oy) = if p > 0 { (rng.random_range(0..=2 * p as i64) as isize - p, rng.random_range(0..=2 * p as i64) as isize - p) } else { (0, 0) };
        let flip = self.hflip && rng.random_bool(0.5);
        let mut out = [0u8; IMAGE_BYTES];
        for y in 0..32isize {
            for x in 0..32isize {
                let sx = if flip { 31 - x } else { x } + ox;
                let sy = y + oy;
                if (0..32).contains(&sx) && (0..32).contains(&sy) {
                    let (d, s) = ((y * 32 + x) as usize * 3, (sy * 32 + sx) as usize * 3);
                    out[d..d + 3].copy_from_slice(&img[s..s + 3]);
                }
            }
        }
        (out, flip)
    }
}

/// A region of `min_scale..=1` of the image's area with aspect ratio in 3/4..4/3 (drawn in log
/// space, as torchvision's `RandomResizedCrop`), resized to 32×32 with a bilinear filter.
fn resized_crop(img: &Rgb32, min_scale: f32, rng: &mut StdRng) -> Rgb32 {
    let area = rng.random_range(min_scale.min(1.0)..=1.0) * 1024.0;
    let ratio = rng.random_range((0.75f32).ln()..=(4.0f32 / 3.0).ln()).exp();
    let w = ((area * ratio).sqrt().round() as u32).clamp(1, 32);
    let h = ((area / ratio).sqrt().round() as u32).clamp(1, 32);
    let (x, y) = (rng.random_range(0..=32 - w), rng.random_range(0..=32 - h));
    let src = RgbImage::from_raw(32, 32, img.to_vec()).expect("a 32×32 RGB image is 3,072 bytes");
    let region = imageops::crop_imm(&src, x, y, w, h).to_image();
    let view = imageops::resize(&region, 32, 32, imageops::FilterType::Triangle);
    let mut out = [0u8; IMAGE_BYTES];
    out.copy_from_slice(view.as_raw());
    out
}

/// Brightness, contrast and saturation, each by a factor in `[1 − s, 1 + s]`, in that order
/// (torchvision draws the order at random; a fixed one keeps this short and changes little).
fn jitter_colour(img: &mut Rgb32, s: f32, rng: &mut StdRng) {
    let mut factor = || rng.random_range((1.0 - s).max(0.0)..=1.0 + s);
    let (brightness, contrast, saturation) = (factor(), factor(), factor());
    // On the stack: this runs for every view the loader draws.
    let mut px = [[0f32; 3]; IMAGE_BYTES / 3];
    for (p, src) in px.iter_mut().zip(img.chunks_exact(3)) {
        *p = [src[0], src[1], src[2]].map(|v| f32::from(v) * brightness);
    }
    // Contrast blends with the image's mean grey, saturation with each pixel's own grey.
    let mean = px.iter().map(|&p| luma(p)).sum::<f32>() / px.len() as f32;
    for p in &mut px {
        *p = p.map(|v| (v - mean) * contrast + mean);
        let g = luma(*p);
        *p = p.map(|v| (v - g) * saturation + g);
    }
    for (dst, p) in img.chunks_exact_mut(3).zip(px) {
        for (d, v) in dst.iter_mut().zip(p) {
            *d = v.round().clamp(0.0, 255.0) as u8;
        }
    }
}

fn to_grey(img: &mut Rgb32) {
    for p in img.chunks_exact_mut(3) {
        let g = luma([p[0], p[1], p[2]].map(f32::from)).round().clamp(0.0, 255.0) as u8;
        p.fill(g);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn flat(rgb: [u8; 3]) -> Rgb32 {
        let mut img = [0u8; IMAGE_BYTES];
        img.chunks_exact_mut(3).for_each(|p| p.copy_from_slice(&rgb));
        img
    }

    #[test]
    fn flip_and_crop_move_pixels() {
        let mut img = [0u8; IMAGE_BYTES];
        img[0] = 255; // red at (0, 0)
        let mut rng = StdRng::seed_from_u64(0);
        let views: Vec<(Rgb32, bool)> = (0..20).map(|_| Augment { hflip: true, ..Augment::default() }.apply(&img, &mut rng)).collect();
        for (view, flip) in &views {
            // The flag says which way the pixel went: mirrored to x = 31, or left at x = 0.
            assert_eq!((view[31 * 3], view[0]), if *flip { (255, 0) } else { (0, 255) });
        }
        assert!(views.iter().any(|v| v.1) && views.iter().any(|v| !v.1), "both orientations within 20 draws");
        let (cropped, flip) = Augment { crop_padding: 4, ..Augment::default() }.apply(&img, &mut rng);
        assert!(cropped.iter().filter(|&&v| v == 255).count() <= 1);
        assert!(!flip, "no mirror without hflip");
    }

    /// The newer steps, off, draw nothing: a run saved before they existed sees the same views.
    #[test]
    fn steps_that_are_off_leave_the_generator_alone() {
        let img: Rgb32 = std::array::from_fn(|i| (i * 7 % 256) as u8);
        let old = Augment { crop_padding: 2, hflip: true, ..Augment::default() };
        let (mut a, mut b) = (StdRng::seed_from_u64(5), StdRng::seed_from_u64(5));
        let views: Vec<_> = (0..8).map(|_| old.apply(&img, &mut a)).collect();
        let again: Vec<_> = (0..8).map(|_| old.crop_and_flip(&img, &mut b)).collect();
        assert_eq!(views, again);
        let json = serde_json::to_string(&old).unwrap();
        assert_eq!(json, r#"{"crop_padding":2,"hflip":true}"#, "saved configs keep their old form");
        assert_eq!(serde_json::from_str::<Augment>(&json).unwrap(), old);
    }

    /// Hand-computed: jitter on a flat grey image can only change its brightness (contrast and
    /// saturation blend with a grey it already is), by a factor within `1 ± s`.
    #[test]
    fn jitter_on_grey_is_brightness_within_its_range() {
        let mut rng = StdRng::seed_from_u64(1);
        let mut seen = Vec::new();
        for _ in 0..50 {
            let mut img = flat([100, 100, 100]);
            jitter_colour(&mut img, 0.4, &mut rng);
            assert!(img.chunks_exact(3).all(|p| p[0] == p[1] && p[1] == p[2] && p[0] == img[0]), "still flat grey");
            assert!((60..=140).contains(&img[0]), "100 × [0.6, 1.4]: {}", img[0]);
            seen.push(img[0]);
        }
        assert!(seen.iter().min().unwrap() < &80 && seen.iter().max().unwrap() > &120, "the range is used: {seen:?}");
    }

    #[test]
    fn saturation_and_grey_follow_luma() {
        let mut img = flat([200, 100, 0]);
        to_grey(&mut img);
        // 0.299·200 + 0.587·100 = 118.5 → 119 (rounded half away from zero).
        assert!(img.iter().all(|&v| v == 119), "{:?}", &img[..3]);
        let always = Augment { grayscale: 1.0, ..Augment::default() };
        let (view, _) = always.apply(&flat([200, 100, 0]), &mut StdRng::seed_from_u64(0));
        assert_eq!(view, img);
    }

    #[test]
    fn resized_crops_keep_flat_images_flat_and_zoom_in() {
        let mut rng = StdRng::seed_from_u64(2);
        let view = resized_crop(&flat([10, 20, 30]), 0.1, &mut rng);
        assert_eq!(view, flat([10, 20, 30]), "resampling a flat image changes nothing");
        // Left half black, right half white: a crop that zooms in shifts the share of white
        // away from one half (either way), and no view has values outside the source's range
        // by more than the filter's rounding.
        let halves: Rgb32 = std::array::from_fn(|i| if (i / 3) % 32 < 16 { 0 } else { 255 });
        let shares: Vec<f32> =
            (0..40).map(|_| resized_crop(&halves, 0.05, &mut rng).iter().map(|&b| f32::from(b) / 255.0).sum::<f32>() / IMAGE_BYTES as f32).collect();
        assert!(shares.iter().any(|&s| s < 0.4) && shares.iter().any(|&s| s > 0.6), "{shares:?}");
        assert_eq!(resized_crop(&halves, 1.0, &mut StdRng::seed_from_u64(3)).len(), IMAGE_BYTES);
    }
}
