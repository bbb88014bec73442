//! The second core at batch 1: a pool whose worker spins for a while after each job. Both host
//! paths split a single image's large products in two on it ([`crate::float`], [`crate::fast`]).
//!
//! One image through tiny is ~60 µs, three products of which are split in two, each half a
//! few µs to a dozen. rayon's idle workers go to sleep within microseconds, so each hand-off
//! paid a wake-up (~21 µs on this VM) and splitting made whole runs slower (numbers in
//! [`crate::float`]'s kernel). onnxruntime's pool keeps its workers spinning between the products of a
//! run; `micropool` does the same (its workers spin [`SPIN`] loops before sleeping) and the
//! thread that calls its `join` works on the halves too, so a hand-off to a spinning worker
//! costs ~1.5 µs. A worker that has gone to sleep costs one wake-up per run ([`wake`]).
//!
//! The pool is the process's, made on first use with one worker: products are split in two,
//! the caller's thread is the other. A panic inside a job aborts the process (micropool's
//! rule): the jobs are [`crate::float`]'s kernel's products on shapes checked when the file was read.

use std::sync::OnceLock;

/// Spin loops an idle worker makes before it sleeps: 10,000 `pause`s took 255 µs on this
/// machine's EPYC, about one run of dim32 — back-to-back calls find the worker awake, and an
/// app that embeds one image now and then loses at most that much of a core after each.
const SPIN: usize = 10_000;

fn pool() -> &'static micropool::ThreadPool {
    static POOL: OnceLock<micropool::ThreadPool> = OnceLock::new();
    POOL.get_or_init(|| micropool::ThreadPoolBuilder::default().num_threads(1).idle_spin_cycles(SPIN).build())
}

/// Has the pool's worker spin from now: one run's first [`join`] may come a few µs later. A
/// worker that woke up to find its half already taken (the caller takes it when the worker is
/// late) goes back to sleep without spinning (micropool's rule: it spins only after it found
/// work), so without this a run that starts with a sleeping worker could stay in that state,
/// paying a wake-up per split and gaining nothing (tiny: 95–105 µs on two threads against 61 on
/// one, in about one process of eight). An empty task is always found, so it spins after it.
pub fn wake() {
    drop(pool().spawn_owned(|| ()));
}

/// Runs `a` and `b`, one on this thread and the other on the pool's worker — or both here, if
/// the worker has not taken its half by the time this thread is done with the first.
pub fn join(a: impl FnOnce() + Send, b: impl FnOnce() + Send) {
    pool().join(a, b);
}

#[cfg(test)]
mod tests {
    #[test]
    fn both_halves_run_and_write_their_own_slices() {
        let mut v = vec![0u32; 1000];
        for _ in 0..100 {
            let (l, r) = v.split_at_mut(500);
            super::join(|| l.iter_mut().for_each(|x| *x += 1), || r.iter_mut().for_each(|x| *x += 2));
        }
        assert!(v[..500].iter().all(|&x| x == 100) && v[500..].iter().all(|&x| x == 200));
    }
}
