//! `fit` end to end on the built-in data: learning, exact resume, failure handling.

use dim_tests::{quick_config, step_losses};
use dim_trainer::fit::checkpoint;
use dim_trainer::fit::{FitOptions, fit};

fn opts(resume: bool) -> FitOptions {
    FitOptions { resume, progress: false, knn_images: 0, monitor_every: 0 }
}

#[test]
fn resume_continues_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let (full, split) = (dir.path().join("full"), dir.path().join("split"));
    // 128 train images / batch 8 = 16 steps per epoch; stop mid-epoch 2 and resume.
    let s = fit(quick_config().with_max_steps(Some(22)), &full, &opts(false)).unwrap();
    assert_eq!(s.steps, 22);
    fit(quick_config().with_max_steps(Some(19)), &split, &opts(false)).unwrap();
    let again = fit(quick_config().with_max_steps(Some(22)), &split, &opts(true)).unwrap();
    assert_eq!(again.steps, 22);
    let (a, b) = (step_losses(&full), step_losses(&split));
    assert_eq!(a.len(), 22);
    assert_eq!(a, b, "resumed run must reproduce the uninterrupted loss sequence bit for bit");
    // A different seed gives a different run (the comparison above is not vacuous).
    let other = dir.path().join("other");
    fit(quick_config().with_seed(8).with_max_steps(Some(3)), &other, &opts(false)).unwrap();
    assert_ne!(step_losses(&other)[..3], a[..3]);
}

#[test]
fn checkpoints_are_complete_and_survive_a_torn_write() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    fit(quick_config().with_max_steps(Some(5)), &out, &opts(false)).unwrap();
    let ck = checkpoint::latest(&out).unwrap().unwrap();
    for f in ["model.bpk", "optim.bpk", "disc.bpk", "disc_optim.bpk", "config.json", "state.json"] {
        assert!(ck.join(f).exists(), "{f} missing in {}", ck.display());
    }
    assert!(out.join("config.json").exists());
    // A write killed half way leaves a hidden temporary folder; the run resumes from `latest`.
    let torn = checkpoint::dir(&out).join(".step-00000006.tmp");
    std::fs::create_dir_all(&torn).unwrap();
    std::fs::write(torn.join("model.bpk"), b"half a file").unwrap();
    let s = fit(quick_config().with_max_steps(Some(7)), &out, &opts(true)).unwrap();
    assert_eq!(s.steps, 7);
    assert_eq!(step_losses(&out).len(), 7);
}

#[test]
fn a_new_run_refuses_to_overwrite_and_a_damaged_checkpoint_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    fit(quick_config().with_max_steps(Some(2)), &out, &opts(false)).unwrap();
    let err = fit(quick_config().with_max_steps(Some(2)), &out, &opts(false)).unwrap_err().to_string();
    assert!(err.contains("--resume"), "{err}");
    let ck = checkpoint::latest(&out).unwrap().unwrap();
    std::fs::write(ck.join("model.bpk"), b"garbage").unwrap();
    let err = format!("{:#}", fit(quick_config().with_max_steps(Some(4)), &out, &opts(true)).unwrap_err());
    assert!(err.contains("model.bpk"), "{err}");
}

#[test]
fn a_diverging_loss_stops_with_a_clear_message_and_keeps_the_last_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let config = quick_config().with_learning_rate(1e30).with_checkpoint_every(1).with_max_steps(Some(12));
    let err = format!("{:#}", fit(config, &out, &opts(false)).unwrap_err());
    assert!(err.contains("loss became") && err.contains("last good checkpoint"), "{err}");
    let ck = checkpoint::latest(&out).unwrap().expect("a checkpoint from before the divergence");
    let progress = checkpoint::load_progress(&ck).unwrap();
    let losses = step_losses(&out);
    assert_eq!(progress.step, losses.len(), "the latest checkpoint is the last finite step");
    assert!(losses.iter().all(|(_, l)| l.is_finite()));
}

#[test]
fn dim_loss_falls_on_shapes() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let s = fit(quick_config().with_epochs(3).with_learning_rate(1e-3), &out, &opts(false)).unwrap();
    let l = &s.losses;
    let head: f64 = l[..8].iter().sum::<f64>() / 8.0;
    let tail: f64 = l[l.len() - 8..].iter().sum::<f64>() / 8.0;
    assert!(tail < head - 0.1, "loss should fall: first steps {head:.3}, last steps {tail:.3}");
}

#[test]
fn every_objective_and_critic_trains_finite() {
    use dim_trainer::model::LocalCriticKind;
    use dim_trainer::objective::{Estimator, Prior};
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (Estimator::InfoNce, LocalCriticKind::EncodeDot, 0.0, 1.0, 0.1, Prior::Uniform),
        (Estimator::Dv, LocalCriticKind::ConcatConv, 0.0, 1.0, 0.0, Prior::Uniform),
        // DIM(G): global critic only, prior weight 1, Gaussian prior.
        (Estimator::Jsd, LocalCriticKind::EncodeDot, 1.0, 0.0, 1.0, Prior::Gaussian),
    ];
    for (i, (est, critic, alpha, beta, gamma, prior)) in cases.into_iter().enumerate() {
        let out = dir.path().join(format!("run{i}"));
        let config = quick_config()
            .with_estimator(est)
            .with_local_critic(critic)
            .with_alpha(alpha)
            .with_beta(beta)
            .with_gamma(gamma)
            .with_prior(prior)
            .with_max_steps(Some(3));
        let s = fit(config, &out, &opts(false)).unwrap();
        assert_eq!(s.losses.len(), 3);
        assert!(s.losses.iter().all(|l| l.is_finite()), "case {i}: {:?}", s.losses);
        let line: serde_json::Value = serde_json::from_str(std::fs::read_to_string(out.join("metrics.jsonl")).unwrap().lines().next().unwrap()).unwrap();
        assert_eq!(line["local_mi"].as_f64().unwrap() != 0.0, beta > 0.0, "case {i}: {line}");
        assert_eq!(line["global_mi"].as_f64().unwrap() != 0.0, alpha > 0.0, "case {i}: {line}");
        assert_eq!(line["prior"].as_f64().unwrap() != 0.0, gamma > 0.0, "case {i}: {line}");
        // The critic that the config asks for is the one checkpointed.
        assert!(dim_trainer::fit::checkpoint::latest(&out).unwrap().unwrap().join("model.bpk").exists());
    }
}

/// Writes `<root>/<class>/<i>.png` for 2 classes; images whose index is in `bad` are truncated.
fn png_folder(root: &std::path::Path, per_class: usize, bad: &[usize]) {
    for (c, class) in ["ants", "bees"].iter().enumerate() {
        std::fs::create_dir_all(root.join(class)).unwrap();
        for i in 0..per_class {
            let img = image::RgbImage::from_fn(32, 32, |x, y| image::Rgb([(c * 200) as u8, (x * 7) as u8, (y * 7 + i as u32) as u8]));
            let path = root.join(class).join(format!("{i:02}.png"));
            img.save(&path).unwrap();
            if bad.contains(&(c * per_class + i)) {
                let bytes = std::fs::read(&path).unwrap();
                std::fs::write(&path, &bytes[..bytes.len() / 3]).unwrap();
            }
        }
    }
}

/// Runs `fit` on a thread; a run that does not end within two minutes fails the test (issue 17:
/// a skipped last batch made the epoch never end, and `fit` spun forever).
fn fit_within_limit(config: dim_trainer::fit::TrainConfig, out: std::path::PathBuf) -> Result<dim_trainer::fit::FitSummary, String> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || tx.send(fit(config, &out, &opts(false)).map_err(|e| format!("{e:#}"))).unwrap());
    rx.recv_timeout(std::time::Duration::from_secs(120)).expect("fit did not end: an epoch never finished")
}

#[test]
fn skipped_batches_end_their_epoch_and_unreadable_data_stops_with_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // 16 images, 4 truncated; 14 train in batches of 2: some batches keep one readable image.
    png_folder(&data, 8, &[1, 6, 9, 12]);
    let config = quick_config().with_data(Some(data.display().to_string())).with_validation_size(2).with_batch_size(2).with_epochs(4).with_skip_bad(true);
    let s = fit_within_limit(config.clone(), dir.path().join("run")).unwrap();
    let epochs = dim_trainer::fit::metrics::epochs(&dir.path().join("run/metrics.jsonl")).unwrap();
    assert_eq!(epochs.len(), 4, "every epoch ends");
    assert!(s.steps < 4 * 7 && s.steps >= 4 * 3, "{} steps: batches without 2 readable images are skipped", s.steps);
    // Every image unreadable: a clear error, not a spin.
    let all_bad = dir.path().join("bad");
    png_folder(&all_bad, 4, &(0..8).collect::<Vec<_>>());
    let config = config.with_data(Some(all_bad.display().to_string()));
    let err = fit_within_limit(config, dir.path().join("run2")).unwrap_err();
    assert!(err.contains("readable images"), "{err}");
}

/// `--monitor-every 1`: one monitor line per epoch, with the split it used and accuracies that
/// beat chance on the built-in shapes (10 classes) after two epochs.
#[test]
fn the_monitor_measures_every_epoch() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let config = quick_config().with_synthetic_images(640).with_validation_size(160).with_epochs(2).with_learning_rate(1e-3);
    fit(config, &out, &FitOptions { monitor_every: 1, ..opts(false) }).unwrap();
    let m = dim_trainer::fit::metrics::monitors(&out.join("metrics.jsonl")).unwrap();
    assert_eq!(m.iter().map(|r| r.epoch).collect::<Vec<_>>(), [1, 2]);
    assert_eq!((m[1].train_images, m[1].test_images), (480, 160));
    assert!(m[1].knn > 20.0 && m[1].linear_probe > 20.0, "{:?}", m[1]);
}

/// Issue 17: a process killed after its last checkpoint leaves step lines the resumed run writes
/// again; `metrics.jsonl` must hold each step once.
#[test]
fn resume_drops_the_metrics_written_after_the_checkpoint() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    fit(quick_config().with_max_steps(Some(5)), &out, &opts(false)).unwrap();
    let mut f = std::fs::OpenOptions::new().append(true).open(out.join("metrics.jsonl")).unwrap();
    for step in [6, 7] {
        writeln!(f, "{{\"step\":{step},\"epoch\":1,\"loss\":9.0,\"local_mi\":0.0,\"global_mi\":0.0,\"prior\":0.0,\"disc\":0.0,\"img_per_s\":1.0}}").unwrap();
    }
    f.write_all(b"{\"step\":8,\"ep").unwrap(); // and a torn last line
    drop(f);
    fit(quick_config().with_max_steps(Some(8)), &out, &opts(true)).unwrap();
    let steps: Vec<u64> = step_losses(&out).iter().map(|s| s.0).collect();
    assert_eq!(steps, (1..=8).collect::<Vec<_>>());
    assert!(step_losses(&out).iter().all(|s| s.1 != 9.0), "the killed process's lines are gone");
}

/// Distillation end to end with real teacher files (the shipped tiny's f32 and int8 ONNX, and
/// dim32's): the teacher's rows embedded once and cached, the distillation bound rising while
/// the student learns, exact resume with the cache, a cache from another teacher recomputed, and
/// a teacher of another width refused on resume.
#[test]
fn distillation_learns_caches_its_teacher_and_resumes_exactly() {
    use dim_trainer::fit::config::{Distill, DistillObjective, StudentLayer, TeacherLayer};
    use dim_trainer::fit::teacher::TeacherKey;
    let models = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../models");
    let teacher = |file: &str| models.join(file).to_string_lossy().into_owned();
    let distilled = |t: &str| quick_config().with_learning_rate(1e-3).with_distill(Some(Distill { width: 16, ..Distill::from_teacher(teacher(t)) }));
    let dir = tempfile::tempdir().unwrap();
    let (full, split) = (dir.path().join("full"), dir.path().join("split"));
    fit(distilled("tiny/encoder.onnx").with_max_steps(Some(32)), &full, &opts(false)).unwrap();
    let key: TeacherKey = serde_json::from_slice(&std::fs::read(full.join("teacher.json")).unwrap()).unwrap();
    assert_eq!((key.layer, key.images, key.width), (TeacherLayer::Fc, 160, 128));
    let npy = std::fs::read(full.join("teacher.npy")).unwrap();
    assert_eq!(npyz::NpyFile::new(&npy[..]).unwrap().shape(), [160, 128]);
    let saved = dim_trainer::fit::config::TrainConfig::load_file(&full.join("config.json")).unwrap();
    assert_eq!(saved.distill.unwrap().teacher_dim, Some(128), "the critic's shape is saved with the run");

    let distill: Vec<f64> = dim_trainer::fit::metrics::steps(&full.join("metrics.jsonl")).unwrap().iter().map(|s| s.losses.distill_mi).collect();
    let mean = |s: &[f64]| s.iter().sum::<f64>() / s.len() as f64;
    let (head, tail) = (mean(&distill[..6]), mean(&distill[26..]));
    assert!(tail > head + 0.1, "the distillation bound should rise: first steps {head:.3}, last {tail:.3}");
    // InfoNCE is bounded by 0 here (no log N term); at chance it is −log(8 + 1024): the batch's
    // 7 other rows and 1,024 drawn ones besides the positive.
    assert!(distill.iter().all(|&d| d <= 1e-6 && d > -1032f64.ln() - 1.0), "{distill:?}");

    // The student's fc layer (128 wide in tiny, Y is 64) as the critic's input: it learns too,
    // along another path than Y's (same seed, same batches, other losses).
    let on_fc = dir.path().join("fc");
    std::fs::create_dir_all(&on_fc).unwrap();
    for f in ["teacher.npy", "teacher.json"] {
        std::fs::copy(full.join(f), on_fc.join(f)).unwrap();
    }
    let fc_config = distilled("tiny/encoder.onnx").with_max_steps(Some(32));
    let fc_distill = Distill { student_layer: StudentLayer::Fc, ..fc_config.distill.clone().unwrap() };
    let fc_config = fc_config.with_distill(Some(fc_distill));
    fit(fc_config.clone(), &on_fc, &opts(false)).unwrap();
    let fc_bound: Vec<f64> = dim_trainer::fit::metrics::steps(&on_fc.join("metrics.jsonl")).unwrap().iter().map(|s| s.losses.distill_mi).collect();
    assert!(mean(&fc_bound[26..]) > mean(&fc_bound[..6]) + 0.1, "the bound on fc should rise: {fc_bound:?}");
    assert_ne!(fc_bound, distill, "fc and Y are different students");
    let saved = dim_trainer::fit::config::TrainConfig::load_file(&on_fc.join("config.json")).unwrap();
    assert_eq!(saved.model_config().distill.map(|d| d.0), Some(128), "the run's config rebuilds the fc-wide critic");
    // The regression objective (a head predicting the teacher's row, by cosine) learns too; its
    // term is a mean cosine − 1, so it stays in [−2, 0].
    let regress = dir.path().join("regress");
    std::fs::create_dir_all(&regress).unwrap();
    for f in ["teacher.npy", "teacher.json"] {
        std::fs::copy(full.join(f), regress.join(f)).unwrap();
    }
    let r_config = distilled("tiny/encoder.onnx").with_max_steps(Some(32));
    let r_distill = Distill { student_layer: StudentLayer::Fc, objective: DistillObjective::Regress, ..r_config.distill.clone().unwrap() };
    fit(r_config.with_distill(Some(r_distill)), &regress, &opts(false)).unwrap();
    let r_term: Vec<f64> = dim_trainer::fit::metrics::steps(&regress.join("metrics.jsonl")).unwrap().iter().map(|s| s.losses.distill_mi).collect();
    assert!(r_term.iter().all(|&r| (-2.0 - 1e-6..=1e-6).contains(&r)), "{r_term:?}");
    assert!(mean(&r_term[26..]) > mean(&r_term[..6]) + 0.05, "the regression's cosine should rise: {r_term:?}");
    // Resuming the Y run with the fc critic is refused before any checkpoint is read.
    let err = format!("{:#}", fit(fc_config.with_max_steps(Some(40)), &full, &opts(true)).unwrap_err());
    assert!(err.contains("student layer") && err.contains("(Fc, Y, Contrast, 16)") && err.contains("(Fc, Fc, Contrast, 16)"), "{err}");

    fit(distilled("tiny/encoder.onnx").with_max_steps(Some(19)), &split, &opts(false)).unwrap();
    let cached = std::fs::metadata(split.join("teacher.npy")).unwrap().modified().unwrap();
    fit(distilled("tiny/encoder.onnx").with_max_steps(Some(32)), &split, &opts(true)).unwrap();
    assert_eq!(std::fs::metadata(split.join("teacher.npy")).unwrap().modified().unwrap(), cached, "the resumed run reused the cache");
    assert_eq!(step_losses(&full), step_losses(&split), "a resumed distillation run reproduces the uninterrupted one bit for bit");

    // A cache made with another teacher file is not used: the int8 teacher's rows replace it.
    let other = dir.path().join("other");
    std::fs::create_dir_all(&other).unwrap();
    for f in ["teacher.npy", "teacher.json"] {
        std::fs::copy(full.join(f), other.join(f)).unwrap();
    }
    fit(distilled("tiny/encoder.int8.onnx").with_max_steps(Some(1)), &other, &opts(false)).unwrap();
    let key2: TeacherKey = serde_json::from_slice(&std::fs::read(other.join("teacher.json")).unwrap()).unwrap();
    assert_ne!(key2.teacher_sha256, key.teacher_sha256);
    assert_ne!(std::fs::read(other.join("teacher.npy")).unwrap(), npy, "int8 rows differ from f32 rows");

    // Resuming with a teacher whose layer is wider than the critic was built for is refused.
    let err = format!("{:#}", fit(distilled("dim32/encoder.onnx").with_max_steps(Some(40)), &split, &opts(true)).unwrap_err());
    assert!(err.contains("width 128") && err.contains("1024"), "{err}");
    assert_eq!(std::fs::metadata(split.join("teacher.npy")).unwrap().modified().unwrap(), cached, "the refused teacher did not replace the run's cache");
}

/// `--init-encoder` with the shipped tiny's f32 file: the new run's checkpoint before any step
/// exports to the file's function (same embeddings through tract), the run records the file and
/// trains on from it, `--resume` continues from the checkpoint, and a file of another model is
/// refused with the fix.
#[test]
fn a_run_started_from_an_exported_encoder_computes_it_and_trains_on() {
    use dim_trainer::data::{ImageSource, Shapes, load_inputs};
    let models = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../models");
    let file = models.join("tiny/encoder.onnx");
    let warm = quick_config().with_init_encoder(Some(file.to_string_lossy().into_owned()));
    let dir = tempfile::tempdir().unwrap();
    let start = dir.path().join("start");
    let s = fit(warm.clone().with_max_steps(Some(0)), &start, &opts(false)).unwrap();
    assert_eq!(s.steps, 0);
    let onnx = dir.path().join("start.onnx");
    dim_trainer::export::run(&start, &onnx, false).unwrap();
    let embed = |path: &std::path::Path| {
        let bytes = std::fs::read(path).unwrap();
        let encoder = dim_runtime::Encoder::from_bytes_with_layers(&bytes, &dim_trainer::export::PROBE_LAYERS).unwrap();
        let shapes = Shapes::new(64, 3);
        let idx: Vec<usize> = (0..shapes.len()).collect();
        encoder.embed_layers(&load_inputs(&shapes, &idx).unwrap()).unwrap()
    };
    let (want, got) = (embed(&file), embed(&onnx));
    for (layer, (w, g)) in ["y", "relu3", "fc_relu"].iter().zip(want.iter().zip(&got)) {
        let scale = w.iter().fold(1f32, |m, v| m.max(v.abs()));
        let worst = w.iter().zip(g).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        assert!(worst <= 1e-4 * scale, "{layer}: the warm start's export differs from the file by {worst} (largest value {scale})");
    }
    let saved = dim_trainer::fit::config::TrainConfig::load_file(&start.join("config.json")).unwrap();
    assert_eq!(saved.init_encoder.as_deref(), Some(file.to_string_lossy().as_ref()));

    // It trains on from there, and resumes from its own checkpoint (the file is not read again:
    // a resumed run reproduces the uninterrupted one).
    let (full, split) = (dir.path().join("full"), dir.path().join("split"));
    fit(warm.clone().with_learning_rate(1e-3).with_max_steps(Some(12)), &full, &opts(false)).unwrap();
    fit(warm.clone().with_learning_rate(1e-3).with_max_steps(Some(7)), &split, &opts(false)).unwrap();
    fit(warm.clone().with_learning_rate(1e-3).with_max_steps(Some(12)), &split, &opts(true)).unwrap();
    assert_eq!(step_losses(&full), step_losses(&split));
    // The encoder itself trained (its parameters are leaves of the step's graph, not constants).
    let trained = dir.path().join("trained.onnx");
    dim_trainer::export::run(&full, &trained, false).unwrap();
    let moved = embed(&trained)[0].iter().zip(&want[0]).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
    assert!(moved > 1e-3, "12 steps at Adam 1e-3 left the encoder where the file put it (largest change in y {moved})");
    // From the file, not from the seed's random weights: the first losses differ.
    let fresh = dir.path().join("fresh");
    fit(quick_config().with_learning_rate(1e-3).with_max_steps(Some(3)), &fresh, &opts(false)).unwrap();
    assert_ne!(step_losses(&fresh)[..3], step_losses(&full)[..3]);

    let dim32 = models.join("dim32/encoder.onnx");
    let err =
        format!("{:#}", fit(quick_config().with_init_encoder(Some(dim32.to_string_lossy().into_owned())), &dir.path().join("x"), &opts(false)).unwrap_err());
    assert!(err.contains("dim32/encoder.onnx") && err.contains("--model"), "{err}");
}
