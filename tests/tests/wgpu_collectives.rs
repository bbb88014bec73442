//! Why `fit` has no data-parallel mode yet (issue 25): burn 0.22's gradient sync rests on its
//! all-reduce, and burn's wgpu runtime has no transport between devices — only CUDA (NCCL) and
//! the remote backend serving CUDA carry one. On this machine (wgpu on lavapipe) no N-device step
//! can run, so the N-device equivalence test cannot be written; this test shows burn's own
//! refusal instead, and fails — the signal to build `fit --devices N` on it — the day burn's
//! wgpu runtime gains an all-reduce. docs/DESIGN.md ("Data-parallel training") has the design.
//!
//! Its own test binary: the refusal is a panic inside burn, which must not poison the device
//! the other wgpu tests share.

use burn::prelude::*;
use burn::tensor::distributed::{ReduceOperation, all_reduce};

#[test]
fn burn_has_no_all_reduce_between_wgpu_devices() {
    let device = dim_tests::wgpu_device();
    let t = Tensor::<1>::from_floats([1.0, 2.0], &device);
    let devices = vec![device.clone(), device.clone()];
    // The runtime refuses on its device thread; the caller sees the read fail, with the reason.
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| all_reduce(t, ReduceOperation::Mean, devices).resolve().try_into_data()));
    let message = match outcome {
        Ok(Ok(data)) => {
            panic!("burn's wgpu runtime ran an all-reduce ({data:?}): build `fit --devices N` on it and replace this test with the N-device equivalence test")
        }
        Ok(Err(e)) => format!("{e} ({e:?})"),
        Err(p) => p.downcast_ref::<String>().cloned().or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string())).unwrap_or_default(),
    };
    eprintln!("burn's refusal: {message}");
    assert!(message.contains("all_reduce") && message.contains("no transport between its devices"), "{message}");
}
