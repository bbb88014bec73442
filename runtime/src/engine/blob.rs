//! The model blob: a compact, versioned, checksummed int8 encoder for the no_std engine.
//!
//! Layout (all little-endian; [`write()`] writes it, `trainer quantize --blob` through it):
//!
//! ```text
//! header  "DIMB" | version u16 | reserved u16 | payload length u32 | CRC-32 (IEEE) of payload u32
//! payload image_scale f32 | global_pool u8 | 3 × 0u8
//!         conv × 3, then fc as a conv whose kernel covers the feature map:
//!           out u16 | in u16 | kernel u8 | stride u8 | pad u8 | 0u8 | x_scale f32 | x_zero u8 | 3 × 0u8
//!           | y_scale f32 | weight i8[out·in·k·k] (OIHW) | w_scale f32[out] | bias i32[out]
//!         pool_scale f32                                   (only when global_pool)
//!         y: in u16 | out u16 | weight i8[in·out] ([K, N]) | rescale f32[out] | bias f32[out] | print_scale f32
//! ```
//!
//! Parsing validates everything the engine later indexes (shapes chain, sizes match, no
//! overflow, nothing left over), so a blob that parses cannot make the engine index out of
//! bounds — even one with a forged checksum. The reader ([`Model::parse`]) and the writer
//! ([`write()`], with `std`) sit side by side and a test round-trips a model through both.

use crate::engine::EngineError as E;

/// The first four bytes of every blob.
pub const MAGIC: [u8; 4] = *b"DIMB";
/// The format version this module reads and writes.
pub const VERSION: u16 = 1;
/// Bytes before the payload.
pub const HEADER_LEN: usize = 16;
/// Largest channel count / width accepted (sanity bound against hostile sizes).
pub const MAX_CHANNELS: usize = 4096;

/// A little-endian view of a slice of 4-byte values.
#[derive(Debug, Clone, Copy)]
pub struct Le32<'a>(pub(crate) &'a [u8]);

impl Le32<'_> {
    /// Number of 4-byte values.
    pub fn len(&self) -> usize {
        self.0.len() / 4
    }
    /// Whether it holds no value.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    fn word(&self, i: usize) -> [u8; 4] {
        let mut w = [0u8; 4];
        w.copy_from_slice(&self.0[4 * i..4 * i + 4]);
        w
    }
    /// Value `i` as f32.
    pub fn f32(&self, i: usize) -> f32 {
        f32::from_le_bytes(self.word(i))
    }
    /// Value `i` as i32.
    pub fn i32(&self, i: usize) -> i32 {
        i32::from_le_bytes(self.word(i))
    }
}

/// A parsed convolution (fc is one whose kernel covers the map).
#[derive(Debug, Clone, Copy)]
pub struct Conv<'a> {
    /// Output channels.
    pub out: usize,
    /// Input channels.
    pub inp: usize,
    /// Square kernel side.
    pub kernel: usize,
    /// Stride.
    pub stride: usize,
    /// Zero padding on each side.
    pub pad: usize,
    /// Scale of the uint8 input.
    pub x_scale: f32,
    /// Zero point of the uint8 input.
    pub x_zero: u8,
    /// Scale of the uint8 output (zero point 0: ReLU).
    pub y_scale: f32,
    /// int8 weights (as bytes in the parsed view).
    pub weight: &'a [u8],
    /// Per-output-channel weight scales.
    pub w_scale: Le32<'a>,
    /// Per-output-channel biases.
    pub bias: Le32<'a>,
    /// Input side (square), derived while parsing.
    pub in_side: usize,
    /// Output side, derived while parsing.
    pub out_side: usize,
}

/// The parsed `y` layer.
#[derive(Debug, Clone, Copy)]
pub struct Dense<'a> {
    /// Input channels.
    pub inp: usize,
    /// Output channels.
    pub out: usize,
    /// int8 weights (as bytes in the parsed view).
    pub weight: &'a [u8],
    /// Per-output f32 factor of the int32 accumulator.
    pub rescale: Le32<'a>,
    /// Per-output-channel biases.
    pub bias: Le32<'a>,
    /// Scale of `y` printed as int8.
    pub print_scale: f32,
}

/// A parsed blob: views into the caller's bytes, nothing copied.
#[derive(Debug, Clone, Copy)]
pub struct Model<'a> {
    /// Scale of the uint8 image (zero point 128).
    pub image_scale: f32,
    /// The three convolutions.
    pub convs: [Conv<'a>; 3],
    /// Scale of `tiny`'s pooled map, when it pools.
    pub pool_scale: Option<f32>,
    /// The fully connected layer, as a convolution.
    pub fc: Conv<'a>,
    /// The representation layer.
    pub y: Dense<'a>,
    /// What identifies the encoder: the CRC-32 of the blob's payload, as its header stores it.
    /// A prototypes file records it, so a device never compares embeddings of two encoders.
    pub id: u32,
}

struct Reader<'a> {
    b: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], E> {
        if n > self.b.len() {
            return Err(E::Truncated);
        }
        let (head, rest) = self.b.split_at(n);
        self.b = rest;
        Ok(head)
    }
    fn u8(&mut self) -> Result<u8, E> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<usize, E> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]) as usize)
    }
    fn f32(&mut self) -> Result<f32, E> {
        let v = Le32(self.take(4)?).f32(0);
        if v.is_finite() && v > 0.0 { Ok(v) } else { Err(E::Invalid("a scale is not a positive finite number")) }
    }
    fn words(&mut self, n: usize) -> Result<Le32<'a>, E> {
        Ok(Le32(self.take(n.checked_mul(4).ok_or(E::Invalid("size overflows"))?)?))
    }
    fn channels(&mut self) -> Result<usize, E> {
        let c = self.u16()?;
        if c == 0 || c > MAX_CHANNELS { Err(E::Invalid("channel count out of range")) } else { Ok(c) }
    }
    fn conv(&mut self, inp_expected: usize, in_side: usize) -> Result<Conv<'a>, E> {
        let (out, inp) = (self.channels()?, self.channels()?);
        let (kernel, stride, pad) = (self.u8()? as usize, self.u8()? as usize, self.u8()? as usize);
        self.u8()?;
        if inp != inp_expected {
            return Err(E::Invalid("a layer's input channels differ from the previous layer's output"));
        }
        if kernel == 0 || stride == 0 || kernel > in_side + 2 * pad || pad >= kernel {
            return Err(E::Invalid("kernel, stride or padding do not fit the feature map"));
        }
        let out_side = (in_side + 2 * pad - kernel) / stride + 1;
        let x_scale = self.f32()?;
        let x_zero = self.u8()?;
        self.take(3)?;
        let y_scale = self.f32()?;
        let n = [out, inp, kernel, kernel].iter().try_fold(1usize, |a, &b| a.checked_mul(b)).ok_or(E::Invalid("size overflows"))?;
        let weight = self.take(n)?;
        let (w_scale, bias) = (self.words(out)?, self.words(out)?);
        Ok(Conv { out, inp, kernel, stride, pad, x_scale, x_zero, y_scale, weight, w_scale, bias, in_side, out_side })
    }
}

/// CRC-32 (IEEE) of `bytes`.
pub fn checksum(bytes: &[u8]) -> u32 {
    crc::Crc::<u32>::new(&crc::CRC_32_ISO_HDLC).checksum(bytes)
}

impl<'a> Model<'a> {
    /// Parses and validates a blob; every failure is an `Err`, never a panic.
    ///
    /// ```
    /// use dim_runtime::engine::{EngineError, Model};
    /// let blob = include_bytes!("../../../models/tiny/encoder.blob");
    /// let model = Model::parse(blob)?;
    /// let mut arena = vec![0u8; model.arena_size()]; // a static buffer on a microcontroller
    /// let mut y = [0f32; 64];
    /// model.run(&[128; dim_runtime::RGB32_LEN], &mut arena, &mut y)?;
    /// assert_eq!(Model::parse(&blob[..100]).err(), Some(EngineError::Truncated));
    /// # Ok::<(), EngineError>(())
    /// ```
    pub fn parse(blob: &'a [u8]) -> Result<Self, E> {
        if blob.len() < HEADER_LEN {
            return Err(E::Truncated);
        }
        if blob[..4] != MAGIC {
            return Err(E::NotABlob);
        }
        let version = u16::from_le_bytes([blob[4], blob[5]]);
        if version != VERSION {
            return Err(E::Version { found: version, supported: VERSION });
        }
        // Reserved for future flags: a writer that sets them speaks a format this reader
        // does not know, so they must be zero, not ignored.
        if blob[6..8] != [0, 0] {
            return Err(E::Invalid("reserved header bytes are not zero"));
        }
        let len = Le32(&blob[8..12]).i32(0) as u32 as usize;
        let crc = Le32(&blob[12..16]).i32(0) as u32;
        let payload = &blob[HEADER_LEN..];
        if payload.len() < len {
            return Err(E::Truncated);
        }
        if payload.len() > len {
            return Err(E::TrailingBytes);
        }
        if checksum(payload) != crc {
            return Err(E::Checksum);
        }
        let mut r = Reader { b: payload };
        let image_scale = r.f32()?;
        let global_pool = match r.u8()? {
            0 => false,
            1 => true,
            _ => return Err(E::Invalid("global_pool flag is not 0 or 1")),
        };
        r.take(3)?;
        let c1 = r.conv(3, crate::INPUT_SIDE)?;
        let c2 = r.conv(c1.out, c1.out_side)?;
        let c3 = r.conv(c2.out, c2.out_side)?;
        let pool_scale = if global_pool { Some(r.f32()?) } else { None };
        let side = if global_pool { 1 } else { c3.out_side };
        let fc = r.conv(c3.out, side)?;
        if fc.out_side != 1 {
            return Err(E::Invalid("the fc kernel does not cover the feature map"));
        }
        let (inp, out) = (r.channels()?, r.channels()?);
        if inp != fc.out {
            return Err(E::Invalid("y's input width differs from fc's output"));
        }
        let weight = r.take(inp * out)?;
        let (rescale, bias) = (r.words(out)?, r.words(out)?);
        let print_scale = r.f32()?;
        if !r.b.is_empty() {
            return Err(E::TrailingBytes);
        }
        Ok(Self { image_scale, convs: [c1, c2, c3], pool_scale, fc, y: Dense { inp, out, weight, rescale, bias, print_scale }, id: crc })
    }
}

/// One convolution to [`write()`] (fc is a convolution whose kernel covers the feature map).
#[cfg(feature = "std")]
#[derive(Debug, Clone, Copy)]
pub struct ConvSpec<'a> {
    /// Output channels.
    pub out: usize,
    /// Input channels.
    pub inp: usize,
    /// Square kernel side.
    pub kernel: usize,
    /// Stride.
    pub stride: usize,
    /// Zero padding on each side.
    pub pad: usize,
    /// Scale of the uint8 input.
    pub x_scale: f32,
    /// Zero point of the uint8 input.
    pub x_zero: u8,
    /// Scale of the uint8 output (zero point 0: ReLU).
    pub y_scale: f32,
    /// OIHW.
    pub weight: &'a [i8],
    /// Per-output-channel weight scales.
    pub w_scale: &'a [f32],
    /// Per-output-channel biases.
    pub bias: &'a [i32],
}

/// The `y` layer to [`write()`].
#[cfg(feature = "std")]
#[derive(Debug, Clone, Copy)]
pub struct DenseSpec<'a> {
    /// Input channels.
    pub inp: usize,
    /// Output channels.
    pub out: usize,
    /// `[K, N]`.
    pub weight: &'a [i8],
    /// Per-output f32 factor of the int32 accumulator.
    pub rescale: &'a [f32],
    /// Per-output-channel biases.
    pub bias: &'a [f32],
    /// Scale of `y` printed as int8.
    pub print_scale: f32,
}

/// A whole model to [`write()`]: what [`Model`] is parsed back into.
#[cfg(feature = "std")]
#[derive(Debug, Clone, Copy)]
pub struct ModelSpec<'a> {
    /// Scale of the uint8 image (zero point 128).
    pub image_scale: f32,
    /// The three convolutions.
    pub convs: [ConvSpec<'a>; 3],
    /// Scale of `tiny`'s pooled map, when it pools.
    pub pool_scale: Option<f32>,
    /// The fully connected layer, as a convolution.
    pub fc: ConvSpec<'a>,
    /// The representation layer.
    pub y: DenseSpec<'a>,
}

/// Writes `m` in the layout above (header, checksum and payload).
#[cfg(feature = "std")]
pub fn write(m: &ModelSpec) -> std::vec::Vec<u8> {
    let mut p = std::vec::Vec::new();
    let f = |p: &mut std::vec::Vec<u8>, v: f32| p.extend(v.to_le_bytes());
    f(&mut p, m.image_scale);
    p.extend([m.pool_scale.is_some() as u8, 0, 0, 0]);
    let conv = |p: &mut std::vec::Vec<u8>, c: &ConvSpec| {
        p.extend((c.out as u16).to_le_bytes());
        p.extend((c.inp as u16).to_le_bytes());
        p.extend([c.kernel as u8, c.stride as u8, c.pad as u8, 0]);
        f(p, c.x_scale);
        p.extend([c.x_zero, 0, 0, 0]);
        f(p, c.y_scale);
        p.extend(c.weight.iter().map(|&w| w as u8));
        c.w_scale.iter().for_each(|&s| f(p, s));
        c.bias.iter().for_each(|&b| p.extend(b.to_le_bytes()));
    };
    m.convs.iter().for_each(|c| conv(&mut p, c));
    if let Some(s) = m.pool_scale {
        f(&mut p, s);
    }
    conv(&mut p, &m.fc);
    p.extend((m.y.inp as u16).to_le_bytes());
    p.extend((m.y.out as u16).to_le_bytes());
    p.extend(m.y.weight.iter().map(|&w| w as u8));
    m.y.rescale.iter().for_each(|&s| f(&mut p, s));
    m.y.bias.iter().for_each(|&b| f(&mut p, b));
    f(&mut p, m.y.print_scale);
    let mut out = std::vec::Vec::with_capacity(HEADER_LEN + p.len());
    out.extend(MAGIC);
    out.extend(VERSION.to_le_bytes());
    out.extend([0, 0]);
    out.extend((p.len() as u32).to_le_bytes());
    out.extend(checksum(&p).to_le_bytes());
    out.extend(p);
    out
}

#[cfg(all(test, feature = "std"))]
mod tests {
    use super::*;

    fn ramp_i8(n: usize) -> std::vec::Vec<i8> {
        (0..n).map(|i| (i % 255) as i8).collect()
    }

    /// A small model through [`write()`] and [`Model::parse`]: every field comes back, and every
    /// corruption of the bytes is refused.
    #[test]
    fn written_blobs_parse_back_field_for_field() {
        let w = [ramp_i8(4 * 3 * 9), ramp_i8(5 * 4 * 9), ramp_i8(6 * 5 * 9), ramp_i8(7 * 6)];
        let (s, b) = ([0.5f32, 0.25, 0.125, 0.0625, 0.75, 1.5, 2.0], [-3i32, 0, 7, 100, -100, 1, 2]);
        let conv = |out, inp, kernel, stride, pad, w: &'static [i8]| ConvSpec {
            out,
            inp,
            kernel,
            stride,
            pad,
            x_scale: 0.01,
            x_zero: 128,
            y_scale: 0.02,
            weight: w,
            w_scale: &s[..out],
            bias: &b[..out],
        };
        let w: &'static [std::vec::Vec<i8>; 4] = std::boxed::Box::leak(std::boxed::Box::new(w));
        let yw = ramp_i8(7 * 2);
        let spec = ModelSpec {
            image_scale: 1.0 / 127.0,
            convs: [conv(4, 3, 3, 2, 1, &w[0]), conv(5, 4, 3, 2, 1, &w[1]), conv(6, 5, 3, 2, 1, &w[2])],
            pool_scale: Some(0.3),
            fc: conv(7, 6, 1, 1, 0, &w[3]),
            y: DenseSpec { inp: 7, out: 2, weight: &yw, rescale: &[0.5, 0.25], bias: &[1.0, -1.0], print_scale: 0.1 },
        };
        let bytes = write(&spec);
        let m = Model::parse(&bytes).unwrap();
        assert_eq!(m.image_scale, spec.image_scale);
        assert_eq!(m.pool_scale, spec.pool_scale);
        for (got, want) in m.convs.iter().chain([&m.fc]).zip(spec.convs.iter().chain([&spec.fc])) {
            assert_eq!((got.out, got.inp, got.kernel, got.stride, got.pad), (want.out, want.inp, want.kernel, want.stride, want.pad));
            assert_eq!((got.x_scale, got.x_zero, got.y_scale), (want.x_scale, want.x_zero, want.y_scale));
            assert_eq!(got.weight.iter().map(|&v| v as i8).collect::<std::vec::Vec<_>>(), want.weight);
            assert_eq!(
                (0..got.out).map(|o| (got.w_scale.f32(o), got.bias.i32(o))).collect::<std::vec::Vec<_>>(),
                want.w_scale.iter().copied().zip(want.bias.iter().copied()).collect::<std::vec::Vec<_>>()
            );
        }
        assert_eq!((m.convs[0].out_side, m.convs[1].out_side, m.convs[2].out_side, m.fc.out_side), (16, 8, 4, 1));
        assert_eq!((m.y.inp, m.y.out, m.y.print_scale, m.y.rescale.f32(1), m.y.bias.f32(1)), (7, 2, 0.1, 0.25, -1.0));
        // The engine runs what was written.
        let mut arena = std::vec![0u8; m.arena_size()];
        let mut y = [0f32; 2];
        m.run(&[7; crate::RGB32_LEN], &mut arena, &mut y).unwrap();
        assert!(y.iter().all(|v| v.is_finite()));
        // Any flipped payload byte fails the checksum; a cut one is truncated.
        let mut bad = bytes.clone();
        bad[HEADER_LEN + 5] ^= 1;
        assert_eq!(Model::parse(&bad).err(), Some(E::Checksum));
        assert_eq!(Model::parse(&bytes[..bytes.len() - 1]).err(), Some(E::Truncated));
        // The reserved header bytes must stay zero.
        let mut flagged = bytes.clone();
        flagged[7] = 1;
        assert_eq!(Model::parse(&flagged).err(), Some(E::Invalid("reserved header bytes are not zero")));
    }
}
