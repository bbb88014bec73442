//! Matrix products in bf16 on the CPU (AVX512-BF16 through `gemmkit`), as a burn backend extension.
//!
//! burn 0.22's Flex backend multiplies bf16 tensors by converting them to f32. PyTorch's autocast
//! runs `vdpbf16ps` instead (two bf16 products per f32 lane, f32 accumulation), which on this
//! project's CPU gives 266–380 GFLOP/s on the training step's products against 180–222 for f32
//! (`benches/gemm_kernels.rs`). [`matmul_bf16`] is the same idea for one product: f32 tensors in
//! and out, each operand rounded to bf16, the sum accumulated in f32; its gradients are bf16
//! products too (`dA = dC·Bᵀ`, `dB = Aᵀ·dC`), as under autocast. Flex only; elsewhere (or on a
//! CPU without AVX512-BF16, where `gemmkit` widens to f32 itself) it is still correct.

use burn::backend::autodiff::Autodiff;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::tensor::FloatTensor;
use burn::backend::{Backend, Dispatch, Flex, backend_extension};
use burn::prelude::*;
use burn_flex::{FlexTensor, Layout};
use half::bf16;
use rayon::prelude::*;

/// Whether this CPU multiplies bf16 itself: x86-64 with AVX512-BF16, the `vdpbf16ps` kernel
/// `gemmkit` picks. Without it `gemmkit` widens every operand to f32 in software, and a bf16
/// product costs more than the f32 one it was meant to beat: a dim32 step (batch 256, W=512)
/// ran 2.2× slower than in f32 on an AVX2-only EPYC (`trainer bench` with and without `--bf16`,
/// alternating; docs/recipes.md), so `fit` runs f32 products there.
pub fn native_products() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512bf16") && std::arch::is_x86_feature_detected!("avx512f")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Products in bf16 with f32 accumulation.
#[backend_extension(Flex, Autodiff)]
pub trait Bf16Products: Backend {
    /// `lhs · rhs` for 2-D tensors (f32, or bf16 from [`Self::narrow_bf16`]), f32 operands
    /// rounded to bf16; the result is f32.
    fn matmul_bf16(lhs: FloatTensor<Self>, rhs: FloatTensor<Self>) -> FloatTensor<Self>;
    /// A 2-D f32 tensor rounded to bf16, as the same view (its strides kept): an operand that
    /// several products read is converted once. Not differentiable (it only feeds products).
    fn narrow_bf16(tensor: FloatTensor<Self>) -> FloatTensor<Self>;
}

/// `a · b` (`[m, k]` by `[k, n]`) with the operands rounded to bf16 and f32 accumulation.
pub fn matmul_bf16(a: Tensor<2>, b: Tensor<2>) -> Tensor<2> {
    Tensor::from_dispatch(<Dispatch as Bf16Products>::matmul_bf16(a.into_dispatch(), b.into_dispatch()))
}

/// Elements per parallel conversion task.
const CHUNK: usize = 1 << 16;

/// The bf16 copy of a 2-D f32 view: the span of its buffer that it reads, converted in parallel,
/// with the view's strides (a transposed operand costs no copy).
fn narrow(t: &FlexTensor) -> FlexTensor {
    let dims = t.layout().shape().to_vec();
    assert_eq!(dims.len(), 2, "bf16 products take 2-D tensors, got {dims:?}");
    if t.dtype() == burn::tensor::DType::BF16 {
        return t.clone();
    }
    let strides = t.layout().strides().to_vec();
    // A flipped view (negative strides) is made contiguous first.
    if strides.iter().any(|&s| s < 0) {
        return narrow(&t.to_contiguous());
    }
    let (rows, cols) = (dims[0], dims[1]);
    let extent = if rows * cols == 0 { 0 } else { (rows - 1) * strides[0] as usize + (cols - 1) * strides[1] as usize + 1 };
    let start = t.layout().start_offset();
    let src = &t.storage::<f32>()[start..start + extent];
    // Collected, not zero-filled and then written: the zeroing was a third of the conversion.
    let data: Vec<bf16> = src.par_iter().with_min_len(CHUNK).map(|s| bf16::from_f32(*s)).collect();
    FlexTensor::new(burn::tensor::Bytes::from_elems(data), Layout::new(dims.into(), strides, 0), burn::tensor::DType::BF16)
}

/// A bf16 2-D view as `gemmkit` reads it.
fn matref(t: &FlexTensor) -> gemmkit::MatRef<'_, bf16> {
    let (dims, strides) = (t.layout().shape(), t.layout().strides());
    let data = &t.storage::<bf16>()[t.layout().start_offset()..];
    gemmkit::MatRef::new(data, dims[0], dims[1], strides[0], strides[1])
}

impl Bf16Products for Flex {
    fn matmul_bf16(lhs: FlexTensor, rhs: FlexTensor) -> FlexTensor {
        let (a, b) = (narrow(&lhs), narrow(&rhs));
        let ([m, k], [k2, n]) = ([a.layout().shape()[0], a.layout().shape()[1]], [b.layout().shape()[0], b.layout().shape()[1]]);
        assert_eq!(k, k2, "matmul_bf16: [{m}, {k}] · [{k2}, {n}]");
        let mut out = vec![bf16::ZERO; m * n];
        gemmkit::gemm(bf16::ONE, matref(&a), matref(&b), bf16::ZERO, gemmkit::MatMut::from_row_major(&mut out, m, n), gemmkit::Parallelism::Rayon(0));
        let wide: Vec<f32> = out.par_iter().with_min_len(CHUNK).map(|o| o.to_f32()).collect();
        FlexTensor::new(burn::tensor::Bytes::from_elems(wide), Layout::contiguous([m, n].into()), burn::tensor::DType::F32)
    }

    fn narrow_bf16(tensor: FlexTensor) -> FlexTensor {
        narrow(&tensor)
    }
}

impl<B: Backend + Bf16Products, C: CheckpointStrategy> Bf16Products for Autodiff<B, C> {
    fn matmul_bf16(lhs: FloatTensor<Self>, rhs: FloatTensor<Self>) -> FloatTensor<Self> {
        #[derive(Debug)]
        struct MatmulBf16;

        impl<B: Backend + Bf16Products> Backward<B, 2> for MatmulBf16 {
            /// The operands in bf16, as the forward product read them: the left one for the right
            /// one's gradient and the other way round (each kept only when that gradient is needed).
            type State = (Option<FloatTensor<B>>, Option<FloatTensor<B>>);

            fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
                let (lhs, rhs) = ops.state;
                // `dA = dC·Bᵀ`, `dB = Aᵀ·dC`, with dC rounded to bf16 once for both.
                let grad = B::narrow_bf16(grads.consume::<B>(&ops.node));
                let [lhs_parent, rhs_parent] = ops.parents;
                if let Some(node) = lhs_parent {
                    let rhs = rhs.expect("rhs kept for the lhs gradient");
                    grads.register::<B>(node.id, B::matmul_bf16(grad.clone(), B::float_transpose(rhs)));
                }
                if let Some(node) = rhs_parent {
                    let lhs = lhs.expect("lhs kept for the rhs gradient");
                    grads.register::<B>(node.id, B::matmul_bf16(B::float_transpose(lhs), grad));
                }
            }
        }

        let (lhs_tracked, rhs_tracked) = (lhs.is_tracked(), rhs.is_tracked());
        match MatmulBf16.prepare::<C>([lhs.node(), rhs.node()]).compute_bound().stateful() {
            OpsKind::Tracked(prep) => {
                // The operands are converted here once, for this product and both gradients.
                let (a, b) = (B::narrow_bf16(lhs.into_primitive()), B::narrow_bf16(rhs.into_primitive()));
                let out = B::matmul_bf16(a.clone(), b.clone());
                prep.finish((rhs_tracked.then_some(a), lhs_tracked.then_some(b)), out)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::matmul_bf16(lhs.into_primitive(), rhs.into_primitive())),
        }
    }

    fn narrow_bf16(tensor: FloatTensor<Self>) -> FloatTensor<Self> {
        // Untracked: only the products above read it, and they carry their own gradients.
        <FloatTensor<Self>>::new(B::narrow_bf16(tensor.into_primitive()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng, rngs::StdRng};
    use rand_distr::StandardNormal;

    /// Unit-normal `[r, c]` from a host RNG (the device's RNG is shared with other tests).
    fn normal(r: usize, c: usize, seed: u64, device: &Device) -> Tensor<2> {
        let mut rng = StdRng::seed_from_u64(seed);
        Tensor::from_data(TensorData::new((0..r * c).map(|_| rng.sample::<f32, _>(StandardNormal)).collect::<Vec<f32>>(), [r, c]), device)
    }

    fn values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
        t.into_data().try_to_vec::<f32>().unwrap()
    }

    /// Values and both gradients against the f32 product, within bf16's rounding: each operand
    /// and the result carry a relative error up to 2⁻⁸ (bf16 keeps 8 significant bits), so an
    /// entry that sums k products of unit-variance values is off by about 2⁻⁸·(√k + |entry|);
    /// the bound is 3× that. A transposed operand in the wrong order would miss it by far.
    #[test]
    fn bf16_product_matches_f32_within_bf16_rounding() {
        let d = Device::flex().autodiff();
        let (m, k, n) = (37, 256, 19);
        let (a, b, w) = (normal(m, k, 1, &d).require_grad(), normal(k, n, 2, &d).require_grad(), normal(m, n, 3, &d));
        let (got, want) = (matmul_bf16(a.clone(), b.clone()), a.clone().matmul(b.clone()));
        let close = |x: Vec<f32>, y: Vec<f32>, k: usize, what: &str| {
            assert_eq!(x.len(), y.len());
            for (i, (p, q)) in x.iter().zip(&y).enumerate() {
                let tol = 3.0 * ((k as f32).sqrt() + q.abs()) / 256.0;
                assert!((p - q).abs() <= tol, "{what}[{i}]: {p} vs {q} (tolerance {tol})");
            }
            assert!(x.iter().zip(&y).any(|(p, q)| p != q), "{what}: identical to f32 — not a bf16 product");
        };
        close(values(got.clone()), values(want.clone()), k, "product");
        let (gg, gw) = ((got * w.clone()).sum().backward(), (want * w).sum().backward());
        close(values(a.grad(&gg).unwrap()), values(a.grad(&gw).unwrap()), n, "lhs gradient");
        close(values(b.grad(&gg).unwrap()), values(b.grad(&gw).unwrap()), m, "rhs gradient");
        // A transposed (strided) operand and a plain device.
        let p = Device::flex();
        let (x, y) = (normal(k, m, 4, &p), normal(k, n, 5, &p));
        close(values(matmul_bf16(x.clone().transpose(), y.clone())), values(x.transpose().matmul(y)), k, "strided");
    }
}
