//! The model blob: a compact, versioned, checksummed int8 encoder for the no_std engine.
//!
//! Layout (all little-endian; written by `trainer quantize --blob`):
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
//! bounds — even one with a forged checksum.

use crate::engine::EngineError as E;

pub const MAGIC: [u8; 4] = *b"DIMB";
pub const VERSION: u16 = 1;
pub const HEADER_LEN: usize = 16;
/// Largest channel count / width accepted (sanity bound against hostile sizes).
pub const MAX_CHANNELS: usize = 4096;

/// A little-endian view of a slice of 4-byte values.
#[derive(Debug, Clone, Copy)]
pub struct Le32<'a>(pub(crate) &'a [u8]);

impl Le32<'_> {
    pub fn len(&self) -> usize {
        self.0.len() / 4
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    fn word(&self, i: usize) -> [u8; 4] {
        let mut w = [0u8; 4];
        w.copy_from_slice(&self.0[4 * i..4 * i + 4]);
        w
    }
    pub fn f32(&self, i: usize) -> f32 {
        f32::from_le_bytes(self.word(i))
    }
    pub fn i32(&self, i: usize) -> i32 {
        i32::from_le_bytes(self.word(i))
    }
}

#[derive(Debug, Clone, Copy)]
pub struct Conv<'a> {
    pub out: usize,
    pub inp: usize,
    pub kernel: usize,
    pub stride: usize,
    pub pad: usize,
    pub x_scale: f32,
    pub x_zero: u8,
    pub y_scale: f32,
    pub weight: &'a [u8],
    pub w_scale: Le32<'a>,
    pub bias: Le32<'a>,
    /// Input side (square) and output side, derived while parsing.
    pub in_side: usize,
    pub out_side: usize,
}

#[derive(Debug, Clone, Copy)]
pub struct Dense<'a> {
    pub inp: usize,
    pub out: usize,
    pub weight: &'a [u8],
    pub rescale: Le32<'a>,
    pub bias: Le32<'a>,
    pub print_scale: f32,
}

/// A parsed blob: views into the caller's bytes, nothing copied.
#[derive(Debug, Clone, Copy)]
pub struct Model<'a> {
    pub image_scale: f32,
    pub convs: [Conv<'a>; 3],
    pub pool_scale: Option<f32>,
    pub fc: Conv<'a>,
    pub y: Dense<'a>,
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
        Ok(Self { image_scale, convs: [c1, c2, c3], pool_scale, fc, y: Dense { inp, out, weight, rescale, bias, print_scale } })
    }
}
