//! The matrix products of one dim32 training step (batch 64), as GFLOP/s of three kernels:
//! the `gemm` crate in f32 (what burn's Flex backend calls), `gemmkit` in f32, and `gemmkit` in
//! bf16 (AVX512-BF16 `vdpbf16ps`, f32 accumulation) — the last once on operands already in
//! bf16 and once with the f32 → bf16 → f32 conversions an autocast-style op would pay.
//!
//! Evidence for the README's "Performance" section (issue 11): what a bf16 product could buy
//! inside a step that is op by op in f32. `cargo bench -p dim-trainer --bench gemm_kernels`.

use std::time::Instant;

use half::bf16;

/// `(m, k, n)`: the encoder's convolutions forward (`cols · W'`), their weight gradients
/// (`colsᵀ · dY`) and input gradients (`dY · W'ᵀ`), fc, and the W=512 critic's largest product.
const SHAPES: [(&str, usize, usize, usize); 8] = [
    ("conv2 forward", 4096, 1024, 128),
    ("conv3 forward", 1024, 2048, 256),
    ("conv2 weight grad", 1024, 4096, 128),
    ("conv3 weight grad", 2048, 1024, 256),
    ("conv2 input grad", 4096, 128, 1024),
    ("fc forward", 64, 4096, 1024),
    ("critic hidden (W=512)", 4096, 128, 512),
    ("square 1024", 1024, 1024, 1024),
];

/// Best of 7 timings of `f`, in seconds.
fn best(mut f: impl FnMut()) -> f64 {
    f();
    (0..7)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64()
        })
        .fold(f64::MAX, f64::min)
}

fn main() {
    println!("| product | m × k × n | gemm f32 | gemmkit f32 | gemmkit bf16 | bf16 with conversions |");
    println!("|---|---|---|---|---|---|");
    for (name, m, k, n) in SHAPES {
        let a: Vec<f32> = (0..m * k).map(|i| (i * 7919 % 1000) as f32 * 1e-3 - 0.5).collect();
        let b: Vec<f32> = (0..k * n).map(|i| (i * 104_729 % 1000) as f32 * 1e-3 - 0.5).collect();
        let mut c = vec![0f32; m * n];
        let gflop = 2.0 * (m * k * n) as f64 / 1e9;
        let gemm_f32 = best(|| {
            // SAFETY: a, b and c are row-major m×k, k×n and m×n buffers of exactly that length
            // (unit column stride, row stride = columns), c does not alias a or b, and beta = 0
            // with read_dst = false means c is only written.
            unsafe {
                gemm::gemm(
                    m,
                    n,
                    k,
                    c.as_mut_ptr(),
                    1,
                    n as isize,
                    false,
                    a.as_ptr(),
                    1,
                    k as isize,
                    b.as_ptr(),
                    1,
                    n as isize,
                    0.0,
                    1.0,
                    false,
                    false,
                    false,
                    gemm::Parallelism::Rayon(0),
                )
            }
        });
        let kit_f32 = best(|| {
            gemmkit::gemm(
                1.0,
                gemmkit::MatRef::from_row_major(&a, m, k),
                gemmkit::MatRef::from_row_major(&b, k, n),
                0.0,
                gemmkit::MatMut::from_row_major(&mut c, m, n),
                gemmkit::Parallelism::Rayon(0),
            )
        });
        let to_bf16 = |x: &[f32]| x.iter().map(|&v| bf16::from_f32(v)).collect::<Vec<_>>();
        let (ah, bh) = (to_bf16(&a), to_bf16(&b));
        let mut ch = vec![bf16::ZERO; m * n];
        let kit_bf16 = |ah: &[bf16], bh: &[bf16], ch: &mut [bf16]| {
            gemmkit::gemm(
                bf16::ONE,
                gemmkit::MatRef::from_row_major(ah, m, k),
                gemmkit::MatRef::from_row_major(bh, k, n),
                bf16::ZERO,
                gemmkit::MatMut::from_row_major(ch, m, n),
                gemmkit::Parallelism::Rayon(0),
            )
        };
        let bf16_only = best(|| kit_bf16(&ah, &bh, &mut ch));
        let bf16_converted = best(|| {
            let (ah, bh) = (to_bf16(&a), to_bf16(&b));
            kit_bf16(&ah, &bh, &mut ch);
            c.iter_mut().zip(&ch).for_each(|(o, v)| *o = v.to_f32());
        });
        let rate = |t: f64| format!("{:.0}", gflop / t);
        println!("| {name} | {m} × {k} × {n} | {} | {} | {} | {} |", rate(gemm_f32), rate(kit_f32), rate(bf16_only), rate(bf16_converted));
    }
    println!("GFLOP/s, best of 7, {} rayon threads", rayon::current_num_threads());
}
