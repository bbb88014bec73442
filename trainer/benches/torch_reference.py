"""Outside reference for `trainer bench`: the same DIM(L) training step in PyTorch.

dim32 encoder (convs 64-128-256 4x4/2 + BN + ReLU, fc 1024 + BN + ReLU, Y 64), encode-and-dot
local critic of width W (1x1 conv, BN, ReLU, 1x1 conv + linear shortcut, on the 8x8 map and on Y),
JSD estimator, prior discriminator (1000-200-1) with gamma 0.1, Adam 1e-4, synthetic batches.
Prints `N img/s` like `trainer bench`. Not part of the product; run it beside `trainer bench`
(`scripts/bench-train` runs the pair, alternating):

    python3 trainer/benches/torch_reference.py --width 2048 --batch 64 --steps 10
    python3 trainer/benches/torch_reference.py --bf16          # what one autocast line gives
    python3 trainer/benches/torch_reference.py --reassociate   # the critic computed as dim-edge does

--bf16 runs the encoder and critics under torch.autocast(bfloat16) (the prior discriminator in
f32). --reassociate scores with (g W2^T) h^T + (g Ws^T) x^T + g.(b2 + bs) instead of encoding every
location to width W: the same function (trainer/src/model/critic.rs), 64x fewer multiply-adds
in the W x W layer.
"""
import argparse
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


def block(i, o):
    return nn.Sequential(nn.Conv2d(i, o, 4, 2, 1), nn.BatchNorm2d(o), nn.ReLU())


class Encoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1, self.c2, self.c3 = block(3, 64), block(64, 128), block(128, 256)
        self.fc = nn.Sequential(nn.Linear(4096, 1024), nn.BatchNorm1d(1024), nn.ReLU())
        self.y = nn.Linear(1024, 64)

    def forward(self, x):
        local = self.c2(self.c1(x))
        return local, self.y(self.fc(self.c3(local).flatten(1)))


class MiNet(nn.Module):
    def __init__(self, i, w):
        super().__init__()
        self.b = nn.Sequential(nn.Conv2d(i, w, 1), nn.BatchNorm2d(w), nn.ReLU(), nn.Conv2d(w, w, 1))
        self.s = nn.Conv2d(i, w, 1)

    def forward(self, x):
        return self.b(x) + self.s(x)

    def hidden(self, x):
        """The activations before the last 1x1 conv: [B, W, H, W']."""
        return self.b[2](self.b[1](self.b[0](x)))


def scores_reassociated(lc, local, g):
    """g . l^T without computing l: [B, B*HW] (rows: Y_j; columns: image, location)."""
    b, c = local.shape[0], local.shape[1]
    h = lc.hidden(local).flatten(2).transpose(1, 2).reshape(-1, lc.b[3].out_channels)
    x = local.flatten(2).transpose(1, 2).reshape(-1, c)
    w2, ws = lc.b[3].weight.flatten(1), lc.s.weight.flatten(1)  # [W, W], [W, C]
    return (g @ w2) @ h.t() + (g @ ws) @ x.t() + (g @ (lc.b[3].bias + lc.s.bias)).unsqueeze(1)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--width", type=int, default=2048)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--bf16", action="store_true", help="autocast encoder + critics to bfloat16")
    p.add_argument("--reassociate", action="store_true", help="score as dim-edge does (same function)")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    a = p.parse_args()
    torch.manual_seed(0)
    dev = torch.device(a.device)
    enc, lc, gc = Encoder().to(dev), MiNet(128, a.width).to(dev), MiNet(64, a.width).to(dev)
    disc = nn.Sequential(nn.Linear(64, 1000), nn.ReLU(), nn.Linear(1000, 200), nn.ReLU(), nn.Linear(200, 1)).to(dev)
    opt = torch.optim.Adam([*enc.parameters(), *lc.parameters(), *gc.parameters()], lr=1e-4)
    dopt = torch.optim.Adam(disc.parameters(), lr=1e-4)
    x = torch.rand(a.batch, 3, 32, 32, device=dev) * 2 - 1
    b = a.batch
    eye = torch.eye(b, device=dev).reshape(b, b, 1)
    autocast = torch.autocast(dev.type, dtype=torch.bfloat16, enabled=a.bf16)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    for s in range(a.warmup + a.steps):
        if s == a.warmup:
            sync()
            t0 = time.perf_counter()
        with autocast:
            local, y = enc(x)
            g = gc(y.reshape(b, 64, 1, 1)).reshape(b, a.width)
            if a.reassociate:
                sc = scores_reassociated(lc, local, g)
            else:
                l = lc(local).flatten(2).transpose(1, 2).reshape(b * 64, a.width)
                sc = g @ l.t()
        sc, y = sc.float().reshape(b, b, 64), y.float()
        pos = (-F.softplus(-sc) * eye).sum() / (b * 64)
        neg = (F.softplus(sc) * (1 - eye)).sum() / (b * (b - 1) * 64)
        prior = F.softplus(-disc(torch.sigmoid(y))).mean()
        loss = -(pos - neg) + 0.1 * prior
        opt.zero_grad()
        loss.backward()
        opt.step()
        real = torch.rand(b, 64, device=dev)
        dl = F.softplus(-disc(real)).mean() + F.softplus(disc(torch.sigmoid(y.detach()))).mean()
        dopt.zero_grad()
        dl.backward()
        dopt.step()
    sync()
    dt = time.perf_counter() - t0
    print(f"{a.steps * a.batch / dt:.1f} img/s")


if __name__ == "__main__":
    main()
