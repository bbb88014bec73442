//! The no_std int8 engine: runs a quantized encoder from a [`blob`] with a caller-provided arena.
//!
//! It computes what tract computes for the same `trainer quantize` output (see `tests/engine.rs`):
//! - image: `q = clamp(round_even(x · (1/s)) + 128, 0, 255)` with `x` from
//!   [`crate::preprocess::rgb32_to_input`] — tract's `QuantizeLinear`;
//! - convolutions (and fc, a convolution over the whole map): exact int32
//!   `acc = bias + Σ (x − x_zero)·w` (padding contributes 0), then
//!   `clamp(round_even(|acc|·m)·sign(acc), 0, 255)` with `m = (w_scale·x_scale)·(1/y_scale)` in f32
//!   — tract's `Scale` op, with the same f32 operations in the same order;
//! - `tiny`'s global average pool: dequantize, mean in f32, quantize. tract sums in another
//!   order, so a pooled value that lands on a rounding boundary may differ by 1 LSB;
//! - y: exact int32 `Σ x·w`, then `f32(acc)·rescale + bias`.
//!
//! Activations live in two halves of the arena (ping-pong), and a convolution's gathered column
//! ([`dsp`]) after them; nothing is allocated.

pub mod blob;
pub mod dsp;
pub mod ops;

pub use blob::Model;
use ops::{conv2d, round_even};

/// Why a blob or a run was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum EngineError {
    /// The bytes do not start with the blob's magic.
    #[error("not a dim-edge model blob (bad magic)")]
    NotABlob,
    /// A blob of another format version.
    #[error("blob version {found}; this engine reads version {supported}")]
    Version {
        /// The blob's version.
        found: u16,
        /// The version this engine reads.
        supported: u16,
    },
    /// Fewer bytes than the header or a layer says.
    #[error("the blob is truncated")]
    Truncated,
    /// More bytes than the payload.
    #[error("the blob has bytes after its payload")]
    TrailingBytes,
    /// The payload's CRC-32 differs from the header's.
    #[error("the blob's checksum does not match its payload")]
    Checksum,
    /// Shapes or scales that no encoder has.
    #[error("invalid blob: {0}")]
    Invalid(&'static str),
    /// [`Model::run`] was given a smaller arena than [`Model::arena_size`].
    #[error("the arena holds {got} bytes; this model needs {need}")]
    ArenaTooSmall {
        /// Bytes needed.
        need: usize,
        /// Bytes given.
        got: usize,
    },
    /// [`Model::run`] was given an output of another width than [`Model::dim`].
    #[error("the output holds {got} values; this model writes {need}")]
    Output {
        /// Values written.
        need: usize,
        /// Values given.
        got: usize,
    },
}

impl Model<'_> {
    /// Bytes of the activation sizes, in order: image, conv1..3, (pool), fc.
    fn activations(&self) -> impl Iterator<Item = usize> + '_ {
        let conv = |c: &blob::Conv| c.out * c.out_side * c.out_side;
        core::iter::once(crate::RGB32_LEN)
            .chain(self.convs.iter().map(conv))
            .chain(self.pool_scale.map(|_| self.convs[2].out))
            .chain(core::iter::once(conv(&self.fc)))
    }

    /// Bytes of the two activation halves: the largest even-numbered activation plus the
    /// largest odd-numbered one (they alternate).
    fn activation_bytes(&self) -> usize {
        let (mut even, mut odd) = (0, 0);
        for (i, n) in self.activations().enumerate() {
            if i % 2 == 0 { even = even.max(n) } else { odd = odd.max(n) }
        }
        even + odd
    }

    /// Words of the widest gathered column ([`dsp::column_words`]) of the convolutions and fc.
    fn column_words(&self) -> usize {
        self.convs.iter().chain(core::iter::once(&self.fc)).map(|c| dsp::column_words(c.inp * c.kernel * c.kernel)).max().unwrap_or(0)
    }

    /// Bytes of the column: its words, and up to 3 bytes to align them in the caller's arena.
    fn column_bytes(&self) -> usize {
        4 * self.column_words() + 3
    }

    /// Arena bytes [`Model::run`] needs: the two activation halves and one gathered column.
    pub fn arena_size(&self) -> usize {
        self.activation_bytes() + self.column_bytes()
    }

    /// Width of the embedding.
    pub fn dim(&self) -> usize {
        self.y.out
    }

    /// Embeds one 32×32 RGB image (HWC, u8: see [`crate::preprocess::to_rgb32`]) into `y`.
    pub fn run(&self, rgb: &crate::Rgb32, arena: &mut [u8], y: &mut [f32]) -> Result<(), EngineError> {
        self.run_observed(rgb, arena, y, |_, _| ())
    }

    /// [`Model::run`], calling `seen(i, activation)` with each uint8 activation (CHW) in order:
    /// image, conv1, conv2, conv3, (pool), fc — to compare layers with another runtime.
    pub fn run_observed(&self, rgb: &crate::Rgb32, arena: &mut [u8], y: &mut [f32], mut seen: impl FnMut(usize, &[u8])) -> Result<(), EngineError> {
        let (need, arena_len) = (self.arena_size(), arena.len());
        if arena_len < need {
            return Err(EngineError::ArenaTooSmall { need, got: arena_len });
        }
        if y.len() != self.y.out {
            return Err(EngineError::Output { need: self.y.out, got: y.len() });
        }
        let (acts, col) = arena[..need].split_at_mut(self.activation_bytes());
        // The column as aligned words (the arena is bytes at any address).
        let skip = col.as_ptr().align_offset(4).min(3);
        let col: &mut [u32] =
            bytemuck::try_cast_slice_mut(&mut col[skip..skip + 4 * self.column_words()]).map_err(|_| EngineError::ArenaTooSmall { need, got: arena_len })?;
        let (mut a, mut b) = acts.split_at_mut(self.activations().step_by(2).max().unwrap_or(0));
        self.quantize_image(rgb, a);
        let sizes: heapless::Vec<usize, 6> = self.activations().collect();
        seen(0, &a[..sizes[0]]);
        for (i, conv) in self.convs.iter().enumerate() {
            conv2d(conv, a, col, b);
            core::mem::swap(&mut a, &mut b);
            seen(i + 1, &a[..sizes[i + 1]]);
        }
        if let Some(pool_scale) = self.pool_scale {
            let c3 = &self.convs[2];
            ops::average_pool(a, c3.out, c3.out_side * c3.out_side, c3.y_scale, pool_scale, b);
            core::mem::swap(&mut a, &mut b);
            seen(4, &a[..sizes[4]]);
        }
        conv2d(&self.fc, a, col, b);
        seen(sizes.len() - 1, &b[..sizes[sizes.len() - 1]]);
        ops::dense(&self.y, &b[..self.y.inp], y);
        Ok(())
    }

    /// The image as the first convolution reads it, CHW uint8 into `out[..RGB32_LEN]`: the same
    /// f32 values as the trainer's input, then tract's QuantizeLinear.
    pub fn quantize_image(&self, rgb: &crate::Rgb32, out: &mut [u8]) {
        let inv = self.image_scale.recip();
        let plane = crate::INPUT_SIDE * crate::INPUT_SIDE;
        for i in 0..plane {
            for c in 0..3 {
                out[c * plane + i] = quantize_value(rgb[i * 3 + c], inv);
            }
        }
    }

    /// One pixel value as [`Model::quantize_image`] quantizes it (the same for every channel).
    pub fn quantize_pixel(&self, v: u8) -> u8 {
        quantize_value(v, self.image_scale.recip())
    }

    /// `y` as int8 with the blob's symmetric print scale (what the firmware prints).
    pub fn quantize_output(&self, y: &[f32], out: &mut [i8]) {
        let inv = self.y.print_scale.recip();
        for (o, v) in out.iter_mut().zip(y) {
            *o = round_even(v * inv).clamp(-127.0, 127.0) as i8;
        }
    }
}

/// A pixel value scaled as the trainer's input, then tract's QuantizeLinear with `inv` = 1/scale
/// and zero point 128.
fn quantize_value(v: u8, inv: f32) -> u8 {
    (round_even(crate::preprocess::scale_u8(v) * inv) + 128.0).clamp(0.0, 255.0) as u8
}
