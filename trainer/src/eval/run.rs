//! The `trainer eval` and `trainer check` commands.

use super::deployed::{Deployed, Runtime, embed_inputs};
use super::{Report, Settings, Splits, check, open_splits, report};
use anyhow::Context;
use std::path::PathBuf;
use std::time::Instant;

/// Where the images come from and how many (shared by `eval` and `check`; see `trainer eval --help`).
#[derive(Debug, Clone)]
pub struct DataOptions {
    /// A run folder / checkpoint, an ONNX encoder (f32 or int8), or an engine blob.
    pub model: PathBuf,
    /// `None`: the engine for a `.blob`, tract otherwise.
    pub runtime: Option<Runtime>,
    pub train: PathBuf,
    /// `None`: the validation split of `train`.
    pub test: Option<PathBuf>,
    pub validation_size: usize,
    pub split_seed: u64,
    pub max_images: Option<usize>,
}

/// `trainer eval`: where the report goes and what it measures.
#[derive(Debug, Clone)]
pub struct EvalOptions {
    pub data: DataOptions,
    pub out: PathBuf,
    pub settings: Settings,
}

/// `trainer check`: the reference report and the tolerance.
#[derive(Debug, Clone)]
pub struct CheckOptions {
    pub data: DataOptions,
    pub reference: PathBuf,
    /// Largest accepted drop of an accuracy, in points.
    pub max_drop: f64,
    pub out: PathBuf,
}

fn splits(data: &DataOptions) -> anyhow::Result<Splits> {
    open_splits(&data.train, data.test.as_deref(), data.validation_size, data.split_seed, data.max_images)
}

fn measure(data: &DataOptions, (train_src, train_idx, test_src, test_idx, test_desc): Splits, settings: &Settings) -> anyhow::Result<Report> {
    let started = Instant::now();
    let deployed = Deployed::load(&data.model, data.runtime)?;
    anyhow::ensure!(train_idx.len() >= 2 && test_idx.len() >= 2, "need at least 2 train and 2 test images");
    eprintln!("representing {} train and {} test images through {}…", train_idx.len(), test_idx.len(), deployed.runtime());
    let train = deployed.represent(&*train_src, &train_idx)?;
    let test = deployed.represent(&*test_src, &test_idx)?;
    // The untrained twin, when the model's training config is at hand: the floor of the
    // few-shot and novelty measures (`*.random`).
    // The images are already decoded and preprocessed in `train` / `test`: the twin embeds those.
    let floor = match super::deployed::random_twin(&data.model)? {
        Some(twin) => {
            eprintln!("representing them through the untrained twin (the random-encoder floor)…");
            let y = |split: &super::Split| embed_inputs(&twin, false, &split.images).map(|mut layers| layers.remove(0).2);
            Some((y(&train)?, y(&test)?))
        }
        None => None,
    };
    let classes = train_src.classes().len().max(test_src.classes().len()).max(2);
    let floor = floor.as_ref().map(|(a, b)| (&a[..], &b[..]));
    let measures = super::evaluate(settings, &train, &test, floor, classes, &mut |line| eprintln!("{line}"))?;
    Ok(Report {
        model: data.model.display().to_string(),
        train: data.train.display().to_string(),
        test: test_desc,
        train_images: train_idx.len(),
        test_images: test_idx.len(),
        settings: settings.clone(),
        seconds: started.elapsed().as_secs_f64(),
        measures,
    })
}

pub fn eval(args: &EvalOptions) -> anyhow::Result<()> {
    args.settings.validate()?;
    let settings = args.settings.clone();
    let report = measure(&args.data, splits(&args.data)?, &settings)?;
    let written = report::write(&report, &args.out)?;
    println!("{}", report::markdown(&report));
    println!("wrote {}", written.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", "));
    Ok(())
}

/// Which test images a report's description names, without where the data lies (a shipped
/// reference is checked on other machines): the validation split's rule, or "a test folder".
fn which_split(desc: &str, train: &str) -> String {
    match desc.strip_prefix(train) {
        Some(rule) if rule.starts_with(" (validation split") => rule.to_string(),
        _ => "a test folder".into(),
    }
}

/// Returns whether every measure is within tolerance.
pub fn check(args: &CheckOptions) -> anyhow::Result<bool> {
    let text = std::fs::read_to_string(&args.reference).with_context(|| format!("cannot read the reference report {}", args.reference.display()))?;
    let reference: Report = serde_json::from_str(&text).with_context(|| {
        format!(
            "{} is not a report of `trainer eval`; make one with `trainer eval --model <float model> --out {}`",
            args.reference.display(),
            args.reference.display()
        )
    })?;
    // The same images, or the comparison means nothing: check before the long part.
    let mut data = args.data.clone();
    data.max_images = data.max_images.or(Some(reference.train_images.max(reference.test_images)));
    let opened = splits(&data)?;
    let (_, train_idx, _, test_idx, test_desc) = &opened;
    let here = (train_idx.len(), test_idx.len(), which_split(test_desc, &data.train.display().to_string()));
    if here != (reference.train_images, reference.test_images, which_split(&reference.test, &reference.train)) {
        anyhow::bail!(
            "{} was measured on {} train images and test {} ({} images); this check would use {} and {} ({}). Pass the --train / --test / --max-images / --validation-size the reference used",
            args.reference.display(),
            reference.train_images,
            reference.test,
            reference.test_images,
            train_idx.len(),
            test_desc,
            test_idx.len()
        );
    }
    let deployed = measure(&data, opened, &reference.settings)?;
    let rows = check::compare(&reference.measures, &deployed.measures, args.max_drop);
    anyhow::ensure!(!rows.is_empty(), "the reference {} and this run share no measure", args.reference.display());
    let table = check::table(&rows);
    report::write(&deployed, &args.out.with_extension("report.json"))?;
    crate::fs::write_atomic(&args.out, serde_json::to_string_pretty(&rows)?.as_bytes())?;
    crate::fs::write_atomic(&args.out.with_extension("md"), table.as_bytes())?;
    println!("{} (deployed) vs {} (reference):\n\n{table}", deployed.model, reference.model);
    let failed: Vec<&str> = rows.iter().filter(|r| !r.ok).map(|r| r.name.as_str()).collect();
    if failed.is_empty() {
        println!("check passed: every measure within tolerance; wrote {}", args.out.display());
    } else {
        println!("check FAILED: {} outside tolerance; wrote {}", failed.join(", "), args.out.display());
    }
    Ok(failed.is_empty())
}

#[cfg(test)]
mod tests {
    use super::which_split;

    #[test]
    fn the_split_is_compared_without_the_data_path() {
        let rule = |size| format!(" (validation split: last {size} of the seed-0 shuffle)");
        let (a, b) = (format!("/var/tmp/data/train{}", rule(5000)), format!("/home/u/cifar/train{}", rule(5000)));
        assert_eq!(which_split(&a, "/var/tmp/data/train"), which_split(&b, "/home/u/cifar/train"));
        assert_ne!(which_split(&a, "/var/tmp/data/train"), which_split(&format!("/x{}", rule(2000)), "/x"));
        assert_ne!(which_split(&a, "/var/tmp/data/train"), which_split("/data/test", "/var/tmp/data/train"));
    }
}
