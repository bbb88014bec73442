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

    def __init__(self, n_input, n_units, layer_norm=True):
        super().__init__()
        self.block_nonlinear = nn.Sequential(
            nn.Conv2d(n_input, n_units, 1, bias=False), nn.BatchNorm2d(n_units), nn.ReLU(),
            nn.Conv2d(n_units, n_units, 1, bias=True))
        self.ln = nn.LayerNorm(n_units) if layer_norm else nn.Identity()  # `--no-ln`: the study's row
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
    mask = torch.eye(n, device=u.device)
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
    mask = torch.eye(n, device=l.device)[:, :, None, None]
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
    def __init__(self, width, layer_norm=True):
        super().__init__()
        self.encoder = Encoder()
        self.local_net = MI1x1ConvNet(128, width, layer_norm)
        self.global_net = MI1x1ConvNet(64, width, layer_norm)

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


def load_split(folder, part="train"):
    """`trainer data split`'s arrays: uint8 images [N, 32, 32, 3] (HWC) and int64 labels [N]."""
    images = np.fromfile(os.path.join(folder, f"{part}.u8"), dtype=np.uint8).reshape(-1, 32, 32, 3)
    labels = np.fromfile(os.path.join(folder, f"{part}.labels"), dtype=np.uint8).astype(np.int64)
    return torch.from_numpy(images), torch.from_numpy(labels)


def to_input(images):
    """uint8 HWC -> float CHW in [-1, 1], as `fit`'s loader scales them."""
    return images.permute(0, 3, 1, 2).float() / 127.5 - 1.0


def augment(images, padding, hflip, generator):
    """`fit`'s `Augment` on a uint8 HWC batch: a random 32x32 crop of the image zero-padded by
    `padding` on every side, then a horizontal flip with probability 0.5 (data/src/loader.rs)."""
    n, dev = images.shape[0], images.device
    ox = torch.randint(-padding, padding + 1, (n,), generator=generator, device=dev) if padding else torch.zeros(n, dtype=torch.long, device=dev)
    oy = torch.randint(-padding, padding + 1, (n,), generator=generator, device=dev) if padding else torch.zeros(n, dtype=torch.long, device=dev)
    xs = torch.arange(32, device=dev).expand(n, 32)
    if hflip:
        flip = torch.rand(n, generator=generator, device=dev) < 0.5
        xs = torch.where(flip[:, None], 31 - xs, xs)
    sx, sy = xs + ox[:, None], torch.arange(32, device=dev)[None, :] + oy[:, None]
    padded = F.pad(images, (0, 0, padding, padding, padding, padding))  # zeros around H and W
    rows = torch.arange(n, device=dev)[:, None, None]
    return padded[rows, (sy + padding)[:, :, None], (sx + padding)[:, None, :]]


def learning_rate_at(a, step, steps_per_epoch, epochs):
    """`TrainConfig::learning_rate_at`: linear warm-up over `warmup_epochs`, then cosine to 0 at `epochs`."""
    epoch = step / steps_per_epoch
    warm = min(1.0, (epoch + 1.0 / steps_per_epoch) / a.warmup_epochs) if a.warmup_epochs > 0 else 1.0
    decay = 1.0
    if a.cosine:
        t = min(1.0, max(0.0, (epoch - a.warmup_epochs) / max(epochs - a.warmup_epochs, 1e-9)))
        decay = 0.5 * (1.0 + math.cos(math.pi * t))
    return a.lr * warm * decay


@torch.no_grad()
def features(encoder, images, layer, batch=1000):
    """The encoder's `layer` (conv, fc or y) on uint8 images, in eval mode (as exported)."""
    was = encoder.training
    encoder.eval()
    out = []
    for i in range(0, len(images), batch):
        _, conv, fc, y = encoder(to_input(images[i:i + batch]))
        out.append({"conv": conv.flatten(1), "fc": fc, "y": y}[layer])
    encoder.train(was)
    return torch.cat(out)


def project_probe(xtr, ytr, xte, yte, epochs=20, seed=0):
    """`trainer eval`'s nonlinear probe (trainer/src/probe.rs `train_probe`): features standardised
    by the train statistics, linear 200 -> BatchNorm -> dropout 0.1 -> ReLU -> linear 10, Adam 1e-4,
    batch 64 (a last batch of one skipped), `epochs` epochs; the last epoch's test accuracy (%)."""
    mean, std = xtr.mean(0), xtr.std(0, unbiased=False)
    xtr, xte = (xtr - mean) / (std + 1e-6), (xte - mean) / (std + 1e-6)
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    probe = nn.Sequential(nn.Linear(xtr.shape[1], 200), nn.BatchNorm1d(200), nn.Dropout(0.1), nn.ReLU(),
                          nn.Linear(200, int(ytr.max()) + 1)).to(xtr.device)
    opt = torch.optim.Adam(probe.parameters(), lr=1e-4, **({"fused": True} if xtr.is_cuda else {}))
    for _ in range(epochs):
        order = torch.randperm(len(xtr), generator=g).to(xtr.device)
        for b in range(0, len(xtr), 64):
            idx = order[b:b + 64]
            if len(idx) < 2:
                continue
            loss = F.cross_entropy(probe(xtr[idx]), ytr[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    probe.eval()
    with torch.no_grad():
        return 100.0 * (probe(xte).argmax(1) == yte).float().mean().item()


def export_onnx(encoder, path):
    """`trainer export`'s interface on CPU float32, written atomically."""
    encoder = encoder.float().cpu().eval()
    torch.onnx.export(Export(encoder), torch.zeros(1, 3, 32, 32), path + ".tmp", input_names=["image"],
                      output_names=["y", "relu3", "fc_relu"], dynamic_axes={"image": {0: "n"}, "y": {0: "n"}, "relu3": {0: "n"}, "fc_relu": {0: "n"}},
                      opset_version=13, dynamo=False)
    os.replace(path + ".tmp", path)


def parse():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--split", help="folder written by `trainer data split`")
    ap.add_argument("--out", required=True)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--width", type=int, default=2048)
    ap.add_argument("--estimator", choices=["jsd", "infonce"], default="jsd")
    ap.add_argument("--no-ln", action="store_true", help="the critic without its LayerNorm (a study row)")
    ap.add_argument("--gamma", type=float, default=0.1)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--beta1", type=float, default=0.5)
    ap.add_argument("--warmup-epochs", type=float, default=0.0)
    ap.add_argument("--cosine", action="store_true", help="cosine decay to 0 at the last epoch (with --minutes: the epochs the first epoch's speed predicts)")
    ap.add_argument("--crop-padding", type=int, default=0)
    ap.add_argument("--hflip", action="store_true")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: PyTorch's default)")
    ap.add_argument("--device", default="cpu", help="cpu or cuda (the study on a lent GPU)")
    ap.add_argument("--minutes", type=float, default=0.0, help="also stop at the first epoch end this many minutes after the start (probes included)")
    ap.add_argument("--probe-at", default="", help="epochs after which to score fc with the project probe (comma-separated; the last epoch is always scored when given)")
    ap.add_argument("--save-encoder", action="store_true", help="write the encoder as a float16 state dict, encoder.f16.pt (small enough to bring back from a device)")
    ap.add_argument("--export-from", help="only convert an encoder.f16.pt to OUT/encoder.onnx")
    return ap.parse_args()


def train(a):
    dev = torch.device(a.device)
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True
    torch.manual_seed(a.seed)
    images, labels = load_split(a.split)
    images = images.to(dev)
    probe_at = {int(e) for e in a.probe_at.split(",") if e}
    valid = None
    if probe_at:
        vimg, vlab = load_split(a.split, "valid")
        valid = (labels.to(dev), vimg.to(dev), vlab.to(dev))
    model, disc = Twin(a.width, not a.no_ln).to(dev), Discriminator().to(dev)
    fused = {"fused": True} if dev.type == "cuda" else {}
    opt = torch.optim.Adam(model.parameters(), lr=a.lr, betas=(a.beta1, 0.999), **fused)
    opt_d = torch.optim.Adam(disc.parameters(), lr=a.lr, betas=(a.beta1, 0.999), **fused)
    ckpt, start, horizon, trained = os.path.join(a.out, "twin.pt"), 0, a.epochs, 0.0
    if os.path.exists(ckpt):
        s = torch.load(ckpt, weights_only=False, map_location=dev)
        model.load_state_dict(s["model"]), disc.load_state_dict(s["disc"])
        opt.load_state_dict(s["opt"]), opt_d.load_state_dict(s["opt_d"])
        torch.set_rng_state(s["rng"])
        start, horizon, trained = s["epoch"], s.get("horizon", a.epochs), s.get("trained_seconds", 0.0)
        print(f"resumed after epoch {start}", flush=True)
    aug = torch.Generator(device=dev).manual_seed(a.seed + 1)
    started = time.time()
    per_epoch = len(images) // a.batch
    epoch = start
    while epoch < horizon:
        model.train()
        order = torch.randperm(len(images)).to(dev)
        t0, sums = time.time(), torch.zeros(3, device=dev)
        for b in range(per_epoch):
            lr = learning_rate_at(a, epoch * per_epoch + b, per_epoch, horizon)
            for o in (opt, opt_d):
                for group in o.param_groups:
                    group["lr"] = lr
            batch = images[order[b * a.batch:(b + 1) * a.batch]]
            if a.crop_padding or a.hflip:
                batch = augment(batch, a.crop_padding, a.hflip, aug)
            x = to_input(batch)
            loss, y = model.dim_loss(x, a.estimator)
            total = loss
            if a.gamma > 0:
                q = torch.sigmoid(y)
                total = total + a.gamma * F.softplus(-disc(q)).mean()  # non-saturating
            opt.zero_grad(set_to_none=True)
            total.backward()
            opt.step()
            d_loss = torch.zeros((), device=dev)
            if a.gamma > 0:
                p = torch.rand_like(q)
                qd = q.detach()
                d_loss = F.softplus(-disc(p)).mean() + F.softplus(disc(qd)).mean()
                d_loss = d_loss + 0.5 * (gradient_penalty(disc, p) + gradient_penalty(disc, qd))
                opt_d.zero_grad(set_to_none=True)
                d_loss.backward()
                opt_d.step()
            sums += torch.stack([loss.detach(), total.detach(), d_loss.detach()])
            if b % 100 == 0 and dev.type == "cpu":
                rate = (b + 1) * a.batch / (time.time() - t0)
                print(f"epoch {epoch + 1} step {b}/{per_epoch} dim loss {loss.item():.4f} disc {d_loss.item():.4f} {rate:.0f} img/s", flush=True)
        mean = (sums / per_epoch).tolist()  # waits for the device: the epoch's time is real
        seconds = time.time() - t0
        trained += seconds
        epoch += 1
        if a.minutes and a.cosine and epoch <= 2:
            # The cosine's end, from this epoch's speed, with a tenth of the time kept for the
            # probes; set again after the second epoch, the first's being slowed by start-up.
            horizon = min(a.epochs, epoch + max(1, int((0.9 * a.minutes * 60 - (time.time() - started)) / seconds)))
        if a.minutes and time.time() - started >= a.minutes * 60:
            horizon = epoch  # out of time: this epoch is the last, and is probed
        rec = dict(epoch=epoch, dim_loss=mean[0], loss=mean[1], disc=mean[2], seconds=seconds, img_per_s=per_epoch * a.batch / seconds, lr=lr)
        if valid is not None and (epoch in probe_at or epoch == horizon):
            t1 = time.time()
            ytr, vimg, vlab = valid
            rec["probe_fc"] = project_probe(features(model.encoder, images, "fc"), ytr, features(model.encoder, vimg, "fc"), vlab)
            rec["probe_seconds"] = time.time() - t1
        with open(os.path.join(a.out, "metrics.jsonl"), "a") as f:
            f.write(json.dumps(rec) + "\n")
        print(json.dumps(rec), flush=True)
        state = dict(model=model.state_dict(), disc=disc.state_dict(), opt=opt.state_dict(), opt_d=opt_d.state_dict(), rng=torch.get_rng_state(),
                     epoch=epoch, horizon=horizon, trained_seconds=trained)
        torch.save(state, ckpt + ".tmp")
        os.replace(ckpt + ".tmp", ckpt)
    if a.save_encoder:
        torch.save({k: v.half() if v.is_floating_point() else v for k, v in model.encoder.state_dict().items()}, os.path.join(a.out, "encoder.f16.pt"))
    export_onnx(model.encoder, os.path.join(a.out, "encoder.onnx"))
    print(f"wrote {os.path.join(a.out, 'encoder.onnx')}", flush=True)


def main():
    a = parse()
    if a.threads:
        torch.set_num_threads(a.threads)
    os.makedirs(a.out, exist_ok=True)
    if a.export_from:
        encoder = Encoder()
        encoder.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in torch.load(a.export_from, map_location="cpu").items()})
        export_onnx(encoder, os.path.join(a.out, "encoder.onnx"))
        return
    if not a.split:
        raise SystemExit("--split is required to train")
    train(a)


if __name__ == "__main__":
    main()
