//! The `trainer` command line: parse (`cli`), run the library, print what happened.

mod cli;

use anyhow::Context;
use cli::{Command, DataCommand};
use dim_trainer::{bench, card, data, embed, eval, export, fit, inspect, prototypes, quantize};

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
/// Exit status of an interrupted `fit` (after its checkpoint), as for SIGINT.
const INTERRUPTED: i32 = 130;

fn main() -> anyhow::Result<()> {
    keep_freed_memory();
    let command = cli::parse().command;
    // The work runs on a rayon worker rather than on the main thread: the products' and the
    // element-wise ops' parallel loops then split between that thread and the pool's others, one
    // thread per core. From the main thread they ran on the pool while the main thread waited,
    // and between ops the idle workers spun beside it: three threads on two cores.
    let pool = rayon::ThreadPoolBuilder::new().stack_size(MAIN_STACK).build().context("cannot start the worker threads")?;
    pool.install(|| run(command))
}

/// The stack of the thread that runs the command: a main thread's.
const MAIN_STACK: usize = 8 << 20;

fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Fit(args) => {
            let config = cli::fit_config(&args)?;
            ctrlc::set_handler(|| {
                eprintln!("\nCtrl-C: saving a checkpoint after this step (press again to abort at once)");
                if fit::INTERRUPTED.swap(true, std::sync::atomic::Ordering::SeqCst) {
                    std::process::exit(INTERRUPTED);
                }
            })
            .context("cannot install the Ctrl-C handler")?;
            let opts = fit::FitOptions { resume: args.resume, progress: true, knn_images: args.knn_images, monitor_every: args.monitor_every };
            let s = fit::fit(config, &args.out, &opts)?;
            println!("trained {} steps ({:.0} img/s); checkpoint: {}", s.steps, s.img_per_s, s.checkpoint.display());
            println!("outputs in {}: config.json, metrics.jsonl, checkpoints/", args.out.display());
            if s.interrupted {
                std::process::exit(INTERRUPTED);
            }
        }
        Command::Bench(b) => {
            let config = fit::TrainConfig::new()
                .with_model(b.model)
                .with_critic_width(b.critic_width)
                .with_batch_size(b.batch_size)
                .with_backend(b.backend)
                .with_gamma(b.gamma)
                .with_bf16(b.bf16);
            config.validate()?;
            let precision = match (b.bf16, dim_trainer::model::bf16::native_products()) {
                (false, _) => "",
                (true, true) => ", bf16 products",
                // Measured as asked, so the slowdown that makes `fit` take f32 can be seen.
                (true, false) => ", bf16 products widened to f32 in software (no AVX512-BF16 here: `fit` would run f32)",
            };
            eprintln!(
                "bench: {:?}, encode-and-dot critic W={}, batch {}{precision}, {} steps after {} warm-up",
                b.model, b.critic_width, b.batch_size, b.steps, b.warmup
            );
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
            let (ck, bytes) = export::run(&checkpoint, &out, with_local)?;
            println!("wrote {} ({bytes} bytes, opset {}) from {}", out.display(), export::OPSET, ck.display());
        }
        Command::Quantize(args) => {
            let opts = quantize::QuantizeOptions::from(&args);
            let w = quantize::run(&opts)?;
            if let (Some(path), Some((bytes, arena))) = (&opts.blob, w.blob) {
                println!("wrote {} ({bytes} bytes; the engine needs a {arena}-byte arena)", path.display());
            }
            let r = &w.report;
            println!("cosine(Y_int8, Y_f32) over {} validation images: mean {:.5}, worst {:.5}", r.validation_images, r.mean_cosine, r.worst_cosine);
            println!("size: f32 {} bytes, int8 {} bytes ({:.2}x smaller)", r.f32_bytes, r.int8_bytes, r.f32_bytes as f64 / r.int8_bytes as f64);
            println!("wrote {} and {}", opts.out.display(), w.report_path.display());
        }
        Command::Embed(args) => {
            let opts = embed::EmbedOptions::from(&args);
            let (n, d) = embed::run(&opts)?;
            println!("wrote {} ({n} images × {d})", opts.out.display());
        }
        Command::Inspect { model } if prototypes::is_prototypes_file(&model) => print!("{}", prototypes::show(&model)?),
        Command::Inspect { model } => print!("{}", inspect::table(&inspect::inspect(&model)?)),
        Command::Prototypes(args) => {
            let opts = prototypes::PrototypesOptions::from(&args);
            let s = prototypes::run(&opts)?;
            println!(
                "wrote {} ({} bytes): {} prototypes of {} images each, novelty threshold {:.4}",
                opts.out.display(),
                s.bytes,
                s.enrolled.len(),
                opts.shots,
                s.threshold
            );
            println!(
                "validation: {} images of the enrolled classes, {:.2} % recognised, {:.2} % flagged novel (asked: at most {:.2} %)",
                s.known,
                100.0 * s.accuracy,
                100.0 * s.flagged_known,
                100.0 * opts.false_positive_rate
            );
            if let Some(r) = s.flagged_novel {
                println!("            {} images of the other classes, {:.2} % flagged novel", s.novel, 100.0 * r);
            }
        }
        Command::Eval(args) => eval::run::eval(&(&args).into())?,
        Command::Check(args) => {
            if !eval::run::check(&(&args).into())? {
                // A regression found is not an error: scripts tell them apart (1 = could not run).
                std::process::exit(CHECK_FAILED);
            }
        }
        Command::Card { dir, run, data, hardware } => {
            let name = dir.file_name().map_or_else(|| "model".into(), |n| n.to_string_lossy().to_string());
            println!("wrote {}", card::write(&dir, &run, &data, &name, &hardware)?.display());
        }
        Command::Data(DataCommand::Fetch { name, to, url }) => {
            let a = data::fetch::archive(&name)?;
            let path = data::fetch::fetch(url.as_deref().unwrap_or(a.url), a.file, a.sha256, &to)?;
            println!("{} verified and unpacked into {}", path.display(), to.display());
        }
        Command::Data(DataCommand::Split { path, out, validation_size, seed }) => {
            let src = data::open(&path)?;
            let (train, valid) = data::split::write(src.as_ref(), validation_size, seed, &out)?;
            println!("wrote {train} training and {valid} validation images of {} into {}", src.describe(), out.display());
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
