"""PyTorch side of ``python -m benchmarks hierarchy_throughput``; runs in benchmarks/.venv-torch, never in jaxvae's
environment. A plain eager training loop (Adam 1e-3, Bernoulli likelihood, ELBO with one sample) of the same
models as jaxvae's:

- ``mlp1``: one stochastic layer, 784-(200,200)-100, decoder 100-(200,200)-784, tanh;
- ``mlp2``: the IWAE paper's two-layer model, bottom-up inference q(z1|x) q(z2|z1), generative p(z2) p(z1|z2)
  p(x|z1), 784-(200,200)-100-(100,100)-50, tanh (the KL of the top layer analytic, the lower one Monte Carlo, as
  jaxvae's ``BottomUpVAE``);
- ``topdown`` / ``topdown1``: jaxvae's ``TopDownVAE`` layer for layer (``jaxvae/topdown.py``): a stride-2 stem and
  a residual cell at H/2, a stride-2 conv and a cell at H/4; top-down from a learned constant state, per group a
  prior head (3x3), a posterior head on [state, encoder features] (3x3, NVAE's residual normal), a 1x1 projection
  of z and a residual cell; stride-2 transposed convolutions between the scales and to full resolution; Swish.
  ``topdown``: groups (4, 4 | 4, 4) channels at (14x14 | 7x7); ``topdown1``: one group of 4 channels at 7x7;
- ``diag`` / ``planar10``: the flow benchmark's MLP 784-500-20 with a diagonal or a 10-step planar posterior.

Prints one JSON line: steady-state examples/s (the first epoch, warm-up, excluded).
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import time

import numpy as np
import torch
from torch import nn

LOG_2PI = math.log(2 * math.pi)


def mlp(sizes: list[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(itertools.pairwise(sizes)):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(nn.Tanh())
    return nn.Sequential(*layers)


def log_normal(z, loc, log_scale):
    return (-0.5 * ((z - loc) * torch.exp(-log_scale)) ** 2 - log_scale - 0.5 * LOG_2PI).flatten(1).sum(-1)


def kl_normal(q_loc, q_ls, p_loc, p_ls):
    return (p_ls - q_ls + (torch.exp(2 * q_ls) + (q_loc - p_loc) ** 2) / (2 * torch.exp(2 * p_ls)) - 0.5
            ).flatten(1).sum(-1)


def bernoulli(logits, x):
    return -nn.functional.binary_cross_entropy_with_logits(logits, x, reduction="none").flatten(1).sum(-1)


class MLP1(nn.Module):
    def __init__(self):
        super().__init__()
        self.enc, self.dec = mlp([784, 200, 200, 200]), mlp([100, 200, 200, 784])

    def loss(self, x):
        x = x.flatten(1)
        loc, ls = self.enc(x).chunk(2, -1)
        z = loc + ls.exp() * torch.randn_like(loc)
        zeros = torch.zeros_like(loc)
        return (-bernoulli(self.dec(z), x) + kl_normal(loc, ls, zeros, zeros)).mean()


class MLP2(nn.Module):
    def __init__(self):
        super().__init__()
        self.q1, self.q2 = mlp([784, 200, 200, 200]), mlp([100, 100, 100, 100])
        self.p1, self.dec = mlp([50, 100, 100, 200]), mlp([100, 200, 200, 784])

    def loss(self, x):
        x = x.flatten(1)
        l1, s1 = self.q1(x).chunk(2, -1)
        z1 = l1 + s1.exp() * torch.randn_like(l1)
        l2, s2 = self.q2(z1).chunk(2, -1)
        z2 = l2 + s2.exp() * torch.randn_like(l2)
        pl, ps = self.p1(z2).chunk(2, -1)
        kl1 = log_normal(z1, l1, s1) - log_normal(z1, pl, ps)  # Monte Carlo: the prior depends on z2
        kl2 = kl_normal(l2, s2, torch.zeros_like(l2), torch.zeros_like(s2))
        return (-bernoulli(self.dec(z1), x) + kl1 + kl2).mean()


class Cell(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.a, self.b = nn.Conv2d(c, c, 3, padding=1), nn.Conv2d(c, c, 3, padding=1)

    def forward(self, h):
        return h + self.b(nn.functional.silu(self.a(nn.functional.silu(h))))


class TopDown(nn.Module):
    def __init__(self, latent_channels: tuple[int, ...], groups_per_scale: tuple[int, int], ch: int = 32):
        super().__init__()
        self.chans, self.fine = latent_channels, groups_per_scale[0]
        self.stem, self.enc_fine = nn.Conv2d(1, ch, 3, stride=2, padding=1), Cell(ch)
        self.down, self.enc_coarse = nn.Conv2d(ch, ch, 3, stride=2, padding=1), Cell(ch)
        self.h_top = nn.Parameter(torch.zeros(1, ch, 7, 7))
        self.prior = nn.ModuleList(nn.Conv2d(ch, 2 * c, 3, padding=1) for c in latent_channels)
        self.post = nn.ModuleList(nn.Conv2d(2 * ch, 2 * c, 3, padding=1) for c in latent_channels)
        self.proj = nn.ModuleList(nn.Conv2d(c, ch, 1) for c in latent_channels)
        self.cells = nn.ModuleList(Cell(ch) for _ in latent_channels)
        self.up = nn.ConvTranspose2d(ch, ch, 3, stride=2, padding=1, output_padding=1)
        self.up_out = nn.ConvTranspose2d(ch, ch, 3, stride=2, padding=1, output_padding=1)
        self.head = nn.Conv2d(ch, 1, 3, padding=1)

    def loss(self, x):
        act = nn.functional.silu
        e_fine = self.enc_fine(self.stem(x))
        e_coarse = self.enc_coarse(self.down(act(e_fine)))
        h = self.h_top.expand(x.shape[0], -1, -1, -1)
        kl = 0.0
        for g in range(len(self.chans) - 1, -1, -1):
            e = e_fine if g < self.fine else e_coarse
            dl, ds = self.post[g](act(torch.cat([h, e], 1))).chunk(2, 1)
            if g == len(self.chans) - 1:
                pl, ps = torch.zeros_like(dl), torch.zeros_like(ds)
            else:
                pl, ps = self.prior[g](act(h)).chunk(2, 1)
            ql, qs = pl + dl, ps + ds
            z = ql + qs.exp() * torch.randn_like(ql)
            kl = kl + kl_normal(ql, qs, pl, ps)
            h = self.cells[g](h + self.proj[g](z))
            if self.fine and g == self.fine:
                h = self.up(act(h))
        if not self.fine:
            h = self.up(act(h))
        logits = self.head(act(self.up_out(act(h))))
        return (-bernoulli(logits, x) + kl).mean()


class FlowVAE(nn.Module):
    """``diag`` / ``planar10``: the binarized-mnist preset's MLP 784-500-20 (ReLU) with a diagonal Gaussian or a
    planar flow of K steps (amortized u, w, b from the encoder's hidden layer, u made invertible as in Rezende &
    Mohamed's Appendix A), as jaxvae's ``flows.FlowEncoder``; the KL is Monte Carlo for the flow."""

    def __init__(self, steps: int):
        super().__init__()
        self.steps, self.d = steps, 20
        self.trunk = nn.Sequential(nn.Linear(784, 500), nn.ReLU())
        self.gauss = nn.Linear(500, 40)
        self.flow = nn.Linear(500, steps * (2 * 20 + 1)) if steps else None
        self.dec = nn.Sequential(nn.Linear(20, 500), nn.ReLU(), nn.Linear(500, 784))

    def loss(self, x):
        x = x.flatten(1)
        h = self.trunk(x)
        loc, ls = self.gauss(h).chunk(2, -1)
        z = loc + ls.exp() * torch.randn_like(loc)
        if not self.steps:
            zeros = torch.zeros_like(loc)
            return (-bernoulli(self.dec(z), x) + kl_normal(loc, ls, zeros, zeros)).mean()
        log_q = log_normal(z, loc, ls)
        d = self.d
        raw = self.flow(h).reshape(x.shape[0], self.steps, 2 * d + 1)
        for k in range(self.steps):
            u, w, b = raw[:, k, :d], raw[:, k, d:2 * d], raw[:, k, 2 * d]
            wu = (w * u).sum(-1, keepdim=True)
            u = u + (nn.functional.softplus(wu) - 1 - wu) * w / ((w * w).sum(-1, keepdim=True) + 1e-8)
            a = (w * z).sum(-1) + b
            log_q = log_q - torch.log(torch.abs(1 + (1 - torch.tanh(a) ** 2) * (w * u).sum(-1)) + 1e-8)
            z = z + u * torch.tanh(a)[:, None]
        log_p = (-0.5 * z**2 - 0.5 * LOG_2PI).sum(-1)
        return (-bernoulli(self.dec(z), x) + log_q - log_p).mean()


MODELS = {"diag": lambda: FlowVAE(0), "planar10": lambda: FlowVAE(10),
          "mlp1": MLP1, "mlp2": MLP2, "topdown": lambda: TopDown((4, 4, 4, 4), (2, 2)),
          "topdown1": lambda: TopDown((4,), (0, 1))}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--model", choices=sorted(MODELS), required=True)
    p.add_argument("--batch", type=int, default=100)
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--data", required=True, help=".npy [N, 28, 28, 1] in [0, 1]")
    p.add_argument("--device", default="cpu")
    args = p.parse_args()
    torch.manual_seed(0)
    device = "cuda" if args.device == "gpu" else "cpu"
    data = torch.from_numpy(np.load(args.data, allow_pickle=False)).permute(0, 3, 1, 2).contiguous().to(device)
    model = MODELS[args.model]().to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    steps = data.shape[0] // args.batch
    times = []
    for _ in range(args.epochs):
        if device == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        perm = torch.randperm(data.shape[0], device=device)
        for b in range(steps):
            loss = model.loss(data[perm[b * args.batch:(b + 1) * args.batch]])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    steady = times[1:] or times
    print(json.dumps({"examples_per_sec": steps * args.batch * len(steady) / sum(steady),
                      "compile_seconds": 0.0, "threads": torch.get_num_threads()}))


if __name__ == "__main__":
    main()
