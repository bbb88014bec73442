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

/// What every firmware image carries in flash: the shipped `models/tiny` encoder, its golden
/// image and its prototypes (`tests/tests/firmware.rs` compares what the firmware prints with
/// the host's output for the same files), and the arena it runs them in.
pub mod shipped {
    /// The shipped `models/tiny` engine blob.
    pub static BLOB: &[u8] = include_bytes!("../../models/tiny/encoder.blob");
    /// Its golden image (32×32 RGB).
    pub static GOLDEN: &dim_runtime::Rgb32 = include_bytes!("../../models/tiny/golden.rgb");
    /// Its prototypes file (five classes enrolled).
    pub static PROTOTYPES: &[u8] = include_bytes!("../../models/tiny/prototypes.bin");
    /// Bytes of the engine's arena (tiny needs 13,443; the engine checks the size).
    pub const ARENA: usize = 16 * 1024;
}

/// The longest command line the boards take: `frame ` and 6,144 hex digits.
pub const LINE: usize = 6200;

/// What a board's serial port gives the session: one received byte, or `Err` when the receiver
/// lost or garbled one (overrun, framing, noise, parity).
pub type ReadByte<'a> = &'a mut dyn FnMut() -> Result<u8, ()>;

/// A board's main loop over its UART: prints the golden image's embedding and `ready: <n>
/// prototypes`, then answers each command line read through `read` with one line on `tx`
/// ([`session`]), for ever. Returns only why it could not start (a blob or prototypes file
/// that does not parse or fit). A line during which the receiver reported an error is answered
/// with an error line ([`session::Lines::damage`]).
pub fn serve(blob: &[u8], golden: &dim_runtime::Rgb32, prototypes: &[u8], arena: &mut [u8], tx: &mut impl core::fmt::Write, read: ReadByte) -> &'static str {
    use dim_runtime::prototypes::file::PrototypeFile;
    let Ok(model) = Model::parse(blob) else { return "the embedded blob does not parse" };
    let mut q = [0i8; MAX_DIM];
    let Ok(d) = embed(&model, golden, arena, &mut q) else { return "the engine failed on the golden image" };
    // A failed write is a lost line on a port nobody reads: nothing to do but go on.
    let _ = write_embedding(tx, &q[..d]);
    let Ok(protos) = PrototypeFile::parse(prototypes) else { return "the embedded prototypes file does not parse" };
    let Ok(mut session) = session::Session::new(model, Some(&protos)) else { return "the prototypes do not fit the session" };
    let _ = writeln!(tx, "ready: {} prototypes", session.prototypes());
    let mut lines = session::Lines::<LINE>::new();
    loop {
        match read() {
            Ok(byte) => lines.push(byte, |line| {
                let _ = match line {
                    Ok(cmd) => session.handle(cmd, arena, tx),
                    Err(e) => writeln!(tx, "error: {e}"),
                };
            }),
            Err(()) => lines.damage(),
        }
    }
}

/// [`serve`] with the [`shipped`] files and an arena of [`shipped::ARENA`] bytes on the stack:
/// what every board's main loop runs.
pub fn serve_shipped(tx: &mut impl core::fmt::Write, read: ReadByte) -> &'static str {
    let mut arena = [0u8; shipped::ARENA];
    serve(shipped::BLOB, shipped::GOLDEN, shipped::PROTOTYPES, &mut arena, tx, read)
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
