//! The `trainer` command line: every clap type, and their conversion to the library's plain
//! option structs. Nothing below `main.rs` and this file knows about clap.

use clap::builder::{PossibleValuesParser, TypedValueParser};
use clap::{Parser, Subcommand};
use dim_trainer::embed::EmbedOptions;
use dim_trainer::eval::Settings;
use dim_trainer::eval::run::{CheckOptions, DataOptions, EvalOptions};
use dim_trainer::fit::config::{BackendKind, Distill, DistillObjective, ModelKind, StudentLayer, TeacherLayer, TrainConfig};
use dim_trainer::fit::preset::Preset;
use dim_trainer::model::LocalCriticKind;
use dim_trainer::objective::Estimator;
use dim_trainer::quantize::QuantizeOptions;
use std::path::PathBuf;

/// The names the domain enums are written with in config files (serde, kebab-case).
const MODELS: [&str; 2] = ["dim32", "tiny"];
const CRITICS: [&str; 3] = ["encode-dot", "encode-dot-ln", "concat-conv"];
const ESTIMATORS: [&str; 3] = ["jsd", "infonce", "dv"];
const BACKENDS: [&str; 3] = ["cpu", "cuda", "wgpu"];
const TEACHER_LAYERS: [&str; 3] = ["fc", "y", "conv"];
const STUDENT_LAYERS: [&str; 2] = ["y", "fc"];
const DISTILL_OBJECTIVES: [&str; 2] = ["contrast", "regress"];

/// A clap parser for a domain enum by its config-file name; `--help` lists the names.
fn choice<T: serde::de::DeserializeOwned + Clone + Send + Sync + 'static>(names: &'static [&'static str]) -> impl TypedValueParser<Value = T> {
    PossibleValuesParser::new(names).map(|s| serde_json::from_value(serde_json::Value::String(s)).expect("every listed name is a variant (tested)"))
}

#[derive(Parser)]
#[command(name = "trainer", version, about = "Train Deep InfoMax image encoders for edge devices")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

// One `Command` is parsed per process: the size of its largest variant costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
pub enum Command {
    /// Train an encoder with Deep InfoMax.
    ///
    /// DATA may be: a folder of CIFAR-10 binary batches (data_batch_*.bin, as in the official
    /// cifar-10-binary.tar.gz), a folder of `<class>/*.png|jpg` images, or a folder / file of IDX
    /// images (MNIST, Fashion-MNIST; gz or raw). Without --data the built-in synthetic `shapes`
    /// set is used. Outputs go to OUT: config.json, metrics.jsonl, checkpoints/step-*/ and
    /// checkpoints/latest. Defaults are the paper's DIM(L) (JSD, α=0 β=1 γ=0.1, Adam 1e-4,
    /// batch 64) with the fast critic and β₁ 0.9; `--preset paper` is the official recipe exactly.
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
    Quantize(QuantizeArgs),
    /// Evaluate a representation: probes on conv / fc / Y, kNN on Y, MINE of I(X;Y), NDM of Y.
    ///
    /// Follows the paper's protocol (nonlinear probe: linear 200, BN, dropout 0.1, ReLU, linear;
    /// linear probe; Adam 1e-4, batch 64). Representations are computed through dim-runtime. Each
    /// learned measure runs once per seed; the report keeps every value, the mean and the spread.
    #[command(
        after_help = "Example:\n  trainer eval --model runs/dim32 --train cifar/train --out runs/dim32/eval/report.json\n  trainer eval --model encoder.onnx --train cifar/train --max-images 5000 --probe-epochs 5 --seeds 2"
    )]
    Eval(EvalArgs),
    /// Replay the measures of a float reference report through a deployed encoder; fail on a drop.
    ///
    /// The deployed file (f32 or int8 ONNX) runs in dim-runtime (tract), as on a device; `eval`'s
    /// settings and seeds are reused. Exit status 2 when a measure is outside its tolerance (an
    /// accuracy more than --max-drop points below the reference, or MINE / NDM outside a band of
    /// four standard errors of the reference's run-to-run spread, at least 2 %); 1 when the check
    /// could not run (an unreadable file, other images than the reference's); 0 when it passed.
    #[command(after_help = "Example:\n  trainer check --model encoder.int8.onnx --train cifar/train --reference runs/dim32/eval/report.json")]
    Check(CheckArgs),
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
    /// Embed images: Y of every image through dim-runtime, as a device computes it.
    ///
    /// INPUT: image files, or folders searched recursively for .png / .jpg (sorted). Writes OUT as
    /// CSV (path, y0, y1, …) or NPY (f32 [n, d], paths in OUT's stem + `.paths.txt`).
    #[command(after_help = "Example:\n  trainer embed models/tiny/encoder.int8.onnx photos/ --out y.csv")]
    Embed(EmbedArgs),
    /// Show an encoder file layer by layer: output shapes, weights, multiply-adds, activation
    /// bytes, totals, and (for an engine blob) the flash and RAM a Cortex-M build needs. A
    /// prototypes file: its encoder, threshold and labels.
    #[command(
        after_help = "Example:\n  trainer inspect models/tiny/encoder.int8.onnx\n  trainer inspect models/tiny/encoder.blob\n  trainer inspect models/tiny/prototypes.bin"
    )]
    Inspect {
        /// An `.onnx` encoder (f32 or int8), an engine `.blob` or a prototypes file.
        model: PathBuf,
    },
    /// Enrol labelled images into a prototypes file for the firmware: one prototype per class
    /// (the mean of SHOTS embeddings by the no_std engine) and a novelty threshold that flags at
    /// most FALSE_POSITIVE_RATE of the validation images of those classes.
    ///
    /// Support images are the first SHOTS of each class in the seeded training shuffle (the split
    /// `fit` uses); the validation split scores the threshold, and its images of the classes not
    /// enrolled show how much novelty it catches. The file is versioned and CRC-checked, and
    /// names the blob it was made with (the firmware refuses another).
    #[command(
        after_help = "Example:\n  trainer prototypes --model models/tiny/encoder.blob --images cifar/train --shots 10 \\\n    --classes airplane,automobile,bird,cat,deer --out protos.bin"
    )]
    Prototypes(PrototypesArgs),
    /// Dataset tools.
    #[command(subcommand)]
    Data(DataCommand),
}

#[derive(clap::Args)]
pub struct FitArgs {
    /// Start from a named recipe (configs/presets/): `paper` — the official DIM(L) code's recipe
    /// item by item (the defaults plus its LayerNorm critic `encode-dot-ln` and Adam β₁ 0.5;
    /// docs/DESIGN.md has the table); `fast` — the tiny study's winner per CPU-hour (tiny,
    /// InfoNCE, W=128, Adam 1e-3; docs/recipes.md). --config and flags override it. New runs only.
    #[arg(long, value_parser = choice::<Preset>(&Preset::NAMES))]
    pub preset: Option<Preset>,
    /// TOML or JSON file of config fields (see OUT/config.json of any run); flags override it.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Image data (see above); default: built-in synthetic shapes.
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Output folder.
    #[arg(long, default_value = "runs/dim")]
    pub out: PathBuf,
    /// Encoder: dim32 (the paper's) or tiny (for Cortex-M).
    #[arg(long, value_parser = choice::<ModelKind>(&MODELS))]
    pub model: Option<ModelKind>,
    /// Local critic: encode-dot (1×1 convs to width W, dot product; reassociated, fast),
    /// encode-dot-ln (the official network: the same with a LayerNorm on both encodings and the
    /// shortcut started at the identity; `--preset paper`) or concat-conv.
    #[arg(long, value_parser = choice::<LocalCriticKind>(&CRITICS))]
    pub critic: Option<LocalCriticKind>,
    /// Width of the encode-and-dot critic (paper: 2048).
    #[arg(value_parser = at_least_one, long)]
    pub critic_width: Option<usize>,
    /// Mutual-information estimator: jsd, infonce or dv.
    #[arg(long, value_parser = choice::<Estimator>(&ESTIMATORS))]
    pub estimator: Option<Estimator>,
    /// Global MI weight α.
    #[arg(value_parser = non_negative, long)]
    pub alpha: Option<f64>,
    /// Local MI weight β.
    #[arg(value_parser = non_negative, long)]
    pub beta: Option<f64>,
    /// Prior-matching weight γ.
    #[arg(value_parser = non_negative, long)]
    pub gamma: Option<f64>,
    #[arg(value_parser = at_least_one, long)]
    pub epochs: Option<usize>,
    /// Stop after this many steps in total (a checkpoint is written at the end).
    #[arg(value_parser = at_least_one, long)]
    pub max_steps: Option<usize>,
    #[arg(value_parser = at_least_one, long)]
    pub batch_size: Option<usize>,
    #[arg(value_parser = positive, long)]
    pub learning_rate: Option<f64>,
    /// Adam's β₁ for every network (default 0.9; the official code and `--preset paper`: 0.5).
    #[arg(value_parser = beta1, long)]
    pub adam_beta1: Option<f64>,
    /// Epochs of linear learning-rate warm-up (default 0).
    #[arg(value_parser = non_negative, long)]
    pub warmup_epochs: Option<f64>,
    /// Cosine decay of the learning rate to 0 at the last epoch (after any warm-up).
    #[arg(long)]
    pub cosine: bool,
    #[arg(long)]
    pub seed: Option<u64>,
    /// Images held out for validation (the last ones of the seeded shuffle; default 5000).
    #[arg(value_parser = at_least_one, long)]
    pub validation_size: Option<usize>,
    /// Backend: cpu (default); wgpu (any GPU through Vulkan, Metal or DX12, or Vulkan's software
    /// rasteriser where there is none: slow); cuda when built with `--features cuda`.
    #[arg(long, value_parser = choice::<BackendKind>(&BACKENDS))]
    pub backend: Option<BackendKind>,
    /// Random-crop padding in pixels (0 = off).
    #[arg(long)]
    pub crop_padding: Option<usize>,
    /// Random horizontal flips.
    #[arg(long)]
    pub hflip: bool,
    /// Random resized crops: a region of this fraction of the area or more (aspect ratio 3/4 to
    /// 4/3) resized back to 32×32 (0 = off; contrastive methods use 0.08–0.3).
    #[arg(long, value_parser = unit_interval)]
    pub min_scale: Option<f32>,
    /// Colour jitter strength s: brightness, contrast and saturation each scaled by a factor in
    /// [1 − s, 1 + s] (0 = off; SimCLR's CIFAR setting is 0.4).
    #[arg(long, value_parser = unit_interval)]
    pub color_jitter: Option<f32>,
    /// Probability of a grey view (0 = off).
    #[arg(long, value_parser = unit_interval)]
    pub grayscale: Option<f32>,
    /// Views of each image per step: 1 (the paper), or 2 for cross-view DIM — each view's Y
    /// is scored against the other view's local features, so what the critic can match is what
    /// the augmentation leaves alone (AMDIM's change; each step costs about twice as much).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=2))]
    pub views: Option<u64>,
    /// Skip unreadable images with a warning instead of stopping.
    #[arg(long)]
    pub skip_bad: bool,
    /// Run the convolutions', fc's and the local critic's products in bf16 with f32
    /// accumulation, as PyTorch's autocast does (cpu backend; 1.34× the f32 step for dim32 at
    /// W=512 on an AVX512-BF16 CPU; losses differ from f32 at bf16's precision).
    #[arg(long)]
    pub bf16: bool,
    /// Write a checkpoint every N steps too (default: at epoch ends only).
    #[arg(long)]
    pub checkpoint_every: Option<usize>,
    /// Start a new run from this encoder's weights instead of random ones (an f32 ONNX file from
    /// `trainer export`, e.g. models/dim32/encoder.onnx): fine-tune a shipped encoder, or carry
    /// a long run on from its exported file. The critics start fresh; each BatchNorm the export
    /// folded is rebuilt from the first 2,048 training images. Ignored by --resume.
    #[arg(long)]
    pub init_encoder: Option<PathBuf>,
    /// With --init-encoder (or alone): take the critics and the prior's discriminator from this
    /// checkpoint (a step-* folder or a run folder of a run with the same critics) instead of
    /// fresh ones, so the encoder keeps what it learnt (a fresh critic costs it about 1.8 points
    /// of fc in the first epoch on dim32). Adam starts fresh. Ignored by --resume.
    #[arg(long)]
    pub init_critics: Option<PathBuf>,
    /// Distil this teacher encoder (an f32 ONNX file from `trainer export`, e.g.
    /// models/dim32/encoder.onnx) into the one trained: the student's Y (or its fc, with
    /// --student-layer fc) learns to carry the teacher's representation through a critic and the
    /// run's estimator, beside its own DIM loss. The teacher embeds the data once; the rows are
    /// cached in OUT/teacher.npy.
    #[arg(long)]
    pub teacher: Option<PathBuf>,
    /// The teacher's layer to distil: fc (default), y or conv.
    #[arg(long, value_parser = choice::<TeacherLayer>(&TEACHER_LAYERS))]
    pub teacher_layer: Option<TeacherLayer>,
    /// The student's layer that carries the teacher's: y (default) or fc (the layer the fc
    /// probe reads).
    #[arg(long, value_parser = choice::<StudentLayer>(&STUDENT_LAYERS))]
    pub student_layer: Option<StudentLayer>,
    /// How the student learns the teacher: contrast (default: pick its image's teacher row
    /// among others) or regress (predict the teacher's row through a linear head, by cosine).
    #[arg(long, value_parser = choice::<DistillObjective>(&DISTILL_OBJECTIVES))]
    pub distill_objective: Option<DistillObjective>,
    /// Weight δ of the distillation term (default 1).
    #[arg(value_parser = non_negative, long)]
    pub distill_weight: Option<f64>,
    /// The teacher also embeds every image mirrored, and a view that --hflip mirrored is matched
    /// with the mirrored row (needs --hflip).
    #[arg(long)]
    pub follow_flips: bool,
    /// Continue the run in OUT from its latest checkpoint.
    #[arg(long)]
    pub resume: bool,
    /// Train images embedded for the final kNN probe on Y (0 = skip).
    #[arg(long, default_value_t = 10000)]
    pub knn_images: usize,
    /// After every N epochs, kNN and a linear probe on Y over a fixed 5,000 / 5,000 split, into
    /// metrics.jsonl (0 = never). Seconds per run on a CPU.
    #[arg(long, default_value_t = 0)]
    pub monitor_every: usize,
}

#[derive(clap::Args)]
pub struct BenchArgs {
    /// Encoder: dim32 or tiny.
    #[arg(long, value_parser = choice::<ModelKind>(&MODELS), default_value = "dim32")]
    pub model: ModelKind,
    #[arg(value_parser = at_least_one, long, default_value_t = 2048)]
    pub critic_width: usize,
    #[arg(value_parser = at_least_one, long, default_value_t = 64)]
    pub batch_size: usize,
    #[arg(value_parser = at_least_one, long, default_value_t = 10)]
    pub steps: usize,
    #[arg(long, default_value_t = 2)]
    pub warmup: usize,
    /// Backend: cpu (default); wgpu (any GPU through Vulkan, Metal or DX12, or Vulkan's software
    /// rasteriser where there is none: slow); cuda when built with `--features cuda`.
    #[arg(long, value_parser = choice::<BackendKind>(&BACKENDS), default_value = "cpu")]
    pub backend: BackendKind,
    /// Prior weight γ (the paper's DIM(L) default 0.1 trains the discriminator too).
    #[arg(value_parser = non_negative, long, default_value_t = 0.1)]
    pub gamma: f64,
    /// Run the whole `fit` loop on this data (loader and decode cache included) instead of one
    /// fixed synthetic batch.
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Also print the time of each phase of the step, its GFLOP and the fraction of the FP32 peak.
    #[arg(long)]
    pub breakdown: bool,
    /// The largest products in bf16 (as `fit --bf16`).
    #[arg(long)]
    pub bf16: bool,
}

#[derive(Subcommand)]
pub enum DataCommand {
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
    /// Write the training and validation splits `fit` uses as raw arrays (train.u8,
    /// train.labels, valid.u8, valid.labels, classes.txt), for an outside trainer to use the
    /// same images (e.g. trainer/benches/dim_twin.py).
    Split {
        /// Image data (any format `fit --data` reads).
        path: PathBuf,
        /// Output folder.
        #[arg(long)]
        out: PathBuf,
        /// Images held out for validation (as `fit --validation-size`).
        #[arg(long, default_value_t = 5000)]
        validation_size: usize,
        /// Seed of the split (as `fit --seed`).
        #[arg(long, default_value_t = 0)]
        seed: u64,
    },
}

#[derive(clap::Args)]
pub struct PrototypesArgs {
    /// The engine blob the device runs (`trainer quantize --blob`).
    #[arg(long)]
    pub model: PathBuf,
    /// Labelled images (any format `fit --data` reads).
    #[arg(long)]
    pub images: PathBuf,
    /// Images enrolled per class.
    #[arg(value_parser = at_least_one, long, default_value_t = 10)]
    pub shots: usize,
    /// Classes to enrol, comma-separated (default: all).
    #[arg(long, value_delimiter = ',')]
    pub classes: Option<Vec<String>>,
    /// Share of validation images of enrolled classes the threshold may flag as novel.
    #[arg(value_parser = fraction, long, default_value_t = 0.05)]
    pub false_positive_rate: f64,
    /// Size of the validation split (the last images of the seeded shuffle).
    #[arg(value_parser = at_least_one, long, default_value_t = 5000)]
    pub validation_size: usize,
    /// Seed of the split (use the training run's).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// The prototypes file to write.
    #[arg(long, default_value = "prototypes.bin")]
    pub out: PathBuf,
    /// Also write two validation images of every class as PATH.rgb (raw 32×32 RGB) and
    /// PATH.labels (class names): the set the firmware's QEMU test replays.
    #[arg(long, value_name = "PATH")]
    pub golden_set: Option<PathBuf>,
}

impl From<&PrototypesArgs> for dim_trainer::prototypes::PrototypesOptions {
    fn from(a: &PrototypesArgs) -> Self {
        Self {
            model: a.model.clone(),
            images: a.images.clone(),
            shots: a.shots,
            classes: a.classes.clone(),
            false_positive_rate: a.false_positive_rate,
            validation_size: a.validation_size,
            seed: a.seed,
            out: a.out.clone(),
            golden_set: a.golden_set.clone(),
        }
    }
}

#[derive(clap::Args)]
pub struct EmbedArgs {
    /// An ONNX encoder (f32 or int8, through tract), a run folder / checkpoint, or an engine
    /// blob (`.blob`, through the no_std engine the firmware runs).
    pub model: PathBuf,
    /// Image files or folders.
    #[arg(required = true)]
    pub inputs: Vec<PathBuf>,
    /// Output file: .csv or .npy.
    #[arg(long, default_value = "embeddings.csv")]
    pub out: PathBuf,
}

impl From<&EmbedArgs> for EmbedOptions {
    fn from(a: &EmbedArgs) -> Self {
        Self { model: a.model.clone(), inputs: a.inputs.clone(), out: a.out.clone() }
    }
}

#[derive(clap::Args)]
pub struct QuantizeArgs {
    /// The f32 encoder from `trainer export`.
    #[arg(long)]
    pub model: PathBuf,
    /// Calibration data (any format `fit --data` reads).
    #[arg(long)]
    pub calib: PathBuf,
    #[arg(long, default_value = "encoder.int8.onnx")]
    pub out: PathBuf,
    #[arg(value_parser = at_least_one, long, default_value_t = 512)]
    pub calib_images: usize,
    /// Activation range = this percentile of the calibration activations.
    #[arg(value_parser = percentile, long, default_value_t = 99.99)]
    pub percentile: f64,
    /// Size of the validation split (the last images of the seeded shuffle).
    #[arg(value_parser = at_least_one, long, default_value_t = 5000)]
    pub validation_size: usize,
    /// Seed of the split (use the training run's).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Also write the no_std engine's model blob (same integers as OUT) to this file.
    #[arg(long)]
    pub blob: Option<PathBuf>,
}

/// Where the images come from and how many (shared by `eval` and `check`).
#[derive(clap::Args, Debug, Clone)]
pub struct DataArgs {
    /// A run folder / checkpoint, an ONNX encoder (f32 or int8) from `export` / `quantize`, or an
    /// engine blob from `quantize --blob`.
    #[arg(long)]
    pub model: PathBuf,
    /// The runtime that embeds the images: tract (dim-runtime's `Encoder`, as on ARM Linux), the
    /// no_std engine the Cortex-M firmware runs (a `.blob`), or the host fast path (a `.blob`:
    /// the engine's arithmetic vectorised, as the C API runs it). Default: engine for a `.blob`,
    /// tract otherwise.
    #[arg(long, value_enum)]
    pub runtime: Option<RuntimeArg>,
    /// Images the probes and estimators train on (any format `fit --data` reads).
    #[arg(long)]
    pub train: PathBuf,
    /// Held-out images they are scored on. Default: the validation split of --train (the
    /// seeded split `fit` uses; pass the run's seed as --split-seed if it changed it).
    #[arg(long)]
    pub test: Option<PathBuf>,
    #[arg(value_parser = at_least_one, long, default_value_t = 5000)]
    pub validation_size: usize,
    #[arg(long, default_value_t = 0)]
    pub split_seed: u64,
    /// Use at most this many images of each split (quick checks). `check` defaults to the
    /// reference's count.
    #[arg(value_parser = at_least_one, long)]
    pub max_images: Option<usize>,
}

#[derive(clap::Args, Debug, Clone)]
pub struct EvalArgs {
    #[command(flatten)]
    pub data: DataArgs,
    /// The report (JSON); a Markdown table and PNG curves are written beside it.
    #[arg(long, default_value = "report.json")]
    pub out: PathBuf,
    /// Runs of every learned measure, with seeds 0, 1, …: their spread sets `check`'s tolerances.
    #[arg(value_parser = at_least_one, long, default_value_t = dim_trainer::eval::Settings::default().seeds)]
    pub seeds: usize,
    #[arg(value_parser = at_least_one, long, default_value_t = dim_trainer::eval::Settings::default().probe_epochs)]
    pub probe_epochs: usize,
    /// Critic steps of MINE (batch 256).
    #[arg(value_parser = at_least_one, long, default_value_t = dim_trainer::eval::Settings::default().mine_steps)]
    pub mine_steps: usize,
    /// Critic steps of NDM (batch 256).
    #[arg(value_parser = at_least_one, long, default_value_t = dim_trainer::eval::Settings::default().ndm_steps)]
    pub ndm_steps: usize,
    /// Epochs of the reconstruction probe: a decoder per layer (and for the untrained twin's Y)
    /// rebuilds the images, scored by MS-SSIM as in the paper's Table 3. 0 skips it.
    #[arg(long, default_value_t = dim_trainer::eval::Settings::default().recon_epochs)]
    pub recon_epochs: usize,
    /// Train images the reconstruction decoders learn from.
    #[arg(value_parser = at_least_one, long, default_value_t = dim_trainer::eval::Settings::default().recon_images)]
    pub recon_images: usize,
    /// Also probe with the official code's protocol (`probe.paper.*`): its classifier (dropout
    /// before BatchNorm, Adam β₁ 0.5, raw features), trained until its accuracy on a tenth of the
    /// train images stops improving (patience 10, at most 200 epochs), reported on the test
    /// images at that epoch.
    #[arg(long)]
    pub paper_probe: bool,
}

#[derive(clap::Args, Debug, Clone)]
pub struct CheckArgs {
    #[command(flatten)]
    pub data: DataArgs,
    /// The float model's report from `trainer eval` (its settings are reused).
    #[arg(long)]
    pub reference: PathBuf,
    /// Largest accepted drop of an accuracy, in points.
    #[arg(value_parser = non_negative, long, default_value_t = 1.0)]
    pub max_drop: f64,
    /// The comparison (JSON, and a Markdown table beside it as `.md`); the deployed model's own
    /// report goes beside it as `.report.json` (with `.report.md` and the curves).
    #[arg(long, default_value = "check.json")]
    pub out: PathBuf,
}

/// A count that must be at least 1 (`--epochs 0` would train nothing and say so too late).
fn at_least_one(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(v) => Ok(v),
        Err(e) => Err(e.to_string()),
    }
}

/// A number in `[0, 1]` (a fraction or a probability).
fn unit_interval(s: &str) -> Result<f32, String> {
    match s.parse::<f32>() {
        Ok(v) if (0.0..=1.0).contains(&v) => Ok(v),
        Ok(v) => Err(format!("{v} is outside [0, 1]")),
        Err(e) => Err(e.to_string()),
    }
}

fn finite(s: &str) -> Result<f64, String> {
    let v: f64 = s.parse().map_err(|e: std::num::ParseFloatError| e.to_string())?;
    if v.is_finite() { Ok(v) } else { Err("must be a finite number".into()) }
}

/// A weight or length that may be 0 but not negative.
fn non_negative(s: &str) -> Result<f64, String> {
    finite(s).and_then(|v| if v >= 0.0 { Ok(v) } else { Err("must be ≥ 0".into()) })
}

/// A rate that must be above 0.
fn positive(s: &str) -> Result<f64, String> {
    finite(s).and_then(|v| if v > 0.0 { Ok(v) } else { Err("must be > 0".into()) })
}

/// A share strictly between 0 and 1.
fn fraction(s: &str) -> Result<f64, String> {
    finite(s).and_then(|v| if v > 0.0 && v < 1.0 { Ok(v) } else { Err("must be between 0 and 1 (exclusive)".into()) })
}

/// Adam's β₁: in [0, 1).
fn beta1(s: &str) -> Result<f64, String> {
    finite(s).and_then(|v| if (0.0..1.0).contains(&v) { Ok(v) } else { Err("must be in [0, 1)".into()) })
}

/// A percentile: in (0, 100].
fn percentile(s: &str) -> Result<f64, String> {
    finite(s).and_then(|v| if v > 0.0 && v <= 100.0 { Ok(v) } else { Err("must be in (0, 100]".into()) })
}

/// The config `fit` runs with: defaults (or, on `--resume`, the run's `config.json`), then
/// `--config FILE`, then flags.
pub fn fit_config(a: &FitArgs) -> anyhow::Result<TrainConfig> {
    // On --resume the run's own config is the base: a flag changes only what it names.
    let saved = a.out.join("config.json");
    let base = match a.preset {
        Some(_) if a.resume && saved.exists() => anyhow::bail!("--preset starts a new run; a resumed run keeps its own config ({})", saved.display()),
        Some(p) => p.config()?,
        None => TrainConfig::new(),
    };
    let mut c = match &a.config {
        Some(p) => base.overlay_file(p)?,
        None if a.resume && saved.exists() => TrainConfig::load_file(&saved)?,
        None => base,
    };
    macro_rules! set {
        ($($f:ident),*) => { $( if let Some(v) = a.$f.clone() { c.$f = v; } )* };
    }
    set!(
        model,
        critic_width,
        estimator,
        alpha,
        beta,
        gamma,
        epochs,
        batch_size,
        learning_rate,
        adam_beta1,
        warmup_epochs,
        seed,
        validation_size,
        backend,
        checkpoint_every
    );
    if let Some(v) = a.critic {
        c.local_critic = v;
    }
    if a.max_steps.is_some() {
        c.max_steps = a.max_steps;
    } else if a.epochs.is_some() {
        // A new length in epochs replaces a step limit the run was given before.
        c.max_steps = None;
    }
    if let Some(d) = &a.data {
        c.data = Some(d.to_string_lossy().into_owned());
    }
    if let Some(p) = a.crop_padding {
        c.augment.crop_padding = p;
    }
    c.augment.hflip |= a.hflip;
    c.augment.min_scale = a.min_scale.unwrap_or(c.augment.min_scale);
    c.augment.color_jitter = a.color_jitter.unwrap_or(c.augment.color_jitter);
    c.augment.grayscale = a.grayscale.unwrap_or(c.augment.grayscale);
    if let Some(v) = a.views {
        c.views = v as usize;
    }
    c.skip_bad |= a.skip_bad;
    c.bf16 |= a.bf16;
    c.cosine |= a.cosine;
    if let Some(f) = &a.init_encoder {
        c.init_encoder = Some(f.to_string_lossy().into_owned());
    }
    if let Some(f) = &a.init_critics {
        c.init_critics = Some(f.to_string_lossy().into_owned());
    }
    if let Some(t) = &a.teacher {
        let t = t.to_string_lossy().into_owned();
        let d = c.distill.get_or_insert_with(|| Distill::from_teacher(t.clone()));
        d.teacher = t;
    }
    match &mut c.distill {
        Some(d) => {
            d.layer = a.teacher_layer.unwrap_or(d.layer);
            d.student_layer = a.student_layer.unwrap_or(d.student_layer);
            d.objective = a.distill_objective.unwrap_or(d.objective);
            d.weight = a.distill_weight.unwrap_or(d.weight);
            d.follow_flips |= a.follow_flips;
        }
        None if a.teacher_layer.is_some() || a.student_layer.is_some() || a.distill_objective.is_some() || a.distill_weight.is_some() || a.follow_flips => {
            anyhow::bail!(
                "--teacher-layer, --student-layer, --distill-objective, --distill-weight and --follow-flips set up distillation: name the teacher with --teacher (or [distill] in --config)"
            )
        }
        None => {}
    }
    Ok(c)
}

/// `--runtime` of `eval` / `check`.
#[derive(clap::ValueEnum, Debug, Clone, Copy)]
pub enum RuntimeArg {
    Tract,
    Engine,
    Fast,
}

impl From<RuntimeArg> for dim_trainer::eval::deployed::Runtime {
    fn from(r: RuntimeArg) -> Self {
        match r {
            RuntimeArg::Tract => Self::Tract,
            RuntimeArg::Engine => Self::Engine,
            RuntimeArg::Fast => Self::Fast,
        }
    }
}

impl From<&DataArgs> for DataOptions {
    fn from(a: &DataArgs) -> Self {
        Self {
            model: a.model.clone(),
            runtime: a.runtime.map(Into::into),
            train: a.train.clone(),
            test: a.test.clone(),
            validation_size: a.validation_size,
            split_seed: a.split_seed,
            max_images: a.max_images,
        }
    }
}

impl From<&EvalArgs> for EvalOptions {
    fn from(a: &EvalArgs) -> Self {
        let settings = Settings {
            seeds: a.seeds,
            probe_epochs: a.probe_epochs,
            mine_steps: a.mine_steps,
            ndm_steps: a.ndm_steps,
            recon_epochs: a.recon_epochs,
            recon_images: a.recon_images,
            paper_probe: a.paper_probe,
            ..Settings::default()
        };
        Self { data: (&a.data).into(), out: a.out.clone(), settings }
    }
}

impl From<&CheckArgs> for CheckOptions {
    fn from(a: &CheckArgs) -> Self {
        Self { data: (&a.data).into(), reference: a.reference.clone(), max_drop: a.max_drop, out: a.out.clone() }
    }
}

impl From<&QuantizeArgs> for QuantizeOptions {
    fn from(a: &QuantizeArgs) -> Self {
        Self {
            model: a.model.clone(),
            calib: a.calib.clone(),
            out: a.out.clone(),
            calib_images: a.calib_images,
            percentile: a.percentile,
            validation_size: a.validation_size,
            seed: a.seed,
            blob: a.blob.clone(),
        }
    }
}

/// `fit --help`'s closing lines: the defaults every flag falls back to, read from
/// `TrainConfig::new()` so they cannot drift from what runs.
pub fn fit_defaults() -> String {
    let config = serde_json::to_value(TrainConfig::new()).expect("the config serialises");
    let fields = config.as_object().expect("a table").iter().map(|(k, v)| format!("  {k} = {v}")).collect::<Vec<_>>().join("\n");
    format!(
        "Defaults (the paper's DIM(L) but for the critic encode-dot and Adam β₁ 0.9: --preset paper has the official ones; --config FILE, then flags, override them):\n{fields}"
    )
}

/// Parses the command line, with `fit --help` showing [`fit_defaults`].
pub fn parse() -> Cli {
    use clap::{CommandFactory, FromArgMatches};
    let defaults = fit_defaults();
    let examples = "Examples:\n  trainer fit --data cifar/train --model tiny --critic-width 512 --epochs 10 --out runs/tiny\n  trainer fit --out runs/tiny --resume --epochs 20";
    let command = Cli::command().mut_subcommand("fit", |c| c.after_help(format!("{defaults}\n\n{examples}")));
    Cli::from_arg_matches(&command.get_matches()).unwrap_or_else(|e| e.exit())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every name a flag offers parses, and every variant is offered under its config name.
    #[test]
    fn choices_are_the_config_names() {
        fn names<T: serde::Serialize + serde::de::DeserializeOwned>(names: &[&str], all: &[T]) {
            for n in names {
                let _: T = serde_json::from_value(serde_json::Value::String(n.to_string())).unwrap_or_else(|e| panic!("{n}: {e}"));
            }
            for v in all {
                let s = serde_json::to_value(v).unwrap();
                assert!(names.contains(&s.as_str().unwrap()), "{s} is not offered");
            }
        }
        names(&MODELS, &[ModelKind::Dim32, ModelKind::Tiny]);
        names(&CRITICS, &[LocalCriticKind::EncodeDot, LocalCriticKind::EncodeDotLn, LocalCriticKind::ConcatConv]);
        names(&ESTIMATORS, &[Estimator::Jsd, Estimator::InfoNce, Estimator::Dv]);
        names(&TEACHER_LAYERS, &[TeacherLayer::Fc, TeacherLayer::Y, TeacherLayer::Conv]);
        names(&STUDENT_LAYERS, &[StudentLayer::Y, StudentLayer::Fc]);
        names(&DISTILL_OBJECTIVES, &[DistillObjective::Contrast, DistillObjective::Regress]);
        names(&BACKENDS, &[BackendKind::Cpu, BackendKind::Cuda, BackendKind::Wgpu]);
        <Cli as clap::CommandFactory>::command().debug_assert();
        assert!(fit_defaults().contains("critic_width = 2048"), "{}", fit_defaults());
    }

    /// Numbers that would train or measure nothing, or nonsense, are refused where parsed, with
    /// the flag and the reason; sane ones pass.
    #[test]
    fn numeric_options_are_validated_where_parsed() {
        use clap::Parser;
        let parse = |args: &str| Cli::try_parse_from(std::iter::once("trainer").chain(args.split_whitespace())).map(|_| ()).map_err(|e| e.to_string());
        for (args, why) in [
            ("fit --epochs 0", "at least 1"),
            ("fit --batch-size 0", "at least 1"),
            ("fit --learning-rate=-1e-4", "> 0"),
            ("fit --learning-rate nan", "finite"),
            ("fit --gamma=-0.1", "≥ 0"),
            ("fit --adam-beta1 1", "[0, 1)"),
            ("eval --model m --train t --probe-epochs 0", "at least 1"),
            ("eval --model m --train t --max-images 0", "at least 1"),
            ("quantize --model m --calib c --out o --percentile 0", "(0, 100]"),
            ("prototypes --model m --images i --false-positive-rate 1", "between 0 and 1"),
        ] {
            let err = parse(args).expect_err(args);
            let last = args.split_whitespace().last().unwrap();
            let flag = last.split_once('=').map_or_else(|| args.split_whitespace().rev().nth(1).unwrap(), |(f, _)| f);
            assert!(err.contains(flag) && err.contains(why), "{args}: {err}");
        }
        for ok in ["fit --epochs 1 --learning-rate 1e-3 --gamma 0 --adam-beta1 0.5 --warmup-epochs 0", "eval --model m --train t --max-images 10"] {
            parse(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
    }
}
