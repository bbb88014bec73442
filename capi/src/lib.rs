//! The C API of dim-runtime (`libdim_runtime_c.so` / `.a`, header `include/dim_runtime.h`).
//!
//! An app on an ARM Linux board opens an encoder — an ONNX file (f32 or int8) run by tract, or an
//! engine blob run by the host fast path (`dim_runtime::fast`: the no_std engine's int8
//! arithmetic, bit for bit, vectorised and on every core) — from a path or from bytes, and
//! embeds images:
//! preprocessed (`[n, 3, 32, 32]` f32 in `[-1, 1]`) or raw 8-bit pixels of any size (scaled and
//! centre-cropped as in training, `dim_runtime::preprocess`).
//!
//! The contract, for every function:
//! - it returns a [`DimStatus`]; on anything but `DIM_OK` the reason is in [`dim_last_error`]
//!   (per thread, valid until that thread's next call);
//! - no panic crosses the boundary: one is caught and returned as `DIM_ERR_PANIC`;
//! - null pointers and wrong sizes are errors, never undefined behaviour on our side; the C
//!   caller owns every buffer it passes and must make its stated length true;
//! - every object is freed by its own call (`dim_encoder_free`), which accepts null.
//!
//! Why `unsafe` here: a C boundary takes raw pointers. Each is checked for null, turned into a
//! slice of the length the caller states, and used only during the call (no pointer is kept).

#![allow(clippy::missing_safety_doc)] // The contract above is the safety doc of every function.

use dim_runtime::engine::Model;
use dim_runtime::fast::FastModel;
use dim_runtime::{Encoder, INPUT_LEN, Rgb32};
use std::cell::RefCell;
use std::ffi::{CStr, CString, c_char};
use std::panic::{AssertUnwindSafe, catch_unwind};

/// What a call returned.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DimStatus {
    /// Success.
    DimOk = 0,
    /// A required pointer was null.
    DimErrNull = 1,
    /// The model bytes are not an encoder this runtime can run (corrupt, truncated, wrong shape).
    DimErrModel = 2,
    /// An image does not match its stated size, or a buffer length is wrong.
    DimErrInput = 3,
    /// Inference failed.
    DimErrRun = 4,
    /// A file could not be read.
    DimErrIo = 5,
    /// A bug: the runtime panicked (caught; the encoder may still be used or freed).
    DimErrPanic = 6,
}

/// An open encoder. Opaque to C.
pub struct DimEncoder {
    inner: Runner,
}

enum Runner {
    Tract(Encoder),
    /// The blob, prepared for the host once when opened.
    Engine(Box<FastModel>),
}

/// One raw image: 8-bit pixels, rows top to bottom, `channels` interleaved values per pixel
/// (1 grey or 3 RGB), `width × height × channels` bytes.
#[repr(C)]
pub struct DimImage {
    pub pixels: *const u8,
    pub width: usize,
    pub height: usize,
    pub channels: usize,
}

thread_local! {
    static LAST_ERROR: RefCell<CString> = RefCell::new(CString::default());
}

fn fail(status: DimStatus, message: impl std::fmt::Display) -> DimStatus {
    // A message with an interior NUL is cut there rather than lost.
    let text = message.to_string();
    let text = text.split('\0').next().unwrap_or_default().to_string();
    LAST_ERROR.with(|e| *e.borrow_mut() = CString::new(text).unwrap_or_default());
    status
}

/// Runs `f`, turning a panic into `DIM_ERR_PANIC` with its message.
fn guarded(f: impl FnOnce() -> DimStatus) -> DimStatus {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(status) => status,
        Err(payload) => {
            let why = payload.downcast_ref::<&str>().map(|s| s.to_string()).or_else(|| payload.downcast_ref::<String>().cloned()).unwrap_or_default();
            fail(DimStatus::DimErrPanic, format!("internal error (please report): {why}"))
        }
    }
}

fn runtime_error(e: dim_runtime::Error) -> DimStatus {
    let status = match e {
        dim_runtime::Error::Image(_) => DimStatus::DimErrInput,
        dim_runtime::Error::Model(_) | dim_runtime::Error::MissingOutput(_) => DimStatus::DimErrModel,
        dim_runtime::Error::Run(_) => DimStatus::DimErrRun,
        dim_runtime::Error::Io { .. } => DimStatus::DimErrIo,
    };
    fail(status, e)
}

/// An engine blob starts with the blob's magic; anything else is tried as ONNX.
fn open(bytes: Vec<u8>) -> Result<DimEncoder, DimStatus> {
    if let Ok(model) = Model::parse(&bytes) {
        return Ok(DimEncoder { inner: Runner::Engine(Box::new(FastModel::new(&model))) });
    }
    Encoder::from_bytes(&bytes).map(|e| DimEncoder { inner: Runner::Tract(e) }).map_err(|e| {
        let status = runtime_error(e);
        let why = dim_last_error_string();
        fail(status, format!("{why} (neither an ONNX encoder nor an engine blob)"))
    })
}

fn dim_last_error_string() -> String {
    LAST_ERROR.with(|e| e.borrow().to_string_lossy().into_owned())
}

unsafe fn put(out: *mut *mut DimEncoder, encoder: DimEncoder) -> DimStatus {
    // SAFETY: `out` was checked non-null by the caller of `put`; the C caller owns it.
    unsafe { *out = Box::into_raw(Box::new(encoder)) };
    DimStatus::DimOk
}

/// Opens the encoder file at `path` (NUL-terminated, UTF-8): an ONNX file from `trainer export`
/// or `trainer quantize`, or a `.blob` from `trainer quantize --blob`. On success `*out` holds
/// the encoder; free it with `dim_encoder_free`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn dim_encoder_open_path(path: *const c_char, out: *mut *mut DimEncoder) -> DimStatus {
    guarded(|| {
        if path.is_null() || out.is_null() {
            return fail(DimStatus::DimErrNull, "dim_encoder_open_path: path and out must not be null");
        }
        // SAFETY: non-null and NUL-terminated by the contract.
        let path = unsafe { CStr::from_ptr(path) };
        let Ok(path) = path.to_str() else { return fail(DimStatus::DimErrIo, "dim_encoder_open_path: the path is not UTF-8") };
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) => return fail(DimStatus::DimErrIo, format!("{path}: {e}")),
        };
        match open(bytes) {
            Ok(enc) => unsafe { put(out, enc) },
            Err(status) => fail(status, format!("{path}: {}", dim_last_error_string())),
        }
    })
}

/// Opens an encoder from `len` bytes at `bytes` (copied: the caller may free them afterwards).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn dim_encoder_open_bytes(bytes: *const u8, len: usize, out: *mut *mut DimEncoder) -> DimStatus {
    guarded(|| {
        if bytes.is_null() || out.is_null() {
            return fail(DimStatus::DimErrNull, "dim_encoder_open_bytes: bytes and out must not be null");
        }
        // SAFETY: `len` readable bytes at `bytes`, by the contract.
        let bytes = unsafe { std::slice::from_raw_parts(bytes, len) }.to_vec();
        match open(bytes) {
            Ok(enc) => unsafe { put(out, enc) },
            Err(status) => status,
        }
    })
}

/// The width of Y (floats per image), or 0 for a null encoder.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn dim_encoder_dim(encoder: *const DimEncoder) -> usize {
    // SAFETY: null or an encoder from `dim_encoder_open_*`, by the contract.
    match unsafe { encoder.as_ref() } {
        Some(DimEncoder { inner: Runner::Tract(e) }) => e.dim(),
        Some(DimEncoder { inner: Runner::Engine(fast) }) => fast.dim(),
        None => 0,
    }
}

impl DimEncoder {
    /// Y of each 32×32 RGB image, rows in order.
    fn embed_rgb(&self, images: &[Rgb32]) -> Result<Vec<f32>, DimStatus> {
        match &self.inner {
            Runner::Tract(encoder) => {
                let mut input = vec![0f32; images.len() * INPUT_LEN];
                for (rgb, row) in images.iter().zip(input.chunks_mut(INPUT_LEN)) {
                    dim_runtime::preprocess::rgb32_to_input(rgb, row).map_err(|e| fail(DimStatus::DimErrInput, e))?;
                }
                encoder.embed_preprocessed(&input).map_err(runtime_error)
            }
            Runner::Engine(fast) => {
                let mut y = vec![0f32; images.len() * fast.dim()];
                let threads = dim_runtime::cores();
                fast.run_batch(images, &mut y, threads).map_err(|e| fail(DimStatus::DimErrRun, e))?;
                Ok(y)
            }
        }
    }
}

/// Checks `out` holds exactly `n × dim` floats and copies `y` there.
unsafe fn write_rows(y: &[f32], out: *mut f32, out_len: usize) -> DimStatus {
    if out_len != y.len() {
        return fail(DimStatus::DimErrInput, format!("the output holds {out_len} floats; this call writes {} (images × dim)", y.len()));
    }
    // SAFETY: `out_len` writable floats at `out` (checked non-null by the callers), by the contract.
    unsafe { std::slice::from_raw_parts_mut(out, out_len) }.copy_from_slice(y);
    DimStatus::DimOk
}

/// Embeds `n` raw images (`images[0..n]`, any size, grey or RGB) into `out`, which must
/// hold `n × dim` floats (`dim_encoder_dim`): row `i` is image `i`'s Y.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn dim_encoder_embed_images(encoder: *const DimEncoder, images: *const DimImage, n: usize, out: *mut f32, out_len: usize) -> DimStatus {
    guarded(|| {
        // SAFETY: null or an encoder from `dim_encoder_open_*`, by the contract.
        let Some(enc) = (unsafe { encoder.as_ref() }) else { return fail(DimStatus::DimErrNull, "the encoder is null") };
        if (n > 0 && images.is_null()) || out.is_null() {
            return fail(DimStatus::DimErrNull, "images and out must not be null");
        }
        if n == 0 {
            // Nothing to run (a runtime would refuse an empty batch): an empty output.
            return unsafe { write_rows(&[], out, out_len) };
        }
        // SAFETY: `n` images at `images`, by the contract.
        let images = unsafe { std::slice::from_raw_parts(images, n) };
        let mut rgb = vec![[0u8; dim_runtime::RGB32_LEN]; n];
        for (i, (img, dst)) in images.iter().zip(&mut rgb).enumerate() {
            let Some(len) = img.width.checked_mul(img.height).and_then(|p| p.checked_mul(img.channels)) else {
                return fail(DimStatus::DimErrInput, format!("image {i}: {} × {} × {} overflows", img.width, img.height, img.channels));
            };
            if img.pixels.is_null() {
                return fail(DimStatus::DimErrNull, format!("image {i}: pixels is null"));
            }
            // SAFETY: `width × height × channels` bytes at `pixels`, by the contract.
            let pixels = unsafe { std::slice::from_raw_parts(img.pixels, len) };
            if let Err(e) = dim_runtime::preprocess::to_rgb32(pixels, img.width, img.height, img.channels, dst) {
                return fail(DimStatus::DimErrInput, format!("image {i}: {e}"));
            }
        }
        match enc.embed_rgb(&rgb) {
            Ok(y) => unsafe { write_rows(&y, out, out_len) },
            Err(status) => status,
        }
    })
}

/// Embeds `n` preprocessed images (`input`: `n × 3 × 32 × 32` floats, CHW, in `[-1, 1]`, as
/// `dim_runtime::preprocess` writes them) into `out` (`n × dim` floats). Through the engine the
/// floats are turned back into 8-bit pixels first (the engine's input is the camera's bytes).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn dim_encoder_embed_preprocessed(encoder: *const DimEncoder, input: *const f32, n: usize, out: *mut f32, out_len: usize) -> DimStatus {
    guarded(|| {
        // SAFETY: null or an encoder from `dim_encoder_open_*`, by the contract.
        let Some(enc) = (unsafe { encoder.as_ref() }) else { return fail(DimStatus::DimErrNull, "the encoder is null") };
        if (n > 0 && input.is_null()) || out.is_null() {
            return fail(DimStatus::DimErrNull, "input and out must not be null");
        }
        let Some(len) = n.checked_mul(INPUT_LEN) else { return fail(DimStatus::DimErrInput, "n overflows") };
        if n == 0 {
            return unsafe { write_rows(&[], out, out_len) };
        }
        // SAFETY: `n × INPUT_LEN` floats at `input`, by the contract.
        let input = unsafe { std::slice::from_raw_parts(input, len) };
        let y = match &enc.inner {
            Runner::Tract(e) => e.embed_preprocessed(input).map_err(runtime_error),
            Runner::Engine(..) => {
                let rgb: Vec<Rgb32> = input.chunks(INPUT_LEN).map(input_to_rgb32).collect();
                enc.embed_rgb(&rgb)
            }
        };
        match y {
            Ok(y) => unsafe { write_rows(&y, out, out_len) },
            Err(status) => status,
        }
    })
}

/// The inverse of `rgb32_to_input` (nearest byte): CHW floats in `[-1, 1]` to HWC bytes.
fn input_to_rgb32(x: &[f32]) -> Rgb32 {
    let plane = INPUT_LEN / 3;
    let mut rgb = [0u8; dim_runtime::RGB32_LEN];
    for i in 0..plane {
        for c in 0..3 {
            let v = x[c * plane + i];
            let v = if v.is_finite() { v } else { -1.0 };
            rgb[i * 3 + c] = ((v.clamp(-1.0, 1.0) + 1.0) * 127.5).round() as u8;
        }
    }
    rgb
}

/// Frees an encoder (null is accepted and ignored).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn dim_encoder_free(encoder: *mut DimEncoder) {
    if !encoder.is_null() {
        // SAFETY: from `dim_encoder_open_*` and not freed before, by the contract.
        let _ = catch_unwind(AssertUnwindSafe(|| drop(unsafe { Box::from_raw(encoder) })));
    }
}

/// Why the last failed call on this thread failed (NUL-terminated UTF-8; empty if none). The
/// pointer stays valid until this thread's next failing call.
#[unsafe(no_mangle)]
pub extern "C" fn dim_last_error() -> *const c_char {
    LAST_ERROR.with(|e| e.borrow().as_ptr())
}

#[cfg(test)]
mod tests;
