//! The `trainer` command line.

use anyhow::Context;
use clap::{Parser, Subcommand};
use dim_trainer::config::{BackendKind, ModelKind, TrainConfig};
use dim_trainer::model::LocalCriticKind;
use dim_trainer::objective::Estimator;
use dim_trainer::{bench, data, train};
use std::path::PathBuf;

// Training allocates and frees tensors of tens of MB every step; glibc hands those back to the
// kernel each time (page faults were ~10% of a `bench` profile). mimalloc keeps them.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `mi_option_purge_delay`: its position in mimalloc v3's `mi_option_e` (mimalloc.h; the Rust
/// bindings name only the options older versions had). Cargo.lock pins the C sources.
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Never hand freed memory back to the kernel. By default mimalloc purges freed spans after
/// 10 ms, and every step then faults in and zeroes its tens of MB of tensors again: a fifth of a
/// `bench` profile was the kernel clearing pages (`clear_page_erms`); this made the dim32 step
/// ≈ 1.2× faster. The process keeps its peak size instead. `MIMALLOC_PURGE_DELAY` still wins.
fn keep_freed_memory() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: mi_option_set stores an integer in mimalloc's option table (atomically); it
        // takes no pointers, and -1 is a documented value of this option ("no purging at all").
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) }
    }
}

/// Exit status of a `check` that ran and found a measure outside its tolerance.
const CHECK_FAILED: i32 = 2;

#[derive(Parser)]
#[command(name = "trainer", version, about = "Train Deep InfoMax image encoders for edge devices")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Train an encoder with Deep InfoMax.
    ///
    /// DATA may be: a folder of CIFAR-10 binary batches (data_batch_*.bin, as in the official
    /// cifar-10-binary.tar.gz), a folder of `<class>/*.png|jpg` images, or a folder / file of IDX
    /// images (MNIST, Fashion-MNIST; gz or raw). Without --data the built-in synthetic `shapes`
    /// set is used. Outputs go to OUT: config.json, metrics.jsonl, checkpoints/step-*/ and
    /// checkpoints/latest. Defaults are the paper's DIM(L): JSD, α=0 β=1 γ=0.1, Adam 1e-4, batch 64.
    #[command(
        after_help = "Example:\n  trainer fit --data cifar/train --model tiny --critic-width 512 --epochs 10 --out runs/tiny\n  trainer fit --out runs/tiny --resume --epochs 20"
    )]
    Fit(FitArgs),
    /// Measure training throughput (images per second): the step on a synthetic batch, or the
    /// whole loop on --data; --breakdown shows where the step's time goes.
    Bench(BenchArgs),
    /// Export a trained encoder as ONNX (BatchNorm folded; input `image` [N,3,32,32], output `y`).
    Export {
        /// A run folder (its latest checkpoint) or a checkpoints/step-* folder.
        #[arg(long)]
        checkpoint: PathBuf,
        /// Output ONNX file; the training config is written beside it as config.json.
        #[arg(long, default_value = "encoder.onnx")]
        out: PathBuf,
        /// Also output the local feature map `relu2` [N,C,8,8].
        #[arg(long)]
        with_local: bool,
    },
    /// Quantize an exported encoder to INT8 (per-channel weights, calibrated activations).
    ///
    /// Calibrates on the first CALIB_IMAGES of the training split of CALIB (the seeded split
    /// `fit` uses) and reports cosine(Y_int8, Y_f32) over its validation split. Writes OUT and
    /// OUT's stem + `.quantize.json`.
    Quantize {
        /// The f32 encoder from `trainer export`.
        #[arg(long)]
        model: PathBuf,
        /// Calibration data (any format `fit --data` reads).
        #[arg(long)]
        calib: PathBuf,
        #[arg(long, default_value = "encoder.int8.onnx")]
        out: PathBuf,
        #[arg(long, default_value_t = 512)]
        calib_images: usize,
        /// Activation range = this percentile of the calibration activations.
        #[arg(long, default_value_t = 99.99)]
        percentile: f64,
        /// Size of the validation split (the last images of the seeded shuffle).
        #[arg(long, default_value_t = 5000)]
        validation_size: usize,
        /// Seed of the split (use the training run's).
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Also write the no_std engine's model blob (same integers as OUT) to this file.
        #[arg(long)]
        blob: Option<PathBuf>,
    },
    /// Evaluate a representation: probes on conv / fc / Y, kNN on Y, MINE of I(X;Y), NDM of Y.
    ///
    /// Follows the paper's protocol (nonlinear probe: linear 200, BN, dropout 0.1, ReLU, linear;
    /// linear probe; Adam 1e-4, batch 64). Representations are computed through dim-runtime. Each
    /// learned measure runs once per seed; the report keeps every value, the mean and the spread.
    #[command(
        after_help = "Example:\n  trainer eval --model runs/dim32 --train cifar/train --out runs/dim32/eval/report.json\n  trainer eval --model encoder.onnx --train cifar/train --max-images 5000 --probe-epochs 5 --seeds 2"
    )]
    Eval(dim_trainer::eval::run::EvalArgs),
    /// Replay the measures of a float reference report through a deployed encoder; fail on a drop.
    ///
    /// The deployed file (f32 or int8 ONNX) runs in dim-runtime (tract), as on a device; `eval`'s
    /// settings and seeds are reused. Exit status 2 when a measure is outside its tolerance (an
    /// accuracy more than --max-drop points below the reference, or MINE / NDM outside a band of
    /// four standard errors of the reference's run-to-run spread, at least 2 %); 1 when the check
    /// could not run (an unreadable file, other images than the reference's); 0 when it passed.
    #[command(after_help = "Example:\n  trainer check --model encoder.int8.onnx --train cifar/train --reference runs/dim32/eval/report.json")]
    Check(dim_trainer::eval::run::CheckArgs),
    /// Write a shipped model's README.md (model card) from the measurements in its folder.
    ///
    /// DIR holds what `scripts/ship-model` puts there: config.json, the encoder files,
    /// encoder.int8.quantize.json, eval/report.json and check/check.json. Also writes the golden
    /// pair (golden.rgb, golden.y.txt) the tests replay.
    Card {
        /// The model folder, e.g. models/tiny.
        dir: PathBuf,
        /// The training run folder (its metrics.jsonl gives steps, epochs and throughput).
        #[arg(long)]
        run: PathBuf,
        /// The training data (the card's golden image is its first validation image).
        #[arg(long)]
        data: PathBuf,
        /// Where training ran, as it should read in the card.
        #[arg(long, default_value = "CPU")]
        hardware: String,
    },
    /// Dataset tools.
    #[command(subcommand)]
    Data(DataCommand),
}

#[derive(clap::Args)]
struct FitArgs {
    /// TOML or JSON file of config fields (see OUT/config.json of any run); flags override it.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Image data (see above); default: built-in synthetic shapes.
    #[arg(long)]
    data: Option<PathBuf>,
    /// Output folder.
    #[arg(long, default_value = "runs/dim")]
    out: PathBuf,
    #[arg(long, value_enum)]
    model: Option<ModelKind>,
    #[arg(long, value_enum)]
    critic: Option<LocalCriticKind>,
    /// Width of the encode-and-dot critic (paper: 2048).
    #[arg(long)]
    critic_width: Option<usize>,
    #[arg(long, value_enum)]
    estimator: Option<Estimator>,
    /// Global MI weight α.
    #[arg(long)]
    alpha: Option<f64>,
    /// Local MI weight β.
    #[arg(long)]
    beta: Option<f64>,
    /// Prior-matching weight γ.
    #[arg(long)]
    gamma: Option<f64>,
    #[arg(long)]
    epochs: Option<usize>,
    /// Stop after this many steps in total (a checkpoint is written at the end).
    #[arg(long)]
    max_steps: Option<usize>,
    #[arg(long)]
    batch_size: Option<usize>,
    #[arg(long)]
    learning_rate: Option<f64>,
    #[arg(long)]
    seed: Option<u64>,
    /// Images held out for validation (the last ones of the seeded shuffle; default 5000).
    #[arg(long)]
    validation_size: Option<usize>,
    #[arg(long, value_enum)]
    backend: Option<BackendKind>,
    /// Random-crop padding in pixels (0 = off).
    #[arg(long)]
    crop_padding: Option<usize>,
    /// Random horizontal flips.
    #[arg(long)]
    hflip: bool,
    /// Skip unreadable images with a warning instead of stopping.
    #[arg(long)]
    skip_bad: bool,
    /// Write a checkpoint every N steps too (default: at epoch ends only).
    #[arg(long)]
    checkpoint_every: Option<usize>,
    /// Continue the run in OUT from its latest checkpoint.
    #[arg(long)]
    resume: bool,
    /// Train images embedded for the final kNN probe on Y (0 = skip).
    #[arg(long, default_value_t = 10000)]
    knn_images: usize,
}

#[derive(clap::Args)]
struct BenchArgs {
    #[arg(long, value_enum, default_value = "dim32")]
    model: ModelKind,
    #[arg(long, default_value_t = 2048)]
    critic_width: usize,
    #[arg(long, default_value_t = 64)]
    batch_size: usize,
    #[arg(long, default_value_t = 10)]
    steps: usize,
    #[arg(long, default_value_t = 2)]
    warmup: usize,
    #[arg(long, value_enum, default_value = "cpu")]
    backend: BackendKind,
    /// Prior weight γ (the paper's DIM(L) default 0.1 trains the discriminator too).
    #[arg(long, default_value_t = 0.1)]
    gamma: f64,
    /// Run the whole `fit` loop on this data (loader and decode cache included) instead of one
    /// fixed synthetic batch.
    #[arg(long)]
    data: Option<PathBuf>,
    /// Also print the time of each phase of the step, its GFLOP and the fraction of the FP32 peak.
    #[arg(long)]
    breakdown: bool,
}

#[derive(Subcommand)]
enum DataCommand {
    /// Download and verify (SHA-256) an official dataset archive, then unpack it.
    Fetch {
        /// Dataset name: cifar10.
        name: String,
        /// Destination folder.
        #[arg(long)]
        to: PathBuf,
        /// Download from this URL instead (a mirror); the official SHA-256 is still checked.
        #[arg(long)]
        url: Option<String>,
    },
    /// Open a dataset and print what was found.
    Inspect { path: PathBuf },
}

fn fit_config(a: &FitArgs) -> anyhow::Result<TrainConfig> {
    let mut c = match &a.config {
        Some(p) => TrainConfig::load_file(p)?,
        None => TrainConfig::new(),
    };
    macro_rules! set {
        ($($f:ident),*) => { $( if let Some(v) = a.$f.clone() { c.$f = v; } )* };
    }
    set!(model, critic_width, estimator, alpha, beta, gamma, epochs, batch_size, learning_rate, seed, validation_size, backend, checkpoint_every);
    if let Some(v) = a.critic {
        c.local_critic = v;
    }
    if a.max_steps.is_some() {
        c.max_steps = a.max_steps;
    }
    if let Some(d) = &a.data {
        c.data = Some(d.to_string_lossy().into_owned());
    }
    if let Some(p) = a.crop_padding {
        c.augment.crop_padding = p;
    }
    c.augment.hflip |= a.hflip;
    c.skip_bad |= a.skip_bad;
    Ok(c)
}

/// Writes `bytes` to `path` atomically and the config as `config.json` beside it.
fn write_beside(path: &std::path::Path, bytes: &[u8], config: &TrainConfig) -> anyhow::Result<()> {
    use burn::config::Config;
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(std::path::Path::new("."));
    dim_trainer::checkpoint::write_atomic(path, bytes)?; // creates `dir`
    config.save(dir.join("config.json")).map_err(|e| anyhow::anyhow!("cannot write {}: {e}", dir.join("config.json").display()))?;
    Ok(())
}

fn main() -> anyhow::Result<()> {
    keep_freed_memory();
    let cli = Cli::parse();
    match cli.command {
        Command::Fit(args) => {
            let config = fit_config(&args)?;
            ctrlc::set_handler(|| {
                eprintln!("\nCtrl-C: saving a checkpoint after this step (press again to abort at once)");
                if train::INTERRUPTED.swap(true, std::sync::atomic::Ordering::SeqCst) {
                    std::process::exit(130);
                }
            })
            .context("cannot install the Ctrl-C handler")?;
            let opts = train::FitOptions { resume: args.resume, progress: true, knn_images: args.knn_images };
            let s = train::fit(config, &args.out, &opts)?;
            println!("trained {} steps ({:.0} img/s); checkpoint: {}", s.steps, s.img_per_s, s.checkpoint.display());
            println!("outputs in {}: config.json, metrics.jsonl, checkpoints/", args.out.display());
            if s.interrupted {
                std::process::exit(130);
            }
        }
        Command::Bench(b) => {
            let config = TrainConfig::new()
                .with_model(b.model)
                .with_critic_width(b.critic_width)
                .with_batch_size(b.batch_size)
                .with_backend(b.backend)
                .with_gamma(b.gamma);
            eprintln!("bench: {:?}, encode-and-dot critic W={}, batch {}, {} steps after {} warm-up", b.model, b.critic_width, b.batch_size, b.steps, b.warmup);
            if let Some(data) = &b.data {
                let config = config.with_data(Some(data.to_string_lossy().into_owned()));
                println!("{:.1} img/s", bench::run_data(&config, b.warmup, b.steps)?);
            } else if b.breakdown {
                let r = bench::breakdown(&config, b.warmup, b.steps)?;
                println!("{}", r.table());
                println!("{:.1} img/s", r.img_per_s());
            } else {
                println!("{:.1} img/s", bench::run(&config, b.warmup, b.steps)?);
            }
        }
        Command::Export { checkpoint, out, with_local } => {
            let ck = dim_trainer::checkpoint::resolve(&checkpoint)?;
            let config = dim_trainer::checkpoint::load_config(&ck)?;
            let model = dim_trainer::checkpoint::load_model(&ck, &config, &burn::tensor::Device::flex())?;
            let bytes = dim_trainer::export::to_onnx(&model.encoder, with_local);
            write_beside(&out, &bytes, &config)?;
            // Prove the file loads in the runtime before calling it done.
            dim_runtime::Encoder::from_bytes(&bytes).context("the exported model does not load in tract")?;
            println!("wrote {} ({} bytes, opset {}) from {}", out.display(), bytes.len(), dim_trainer::export::OPSET, ck.display());
        }
        Command::Quantize { model, calib, out, calib_images, percentile, validation_size, seed, blob } => {
            let f32_bytes = std::fs::read(&model).with_context(|| format!("cannot read {}", model.display()))?;
            let source = data::open(&calib)?;
            let (train_idx, val_idx) = data::split(source.len(), validation_size, seed);
            let cal = data::load_inputs(&*source, &train_idx[..calib_images.min(train_idx.len())])?;
            let val = data::load_inputs(&*source, &val_idx)?;
            eprintln!("calibrating on {} images, validating on {}", cal.len() / 3072, val.len() / 3072);
            let q = dim_trainer::export::quantize::quantize(&f32_bytes, &cal, &val, percentile).with_context(|| format!("quantizing {}", model.display()))?;
            let report = q.report;
            dim_trainer::checkpoint::write_atomic(&out, &q.onnx)?;
            if let Some(path) = &blob {
                let m = dim_runtime::engine::Model::parse(&q.blob).map_err(|e| anyhow::anyhow!("the blob does not parse: {e}"))?;
                dim_trainer::checkpoint::write_atomic(path, &q.blob)?;
                println!("wrote {} ({} bytes; the engine needs a {}-byte arena)", path.display(), q.blob.len(), m.arena_size());
            }
            let report_path = out.with_extension("quantize.json");
            dim_trainer::checkpoint::write_atomic(&report_path, &serde_json::to_vec_pretty(&report)?)?;
            println!(
                "cosine(Y_int8, Y_f32) over {} validation images: mean {:.5}, worst {:.5}",
                report.validation_images, report.mean_cosine, report.worst_cosine
            );
            println!(
                "size: f32 {} bytes, int8 {} bytes ({:.2}x smaller)",
                report.f32_bytes,
                report.int8_bytes,
                report.f32_bytes as f64 / report.int8_bytes as f64
            );
            println!("wrote {} and {}", out.display(), report_path.display());
        }
        Command::Eval(args) => dim_trainer::eval::run::eval(&args)?,
        Command::Card { dir, run, data, hardware } => {
            let name = dir.file_name().map_or_else(|| "model".into(), |n| n.to_string_lossy().to_string());
            let out = dim_trainer::card::write(&dir, &run, &data, &name, &hardware)?;
            println!("wrote {}", out.display());
        }
        Command::Check(args) => {
            if !dim_trainer::eval::run::check(&args)? {
                // A regression found is not an error: scripts tell them apart (1 = could not run).
                std::process::exit(CHECK_FAILED);
            }
        }
        Command::Data(DataCommand::Fetch { name, to, url }) => {
            let a = data::fetch::archive(&name)?;
            let path = data::fetch::fetch(url.as_deref().unwrap_or(a.url), a.file, a.sha256, &to)?;
            println!("{} verified and unpacked into {}", path.display(), to.display());
        }
        Command::Data(DataCommand::Inspect { path }) => {
            let src = data::open(&path)?;
            println!("{}", src.describe());
            println!("classes: {}", src.classes().join(", "));
            let first = src.load(0)?;
            println!("first image decoded: label {}, mean pixel {:.1}", src.label(0), first.iter().map(|&v| v as f64).sum::<f64>() / first.len() as f64);
        }
    }
    Ok(())
}
