//! Checkpoints: written whole into a temporary folder, synced, then renamed into place; the
//! `latest` pointer is replaced atomically last. A kill at any moment leaves the previous
//! checkpoint complete and `latest` pointing at it.

use super::config::TrainConfig;
use super::state::TrainState;
use crate::model::{DimModel, PriorDiscriminator};
use anyhow::{Context, bail};
use burn::module::Module;
use burn::prelude::*;
use burn::store::ModuleRecord;
use std::path::{Path, PathBuf};

/// Where training stands; saved as `state.json`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, Default)]
pub struct Progress {
    /// Optimiser steps taken so far.
    pub step: usize,
    /// Epoch in progress.
    pub epoch: usize,
    /// Next batch of that epoch.
    pub batch: usize,
    /// Images in the data the run trains on (the split depends on it); absent in older runs.
    #[serde(default)]
    pub images: Option<usize>,
}

const KEEP: usize = 2;

pub fn dir(out: &Path) -> PathBuf {
    out.join("checkpoints")
}

fn io<E: std::fmt::Display>(path: &Path) -> impl FnOnce(E) -> anyhow::Error + '_ {
    move |e| anyhow::anyhow!("{}: {e}", path.display())
}

/// Counts the non-finite values of every float parameter it visits.
#[derive(Default)]
struct NonFinite(usize);

impl burn::module::ModuleVisitor for NonFinite {
    fn visit_float<const D: usize>(&mut self, param: &burn::module::Param<Tensor<D>>) {
        let v = param.val();
        self.0 += (v.clone().is_nan().int().sum().into_scalar::<i64>() + v.is_inf().int().sum().into_scalar::<i64>()) as usize;
    }
}

/// Refuses a model with NaN or infinite weights: the loss is checked before each update, but an
/// update can still overflow, and such a model must neither become "the last good checkpoint"
/// nor be exported.
pub fn ensure_finite(model: &impl Module, what: &str) -> anyhow::Result<()> {
    let mut v = NonFinite::default();
    model.visit(&mut v);
    if v.0 > 0 {
        bail!("{what} holds {} NaN or infinite weights; lower --learning-rate and resume from an earlier checkpoint", v.0);
    }
    Ok(())
}

/// Writes a checkpoint for `progress`; returns its folder. A model with non-finite weights is
/// not written (see [`ensure_finite`]).
pub fn save(out: &Path, config: &TrainConfig, progress: Progress, state: &TrainState) -> anyhow::Result<PathBuf> {
    ensure_finite(&state.model, &format!("the model after step {}", progress.step))?;
    if let Some(d) = &state.disc {
        ensure_finite(d, &format!("the prior discriminator after step {}", progress.step))?;
    }
    let root = dir(out);
    std::fs::create_dir_all(&root).with_context(|| format!("cannot create {}", root.display()))?;
    let mut name = format!("step-{:08}", progress.step);
    if root.join(&name).exists() {
        // Never delete a finished checkpoint to write another in its place: `latest` may point
        // to it, and a kill between the delete and the rename would leave nothing to resume.
        // The same position (a data error right after a resume) is already saved; another
        // position at the same step (batches skipped without a step) gets its own folder.
        if load_progress(&root.join(&name)).ok() == Some(progress) {
            point_latest(&root, &name)?;
            return Ok(root.join(name));
        }
        name = (1..).map(|i| format!("step-{:08}-{i}", progress.step)).find(|n| !root.join(n).exists()).expect("a free name");
    }
    let tmp = root.join(format!(".{name}.tmp"));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).map_err(io(&tmp))?;
    // burn's BatchNorm keeps its newest running statistics on the side (`RunningState`) until
    // the next step or `valid()` folds them in; a record taken now would lack the last step's
    // update, and a resumed run would drift from one never stopped. `valid()` folds it in and
    // changes nothing else (the next step reads the same values either way).
    let _ = state.model.valid();
    state.model.clone().into_record().save(tmp.join("model.bpk")).map_err(io(&tmp))?;
    state.optim.save(tmp.join("optim.bpk")).map_err(io(&tmp))?;
    if let Some(disc) = &state.disc {
        disc.clone().into_record().save(tmp.join("disc.bpk")).map_err(io(&tmp))?;
        state.disc_optim.save(tmp.join("disc_optim.bpk")).map_err(io(&tmp))?;
    }
    // Plain writes inside the temporary folder: it is fsynced and renamed as a whole below.
    std::fs::write(tmp.join("config.json"), serde_json::to_vec_pretty(config)?).map_err(io(&tmp))?;
    std::fs::write(tmp.join("state.json"), serde_json::to_vec_pretty(&progress)?).map_err(io(&tmp))?;
    for f in std::fs::read_dir(&tmp)?.flatten() {
        std::fs::File::open(f.path()).and_then(|f| f.sync_all()).map_err(io(&f.path()))?;
    }
    let done = root.join(&name);
    std::fs::rename(&tmp, &done).map_err(io(&done))?;
    crate::fs::sync_dir(&root);
    point_latest(&root, &name)?;
    prune(&root, &name);
    Ok(done)
}

/// Points `latest` at `name`, atomically (a temporary file renamed over it).
fn point_latest(root: &Path, name: &str) -> anyhow::Result<()> {
    crate::fs::write_atomic(&root.join("latest"), name.as_bytes())
}

/// Removes what a killed save left under `out`'s checkpoint folder: half-written checkpoint
/// folders (`.step-*.tmp`) and the temporary file of a `latest` pointer being rewritten.
pub fn clean_stale(out: &Path) {
    let root = dir(out);
    crate::fs::clean_stale(&root);
    for e in std::fs::read_dir(&root).into_iter().flatten().flatten() {
        if e.file_name().to_str().is_some_and(|n| n.starts_with(".step-") && n.ends_with(".tmp")) {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

/// Keeps the newest [`KEEP`] complete checkpoints (and never the one just written).
fn prune(root: &Path, keep: &str) {
    let mut all: Vec<String> =
        std::fs::read_dir(root).into_iter().flatten().flatten().filter_map(|e| e.file_name().into_string().ok()).filter(|n| n.starts_with("step-")).collect();
    all.sort();
    let n = all.len();
    for old in all.into_iter().take(n.saturating_sub(KEEP)) {
        if old != keep {
            let _ = std::fs::remove_dir_all(root.join(old));
        }
    }
}

/// The folder `latest` points to, if a checkpoint exists.
pub fn latest(out: &Path) -> anyhow::Result<Option<PathBuf>> {
    let ptr = dir(out).join("latest");
    match std::fs::read_to_string(&ptr) {
        Ok(name) => {
            let path = dir(out).join(name.trim());
            if !path.join("state.json").exists() {
                bail!("{} points to {}, which is missing or incomplete; point it at another step-* folder", ptr.display(), path.display());
            }
            Ok(Some(path))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io(&ptr)(e)),
    }
}

/// Resolves a user-given checkpoint path: a `step-*` folder, or a run folder (its latest).
pub fn resolve(path: &Path) -> anyhow::Result<PathBuf> {
    if path.join("state.json").exists() {
        return Ok(path.to_path_buf());
    }
    latest(path)?.with_context(|| format!("{}: no checkpoint here (expected a run folder with checkpoints/latest, or a step-* folder)", path.display()))
}

pub fn load_config(ckpt: &Path) -> anyhow::Result<TrainConfig> {
    TrainConfig::load_file(&ckpt.join("config.json"))
}

pub fn load_progress(ckpt: &Path) -> anyhow::Result<Progress> {
    let p = ckpt.join("state.json");
    serde_json::from_slice(&std::fs::read(&p).map_err(io(&p))?).with_context(|| format!("{}: corrupt", p.display()))
}

fn record(path: &Path) -> anyhow::Result<ModuleRecord> {
    ModuleRecord::load(path).map_err(|e| anyhow::anyhow!("{}: {e}; the checkpoint is damaged, resume from an older step-* folder", path.display()))
}

/// Loads the model of a checkpoint onto `device`.
pub fn load_model(ckpt: &Path, config: &TrainConfig, device: &Device) -> anyhow::Result<DimModel> {
    let p = ckpt.join("model.bpk");
    config.model_config().init(device).try_load_record(record(&p)?).map_err(io(&p))
}

/// Loads the prior discriminator of a checkpoint into `disc` (one of the run's shape, on its device).
pub fn load_disc(ckpt: &Path, disc: PriorDiscriminator) -> anyhow::Result<PriorDiscriminator> {
    let p = ckpt.join("disc.bpk");
    disc.try_load_record(record(&p)?).map_err(io(&p))
}

/// Loads the whole trainable state of a checkpoint into `state`.
pub fn load_into(ckpt: &Path, config: &TrainConfig, device: &Device, state: TrainState) -> anyhow::Result<TrainState> {
    let model = load_model(ckpt, config, device)?;
    let p = ckpt.join("optim.bpk");
    let optim = state.optim.load(&p).map_err(io(&p))?;
    let (disc, disc_optim) = match state.disc {
        Some(d) => {
            let d = load_disc(ckpt, d)?;
            let p = ckpt.join("disc_optim.bpk");
            (Some(d), state.disc_optim.load(&p).map_err(io(&p))?)
        }
        None => (None, state.disc_optim),
    };
    Ok(TrainState { model, optim, disc, disc_optim })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fit::config::ModelKind;

    /// Issue 17: saving again at the step `latest` points to never deletes that checkpoint; the
    /// same position is kept as it is, another position at that step gets a folder of its own.
    #[test]
    fn resaving_a_step_keeps_the_checkpoint_latest_points_to() {
        let config = TrainConfig::new().with_model(ModelKind::Tiny).with_critic_width(16);
        let state = crate::fit::new_state(&config, &Device::flex().autodiff());
        let dir = tempfile::tempdir().unwrap();
        let at = Progress { step: 3, epoch: 0, batch: 3, images: Some(100) };
        let first = save(dir.path(), &config, at, &state).unwrap();
        std::fs::write(first.join("marker"), b"the original folder").unwrap();
        assert_eq!(save(dir.path(), &config, at, &state).unwrap(), first);
        assert!(first.join("marker").exists(), "the checkpoint was not replaced");
        let moved = save(dir.path(), &config, Progress { batch: 4, ..at }, &state).unwrap();
        assert_eq!(moved.file_name().unwrap(), "step-00000003-1");
        assert!(first.join("marker").exists());
        assert_eq!(latest(dir.path()).unwrap(), Some(moved.clone()));
        assert_eq!(load_progress(&moved).unwrap().batch, 4);
    }

    /// A kill while `latest` is rewritten leaves the pointer's temporary file inside the
    /// checkpoint folder (CI's kill loop once hit it); a restart removes it with the half-written
    /// checkpoint folders and keeps the complete ones.
    #[test]
    fn a_restart_removes_what_killed_saves_left() {
        let out = tempfile::tempdir().unwrap();
        let root = dir(out.path());
        std::fs::create_dir_all(root.join(".step-00000007.tmp")).unwrap();
        std::fs::create_dir_all(root.join("step-00000006")).unwrap();
        std::fs::write(root.join(".dim-edge-a1b2c3.tmp"), b"step-0000").unwrap();
        std::fs::write(root.join("latest"), b"step-00000006").unwrap();
        clean_stale(out.path());
        let mut left: Vec<_> = std::fs::read_dir(&root).unwrap().flatten().map(|e| e.file_name().into_string().unwrap()).collect();
        left.sort();
        assert_eq!(left, ["latest", "step-00000006"]);
    }

    /// Issue 17: a model whose weights overflowed is not saved, and `latest` keeps pointing at the
    /// last good checkpoint.
    #[test]
    fn models_with_non_finite_weights_are_not_saved() {
        let config = TrainConfig::new().with_model(ModelKind::Tiny).with_critic_width(16);
        let mut state = crate::fit::new_state(&config, &Device::flex().autodiff());
        let dir = tempfile::tempdir().unwrap();
        let good = save(dir.path(), &config, Progress { step: 1, ..Progress::default() }, &state).unwrap();
        let w = state.model.encoder.y.weight.val();
        let [rows, cols] = w.dims();
        let mut values = w.into_data().try_to_vec::<f32>().unwrap();
        values[0] = f32::NAN;
        let poisoned = Tensor::<2>::from_data(TensorData::new(values, [rows, cols]), &Device::flex().autodiff());
        state.model.encoder.y.weight = burn::module::Param::from_tensor(poisoned);
        let err = save(dir.path(), &config, Progress { step: 2, ..Progress::default() }, &state).unwrap_err().to_string();
        assert!(err.contains("1 NaN or infinite") && err.contains("step 2"), "{err} ({rows}×{cols})");
        assert_eq!(latest(dir.path()).unwrap(), Some(good));
    }
}
