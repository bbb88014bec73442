//! The no_std int8 engine against tract, on the same `trainer quantize` output.
//!
//! Rule (runtime/src/engine/mod.rs): every uint8 activation is computed with tract's integer
//! arithmetic and rounding, so y agrees to float rounding of its last multiply-add, and y
//! printed as int8 agrees within ±1 LSB (a value that lands on a rounding boundary).

use dim_runtime::engine::{EngineError, Model};
use dim_tests::{real_images, trained};
use dim_trainer::export;
use dim_trainer::fit::config::ModelKind;
use proptest::prelude::*;
use std::sync::OnceLock;

struct Case {
    onnx: Vec<u8>,
    blob: Vec<u8>,
    tract: dim_runtime::Encoder,
}

fn case(model: ModelKind) -> &'static Case {
    static CASES: [OnceLock<Case>; 2] = [OnceLock::new(), OnceLock::new()];
    CASES[(model == ModelKind::Dim32) as usize].get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let f32_bytes = export::to_onnx(&trained(model, dir.path()), false);
        let (calib, _) = real_images(64, 31);
        let q = dim_trainer::quantize::quantize(&f32_bytes, &calib, &calib[..8 * dim_runtime::INPUT_LEN], 99.99).unwrap();
        // tract's int8 kernels (what aarch64 runs), not the float form x86-64 runs by default:
        // the engine is bit-exact with the former.
        let tract = dim_runtime::Encoder::from_bytes_as_written(&q.onnx).unwrap();
        Case { onnx: q.onnx, blob: q.blob, tract }
    })
}

/// Engine and tract on one RGB image: (engine y, tract y).
fn both(c: &Case, rgb: &dim_runtime::Rgb32) -> (Vec<f32>, Vec<f32>) {
    let m = Model::parse(&c.blob).unwrap();
    let mut arena = vec![0u8; m.arena_size()];
    let mut y = vec![0f32; m.dim()];
    m.run(rgb, &mut arena, &mut y).unwrap();
    let mut input = vec![0f32; dim_runtime::INPUT_LEN];
    dim_runtime::preprocess::rgb32_to_input(rgb, &mut input).unwrap();
    (y, c.tract.embed_preprocessed(&input).unwrap())
}

/// Returns (max |Δy| relative to max |y|, max |Δ| of y printed as int8).
fn compare(c: &Case, rgb: &dim_runtime::Rgb32) -> (f32, i32) {
    let m = Model::parse(&c.blob).unwrap();
    let (e, t) = both(c, rgb);
    let scale = t.iter().fold(0f32, |a, v| a.max(v.abs())).max(1e-12);
    let rel = e.iter().zip(&t).map(|(a, b)| (a - b).abs() / scale).fold(0.0, f32::max);
    let (mut qe, mut qt) = (vec![0i8; e.len()], vec![0i8; t.len()]);
    m.quantize_output(&e, &mut qe);
    m.quantize_output(&t, &mut qt);
    (rel, qe.iter().zip(&qt).map(|(a, b)| (*a as i32 - *b as i32).abs()).max().unwrap())
}

#[test]
fn engine_matches_tract_on_real_images() {
    let (_, rgbs) = real_images(16, 173);
    for model in [ModelKind::Tiny, ModelKind::Dim32] {
        let c = case(model);
        let m = Model::parse(&c.blob).unwrap();
        assert!(c.blob.len() * 3 < c.onnx.len() * 4, "{model:?}: the blob is no bigger than the ONNX file");
        for rgb in &rgbs {
            let (rel, lsb) = compare(c, rgb);
            // Every uint8 activation equal, and y = f32(acc)·rescale + bias from the same integers.
            assert!(rel == 0.0, "{model:?}: relative |Δy| {rel}");
            assert!(lsb <= 1, "{model:?}: int8 y differs by {lsb} LSB");
        }
        let mut small = vec![0u8; m.arena_size() - 1];
        let err = m.run(&rgbs[0], &mut small, &mut vec![0f32; m.dim()]).unwrap_err();
        assert_eq!(err, EngineError::ArenaTooSmall { need: m.arena_size(), got: m.arena_size() - 1 });
    }
    // Arena sizes: ping-pong halves = largest even + largest odd activation, then the widest
    // gathered column (fc: 256 channels × 4 × 4 taps as i16 pairs, 2,048 words) + 3 to align it.
    assert_eq!(Model::parse(&case(ModelKind::Dim32).blob).unwrap().arena_size(), 8192 + 16384 + 4 * 2048 + 3);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn engine_matches_tract_on_random_images(pixels in proptest::collection::vec(any::<u8>(), dim_runtime::RGB32_LEN)) {
        let rgb: dim_runtime::Rgb32 = pixels.try_into().unwrap();
        let (rel, lsb) = compare(case(ModelKind::Tiny), &rgb);
        prop_assert!(rel <= 1e-6 && lsb <= 1, "relative |Δy| {rel}, {lsb} LSB");
    }

    /// Any byte changed, with the checksum recomputed so the parser's own checks are reached:
    /// parse gives Err, or a model that runs without panicking.
    #[test]
    fn mutated_blobs_never_panic(at in any::<prop::sample::Index>(), byte in any::<u8>(), cut in any::<prop::sample::Index>()) {
        let blob = &case(ModelKind::Tiny).blob;
        let mut b = blob.clone();
        let i = at.index(b.len());
        b[i] = byte;
        let payload_crc = dim_runtime::engine::blob::checksum(&b[16..]);
        b[12..16].copy_from_slice(&payload_crc.to_le_bytes());
        if let Ok(m) = Model::parse(&b) {
            let size = m.arena_size();
            prop_assume!(size < 1 << 24);
            let mut arena = vec![0u8; size];
            let mut y = vec![0f32; m.dim()];
            let _ = m.run(&[128; dim_runtime::RGB32_LEN], &mut arena, &mut y);
        }
        let truncated = &blob[..cut.index(blob.len())];
        prop_assert!(Model::parse(truncated).is_err());
    }
}

#[test]
fn hostile_blobs_are_named_errors() {
    let blob = &case(ModelKind::Tiny).blob;
    assert_eq!(Model::parse(&blob[..10]).unwrap_err(), EngineError::Truncated);
    assert_eq!(Model::parse(&blob[..blob.len() - 1]).unwrap_err(), EngineError::Truncated);
    let mut longer = blob.clone();
    longer.push(0);
    assert_eq!(Model::parse(&longer).unwrap_err(), EngineError::TrailingBytes);
    let mut v2 = blob.clone();
    v2[4] = 2;
    assert_eq!(Model::parse(&v2).unwrap_err(), EngineError::Version { found: 2, supported: 1 });
    let mut flipped = blob.clone();
    *flipped.last_mut().unwrap() ^= 1;
    assert_eq!(Model::parse(&flipped).unwrap_err(), EngineError::Checksum);
    assert_eq!(Model::parse(b"GGUF0000000000000000").unwrap_err(), EngineError::NotABlob);
}
