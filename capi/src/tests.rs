//! The C API against the runtime it wraps: the same rows as `Encoder` (tract) and `Model::run`
//! (the engine) on the shipped tiny files, every error path returning its code and a message,
//! hostile bytes never panicking, and the committed header equal to what cbindgen generates.

use super::*;
use std::path::{Path, PathBuf};
use std::ptr::{null, null_mut};

fn shipped(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/tiny").join(name)
}

fn last_error() -> String {
    unsafe { CStr::from_ptr(dim_last_error()) }.to_string_lossy().into_owned()
}

fn open_path(path: &Path) -> (DimStatus, *mut DimEncoder) {
    let c = CString::new(path.to_str().unwrap()).unwrap();
    let mut enc = null_mut();
    let status = unsafe { dim_encoder_open_path(c.as_ptr(), &mut enc) };
    (status, enc)
}

fn golden() -> Vec<u8> {
    std::fs::read(shipped("golden.rgb")).unwrap()
}

/// Raw pixels through the C API give tract's rows for the int8 ONNX file (bit for bit) and the
/// engine's for the blob; an image of another size is scaled as `preprocess` scales it.
#[test]
fn rows_equal_the_runtime_they_wrap() {
    let rgb = golden();
    let grey: Vec<u8> = (0..40 * 24).map(|i| (i * 7 % 251) as u8).collect();
    let images =
        [DimImage { pixels: rgb.as_ptr(), width: 32, height: 32, channels: 3 }, DimImage { pixels: grey.as_ptr(), width: 40, height: 24, channels: 1 }];
    let mut want_rgb = [[0u8; dim_runtime::RGB32_LEN]; 2];
    want_rgb[0].copy_from_slice(&rgb);
    dim_runtime::preprocess::to_rgb32(&grey, 40, 24, 1, &mut want_rgb[1]).unwrap();

    let (status, enc) = open_path(&shipped("encoder.int8.onnx"));
    assert_eq!(status, DimStatus::DimOk, "{}", last_error());
    let dim = unsafe { dim_encoder_dim(enc) };
    assert_eq!(dim, 64);
    let mut y = vec![0f32; 2 * dim];
    assert_eq!(unsafe { dim_encoder_embed_images(enc, images.as_ptr(), 2, y.as_mut_ptr(), y.len()) }, DimStatus::DimOk, "{}", last_error());
    let tract = Encoder::from_path(shipped("encoder.int8.onnx")).unwrap();
    let mut input = vec![0f32; 2 * INPUT_LEN];
    for (rgb, row) in want_rgb.iter().zip(input.chunks_mut(INPUT_LEN)) {
        dim_runtime::preprocess::rgb32_to_input(rgb, row).unwrap();
    }
    assert_eq!(y, tract.embed_preprocessed(&input).unwrap());
    // The preprocessed entry point: the same rows.
    let mut y2 = vec![0f32; 2 * dim];
    assert_eq!(unsafe { dim_encoder_embed_preprocessed(enc, input.as_ptr(), 2, y2.as_mut_ptr(), y2.len()) }, DimStatus::DimOk);
    assert_eq!(y, y2);
    unsafe { dim_encoder_free(enc) };

    let blob = std::fs::read(shipped("encoder.blob")).unwrap();
    let mut enc = null_mut();
    assert_eq!(unsafe { dim_encoder_open_bytes(blob.as_ptr(), blob.len(), &mut enc) }, DimStatus::DimOk, "{}", last_error());
    assert_eq!(unsafe { dim_encoder_embed_images(enc, images.as_ptr(), 2, y.as_mut_ptr(), y.len()) }, DimStatus::DimOk, "{}", last_error());
    let model = Model::parse(&blob).unwrap();
    let mut arena = vec![0u8; model.arena_size()];
    for (i, rgb) in want_rgb.iter().enumerate() {
        let mut want = vec![0f32; dim];
        model.run(rgb, &mut arena, &mut want).unwrap();
        assert_eq!(&y[i * dim..(i + 1) * dim], &want[..], "engine row {i}");
    }
    // Preprocessed floats reach the engine as the bytes they came from.
    assert_eq!(unsafe { dim_encoder_embed_preprocessed(enc, input.as_ptr(), 2, y2.as_mut_ptr(), y2.len()) }, DimStatus::DimOk);
    assert_eq!(y, y2);
    unsafe { dim_encoder_free(enc) };
}

/// Every misuse returns its code and says why; nothing is written to a wrong-sized output.
#[test]
fn misuse_returns_codes_and_messages() {
    let mut enc = null_mut();
    assert_eq!(unsafe { dim_encoder_open_path(null(), &mut enc) }, DimStatus::DimErrNull);
    assert!(last_error().contains("null"));
    let (status, _) = open_path(Path::new("/nonexistent/encoder.onnx"));
    assert_eq!(status, DimStatus::DimErrIo);
    assert!(last_error().contains("/nonexistent/encoder.onnx"), "{}", last_error());
    let junk = b"this is not a model";
    assert_eq!(unsafe { dim_encoder_open_bytes(junk.as_ptr(), junk.len(), &mut enc) }, DimStatus::DimErrModel);
    assert!(last_error().contains("neither an ONNX encoder nor an engine blob"), "{}", last_error());
    assert!(enc.is_null(), "no encoder on failure");

    let (_, enc) = open_path(&shipped("encoder.int8.onnx"));
    let rgb = golden();
    let image = DimImage { pixels: rgb.as_ptr(), width: 32, height: 32, channels: 3 };
    let mut y = vec![7f32; 63];
    assert_eq!(unsafe { dim_encoder_embed_images(enc, &image, 1, y.as_mut_ptr(), y.len()) }, DimStatus::DimErrInput);
    assert!(last_error().contains("63") && y.iter().all(|&v| v == 7.0), "{}", last_error());
    let mut y = vec![0f32; 64];
    let bad = DimImage { pixels: rgb.as_ptr(), width: 32, height: 32, channels: 2 };
    assert_eq!(unsafe { dim_encoder_embed_images(enc, &bad, 1, y.as_mut_ptr(), y.len()) }, DimStatus::DimErrInput);
    assert!(last_error().contains("image 0"), "{}", last_error());
    let huge = DimImage { pixels: rgb.as_ptr(), width: usize::MAX, height: 2, channels: 3 };
    assert_eq!(unsafe { dim_encoder_embed_images(enc, &huge, 1, y.as_mut_ptr(), y.len()) }, DimStatus::DimErrInput);
    assert_eq!(unsafe { dim_encoder_embed_images(null(), &image, 1, y.as_mut_ptr(), y.len()) }, DimStatus::DimErrNull);
    assert_eq!(unsafe { dim_encoder_embed_images(enc, &image, 1, null_mut(), 64) }, DimStatus::DimErrNull);
    // Zero images: nothing to do, an empty output.
    assert_eq!(unsafe { dim_encoder_embed_images(enc, null(), 0, y.as_mut_ptr(), 0) }, DimStatus::DimOk);
    assert_eq!(unsafe { dim_encoder_dim(null()) }, 0);
    unsafe { dim_encoder_free(enc) };
    unsafe { dim_encoder_free(null_mut()) };
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(200))]
    /// Hostile model bytes — random, or the shipped files cut short or with a byte changed —
    /// return a code, never a panic across the boundary (`DIM_ERR_PANIC` would be a bug too).
    #[test]
    fn hostile_bytes_return_a_code(
        which in 0usize..3, cut in 0usize..200_000, flip in 0usize..200_000, value: u8,
        random in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..512),
    ) {
        let mut bytes = match which {
            0 => random,
            1 => std::fs::read(shipped("encoder.blob")).unwrap(),
            _ => std::fs::read(shipped("encoder.int8.onnx")).unwrap(),
        };
        if which > 0 {
            let n = bytes.len();
            bytes[flip % n] = value;
            bytes.truncate(n - cut % n);
        }
        let mut enc = null_mut();
        let status = unsafe { dim_encoder_open_bytes(bytes.as_ptr(), bytes.len(), &mut enc) };
        proptest::prop_assert_ne!(status, DimStatus::DimErrPanic, "{}", last_error());
        if status == DimStatus::DimOk {
            // A file that still opens must embed or refuse, not panic.
            let rgb = golden();
            let image = DimImage { pixels: rgb.as_ptr(), width: 32, height: 32, channels: 3 };
            let dim = unsafe { dim_encoder_dim(enc) };
            let mut y = vec![0f32; dim];
            let s = unsafe { dim_encoder_embed_images(enc, &image, 1, y.as_mut_ptr(), y.len()) };
            proptest::prop_assert_ne!(s, DimStatus::DimErrPanic, "{}", last_error());
            unsafe { dim_encoder_free(enc) };
        } else {
            proptest::prop_assert!(enc.is_null() && !last_error().is_empty());
        }
    }
}

/// The committed header is what cbindgen writes for this crate now (regenerate with
/// `DIM_BLESS=1 cargo test -p dim-capi header`).
#[cfg(target_arch = "x86_64")]
#[test]
fn header_is_generated_from_the_code() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let config = cbindgen::Config::from_file(dir.join("cbindgen.toml")).unwrap();
    let mut generated = Vec::new();
    cbindgen::Builder::new().with_crate(dir).with_config(config).generate().expect("cbindgen").write(&mut generated);
    let path = dir.join("include/dim_runtime.h");
    if std::env::var_os("DIM_BLESS").is_some() {
        std::fs::write(&path, &generated).unwrap();
    }
    let committed = std::fs::read(&path).unwrap_or_default();
    assert!(committed == generated, "{} is stale: run DIM_BLESS=1 cargo test --release -p dim-capi header", path.display());
}
