# Reference values for trainer/src/eval/msssim.rs, from pytorch_msssim's _ssim (PyPI), float64.
import importlib, torch, torch.nn.functional as F
m = importlib.import_module("pytorch_msssim.ssim")
def pair(k):
    n = 3 * 32 * 32
    if k == 0:
        x = [((i * 7919) % 256) / 255 for i in range(n)]
        y = [min(1.0, max(0.0, x[i] + (((i * 104729) % 97) / 97 - 0.5) * 0.4)) for i in range(n)]
    else:
        x = [((i % 32) + (i // 32 % 32)) / 62 for i in range(n)]
        y = [min(1.0, 0.8 * v + 0.1 + 0.05 * ((i // 3) % 2)) for i, v in enumerate(x)]
    # Rounded to f32 first, as the Rust side holds images in f32.
    t = lambda v: torch.tensor(v, dtype=torch.float32).to(torch.float64).view(1, 3, 32, 32)
    return t(x), t(y)
# pytorch_msssim's window formula (_fspecial_gauss_1d), evaluated in float64: its float32 window
# alone moves SSIM by ~3e-6 on smooth images, where variances are small against C2.
coords = torch.arange(7, dtype=torch.float64) - 3
g = torch.exp(-(coords ** 2) / (2 * 1.5 ** 2))
win = (g / g.sum()).view(1, 1, 1, 7).repeat(3, 1, 1, 1)
w = torch.tensor([0.0448, 0.2856, 0.3001], dtype=torch.float64); w = w / w.sum()
for k in range(2):
    X, Y = pair(k)
    s, _ = m._ssim(X, Y, data_range=1.0, win=win)
    single = s.mean().item()
    mcs = []
    for i in range(3):
        s, cs = m._ssim(X, Y, data_range=1.0, win=win)
        if i < 2:
            mcs.append(torch.relu(cs)); X = F.avg_pool2d(X, 2); Y = F.avg_pool2d(Y, 2)
    v = torch.prod(torch.stack(mcs + [torch.relu(s)]) ** w.view(-1, 1, 1), dim=0).mean().item()
    print(f"pair {k}: ssim {single:.10f} ms-ssim {v:.10f}")
