//! The `trainer` binary as a user runs it: help, bad input, Ctrl-C.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn trainer() -> Command {
    Command::new(env!("CARGO_BIN_EXE_trainer"))
}

const QUICK: &[&str] = &["--model", "tiny", "--critic-width", "32", "--batch-size", "8", "--knn-images", "0"];

#[test]
fn help_lists_the_commands_and_formats() {
    let out = trainer().args(["fit", "--help"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    for word in ["--resume", "--max-steps", "data_batch_", "IDX", "--backend", "Example"] {
        assert!(text.contains(word), "fit --help lacks {word}:\n{text}");
    }
}

#[test]
fn missing_data_and_unknown_backend_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let out = trainer().args(["fit", "--data", "/nonexistent/cifar", "--out"]).arg(dir.path()).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("/nonexistent/cifar"), "{err}");
    let out = trainer().args(["fit", "--backend", "cuda", "--out"]).arg(dir.path().join("x")).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("--features cuda"), "{err}");
}

#[test]
fn ctrl_c_saves_a_checkpoint_that_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let mut child = trainer().args(["fit", "--epochs", "1000", "--out"]).arg(&run).args(QUICK).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    let metrics = run.join("metrics.jsonl");
    let start = Instant::now();
    while std::fs::read_to_string(&metrics).map_or(0, |s| s.lines().count()) < 3 {
        assert!(start.elapsed() < Duration::from_secs(120), "no training progress");
        std::thread::sleep(Duration::from_millis(50));
    }
    Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130), "interrupted runs exit 130");
    let latest = std::fs::read_to_string(run.join("checkpoints/latest")).unwrap();
    let steps = std::fs::read_to_string(&metrics).unwrap().lines().filter(|l| l.contains("\"step\"")).count();
    assert_eq!(latest.trim(), format!("step-{steps:08}"), "checkpoint at the step training stopped");
    let out = trainer().args(["fit", "--resume", "--max-steps"]).arg((steps + 2).to_string()).arg("--out").arg(&run).args(QUICK).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("resuming from"));
}

/// Issue 17: `--resume` continues the run in OUT with its own config — a flag changes only what it
/// names, a new `--epochs` replaces an old `--max-steps` — and refuses what would make it another
/// run (another model, other images).
#[test]
fn resume_keeps_the_runs_config_and_refuses_another_run() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let fit = |args: &[&str]| trainer().arg("fit").arg("--out").arg(&run).args(args).output().unwrap();
    let first = fit(&[&["--data", "builtin:shapes:400", "--validation-size", "100", "--max-steps", "3"][..], QUICK].concat());
    assert!(first.status.success(), "{}", String::from_utf8_lossy(&first.stderr));
    let out = fit(&["--resume", "--epochs", "1", "--knn-images", "0"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let config: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(run.join("config.json")).unwrap()).unwrap();
    assert_eq!((config["data"].as_str(), config["model"].as_str(), config["epochs"].as_u64()), (Some("builtin:shapes:400"), Some("tiny"), Some(1)));
    assert!(config["max_steps"].is_null(), "{config}");
    let steps = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap().lines().filter(|l| l.contains("\"step\"")).count();
    assert_eq!(steps, 300 / 8, "one whole epoch of the run's own data and batch size");
    let out = fit(&["--resume", "--epochs", "2", "--model", "dim32"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("drop them"), "{err}");
    let out = fit(&["--resume", "--epochs", "2", "--data", "builtin:shapes:500"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("trained on 400"), "{err}");
}

/// Cross-view training (`--views 2`) runs from the command line with the stronger augmentation,
/// saves what it was given, counts images (not views) per step, and refuses two equal views.
#[test]
fn two_views_train_and_two_equal_views_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let data = ["--data", "builtin:shapes:400", "--validation-size", "100", "--max-steps", "3"];
    let views = ["--views", "2", "--min-scale", "0.3", "--color-jitter", "0.4", "--grayscale", "0.2", "--hflip"];
    let out = trainer().arg("fit").arg("--out").arg(&run).args([&data[..], &views, QUICK].concat()).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let config: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(run.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["views"].as_u64(), Some(2));
    assert_eq!(config["augment"]["color_jitter"].as_f64().map(|v| (v * 10.0).round()), Some(4.0), "{config}");
    let steps = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap().lines().filter(|l| l.contains("\"step\"")).count();
    assert_eq!(steps, 3);
    let out = trainer().arg("fit").arg("--out").arg(dir.path().join("same")).args([&data[..], &["--views", "2"], QUICK].concat()).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("same view"), "{err}");
    let out = trainer().args(["fit", "--color-jitter", "1.5"]).output().unwrap();
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("outside [0, 1]"));
}

/// fit → export → quantize → eval (f32 reference) → check (int8) passes; a reference that
/// claims more than the model delivers makes `check` exit 2 (not 1, an error) and name the measure.
#[test]
fn eval_then_check_replays_the_measures_through_the_int8_encoder() {
    let dir = tempfile::tempdir().unwrap();
    let p = |name: &str| dir.path().join(name).to_str().unwrap().to_string();
    let data = ["--validation-size", "200"];
    let ok = |args: &[&str]| {
        let out = trainer().args(args).output().unwrap();
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    ok(&[&["fit", "--data", "builtin:shapes:400", "--max-steps", "60", "--out", &p("run")][..], QUICK, &data].concat());
    ok(&["export", "--checkpoint", &p("run"), "--out", &p("encoder.onnx")]);
    ok(&[
        &[
            "quantize",
            "--model",
            &p("encoder.onnx"),
            "--calib",
            "builtin:shapes:800",
            "--calib-images",
            "128",
            "--out",
            &p("encoder.int8.onnx"),
            "--blob",
            &p("new/encoder.blob"),
        ][..],
        &data,
    ]
    .concat());
    // The blob's folder did not exist: written files create theirs.
    assert!(dir.path().join("new/encoder.blob").metadata().unwrap().len() > 1000);
    let measure = ["--train", "builtin:shapes:800", "--validation-size", "200"];
    let quick = ["--seeds", "2", "--probe-epochs", "3", "--mine-steps", "150", "--ndm-steps", "150", "--recon-epochs", "2"];
    let table = ok(&[&["eval", "--model", &p("encoder.onnx"), "--out", &p("ref/report.json")][..], &measure, &quick].concat());
    assert!(table.contains("probe.nonlinear.fc") && table.contains("mine"), "{table}");
    for f in ["ref/report.json", "ref/report.md", "ref/report.probes.png", "ref/report.estimators.png"] {
        assert!(dir.path().join(f).metadata().unwrap().len() > 100, "{f} missing or empty");
    }
    let report: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(p("ref/report.json")).unwrap()).unwrap();
    let measures = report["measures"].as_array().unwrap();
    let names: Vec<&str> = measures.iter().map(|m| m["name"].as_str().unwrap()).collect();
    // `export` wrote config.json beside the model: the untrained twin's floor is measured too.
    assert_eq!(measures.len(), 24, "knn, mine, ndm, 6 probes, 3 few-shot, 2 novelty, the pixel floor, 3 reconstructions, 6 random-encoder floors: {names:?}");
    for name in ["msssim.y", "msssim.fc", "msssim.conv", "msssim.y.random"] {
        let m = measures.iter().find(|m| m["name"] == name).unwrap_or_else(|| panic!("{name} missing: {names:?}"));
        assert_eq!(m["unit"], "score", "{name}");
        assert!(m["values"].as_array().unwrap().iter().all(|v| (0.0..=1.0).contains(&v.as_f64().unwrap())), "{name}: {m}");
    }
    for name in [
        "fewshot.5way.1shot",
        "fewshot.5way.5shot",
        "fewshot.5way.10shot",
        "novelty.auroc",
        "novelty.tnr95",
        "fewshot.5way.5shot.pixels",
        "fewshot.5way.5shot.random",
        "novelty.auroc.random",
    ] {
        let m = measures.iter().find(|m| m["name"] == name).unwrap_or_else(|| panic!("{name} missing: {names:?}"));
        assert_eq!(m["unit"], "%", "{name}");
    }
    assert!(measures.iter().filter(|m| m["name"] != "knn.y").all(|m| m["values"].as_array().unwrap().len() == 2));

    // 200 test images: one image is half a point, so allow 3 points here (CIFAR checks keep 1).
    let check = |reference: &str| {
        let (model, out) = (p("encoder.int8.onnx"), p("check.json"));
        let args = [&["check", "--model", &model, "--reference", reference, "--out", &out, "--max-drop", "3"][..], &measure].concat();
        trainer().args(args).output().unwrap()
    };
    let out = check(&p("ref/report.json"));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && text.contains("check passed"), "{text}\n{}", String::from_utf8_lossy(&out.stderr));

    // The same check through the no_std engine (the code the firmware runs), on the blob.
    let engine_check = |blob: &str| {
        let out = p("check-engine.json");
        trainer()
            .args([&["check", "--model", blob, "--reference", &p("ref/report.json"), "--out", &out, "--max-drop", "3"][..], &measure].concat())
            .output()
            .unwrap()
    };
    let out = engine_check(&p("new/encoder.blob"));
    let (text, err) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && text.contains("check passed") && err.contains("the no_std engine"), "{text}\n{err}");
    // And on the host fast path: the engine's embeddings bit for bit, so the same kNN accuracy.
    let out = trainer()
        .args(
            [
                &[
                    "check",
                    "--runtime",
                    "fast",
                    "--model",
                    &p("new/encoder.blob"),
                    "--reference",
                    &p("ref/report.json"),
                    "--out",
                    &p("check-fast.json"),
                    "--max-drop",
                    "3",
                ][..],
                &measure,
            ]
            .concat(),
        )
        .output()
        .unwrap();
    let (text, err) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && text.contains("check passed") && err.contains("the host fast path"), "{text}\n{err}");
    let knn = |file: &str| -> serde_json::Value {
        let rows: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(p(file)).unwrap()).unwrap();
        rows.as_array().unwrap().iter().find(|r| r["name"] == "knn.y").unwrap()["deployed"].clone()
    };
    assert_eq!(knn("check-fast.json"), knn("check-engine.json"), "kNN through the fast path and the engine");
    // A blob that parses (its checksum recomputed) but whose first convolution lost its
    // weights: the engine runs it, and the check finds what it lost.
    let mut blob = std::fs::read(p("new/encoder.blob")).unwrap();
    let header = dim_runtime::engine::blob::HEADER_LEN;
    let conv1 = header + 8 + 20; // payload: image scale and pool flag, then conv1's fields
    let out_channels = u16::from_le_bytes([blob[header + 8], blob[header + 9]]) as usize;
    blob[conv1..conv1 + out_channels * 27].fill(0);
    let crc = dim_runtime::engine::blob::checksum(&blob[header..]);
    blob[12..16].copy_from_slice(&crc.to_le_bytes());
    std::fs::write(p("zeroed.blob"), &blob).unwrap();
    let out = engine_check(&p("zeroed.blob"));
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(2), "{text}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("check FAILED") && text.contains("knn.y"), "{text}");
    // An ONNX file is not an engine model.
    let out = trainer()
        .args(["check", "--runtime", "engine", "--model", &p("encoder.int8.onnx"), "--reference", &p("ref/report.json")])
        .args(measure)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.code() == Some(1) && err.contains("encoder.int8.onnx") && err.contains("--blob"), "{err}");

    let mut inflated = report.clone();
    for m in inflated["measures"].as_array_mut().unwrap() {
        if m["name"] == "knn.y" {
            m["mean"] = serde_json::json!(m["mean"].as_f64().unwrap() + 8.0);
        }
    }
    std::fs::write(p("inflated.json"), inflated.to_string()).unwrap();
    let out = check(&p("inflated.json"));
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(2), "a regression found exits 2: {text}");
    assert!(text.contains("FAILED: knn.y"), "{text}");

    // The model card, written from those files (the folder layout `scripts/ship-model` makes).
    let d = dir.path();
    let files = [
        ("run/config.json", "config.json"),
        ("ref/report.json", "eval/report.json"),
        ("check.json", "check/check.json"),
        ("ref/report.json", "eval/quick.json"),
        ("ref/report.json", "eval/history/epoch-3.json"),
        ("inflated.json", "eval/history/epoch-12.json"),
    ];
    for (from, to) in files {
        std::fs::create_dir_all(d.join(to).parent().unwrap()).unwrap();
        std::fs::copy(d.join(from), d.join(to)).unwrap();
    }
    std::fs::write(d.join("STATUS.md"), "Stopped at epoch 2: a test.\n").unwrap();
    ok(&["card", d.to_str().unwrap(), "--run", &p("run"), "--data", "builtin:shapes:800"]);
    let card = std::fs::read_to_string(d.join("README.md")).unwrap();
    assert!(card.contains("## Status\n\nStopped at epoch 2: a test.") && card.contains("written by hand"), "{card}");
    let knn = measures.iter().find(|m| m["name"] == "knn.y").unwrap()["mean"].as_f64().unwrap();
    assert!(card.contains(&format!("| knn.y | {knn:.2} % |")) && card.contains("60 steps (2 complete epochs)") && card.contains("| result |"), "{card}");
    // History rows in epoch order (12 after 3, though "12" sorts first as text), the inflated kNN in the second.
    let (row3, row12) = (card.find("\n| 3 | ").expect(&card), card.find("\n| 12 | ").expect(&card));
    assert!(row3 < row12 && card[row12 + 1..].lines().next().unwrap().contains(&format!("{:.2}", knn + 8.0)), "{card}");
    let flags = "--max-images 600 --seeds 2 --probe-epochs 3 --mine-steps 150 --ndm-steps 150 --recon-epochs 2 --recon-images 10000";
    assert!(card.contains("trainer eval --model runs/") && card.contains(flags) && card.contains("--max-drop 3"), "{card}");
    for f in ["training.png", "eval/history.png"] {
        assert!(d.join(f).metadata().unwrap().len() > 1000, "{f} missing or empty");
    }
    let golden: Vec<f32> = std::fs::read_to_string(d.join("golden.y.txt")).unwrap().split_whitespace().map(|v| v.parse().unwrap()).collect();
    assert_eq!(golden.len(), 64);
    assert_eq!(std::fs::read(d.join("golden.rgb")).unwrap().len(), dim_runtime::RGB32_LEN);

    // Other images than the reference's: refused up front, naming the flags to fix.
    let (model, reference) = (p("encoder.int8.onnx"), p("ref/report.json"));
    let out = trainer().args([&["check", "--model", &model, "--reference", &reference, "--max-images", "100"][..], &measure].concat()).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("--max-images"), "{err}");

    let out = check(&p("run/config.json"));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("is not a report of `trainer eval`"), "{err}");
}

/// `trainer embed`: a folder of images (any size, in subfolders) to CSV and to NPY; both hold, for
/// each image in path order, what dim-runtime computes for it.
#[test]
fn embed_writes_what_the_runtime_computes() {
    let dir = tempfile::tempdir().unwrap();
    let photos = dir.path().join("photos");
    std::fs::create_dir_all(photos.join("sub")).unwrap();
    for (name, (w, h)) in [("a.png", (40, 30)), ("b.jpg", (32, 32)), ("sub/c.png", (64, 48))] {
        image::RgbImage::from_fn(w, h, |x, y| image::Rgb([(x * 5) as u8, (y * 3) as u8, (x + y) as u8])).save(photos.join(name)).unwrap();
    }
    std::fs::write(photos.join("notes.txt"), "not an image").unwrap();
    let model = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/tiny/encoder.int8.onnx");
    let embed = |out: &str| trainer().arg("embed").arg(&model).arg(&photos).arg("--out").arg(dir.path().join(out)).output().unwrap();
    let out = embed("y.csv");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("3 images × 64"));
    let out = embed("y.npy");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let csv = std::fs::read_to_string(dir.path().join("y.csv")).unwrap();
    let npy_bytes = std::fs::read(dir.path().join("y.npy")).unwrap();
    let npy = npyz::NpyFile::new(&npy_bytes[..]).unwrap();
    assert_eq!(npy.shape(), [3, 64]);
    let npy: Vec<f32> = npy.into_vec().unwrap();
    let paths = std::fs::read_to_string(dir.path().join("y.paths.txt")).unwrap();
    let encoder = dim_runtime::Encoder::from_path(&model).unwrap();
    let rows: Vec<&str> = csv.lines().skip(1).collect();
    assert!(csv.starts_with("path,y0,y1,") && rows.len() == 3, "{csv}");
    for (i, path) in paths.lines().enumerate() {
        let rgb = dim_trainer::data::decode_file(std::path::Path::new(path)).unwrap();
        let mut input = vec![0f32; dim_runtime::INPUT_LEN];
        dim_runtime::preprocess::rgb32_to_input(&rgb, &mut input).unwrap();
        let want = encoder.embed_preprocessed(&input).unwrap();
        let row: Vec<f32> = rows[i].rsplit(',').take(64).map(|v| v.parse().unwrap()).collect::<Vec<_>>().into_iter().rev().collect();
        assert!(rows[i].starts_with(&format!("\"{path}\"")), "{} vs {path}", rows[i]);
        assert_eq!(row, want, "CSV row {i} ({path})");
        assert_eq!(&npy[i * 64..(i + 1) * 64], &want[..], "NPY row {i} ({path})");
    }
    assert!(paths.lines().last().unwrap().ends_with("sub/c.png"), "sorted walk: {paths}");
    let out = embed("y.txt");
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains(".csv or .npy"));
    // A corrupt image fails the command, names the file, and leaves the earlier output whole.
    std::fs::write(photos.join("d.jpg"), b"not a jpeg").unwrap();
    let out = embed("y.csv");
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("d.jpg"), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(std::fs::read_to_string(dir.path().join("y.csv")).unwrap(), csv);
    let names: Vec<String> = std::fs::read_dir(dir.path()).unwrap().flatten().map(|e| e.file_name().into_string().unwrap()).collect();
    assert!(names.iter().all(|n| !n.ends_with(".tmp")), "{names:?}");
}

/// `trainer embed` given an engine blob runs the no_std engine (as `eval` does): each row equals
/// what `Model::run` computes for the image; a file that is neither ONNX nor a blob is refused
/// with the formats named.
#[test]
fn embed_takes_an_engine_blob_and_names_the_formats_it_takes() {
    let dir = tempfile::tempdir().unwrap();
    let photos = dir.path().join("photos");
    std::fs::create_dir_all(&photos).unwrap();
    for (name, (w, h)) in [("a.png", (40, 30)), ("b.jpg", (32, 32))] {
        image::RgbImage::from_fn(w, h, |x, y| image::Rgb([(x * 7) as u8, (y * 2) as u8, (x ^ y) as u8])).save(photos.join(name)).unwrap();
    }
    let blob = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/tiny/encoder.blob");
    let out = trainer().arg("embed").arg(&blob).arg(&photos).arg("--out").arg(dir.path().join("y.npy")).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let npy: Vec<f32> = npyz::NpyFile::new(&std::fs::read(dir.path().join("y.npy")).unwrap()[..]).unwrap().into_vec().unwrap();
    let bytes = std::fs::read(&blob).unwrap();
    let model = dim_runtime::engine::Model::parse(&bytes).unwrap();
    let mut arena = vec![0u8; model.arena_size()];
    let paths = std::fs::read_to_string(dir.path().join("y.paths.txt")).unwrap();
    for (i, path) in paths.lines().enumerate() {
        let rgb = dim_trainer::data::decode_file(std::path::Path::new(path)).unwrap();
        let mut want = vec![0f32; model.dim()];
        model.run(&rgb, &mut arena, &mut want).unwrap();
        assert_eq!(&npy[i * model.dim()..(i + 1) * model.dim()], &want[..], "row {i} ({path})");
    }
    // A file that is neither: the error names the formats embed takes.
    let junk = dir.path().join("model.bin");
    std::fs::write(&junk, b"definitely not a model").unwrap();
    let out = trainer().arg("embed").arg(&junk).arg(&photos).arg("--out").arg(dir.path().join("z.csv")).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("model.bin") && err.contains(".blob") && err.contains(".onnx"), "{err}");
}

/// `examples/c/expected.*.csv` — the rows the C example must print (`dim-capi`'s test
/// `c_example_prints_what_trainer_embed_writes`) — are what `trainer embed` writes today for the
/// PNG twins of the example's images, through tract (int8 ONNX) and through the engine (blob).
#[test]
fn embed_matches_the_c_example_golden_rows() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let dir = tempfile::tempdir().unwrap();
    for (model, expected) in [("encoder.int8.onnx", "expected.int8.csv"), ("encoder.blob", "expected.blob.csv")] {
        let out_csv = dir.path().join(expected);
        let out =
            trainer().arg("embed").arg(root.join("models/tiny").join(model)).arg(root.join("examples/c/images")).arg("--out").arg(&out_csv).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let values = |text: String| -> Vec<String> { text.lines().skip(1).map(|l| l.split_once("\",").unwrap().1.to_string()).collect() };
        let (got, want) =
            (values(std::fs::read_to_string(&out_csv).unwrap()), values(std::fs::read_to_string(root.join("examples/c").join(expected)).unwrap()));
        assert_eq!(got, want, "{expected} is stale: regenerate it with trainer embed models/tiny/{model} examples/c/images --out examples/c/{expected}");
    }
}

/// A measure of 0 epochs or steps is refused before anything is embedded, naming the flag.
#[test]
fn eval_refuses_settings_that_measure_nothing() {
    let model = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/tiny/encoder.onnx");
    for flag in ["--probe-epochs", "--mine-steps", "--ndm-steps", "--seeds"] {
        let out = trainer().arg("eval").arg("--model").arg(&model).args(["--train", "builtin:shapes:200", flag, "0"]).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && err.contains(flag) && !err.contains("representing"), "{flag}: {err}");
    }
}

/// `trainer inspect` on the shipped tiny files: the f32 ONNX, the int8 ONNX and the engine blob all
/// count the multiply-adds the architecture has (`EncoderConfig::macs`), the f32 file holds
/// exactly the deployed parameters, and the blob's Cortex-M needs are the engine's arena plus
/// the image and y.
#[test]
fn inspect_counts_what_the_architecture_says() {
    let tiny = dim_trainer::model::EncoderConfig::tiny();
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/tiny");
    for file in ["encoder.onnx", "encoder.int8.onnx", "encoder.blob"] {
        let i = dim_trainer::inspect::inspect(&dir.join(file)).unwrap();
        assert_eq!(i.macs, tiny.macs(), "{file}");
        assert_eq!(i.rows.iter().filter(|r| r.macs > 0).count(), 5, "{file}: conv1-3, fc, y");
    }
    assert_eq!(dim_trainer::inspect::inspect(&dir.join("encoder.onnx")).unwrap().constants, tiny.deployed_params());
    let out = trainer().args(["inspect"]).arg(dir.join("encoder.blob")).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && text.contains("RAM 16771 bytes = arena 13443 + input image 3072 + y 256"), "{text}");
    // tiny's 121 KiB blob and 13 KiB arena fit both chips; a 2 MiB blob fits neither's flash
    // beside the firmware, a 120 KiB arena neither's RAM.
    assert!(text.contains("STM32F405 (firmware --features board-stm32f405; QEMU netduinoplus2): fits (flash 183 of 1024 KiB"), "{text}");
    use dim_trainer::inspect::{CHIPS, fits};
    for chip in &CHIPS {
        assert!(fits(chip, 121_044, 13_443) && !fits(chip, 2 << 20, 13_443) && !fits(chip, 121_044, 120 << 10), "{}", chip.name);
    }
    let bad = tempfile::NamedTempFile::with_suffix(".blob").unwrap();
    std::fs::write(bad.path(), b"not a blob").unwrap();
    let out = trainer().args(["inspect"]).arg(bad.path()).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("not a usable engine blob"), "{err}");
}

/// `fit` killed with SIGKILL at random moments (mid-step, mid-checkpoint, mid-metrics line) and
/// resumed each time ends with exactly the weights, optimiser state and metrics of a run never
/// interrupted. `DIM_EDGE_KILLS` sets the number of kills (10 by default, as in CI).
#[test]
fn killed_at_random_moments_resumes_bit_identically() {
    const STEPS: usize = 240;
    let kills: usize = std::env::var("DIM_EDGE_KILLS").ok().and_then(|v| v.parse().ok()).unwrap_or(10);
    let dir = tempfile::tempdir().unwrap();
    let args = |run: &std::path::Path| {
        let mut c = trainer();
        c.args(["fit", "--resume", "--data", "builtin:shapes:400", "--validation-size", "100", "--max-steps", &STEPS.to_string(), "--checkpoint-every", "3"])
            .args(QUICK)
            .arg("--out")
            .arg(run)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        c
    };
    let reference = dir.path().join("reference");
    assert!(args(&reference).status().unwrap().success());
    let run = dir.path().join("killed");
    // A fixed-seed generator: the moments differ from kill to kill but not from run to run.
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    // Each kill lands at a later step (spread over the run), a few milliseconds after it was
    // logged: inside the next step, a checkpoint write or a metrics line.
    let logged = |r: &std::path::Path| std::fs::read_to_string(r.join("metrics.jsonl")).map_or(0, |t| t.matches("\"step\"").count());
    let mut killed_mid_run = 0;
    for k in 0..kills {
        let target = (k + 1) * STEPS / (kills + 1) + (next() % 3) as usize;
        let mut child = args(&run).spawn().unwrap();
        let start = Instant::now();
        while logged(&run) < target && child.try_wait().unwrap().is_none() {
            assert!(start.elapsed() < Duration::from_secs(120), "no progress toward step {target}");
            std::thread::sleep(Duration::from_millis(2));
        }
        std::thread::sleep(Duration::from_millis(next() % 25));
        if child.try_wait().unwrap().is_none() {
            child.kill().unwrap(); // SIGKILL
            killed_mid_run += 1;
        }
        child.wait().unwrap();
    }
    assert!(args(&run).status().unwrap().success());
    assert!(killed_mid_run >= kills / 2, "only {killed_mid_run} of {kills} kills hit a running fit: make the run longer");
    // The weights: the exported encoders are byte-identical (the checkpoint files themselves
    // are not comparable byte for byte: burn names each parameter with a fresh random id).
    let export = |r: &std::path::Path| {
        let onnx = r.join("encoder.onnx");
        assert!(trainer().args(["export", "--checkpoint"]).arg(r).arg("--out").arg(&onnx).status().unwrap().success());
        std::fs::read(onnx).unwrap()
    };
    assert!(export(&reference) == export(&run), "weights differ after {killed_mid_run} kills");
    // The trajectory: every step once, in order, with the same losses (so the same optimiser
    // state and data order all along).
    let steps = |r: &std::path::Path| -> Vec<[u64; 5]> {
        std::fs::read_to_string(r.join("metrics.jsonl"))
            .unwrap()
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|v| v["step"].is_u64())
            .map(|v| ["step", "loss", "local_mi", "prior", "disc"].map(|k| v[k].as_u64().unwrap_or_else(|| v[k].as_f64().unwrap().to_bits())))
            .collect()
    };
    let (want, got) = (steps(&reference), steps(&run));
    assert_eq!(want.iter().map(|s| s[0]).collect::<Vec<_>>(), (1..=STEPS as u64).collect::<Vec<_>>());
    assert!(want == got, "the killed run's metrics differ from the reference's");
    let leftovers: Vec<_> = std::fs::read_dir(&run)
        .unwrap()
        .chain(std::fs::read_dir(run.join("checkpoints")).unwrap())
        .flatten()
        .map(|e| e.file_name())
        .filter(|n| n.to_string_lossy().ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

/// `trainer prototypes` enrols the named classes with the engine, calibrates the threshold to the
/// asked rate, and writes a file that parses back to what it printed; `inspect` shows the file
/// and names a corrupted one's fault; an unknown class is named with the classes there are.
#[test]
fn prototypes_round_trip_and_a_corrupted_file_is_named() {
    use dim_runtime::prototypes::file::PrototypeFile;
    let dir = tempfile::tempdir().unwrap();
    let images = dir.path().join("images");
    dim_data::testing::write_folder(&images, 20);
    let blob = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/tiny/encoder.blob");
    let out = dir.path().join("protos.bin");
    let run = |classes: &str| {
        trainer()
            .args(["prototypes", "--shots", "3", "--validation-size", "20", "--false-positive-rate", "0.1", "--classes", classes, "--model"])
            .arg(&blob)
            .arg("--images")
            .arg(&images)
            .arg("--out")
            .arg(&out)
            .output()
            .unwrap()
    };
    let o = run("dogs");
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{text}{}", String::from_utf8_lossy(&o.stderr));
    // 20 validation images, about half of them dogs; at most 10 % of those may be flagged.
    let bytes = std::fs::read(&out).unwrap();
    let f = PrototypeFile::parse(&bytes).unwrap();
    assert_eq!(f.label_names().collect::<Vec<_>>(), ["dogs"]);
    assert_eq!((f.len(), f.dim, f.false_positive_rate), (1, 64, 0.1));
    assert_eq!(f.model, dim_runtime::engine::Model::parse(&std::fs::read(&blob).unwrap()).unwrap().id);
    assert!(text.contains(&format!("novelty threshold {:.4}", f.threshold)), "{text}");
    assert!(text.contains("other classes"), "cats were not enrolled: {text}");
    let flagged: f64 = text.split("recognised, ").nth(1).unwrap().split(" %").next().unwrap().parse().unwrap();
    assert!(flagged <= 10.0, "{text}");
    let o = trainer().arg("inspect").arg(&out).output().unwrap();
    let shown = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success() && shown.contains("labels (1), prototypes each: dogs (1)"), "{shown}");
    let mut bad = bytes.clone();
    *bad.last_mut().unwrap() ^= 1;
    std::fs::write(&out, &bad).unwrap();
    let o = trainer().arg("inspect").arg(&out).output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("checksum does not match") && err.contains("trainer prototypes"), "{err}");
    let o = run("wolves");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("\"wolves\"") && err.contains("cats, dogs"), "{err}");
}
