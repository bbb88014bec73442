//! Image preprocessing shared by the trainer and every runtime.
//!
//! Input: 8-bit pixels in HWC order (RGB, or grey with one channel) of any size.
//! Output: `3 × 32 × 32` f32 in CHW order, scaled to `[-1, 1]`.
//!
//! Geometry: the shorter side is scaled to 32 with bilinear sampling (pixel centres at `+0.5`,
//! edge pixels clamped), then the centre 32×32 is kept. A 32×32 input passes through untouched,
//! so CIFAR-10 pixels reach the model unchanged. Grey images are replicated to three channels.

/// Side of the square model input.
pub const INPUT_SIDE: usize = 32;
/// Channels of the model input.
pub const INPUT_CHANNELS: usize = 3;
/// Number of f32 values in one preprocessed image.
pub const INPUT_LEN: usize = INPUT_CHANNELS * INPUT_SIDE * INPUT_SIDE;
/// Bytes of one 32×32 RGB image, HWC (what cameras and decoders give; the engine's input).
pub const RGB32_LEN: usize = INPUT_SIDE * INPUT_SIDE * 3;
/// One 32×32 RGB image, HWC, 8 bits a channel.
pub type Rgb32 = [u8; RGB32_LEN];

/// Why a buffer could not be preprocessed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PreprocessError {
    /// Width or height is zero.
    Empty,
    /// Only 1 (grey) and 3 (RGB) channels are understood.
    Channels(usize),
    /// `pixels.len()` is not `width * height * channels`.
    Length {
        /// `width · height · channels`.
        expected: usize,
        /// `pixels.len()`.
        got: usize,
    },
    /// The output slice is not [`INPUT_LEN`] long.
    Output(usize),
}

impl core::fmt::Display for PreprocessError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Empty => write!(f, "image has zero width or height"),
            Self::Channels(c) => write!(f, "{c} channels: expected 1 (grey) or 3 (RGB)"),
            Self::Length { expected, got } => {
                write!(f, "pixel buffer holds {got} bytes, expected {expected} (width × height × channels)")
            }
            Self::Output(n) => write!(f, "output holds {n} values, expected {INPUT_LEN}"),
        }
    }
}

impl core::error::Error for PreprocessError {}

/// Maps an 8-bit value to `[-1, 1]`.
#[inline]
pub fn scale_u8(v: u8) -> f32 {
    v as f32 / 127.5 - 1.0
}

/// Resizes and centre-crops `pixels` (HWC, 1 or 3 channels) to a 32×32 RGB image (HWC, u8).
pub fn to_rgb32(pixels: &[u8], width: usize, height: usize, channels: usize, out: &mut Rgb32) -> Result<(), PreprocessError> {
    if width == 0 || height == 0 {
        return Err(PreprocessError::Empty);
    }
    if channels != 1 && channels != 3 {
        return Err(PreprocessError::Channels(channels));
    }
    // A hostile header's width × height × channels can exceed usize: checked, never wrapped.
    let expected = width.checked_mul(height).and_then(|n| n.checked_mul(channels)).unwrap_or(usize::MAX);
    if pixels.len() != expected {
        return Err(PreprocessError::Length { expected, got: pixels.len() });
    }
    let px = |x: usize, y: usize, c: usize| -> f32 {
        let c = if channels == 1 { 0 } else { c };
        pixels[(y * width + x) * channels + c] as f32
    };
    if width == INPUT_SIDE && height == INPUT_SIDE {
        for y in 0..INPUT_SIDE {
            for x in 0..INPUT_SIDE {
                for c in 0..3 {
                    out[(y * INPUT_SIDE + x) * 3 + c] = px(x, y, c) as u8;
                }
            }
        }
        return Ok(());
    }
    // One scale for both axes keeps the aspect ratio; the longer axis is then cropped.
    let scale = width.min(height) as f32 / INPUT_SIDE as f32;
    let off_x = (width as f32 - scale * INPUT_SIDE as f32) / 2.0;
    let off_y = (height as f32 - scale * INPUT_SIDE as f32) / 2.0;
    let sample_axis = |o: usize, off: f32, len: usize| -> (usize, usize, f32) {
        let s = off + (o as f32 + 0.5) * scale - 0.5;
        let s = s.clamp(0.0, (len - 1) as f32);
        let i0 = s as usize; // s >= 0, so truncation is floor
        let i1 = (i0 + 1).min(len - 1);
        (i0, i1, s - i0 as f32)
    };
    for oy in 0..INPUT_SIDE {
        let (y0, y1, fy) = sample_axis(oy, off_y, height);
        for ox in 0..INPUT_SIDE {
            let (x0, x1, fx) = sample_axis(ox, off_x, width);
            for c in 0..3 {
                let top = px(x0, y0, c) * (1.0 - fx) + px(x1, y0, c) * fx;
                let bottom = px(x0, y1, c) * (1.0 - fx) + px(x1, y1, c) * fx;
                let v = top * (1.0 - fy) + bottom * fy;
                out[(oy * INPUT_SIDE + ox) * 3 + c] = (v + 0.5).clamp(0.0, 255.0) as u8;
            }
        }
    }
    Ok(())
}

/// Writes a 32×32 RGB image (HWC, u8) as model input: CHW f32 in `[-1, 1]`.
pub fn rgb32_to_input(rgb: &Rgb32, out: &mut [f32]) -> Result<(), PreprocessError> {
    if out.len() != INPUT_LEN {
        return Err(PreprocessError::Output(out.len()));
    }
    let plane = INPUT_SIDE * INPUT_SIDE;
    for i in 0..plane {
        for c in 0..3 {
            out[c * plane + i] = scale_u8(rgb[i * 3 + c]);
        }
    }
    Ok(())
}

/// Full preprocessing: any-size 8-bit HWC image to model input (CHW f32 in `[-1, 1]`).
pub fn preprocess(pixels: &[u8], width: usize, height: usize, channels: usize, out: &mut [f32]) -> Result<(), PreprocessError> {
    let mut rgb = [0u8; RGB32_LEN];
    to_rgb32(pixels, width, height, channels, &mut rgb)?;
    rgb32_to_input(&rgb, out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_at_native_size_and_scaling_closed_form() {
        let pixels: [u8; 32 * 32 * 3] = core::array::from_fn(|i| (i % 256) as u8);
        let mut rgb = [0u8; 32 * 32 * 3];
        to_rgb32(&pixels, 32, 32, 3, &mut rgb).unwrap();
        assert_eq!(rgb, pixels);
        let mut out = [0f32; INPUT_LEN];
        rgb32_to_input(&rgb, &mut out).unwrap();
        // pixel (0,0) channel 1 is byte 1; channel plane 1 starts at 1024.
        assert_eq!(out[1024], 1.0 / 127.5 - 1.0);
        assert_eq!(scale_u8(0), -1.0);
        assert_eq!(scale_u8(255), 1.0);
    }

    #[test]
    fn downscale_by_two_averages_pixel_pairs() {
        // 64×64 grey where each 2×2 block is constant => 32×32 output equals the blocks.
        let mut grey = [0u8; 64 * 64];
        for y in 0..64 {
            for x in 0..64 {
                grey[y * 64 + x] = ((x / 2 + y / 2) * 3 % 251) as u8;
            }
        }
        let mut rgb = [0u8; 32 * 32 * 3];
        to_rgb32(&grey, 64, 64, 1, &mut rgb).unwrap();
        for y in 0..32 {
            for x in 0..32 {
                let want = ((x + y) * 3 % 251) as u8;
                for c in 0..3 {
                    assert_eq!(rgb[(y * 32 + x) * 3 + c], want, "at ({x},{y},{c})");
                }
            }
        }
    }

    #[test]
    fn wide_image_is_centre_cropped() {
        // 96×32: the centre third is white, the sides black.
        let mut img = [0u8; 96 * 32 * 3];
        for y in 0..32 {
            for x in 32..64 {
                for c in 0..3 {
                    img[(y * 96 + x) * 3 + c] = 255;
                }
            }
        }
        let mut rgb = [0u8; 32 * 32 * 3];
        to_rgb32(&img, 96, 32, 3, &mut rgb).unwrap();
        assert!(rgb.iter().all(|&v| v == 255));
    }

    #[test]
    fn bad_buffers_are_errors() {
        let mut rgb = [0u8; 32 * 32 * 3];
        assert_eq!(to_rgb32(&[0; 10], 0, 5, 3, &mut rgb), Err(PreprocessError::Empty));
        assert_eq!(to_rgb32(&[0; 8], 2, 2, 2, &mut rgb), Err(PreprocessError::Channels(2)));
        assert_eq!(to_rgb32(&[0; 11], 2, 2, 3, &mut rgb), Err(PreprocessError::Length { expected: 12, got: 11 }));
        // Dimensions whose product overflows are refused, not wrapped into a small length.
        let huge = usize::MAX / 2 + 1;
        assert_eq!(to_rgb32(&[0; 12], huge, 4, 3, &mut rgb), Err(PreprocessError::Length { expected: usize::MAX, got: 12 }));
        let mut short = [0f32; 5];
        assert_eq!(rgb32_to_input(&rgb, &mut short), Err(PreprocessError::Output(5)));
    }
}
