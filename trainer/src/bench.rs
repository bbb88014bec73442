//! `trainer bench`: training throughput on synthetic batches, printed as `N img/s`.

use crate::config::TrainConfig;
use crate::data::{Batch, ImageSource, Shapes};
use crate::train;
use burn::optim::AdamConfig;
use dim_runtime::preprocess::{INPUT_LEN, rgb32_to_input};

/// Trains `warmup + steps` steps on one fixed batch and returns images per second over `steps`.
pub fn run(config: &TrainConfig, warmup: usize, steps: usize) -> anyhow::Result<f64> {
    let device = train::device(config.backend)?.autodiff();
    let shapes = Shapes::new(config.batch_size, config.seed);
    let mut images = vec![0f32; config.batch_size * INPUT_LEN];
    for (i, chunk) in images.chunks_mut(INPUT_LEN).enumerate() {
        rgb32_to_input(&shapes.load(i)?, chunk)?;
    }
    let batch = Batch { images, labels: (0..config.batch_size).map(|i| i % 10).collect(), index: 0 };
    device.seed(config.seed);
    let adam = AdamConfig::new().with_epsilon(1e-8);
    let mut state = crate::checkpoint::TrainState {
        model: config.model_config().init(&device),
        optim: adam.init(),
        disc: (config.gamma > 0.0).then(|| crate::model::PriorDiscriminator::new(config.encoder().y_dim, &device)),
        disc_optim: adam.init(),
    };
    let mut start = std::time::Instant::now();
    for s in 0..warmup + steps {
        if s == warmup {
            start = std::time::Instant::now();
        }
        state = train::step(config, state, &batch, s, &device)?.0;
    }
    Ok((steps * config.batch_size) as f64 / start.elapsed().as_secs_f64())
}
