//! The shipped models (`models/<name>/`): their files load, agree with each other and with the
//! golden pair written when they were shipped, and their own check passed.
//!
//! They run on x86-64 and, under QEMU, on aarch64 (`.ci/run`): the shipped files give the same
//! embedding on an ARM board. `DIM_MODELS_DIR` points them at another folder (e.g. a dry run of
//! `scripts/ship-model`).

use dim_runtime::Encoder;
use dim_runtime::engine::Model;
use std::path::{Path, PathBuf};

/// The shipped models; `tiny` must be one (the demo and the firmware use it).
fn shipped() -> Vec<PathBuf> {
    let root = std::env::var_os("DIM_MODELS_DIR").map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../models"), PathBuf::from);
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&root)
        .unwrap_or_else(|e| panic!("{}: {e}", root.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("encoder.int8.onnx").exists())
        .collect();
    dirs.sort();
    assert!(dirs.iter().any(|d| d.ends_with("tiny")), "no shipped tiny model in {}", root.display());
    dirs
}

fn read(dir: &Path, name: &str) -> Vec<u8> {
    std::fs::read(dir.join(name)).unwrap_or_else(|e| panic!("{}: {e}", dir.join(name).display()))
}

fn golden(dir: &Path) -> (dim_runtime::Rgb32, Vec<f32>) {
    let rgb: dim_runtime::Rgb32 = read(dir, "golden.rgb").try_into().expect("golden.rgb is 32×32 RGB");
    let text = String::from_utf8(read(dir, "golden.y.txt")).unwrap();
    (rgb, text.split_whitespace().map(|v| v.parse().unwrap()).collect())
}

fn embed(encoder: &Encoder, rgb: &dim_runtime::Rgb32) -> Vec<f32> {
    let mut input = vec![0f32; dim_runtime::INPUT_LEN];
    dim_runtime::preprocess::rgb32_to_input(rgb, &mut input).unwrap();
    encoder.embed_preprocessed(&input).unwrap()
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    dot / (a.iter().map(|x| x * x).sum::<f32>().sqrt() * b.iter().map(|x| x * x).sum::<f32>().sqrt())
}

/// tract on the int8 file reproduces golden.y.txt, written by tract on x86-64 at ship time: there
/// the arithmetic is the same, so only the text round trip may differ; elsewhere the tolerances
/// of `golden.rs` (a requantization tie may move one activation by one step).
#[test]
fn int8_encoder_reproduces_the_golden_output() {
    for dir in shipped() {
        let (rgb, want) = golden(&dir);
        let got = embed(&Encoder::from_path(dir.join("encoder.int8.onnx")).unwrap(), &rgb);
        assert_eq!(got.len(), want.len(), "{}", dir.display());
        let scale = want.iter().fold(0f32, |a, v| a.max(v.abs()));
        let tolerance = if cfg!(target_arch = "x86_64") { 1e-6 * scale } else { 0.02 * scale };
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert!((g - w).abs() <= tolerance, "{}: y[{i}] = {g}, golden {w}", dir.display());
        }
        assert!(cosine(&got, &want) >= 0.9999, "{}", dir.display());
    }
}

/// The no_std engine on the shipped blob gives the int8 file's y (±1 LSB printed as int8, see
/// tests/engine.rs), and the f32 export points the same way (cosine ≥ 0.98 on the golden image).
#[test]
fn blob_and_f32_export_agree_with_the_int8_encoder() {
    for dir in shipped() {
        let (rgb, want) = golden(&dir);
        let blob = read(&dir, "encoder.blob");
        let m = Model::parse(&blob).unwrap_or_else(|e| panic!("{}/encoder.blob: {e}", dir.display()));
        let mut arena = vec![0u8; m.arena_size()];
        let mut y = vec![0f32; m.dim()];
        m.run(&rgb, &mut arena, &mut y).unwrap();
        let (mut qe, mut qt) = (vec![0i8; y.len()], vec![0i8; want.len()]);
        m.quantize_output(&y, &mut qe);
        m.quantize_output(&want, &mut qt);
        let lsb = qe.iter().zip(&qt).map(|(a, b)| (*a as i32 - *b as i32).abs()).max().unwrap();
        assert!(lsb <= 1, "{}: engine and tract differ by {lsb} LSB", dir.display());
        if dir.join("encoder.onnx").exists() {
            let f32_y = embed(&Encoder::from_path(dir.join("encoder.onnx")).unwrap(), &rgb);
            let c = cosine(&f32_y, &want);
            assert!(c >= 0.98, "{}: cosine(f32, int8) = {c}", dir.display());
        }
    }
}

/// The card's claims hold in its files: every row of the shipped check passed, accuracies are
/// above chance, and the README quotes the check table.
#[test]
fn shipped_check_passed_and_the_card_quotes_it() {
    for dir in shipped() {
        let rows: Vec<serde_json::Value> = serde_json::from_slice(&read(&dir, "check/check.json")).unwrap();
        assert!(rows.len() >= 9, "{}: {} rows", dir.display(), rows.len());
        for r in &rows {
            assert_eq!(r["ok"], true, "{}: {r}", dir.display());
            if r["unit"] == "%" {
                // Chance: 10 % for the 10-class probes and kNN (asked: twice that), 20 % for
                // 5-way few-shot, 50 % AUROC, 5 % true negatives at 95 % recall.
                let name = r["name"].as_str().unwrap();
                let floor =
                    [("novelty.auroc", 50.0), ("novelty.tnr95", 5.0), ("fewshot.", 20.0)].iter().find(|(p, _)| name.starts_with(p)).map_or(20.0, |f| f.1);
                assert!(r["deployed"].as_f64().unwrap() > floor, "{}: at or below chance: {r}", dir.display());
            }
        }
        let card = String::from_utf8(read(&dir, "README.md")).unwrap();
        let knn = rows.iter().find(|r| r["name"] == "knn.y").unwrap();
        assert!(card.contains(&format!("{:.2}", knn["deployed"].as_f64().unwrap())), "{}: card does not quote the check", dir.display());
    }
}
