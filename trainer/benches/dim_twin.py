"""Outside reference for `trainer fit --preset paper`: the official DIM(L) recipe, transcribed.

A PyTorch twin of rdevon/DIM (with cortex) as it trains CIFAR-10 for the paper's Table 1, written
from its files (docs/DESIGN.md has the table of settings and where each comes from):
- encoder `basic32x32`: conv 64-128-256 (4x4, stride 2, pad 1, no bias) + BN + ReLU, flatten,
  linear 1024 (no bias) + BN + ReLU, then Y = linear 64;
- local DIM on the 8x8 map of the second conv against Y, both encoded by `MI1x1ConvNet` of width
  W (1x1 conv, no bias -> BN -> ReLU -> 1x1 conv, plus a 1x1 shortcut without bias started at
  uniform(-0.01, 0.01) with ones on its diagonal, then LayerNorm over the W units), scored by
  dot product over every (Y, image, location) triple; JSD (`fenchel_dual_loss`) or InfoNCE;
- prior matching (gamma 0.1): discriminator 64-1000-200-1 on sigmoid(Y) against U[0,1]^64, GAN
  loss with the contrastive gradient penalty (weight 1) on both inputs, the encoder's
  non-saturating loss;
- Adam 1e-4, betas (0.5, 0.999) for both optimisers, batch 64 (last short batch dropped),
  images scaled to [-1, 1], no augmentation.

It trains on exactly `trainer fit`'s training images: `trainer data split` writes them (same
decoder, same split). At the end it exports the encoder as ONNX with `trainer export`'s
interface — input `image` [N,3,32,32] in [-1,1], outputs `y`, `relu3`, `fc_relu` — so the same
`trainer eval` scores both. Not part of the product; the comparison is in docs/recipes.md:

    trainer data split /var/tmp/dim-edge-data/train --out /var/tmp/split
    python3 trainer/benches/dim_twin.py --split /var/tmp/split --epochs 10 --width 512 \\
        --out /var/tmp/runs/twin     # then: trainer eval --model /var/tmp/runs/twin/encoder.onnx ...

Kill it and run it again: it resumes from its last epoch (`OUT/twin.pt`).
"""
import argparse
import json
import math
import os
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


def conv_block(i, o):
    return nn.Sequential(nn.Conv2d(i, o, 4, 2, 1, bias=False), nn.BatchNorm2d(o), nn.ReLU())


class Encoder(nn.Module):
    """basic32x32 with the 64-unit output layer (cortex_DIM/configs/convnets.py, controller.py)."""

    def __init__(self):
        super().__init__()
        self.c1, self.c2, self.c3 = conv_block(3, 64), conv_block(64, 128), conv_block(128, 256)
        self.fc = nn.Sequential(nn.Linear(4096, 1024, bias=False), nn.BatchNorm1d(1024), nn.ReLU())
        self.y = nn.Linear(1024, 64)

    def forward(self, x):
        local = self.c2(self.c1(x))
        conv = self.c3(local)
        fc = self.fc(conv.flatten(1))
        return local, conv, fc, self.y(fc)


class MI1x1ConvNet(nn.Module):
    """cortex_DIM/nn_modules/mi_networks.py, as written there."""

    def __init__(self, n_input, n_units):
        super().__init__()
        self.block_nonlinear = nn.Sequential(
            nn.Conv2d(n_input, n_units, 1, bias=False), nn.BatchNorm2d(n_units), nn.ReLU(),
            nn.Conv2d(n_units, n_units, 1, bias=True))
        self.ln = nn.LayerNorm(n_units)
        self.linear_shortcut = nn.Conv2d(n_input, n_units, 1, bias=False)
        if n_units >= n_input:
            eye = torch.zeros(n_units, n_input, 1, 1, dtype=torch.bool)
            for i in range(n_input):
                eye[i, i, 0, 0] = True
            self.linear_shortcut.weight.data.uniform_(-0.01, 0.01)
            self.linear_shortcut.weight.data.masked_fill_(eye, 1.0)

    def forward(self, x):
        h = self.block_nonlinear(x) + self.linear_shortcut(x)
        return self.ln(h.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


def fenchel_dual_jsd(l, m):
    """fenchel_dual_loss(measure='JSD'): l [N, W, n_locals], m [N, W, 1]."""
    n, units, n_locals = l.shape
    u = torch.mm(m.permute(0, 2, 1).reshape(-1, units), l.permute(0, 2, 1).reshape(-1, units).t())
    u = u.reshape(n, 1, n, n_locals).permute(0, 2, 3, 1)  # [N (Y), N (image), locals, 1]
    log2 = math.log(2.0)
    e_pos = (log2 - F.softplus(-u)).mean(2).mean(2)
    e_neg = (F.softplus(-u) + u - log2).mean(2).mean(2)
    mask = torch.eye(n)
    e_pos = (e_pos * mask).sum() / mask.sum()
    e_neg = (e_neg * (1 - mask)).sum() / (1 - mask).sum()
    return e_neg - e_pos


def infonce(l, m):
    """infonce_loss: each (image, location) positive against every location of the other images."""
    n, units, n_locals = l.shape
    l_p, m_p = l.permute(0, 2, 1), m.permute(0, 2, 1)
    u_p = torch.matmul(l_p, m).unsqueeze(2)  # [N, locals, 1, 1]
    u_n = torch.mm(m_p.reshape(-1, units), l_p.reshape(-1, units).t())
    u_n = u_n.reshape(n, 1, n, n_locals).permute(0, 2, 3, 1)
    mask = torch.eye(n)[:, :, None, None]
    u_n = (1 - mask) * u_n - 10.0 * mask
    u_n = u_n.reshape(n, n * n_locals, 1).unsqueeze(1).expand(-1, n_locals, -1, -1)
    pred = F.log_softmax(torch.cat([u_p, u_n], dim=2), dim=2)
    return -pred[:, :, 0].mean()


class Discriminator(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(64, 1000), nn.ReLU(), nn.Linear(1000, 200), nn.ReLU(), nn.Linear(200, 1))

    def forward(self, x):
        return self.net(x)


def gradient_penalty(d, x):
    x = x.detach().requires_grad_()
    out = d(x)
    g = torch.autograd.grad(out, x, torch.ones_like(out), create_graph=True)[0]
    return (g.view(g.size(0), -1) ** 2).sum(1).mean()


class Twin(nn.Module):
    def __init__(self, width):
        super().__init__()
        self.encoder = Encoder()
        self.local_net = MI1x1ConvNet(128, width)
        self.global_net = MI1x1ConvNet(64, width)

    def dim_loss(self, x, estimator):
        local, _, _, y = self.encoder(x)
        n = x.shape[0]
        l = self.local_net(local).reshape(n, -1, 64)
        g = self.global_net(y[:, :, None, None]).reshape(n, -1, 1)
        loss = fenchel_dual_jsd(l, g) if estimator == "jsd" else infonce(l, g)
        return loss, y


class Export(nn.Module):
    """`trainer export`'s interface: y, relu3 (the conv layer), fc_relu (the fc layer)."""

    def __init__(self, encoder):
        super().__init__()
        self.encoder = encoder

    def forward(self, image):
        _, conv, fc, y = self.encoder(image)
        return y, conv, fc


def load_split(folder):
    raw = np.fromfile(os.path.join(folder, "train.u8"), dtype=np.uint8)
    images = raw.reshape(-1, 32, 32, 3).transpose(0, 3, 1, 2)  # HWC -> CHW
    return torch.from_numpy(images.astype(np.float32) / 127.5 - 1.0)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--split", required=True, help="folder written by `trainer data split`")
    ap.add_argument("--out", required=True)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--width", type=int, default=2048)
    ap.add_argument("--estimator", choices=["jsd", "infonce"], default="jsd")
    ap.add_argument("--gamma", type=float, default=0.1)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--beta1", type=float, default=0.5)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: PyTorch's default)")
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    os.makedirs(a.out, exist_ok=True)
    torch.manual_seed(a.seed)
    images = load_split(a.split)
    model, disc = Twin(a.width), Discriminator()
    opt = torch.optim.Adam(model.parameters(), lr=a.lr, betas=(a.beta1, 0.999))
    opt_d = torch.optim.Adam(disc.parameters(), lr=a.lr, betas=(a.beta1, 0.999))
    ckpt, start = os.path.join(a.out, "twin.pt"), 0
    if os.path.exists(ckpt):
        s = torch.load(ckpt, weights_only=False)
        model.load_state_dict(s["model"]), disc.load_state_dict(s["disc"])
        opt.load_state_dict(s["opt"]), opt_d.load_state_dict(s["opt_d"])
        torch.set_rng_state(s["rng"])
        start = s["epoch"]
        print(f"resumed after epoch {start}", flush=True)
    per_epoch = len(images) // a.batch
    for epoch in range(start, a.epochs):
        model.train()
        order = torch.randperm(len(images))
        t0, sums = time.time(), np.zeros(3)
        for b in range(per_epoch):
            x = images[order[b * a.batch:(b + 1) * a.batch]]
            loss, y = model.dim_loss(x, a.estimator)
            total = loss
            if a.gamma > 0:
                q = torch.sigmoid(y)
                total = total + a.gamma * F.softplus(-disc(q)).mean()  # non-saturating
            opt.zero_grad(set_to_none=True)
            total.backward()
            opt.step()
            d_loss = torch.zeros(())
            if a.gamma > 0:
                p = torch.rand_like(q)
                qd = q.detach()
                d_loss = F.softplus(-disc(p)).mean() + F.softplus(disc(qd)).mean()
                d_loss = d_loss + 0.5 * (gradient_penalty(disc, p) + gradient_penalty(disc, qd))
                opt_d.zero_grad(set_to_none=True)
                d_loss.backward()
                opt_d.step()
            sums += [loss.item(), total.item(), d_loss.item()]
            if b % 100 == 0:
                rate = (b + 1) * a.batch / (time.time() - t0)
                print(f"epoch {epoch + 1} step {b}/{per_epoch} dim loss {loss.item():.4f} disc {d_loss.item():.4f} {rate:.0f} img/s", flush=True)
        mean = sums / per_epoch
        rec = dict(epoch=epoch + 1, dim_loss=mean[0], loss=mean[1], disc=mean[2], seconds=time.time() - t0)
        with open(os.path.join(a.out, "metrics.jsonl"), "a") as f:
            f.write(json.dumps(rec) + "\n")
        print(json.dumps(rec), flush=True)
        state = dict(model=model.state_dict(), disc=disc.state_dict(), opt=opt.state_dict(), opt_d=opt_d.state_dict(), rng=torch.get_rng_state(), epoch=epoch + 1)
        torch.save(state, ckpt + ".tmp")
        os.replace(ckpt + ".tmp", ckpt)
    model.eval()
    onnx = os.path.join(a.out, "encoder.onnx")
    torch.onnx.export(Export(model.encoder), torch.zeros(1, 3, 32, 32), onnx + ".tmp", input_names=["image"],
                      output_names=["y", "relu3", "fc_relu"], dynamic_axes={"image": {0: "n"}, "y": {0: "n"}, "relu3": {0: "n"}, "fc_relu": {0: "n"}},
                      opset_version=13, dynamo=False)
    os.replace(onnx + ".tmp", onnx)
    print(f"wrote {onnx}")


if __name__ == "__main__":
    main()
