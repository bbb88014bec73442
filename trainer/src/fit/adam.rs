//! Adam in one pass over each parameter: burn's arithmetic, state and record, fused.
//!
//! burn's `Adam` updates a parameter with about a dozen tensor operations (`m·β₁`, `g·(1−β₁)`,
//! their sum, `g²`, …), each a pass over memory that writes a new tensor; for dim32 with the
//! paper's critic (14 M parameters) that was a fifth of the training step (`trainer bench
//! --breakdown`). [`FusedAdam`] reads `p, g, m, v` once and writes `p, m, v` once, on the rayon
//! pool. It performs the same f32 operations in the same order, with no fused multiply-add, so
//! its results are bit-identical to burn's (tested), and its state is burn's [`AdamState`]: a
//! checkpoint written with either optimiser resumes with the other.

use burn::optim::{AdamState, AdaptiveMomentumState, LearningRate, ModuleOptimizer, Optimizer};
use burn::prelude::*;
use rayon::prelude::*;

/// Adam without weight decay or AMSGrad (what `fit` uses), fused.
#[derive(Debug, Clone, Copy)]
pub struct FusedAdam {
    pub beta_1: f32,
    pub beta_2: f32,
    pub epsilon: f32,
}

impl FusedAdam {
    /// burn's `AdamConfig` defaults (β₁ 0.9, β₂ 0.999) with `epsilon` (fit uses 1e-8).
    pub fn new(epsilon: f32) -> Self {
        Self { beta_1: 0.9, beta_2: 0.999, epsilon }
    }

    /// With another β₁ (the official DIM code uses 0.5).
    pub fn with_beta_1(self, beta_1: f32) -> Self {
        Self { beta_1, ..self }
    }

    pub fn init(self) -> ModuleOptimizer {
        ModuleOptimizer::from(self)
    }
}

/// Elements per parallel task: 64 KiB of each of `p, g, m, v`.
const CHUNK: usize = 1 << 14;

/// One step's scalars.
struct Constants {
    b1: f32,
    b2: f32,
    f1: f32,
    f2: f32,
    combined: f32,
    eps: f32,
    lr: f32,
}

impl Constants {
    /// The scalars of step `time` (1 for the first), as burn's `AdaptiveMomentum` computes them.
    fn at(adam: &FusedAdam, time: usize, lr: LearningRate) -> Self {
        let (b1, b2) = (adam.beta_1, adam.beta_2);
        let bias_correction2_sqrt = (1.0 - b2.powi(time as i32)).sqrt();
        Self {
            b1,
            b2,
            f1: 1.0 - b1,
            f2: 1.0 - b2,
            combined: bias_correction2_sqrt / (1.0 - b1.powi(time as i32)),
            eps: adam.epsilon * bias_correction2_sqrt,
            lr: lr as f32,
        }
    }

    /// burn's operations in burn's order, element by element (Rust contracts nothing into FMA, and
    /// vector `sqrt`/`div` round exactly as scalar ones: the results stay bit-identical).
    fn update(&self, p: &mut [f32], m: &mut [f32], v: &mut [f32], g: &[f32]) {
        let n = p.len();
        let (m, v, g) = (&mut m[..n], &mut v[..n], &g[..n]);
        for i in 0..n {
            m[i] = m[i] * self.b1 + g[i] * self.f1;
            v[i] = v[i] * self.b2 + (g[i] * g[i]) * self.f2;
            let update = (m[i] * self.combined) / (v[i].sqrt() + self.eps);
            p[i] -= update * self.lr;
        }
    }
}

fn host(t: Tensor<1>) -> Vec<f32> {
    t.into_data().try_into_vec::<f32>().expect("Adam runs on f32 parameters")
}

impl Optimizer for FusedAdam {
    type State<const D: usize> = AdamState<D>;

    fn step<const D: usize>(&self, lr: LearningRate, tensor: Tensor<D>, grad: Tensor<D>, state: Option<AdamState<D>>) -> (Tensor<D>, Option<AdamState<D>>) {
        let (shape, device) = (tensor.shape(), tensor.device());
        let n = shape.num_elements();
        let mut p = host(tensor.reshape([n]));
        let g = host(grad.reshape([n]));
        let (mut m, mut v, time) = match state {
            Some(s) => (host(s.momentum.moment_1.reshape([n])), host(s.momentum.moment_2.reshape([n])), s.momentum.time + 1),
            // burn's first step, m = g·(1−β₁) and v = g²·(1−β₂), is this update from zeros.
            None => (vec![0.0; n], vec![0.0; n], 1),
        };
        // Chunks with a plain loop inside, so that the loop is vectorised (a parallel iterator over
        // single elements called a closure per element: scalar `sqrtss`, 16 % of a dim32 step).
        let k = Constants::at(self, time, lr);
        p.par_chunks_mut(CHUNK)
            .zip(m.par_chunks_mut(CHUNK))
            .zip(v.par_chunks_mut(CHUNK))
            .zip(g.par_chunks(CHUNK))
            .for_each(|(((p, m), v), g)| k.update(p, m, v, g));
        let back = |x: Vec<f32>| Tensor::<1>::from_data(TensorData::new(x, [n]), &device).reshape(shape.clone());
        let momentum = AdaptiveMomentumState::new(time, back(m), back(v));
        (back(p), Some(AdamState::new(momentum)))
    }

    fn to_device<const D: usize>(mut state: AdamState<D>, device: &Device) -> AdamState<D> {
        state.momentum = state.momentum.to_device(device);
        state
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::nn::{Linear, LinearConfig};
    use burn::optim::{AdamConfig, GradientsParams};

    fn step(net: Linear, optim: &mut ModuleOptimizer, x: &Tensor<2>) -> Linear {
        let loss = net.forward(x.clone()).powi_scalar(2).mean();
        let grads = GradientsParams::from_grads(loss.backward(), &net);
        optim.step(3e-3, net, grads)
    }

    fn weights(net: &Linear) -> Vec<f32> {
        net.weight.val().into_data().try_into_vec::<f32>().unwrap()
    }

    /// Same parameters, bit for bit, as burn's Adam over several steps; and a state saved by
    /// one continues in the other.
    #[test]
    fn fused_adam_is_burns_adam_bit_for_bit() {
        let d = Device::flex().autodiff();
        d.seed(2);
        let x = Tensor::<2>::random([32, 40], burn::tensor::Distribution::Normal(0.0, 1.0), &d);
        // 40·900 weights: more than two parallel chunks.
        let init = LinearConfig::new(40, 900).init(&d);
        let _ = (weights(&init), init.bias.as_ref().map(|b| b.val())); // materialise before cloning
        let (mut a, mut b) = (init.clone(), init);
        let mut burn_adam = AdamConfig::new().with_epsilon(1e-8).init();
        let mut fused = FusedAdam::new(1e-8).init();
        for _ in 0..5 {
            a = step(a, &mut burn_adam, &x);
            b = step(b, &mut fused, &x);
            assert_eq!(weights(&a), weights(&b));
        }
        let dir = tempfile::tempdir().unwrap();
        burn_adam.save(dir.path().join("adam.bpk")).unwrap();
        let mut resumed = FusedAdam::new(1e-8).init().load(dir.path().join("adam.bpk")).unwrap();
        let (a, b) = (step(a, &mut burn_adam, &x), step(b, &mut resumed, &x));
        assert_eq!(weights(&a), weights(&b), "burn's saved state resumes in the fused optimiser");
        assert_ne!(weights(&a), weights(&step(a.clone(), &mut burn_adam, &x)), "the steps move the weights");
    }
}
