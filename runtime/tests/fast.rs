//! The host fast path (`dim_runtime::fast`) against the no_std engine it reorders: every
//! activation and `y` equal, bit for bit, on the shipped blobs' golden images and on random images.

use dim_runtime::engine::Model;
use dim_runtime::fast::{FastModel, Scratch};
use std::path::PathBuf;

fn shipped(model: &str, file: &str) -> Vec<u8> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../models").join(model).join(file);
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// Every activation (image, convs, pool, fc) and y of both runs on `rgb`.
fn both(model: &Model, fast: &FastModel, rgb: &dim_runtime::Rgb32) -> [(Vec<Vec<u8>>, Vec<u32>); 2] {
    let mut engine_acts = Vec::new();
    let (mut arena, mut y) = (vec![0u8; model.arena_size()], vec![0f32; model.dim()]);
    model.run_observed(rgb, &mut arena, &mut y, |_, a| engine_acts.push(a.to_vec())).unwrap();
    let engine_y = y.iter().map(|v| v.to_bits()).collect();
    let mut fast_acts = Vec::new();
    let mut y2 = vec![0f32; model.dim()];
    fast.run_observed(rgb, &mut Scratch::default(), &mut y2, |_, a| fast_acts.push(a.to_vec())).unwrap();
    [(engine_acts, engine_y), (fast_acts, y2.iter().map(|v| v.to_bits()).collect())]
}

#[test]
fn equals_the_engine_on_the_shipped_golden_images() {
    for name in ["tiny", "dim32"] {
        let blob = shipped(name, "encoder.blob");
        let model = Model::parse(&blob).unwrap();
        let rgb: dim_runtime::Rgb32 = shipped(name, "golden.rgb").try_into().unwrap();
        // Every path: the one this CPU picks (VNNI or sdot where it has them), the portable one and
        // the int8 × int8 one.
        for fast in [FastModel::new(&model), FastModel::portable(&model), FastModel::signed(&model)] {
            let [engine, fast_run] = both(&model, &fast, &rgb);
            assert_eq!(engine.0.len(), fast_run.0.len(), "{name}: layers");
            for (i, (e, f)) in engine.0.iter().zip(&fast_run.0).enumerate() {
                assert!(e == f, "{name}: activation {i} differs in {} of {} values", e.iter().zip(f).filter(|(a, b)| a != b).count(), e.len());
            }
            assert_eq!(engine.1, fast_run.1, "{name}: y");
            // And a scratch reused across images (and models) changes nothing.
            let mut scratch = Scratch::default();
            let mut y = vec![0f32; model.dim()];
            for _ in 0..2 {
                fast.run(&rgb, &mut scratch, &mut y).unwrap();
                assert_eq!(y.iter().map(|v| v.to_bits()).collect::<Vec<_>>(), engine.1, "{name}: y with a reused scratch");
            }
        }
    }
}

/// Each path holds its weights once, in the layout its products read: int8 (1 byte a weight) on
/// the int8 × int8 path, i16 (2 bytes) on the portable one; the `y` layer is i16 on both. The
/// counts by hand from the shapes (kernel² · in · out per conv, in · out for fc and y):
/// tiny 3·32·9 + 32·64·9 + 64·128·9 + 128·128 = 109,408 and y 128·64 = 8,192;
/// dim32 3·64·16 + 64·128·16 + 128·256·16 + 4096·1024 = 4,852,736 and y 1024·64 = 65,536.
#[test]
fn each_path_holds_its_weights_once() {
    for (name, convs_fc, y) in [("tiny", 109_408, 8_192), ("dim32", 4_852_736, 65_536)] {
        let blob = shipped(name, "encoder.blob");
        let model = Model::parse(&blob).unwrap();
        assert_eq!(FastModel::signed(&model).weight_bytes(), convs_fc + 2 * y, "{name}: int8 path");
        assert_eq!(FastModel::portable(&model).weight_bytes(), 2 * convs_fc + 2 * y, "{name}: i16 path");
        // VNNI pads each field to a multiple of 4 bytes and keeps i16 only for a layer it cannot pack.
        assert!(FastModel::new(&model).weight_bytes() <= 2 * convs_fc + 2 * y, "{name}: this CPU's path");
    }
}

#[test]
fn refuses_a_wrong_output_length() {
    let blob = shipped("tiny", "encoder.blob");
    let fast = FastModel::new(&Model::parse(&blob).unwrap());
    let rgb = [0u8; dim_runtime::RGB32_LEN];
    assert!(fast.run(&rgb, &mut Scratch::default(), &mut [0f32; 3]).is_err());
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]
    /// Random images (any bytes, so every zero-point and padding path is hit) through tiny.
    #[test]
    fn equals_the_engine_on_random_images(pixels in proptest::collection::vec(proptest::prelude::any::<u8>(), dim_runtime::RGB32_LEN)) {
        let blob = shipped("tiny", "encoder.blob");
        let model = Model::parse(&blob).unwrap();
        let rgb: dim_runtime::Rgb32 = pixels.try_into().unwrap();
        for fast in [FastModel::new(&model), FastModel::portable(&model), FastModel::signed(&model)] {
            let [engine, fast_run] = both(&model, &fast, &rgb);
            proptest::prop_assert_eq!(engine, fast_run);
        }
    }
}

/// `run_batch` on several threads gives each image's `run`, in order, whatever the share: image
/// shares with the fc layer over groups of images, and one image with its layers split between
/// two threads; both models (tiny pools, dim32 flattens), both paths.
#[test]
fn a_batch_on_threads_equals_image_by_image() {
    for name in ["tiny", "dim32"] {
        let blob = shipped(name, "encoder.blob");
        let model = Model::parse(&blob).unwrap();
        for fast in [FastModel::new(&model), FastModel::portable(&model), FastModel::signed(&model)] {
            let dim = fast.dim();
            let images: Vec<dim_runtime::Rgb32> = (0..19u8).map(|i| core::array::from_fn(|j| (j as u8).wrapping_mul(31).wrapping_add(i * 17))).collect();
            let mut want = vec![0f32; images.len() * dim];
            for (img, y) in images.iter().zip(want.chunks_exact_mut(dim)) {
                fast.run(img, &mut Scratch::default(), y).unwrap();
            }
            for (threads, n) in [(1, 19), (2, 19), (3, 19), (8, 19), (2, 1), (1, 1), (2, 9)] {
                let mut got = vec![0f32; n * dim];
                fast.run_batch(&images[..n], &mut got, threads).unwrap();
                assert_eq!(got, want[..n * dim], "{name}: {n} images on {threads} threads");
            }
            assert_ne!(want[..dim], want[dim..2 * dim], "different images, different embeddings");
            assert!(fast.run_batch(&images, &mut vec![0f32; dim], 2).is_err(), "a y of the wrong length is refused");
        }
    }
}
