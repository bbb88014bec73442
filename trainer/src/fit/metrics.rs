//! `OUT/metrics.jsonl`: one JSON line per step, one per finished epoch, and the closing kNN line.
//!
//! The writer and every reader (the model card, the tests, `scripts/gpu-fit`) share these types,
//! so a renamed field is a compile error, not a silently missing curve. Each record goes out in
//! a single `write` of a whole line, so a kill leaves at most one torn last line, which
//! [`read`] skips.

use super::knn::KnnReport;
use super::monitor::MonitorReport;
use super::step::StepLosses;
use anyhow::Context;
use std::io::Write;
use std::path::Path;

/// A step line: its loss terms and the step's own throughput.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct StepRecord {
    pub step: usize,
    /// 1-based epoch the step belongs to.
    pub epoch: usize,
    #[serde(flatten)]
    pub losses: StepLosses,
    pub img_per_s: f64,
}

/// An epoch line: the mean loss terms of its steps (of this process, after a resume).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct EpochRecord {
    /// Epochs finished (1-based number of the epoch that ended).
    pub epoch_end: usize,
    #[serde(flatten)]
    pub losses: StepLosses,
}

/// The kNN line `fit` writes when it ends.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct KnnRecord {
    pub knn: KnnReport,
}

/// The online monitor's line after an epoch (`fit --monitor-every N`).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct MonitorRecord {
    pub monitor: MonitorReport,
}

/// One line of `metrics.jsonl`.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(untagged)]
pub enum Record {
    Step(StepRecord),
    Epoch(EpochRecord),
    Knn(KnnRecord),
    Monitor(MonitorRecord),
}

/// Appends records to a run's `metrics.jsonl`.
pub struct MetricsWriter(std::fs::File);

impl MetricsWriter {
    pub fn open(path: &Path) -> anyhow::Result<Self> {
        let f = std::fs::OpenOptions::new().create(true).append(true).open(path).with_context(|| format!("cannot write {}", path.display()))?;
        Ok(Self(f))
    }

    pub fn write(&mut self, record: impl Into<Record>) -> anyhow::Result<()> {
        let mut line = serde_json::to_string(&record.into())?;
        line.push('\n');
        self.0.write_all(line.as_bytes())?;
        Ok(())
    }
}

impl From<StepRecord> for Record {
    fn from(r: StepRecord) -> Self {
        Self::Step(r)
    }
}
impl From<EpochRecord> for Record {
    fn from(r: EpochRecord) -> Self {
        Self::Epoch(r)
    }
}
impl From<MonitorRecord> for Record {
    fn from(r: MonitorRecord) -> Self {
        Self::Monitor(r)
    }
}
impl From<KnnRecord> for Record {
    fn from(r: KnnRecord) -> Self {
        Self::Knn(r)
    }
}

/// Keeps only what happened up to a checkpoint at `step` / `epoch` (finished epochs): on resume,
/// the lines a killed process wrote after its last checkpoint are written again by the resumed
/// one, and must not appear twice. The file is replaced atomically; a missing file is fine.
pub fn truncate_after(path: &Path, step: usize, epoch: usize) -> anyhow::Result<()> {
    if !path.exists() {
        return Ok(());
    }
    let keep = |r: &Record| match r {
        Record::Step(s) => s.step <= step,
        Record::Epoch(e) => e.epoch_end <= epoch,
        Record::Monitor(m) => m.monitor.epoch <= epoch,
        Record::Knn(_) => true,
    };
    let mut text = String::new();
    for r in read(path)?.iter().filter(|r| keep(r)) {
        text += &serde_json::to_string(r)?;
        text.push('\n');
    }
    crate::fs::write_atomic(path, text.as_bytes())
}

/// Every readable record of `path`, in order (a torn or foreign line is skipped).
pub fn read(path: &Path) -> anyhow::Result<Vec<Record>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    Ok(text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect())
}

/// The step records of `path`.
pub fn steps(path: &Path) -> anyhow::Result<Vec<StepRecord>> {
    Ok(read(path)?.into_iter().filter_map(|r| if let Record::Step(s) = r { Some(s) } else { None }).collect())
}

/// The epoch records of `path`.
pub fn epochs(path: &Path) -> anyhow::Result<Vec<EpochRecord>> {
    Ok(read(path)?.into_iter().filter_map(|r| if let Record::Epoch(e) = r { Some(e) } else { None }).collect())
}

/// The monitor records of `path`.
pub fn monitors(path: &Path) -> anyhow::Result<Vec<MonitorReport>> {
    Ok(read(path)?.into_iter().filter_map(|r| if let Record::Monitor(m) = r { Some(m.monitor) } else { None }).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_with_the_historic_keys_and_torn_lines_are_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("metrics.jsonl");
        let losses = StepLosses { loss: 1.5, local_mi: -2.0, global_mi: 0.0, prior: 0.7, disc: 1.25, distill_mi: 0.0 };
        let step = StepRecord { step: 3, epoch: 1, losses, img_per_s: 99.0 };
        let epoch = EpochRecord { epoch_end: 1, losses };
        let knn = KnnRecord { knn: KnnReport { trained: 0.5, random_init: 0.25, bank_images: 10, validation_images: 4 } };
        let mut w = MetricsWriter::open(&path).unwrap();
        w.write(step).unwrap();
        w.write(epoch).unwrap();
        w.write(knn).unwrap();
        std::fs::OpenOptions::new().append(true).open(&path).unwrap().write_all(b"{\"step\": 4, \"epo").unwrap();
        assert_eq!(read(&path).unwrap(), [Record::Step(step), Record::Epoch(epoch), Record::Knn(knn)]);
        // The keys earlier runs wrote (and the shipped cards were made from).
        let line = std::fs::read_to_string(&path).unwrap();
        let first: serde_json::Value = serde_json::from_str(line.lines().next().unwrap()).unwrap();
        for key in ["step", "epoch", "loss", "local_mi", "global_mi", "prior", "disc", "img_per_s"] {
            assert!(first.get(key).is_some(), "{key}");
        }
        assert_eq!((steps(&path).unwrap().len(), epochs(&path).unwrap().len()), (1, 1));
        // A line from before distillation existed reads with a zero distillation term.
        let old = r#"{"step":1,"epoch":1,"loss":1.0,"local_mi":-1.0,"global_mi":0.0,"prior":0.5,"disc":1.0,"img_per_s":9.0}"#;
        match serde_json::from_str::<Record>(old).unwrap() {
            Record::Step(s) => assert_eq!((s.losses.loss, s.losses.distill_mi), (1.0, 0.0)),
            other => panic!("{other:?}"),
        }
    }
}
