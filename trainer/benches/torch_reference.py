"""Outside reference for `trainer bench`: the same DIM(L) training step in PyTorch.

dim32 encoder (convs 64-128-256 4x4/2 + BN + ReLU, fc 1024 + BN + ReLU, Y 64), encode-and-dot
local critic of width W (1x1 conv, BN, ReLU, 1x1 conv + linear shortcut, on the 8x8 map and on Y),
JSD estimator, prior discriminator (1000-200-1) with gamma 0.1, Adam 1e-4, synthetic batches.
Prints `N img/s` like `trainer bench`. Not part of the product; run it beside `trainer bench`:

    python3 trainer/benches/torch_reference.py --width 2048 --batch 64 --steps 10
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


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--width", type=int, default=2048)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=2)
    a = p.parse_args()
    torch.manual_seed(0)
    enc, lc, gc = Encoder(), MiNet(128, a.width), MiNet(64, a.width)
    disc = nn.Sequential(nn.Linear(64, 1000), nn.ReLU(), nn.Linear(1000, 200), nn.ReLU(), nn.Linear(200, 1))
    opt = torch.optim.Adam([*enc.parameters(), *lc.parameters(), *gc.parameters()], lr=1e-4)
    dopt = torch.optim.Adam(disc.parameters(), lr=1e-4)
    x = torch.rand(a.batch, 3, 32, 32) * 2 - 1
    b = a.batch
    eye = torch.eye(b).reshape(b, b, 1)
    for s in range(a.warmup + a.steps):
        if s == a.warmup:
            t0 = time.perf_counter()
        local, y = enc(x)
        l = lc(local).flatten(2).transpose(1, 2).reshape(b * 64, a.width)
        g = gc(y.reshape(b, 64, 1, 1)).reshape(b, a.width)
        sc = (g @ l.t()).reshape(b, b, 64)
        pos = (-F.softplus(-sc) * eye).sum() / (b * 64)
        neg = (F.softplus(sc) * (1 - eye)).sum() / (b * (b - 1) * 64)
        prior = F.softplus(-disc(torch.sigmoid(y))).mean()
        loss = -(pos - neg) + 0.1 * prior
        opt.zero_grad()
        loss.backward()
        opt.step()
        real = torch.rand(b, 64)
        dl = F.softplus(-disc(real)).mean() + F.softplus(disc(torch.sigmoid(y.detach()))).mean()
        dopt.zero_grad()
        dl.backward()
        dopt.step()
    dt = time.perf_counter() - t0
    print(f"{a.steps * a.batch / dt:.1f} img/s")


if __name__ == "__main__":
    main()
