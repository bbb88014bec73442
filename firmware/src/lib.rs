//! `dim-firmware`: the logic of the Cortex-M firmware, host-testable.
//!
//! A frame comes from the [`camera`] (embedded-hal SPI + I2C), is scaled and cropped to 32×32 by
//! `dim_runtime::preprocess`, embedded by the no_std int8 engine, and the embedding goes out as
//! one text line, `embedding: v0,v1,…` (y as int8 with the model's print scale), over whatever
//! `core::fmt::Write` the board offers (semihosting in QEMU, a UART on a board). The
//! [`session`] answers serial commands: enrol the current frame under a label, classify it
//! against the enrolled prototypes (or call it novel), forget.
#![no_std]
#![forbid(unsafe_code)]

pub mod camera;
pub mod session;

use dim_runtime::engine::{EngineError, Model};

/// The widest embedding the firmware handles (dim32 and tiny: 64).
pub const MAX_DIM: usize = 64;

/// Embeds a 32×32 RGB image and writes the int8 embedding into `out` (its first `model.dim()`
/// values); returns how many were written.
pub fn embed(model: &Model, rgb: &dim_runtime::Rgb32, arena: &mut [u8], out: &mut [i8; MAX_DIM]) -> Result<usize, EngineError> {
    let d = model.dim();
    if d > MAX_DIM {
        return Err(EngineError::Output { need: d, got: MAX_DIM });
    }
    let mut y = [0f32; MAX_DIM];
    model.run(rgb, arena, &mut y[..d])?;
    model.quantize_output(&y[..d], &mut out[..d]);
    Ok(d)
}

/// Writes `embedding: v0,v1,…\n`.
pub fn write_embedding(w: &mut impl core::fmt::Write, values: &[i8]) -> core::fmt::Result {
    w.write_str("embedding: ")?;
    for (i, v) in values.iter().enumerate() {
        if i > 0 {
            w.write_char(',')?;
        }
        write!(w, "{v}")?;
    }
    w.write_char('\n')
}

#[cfg(test)]
mod tests;
