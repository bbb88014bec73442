//! `trainer bench`: training throughput on synthetic batches, printed as `N img/s`.

use crate::config::TrainConfig;
use crate::data::{self, Batch, ImageSource, Shapes};
use crate::train;

/// Trains `warmup + steps` steps on one fixed batch and returns images per second over `steps`.
pub fn run(config: &TrainConfig, warmup: usize, steps: usize) -> anyhow::Result<f64> {
    let device = train::device(config.backend)?.autodiff();
    let shapes = Shapes::new(config.batch_size, config.seed);
    let images = data::load_inputs(&shapes, &(0..config.batch_size).collect::<Vec<_>>())?;
    let batch = Batch { images, labels: (0..config.batch_size).map(|i| shapes.label(i)).collect(), index: 0 };
    let mut state = train::new_state(config, &device);
    let mut start = std::time::Instant::now();
    for s in 0..warmup + steps {
        if s == warmup {
            start = std::time::Instant::now();
        }
        state = train::step(config, state, &batch, s, &device)?.0;
    }
    Ok((steps * config.batch_size) as f64 / start.elapsed().as_secs_f64())
}
