"""onnxruntime timings of the same encoders as `cargo bench -p dim-runtime` (outside reference).

    python3 runtime/benches/onnxruntime_reference.py name=path.onnx [name=path.onnx ...]

Prints, per model, the median batch-1 latency and batch-64 throughput over repeated runs.
"""
import sys
import time

import numpy as np
import onnxruntime as ort


def median_seconds(fn, reps):
    fn()
    ts = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return sorted(ts)[len(ts) // 2]


for arg in sys.argv[1:]:
    name, path = arg.split("=", 1)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 2
    s = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
    x = np.sin(np.arange(64 * 3072, dtype=np.float32) * 0.013).reshape(64, 3, 32, 32)
    one = median_seconds(lambda: s.run(["y"], {"image": x[:1]}), 200)
    many = median_seconds(lambda: s.run(["y"], {"image": x}), 20)
    print(f"{name}: batch 1 {one * 1e6:.0f} us, batch 64 {64 / many:.0f} img/s")
