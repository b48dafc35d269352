"""PyTorch side of the benchmarks; runs in its own environment (benchmarks/.venv-torch), never in jaxvae's.

The same models as the JAX side (ReLU, Bernoulli likelihood, Adam 1e-3):
- ``mlp``:  MLP VAE 784-512-256-32;
- ``conv``: conv VAE with jaxvae's ``model.network=conv`` layout: two 3x3 stride-2 convolutions (32, 64 channels),
  dense 256, latent 32; decoder dense 256 -> 7x7x64, two 3x3 stride-2 transposed convolutions (32, 32), 3x3 head.

Kinds: ``torch-eager`` (a plain training loop), ``pythae-trainer`` (pythae's BaseTrainer), ``torch-iwae``
(a batched IWAE evaluation under ``torch.no_grad``) and ``pythae-nll`` (pythae's ``VAE.get_nll``).
Prints one JSON line with the measurements.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import resource
import tempfile
import time

import numpy as np
import torch
from torch import nn

HIDDEN, LATENT, D = (512, 256), 32, 784


def mlp(sizes):
    layers = []
    for i, (a, b) in enumerate(itertools.pairwise(sizes)):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class Flatten(nn.Module):
    def forward(self, x):
        return x.reshape(x.shape[0], -1)


class Unflatten(nn.Module):
    def __init__(self, shape):
        super().__init__()
        self.shape = shape

    def forward(self, x):
        return x.reshape(x.shape[0], *self.shape)


def networks(arch: str) -> tuple[nn.Module, nn.Module]:
    """(encoder: x [N, 1, 28, 28] -> [N, 2 * LATENT], decoder: z [N, LATENT] -> logits [N, 1, 28, 28])."""
    if arch == "mlp":
        return (nn.Sequential(Flatten(), mlp([D, *HIDDEN, 2 * LATENT])),
                nn.Sequential(mlp([LATENT, *reversed(HIDDEN), D]), Unflatten((1, 28, 28))))
    enc = nn.Sequential(
        nn.Conv2d(1, 32, 3, stride=2, padding=1), nn.ReLU(),  # 28 -> 14
        nn.Conv2d(32, 64, 3, stride=2, padding=1), nn.ReLU(),  # 14 -> 7
        Flatten(), nn.Linear(7 * 7 * 64, 256), nn.ReLU(), nn.Linear(256, 2 * LATENT))
    dec = nn.Sequential(
        nn.Linear(LATENT, 256), nn.ReLU(), nn.Linear(256, 7 * 7 * 64), nn.ReLU(), Unflatten((64, 7, 7)),
        nn.ConvTranspose2d(64, 32, 3, stride=2, padding=1, output_padding=1), nn.ReLU(),  # 7 -> 14
        nn.ConvTranspose2d(32, 32, 3, stride=2, padding=1, output_padding=1), nn.ReLU(),  # 14 -> 28
        nn.Conv2d(32, 1, 3, padding=1))
    return enc, dec


def torch_eager(data: torch.Tensor, arch: str, batch: int, epochs: int, steps: int, device: str) -> list[float]:
    enc, dec = (m.to(device) for m in networks(arch))
    opt = torch.optim.Adam([*enc.parameters(), *dec.parameters()], lr=1e-3)
    data = data.to(device)
    times = []
    for _ in range(epochs):
        _sync(device)
        t0 = time.perf_counter()
        perm = torch.randperm(data.shape[0], device=device)
        for b in range(steps):
            x = data[perm[b * batch:(b + 1) * batch]]
            mu, log_sigma = enc(x).chunk(2, dim=-1)
            z = mu + log_sigma.exp() * torch.randn_like(mu)
            logits = dec(z)
            rec = nn.functional.binary_cross_entropy_with_logits(logits, x, reduction="none").flatten(1).sum(-1)
            kl = (0.5 * (mu**2 + (2 * log_sigma).exp() - 1) - log_sigma).sum(-1)
            loss = (rec + kl).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return times


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def _pythae_model(arch: str, device: str):
    from pythae.models import VAE, VAEConfig
    from pythae.models.base.base_utils import ModelOutput
    from pythae.models.nn import BaseDecoder, BaseEncoder

    enc_net, dec_net = networks(arch)

    class Encoder(BaseEncoder):
        def __init__(self):
            super().__init__()
            self.net = enc_net

        def forward(self, x):
            mu, log_var = self.net(x).chunk(2, dim=-1)
            return ModelOutput(embedding=mu, log_covariance=log_var)

    class Decoder(BaseDecoder):
        def __init__(self):
            super().__init__()
            self.net = dec_net

        def forward(self, z):
            return ModelOutput(reconstruction=torch.sigmoid(self.net(z)))

    model = VAE(VAEConfig(input_dim=(1, 28, 28), latent_dim=LATENT, reconstruction_loss="bce"),
                encoder=Encoder(), decoder=Decoder())
    return model.to(device)


def pythae_trainer(data: torch.Tensor, arch: str, batch: int, epochs: int, steps: int, device: str) -> list[float]:
    from pythae.data.datasets import BaseDataset
    from pythae.trainers import BaseTrainer, BaseTrainerConfig
    from pythae.trainers.training_callbacks import TrainingCallback

    class Timer(TrainingCallback):
        def __init__(self):
            self.times, self._t0 = [], None

        def on_epoch_begin(self, training_config, **kwargs):
            _sync(device)
            self._t0 = time.perf_counter()

        def on_epoch_end(self, training_config, **kwargs):
            _sync(device)
            self.times.append(time.perf_counter() - self._t0)

    model = _pythae_model(arch, device)
    timer = Timer()
    data = data[: steps * batch]
    with tempfile.TemporaryDirectory() as out:
        cfg = BaseTrainerConfig(output_dir=out, num_epochs=epochs, per_device_train_batch_size=batch,
                                learning_rate=1e-3, optimizer_cls="Adam", steps_saving=None,
                                no_cuda=device != "cuda")
        dataset = BaseDataset(data, torch.zeros(data.shape[0]))
        BaseTrainer(model, dataset, training_config=cfg, callbacks=[timer]).train()
    return timer.times


@torch.no_grad()
def torch_iwae(data: torch.Tensor, arch: str, num_samples: int, batch: int, chunk: int, device: str) -> np.ndarray:
    """log p(x) for every image: B images at a time, importance samples in chunks, a running logsumexp."""
    enc, dec = (m.to(device).eval() for m in networks(arch))
    out = []
    for i in range(0, data.shape[0], batch):
        x = data[i:i + batch].to(device)  # [B, 1, 28, 28]
        mu, log_sigma = enc(x).chunk(2, dim=-1)  # [B, D]
        running = torch.full((x.shape[0],), -math.inf, device=device)
        for start in range(0, num_samples, chunk):
            s = min(chunk, num_samples - start)
            eps = torch.randn(s, *mu.shape, device=device)  # [S, B, D]
            z = mu + log_sigma.exp() * eps
            logits = dec(z.reshape(-1, LATENT)).reshape(s, x.shape[0], -1)  # [S, B, 784]
            log_lik = -nn.functional.binary_cross_entropy_with_logits(
                logits, x.reshape(1, x.shape[0], -1).expand_as(logits), reduction="none").sum(-1)
            log_w = log_lik - 0.5 * (z**2).sum(-1) + 0.5 * (eps**2).sum(-1) + log_sigma.sum(-1)  # [S, B]
            running = torch.logaddexp(running, torch.logsumexp(log_w, 0))
        out.append((running - math.log(num_samples)).cpu())
    return torch.cat(out).numpy()


def peak_rss_mib() -> float:
    """VmHWM of this process (``ru_maxrss`` would include the parent's peak: it survives ``execve``)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--kind", choices=["torch-eager", "pythae-trainer", "torch-iwae", "pythae-nll"], required=True)
    p.add_argument("--arch", choices=["mlp", "conv"], default="mlp")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--steps-per-epoch", type=int, default=100)
    p.add_argument("--num-samples", type=int, default=5000)
    p.add_argument("--chunk", type=int, default=500, help="torch-iwae: importance samples per inner step")
    p.add_argument("--device", choices=["cpu", "gpu"], default="cpu")
    p.add_argument("--data", required=True)
    args = p.parse_args()
    device = "cuda" if args.device == "gpu" else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device gpu: this PyTorch has no CUDA device; install a CUDA wheel of torch.")
    torch.manual_seed(0)
    data = torch.from_numpy(np.load(args.data, allow_pickle=False)).permute(0, 3, 1, 2).contiguous()  # NCHW
    result = {"torch_threads": torch.get_num_threads(), "device": device}
    if args.kind in ("torch-eager", "pythae-trainer"):
        fn = torch_eager if args.kind == "torch-eager" else pythae_trainer
        times = fn(data, args.arch, args.batch, args.epochs, args.steps_per_epoch, device)
        steady = args.steps_per_epoch * args.batch * (len(times) - 1) / sum(times[1:])
        result.update(examples_per_sec=steady, compile_seconds=0.0, epoch_seconds=times)
    else:
        t0 = time.perf_counter()
        if args.kind == "torch-iwae":
            log_px = torch_iwae(data, args.arch, args.num_samples, args.batch, args.chunk, device)
            mean_log_px = float(log_px.mean())
        else:
            model = _pythae_model(args.arch, device).eval()
            with torch.no_grad():
                # pythae's get_nll returns the mean log p(x) (despite its name)
                mean_log_px = float(model.get_nll(data.to(device), n_samples=args.num_samples, batch_size=100))
        seconds = time.perf_counter() - t0
        result.update(images_per_sec=data.shape[0] / seconds, seconds=seconds, compile_seconds=0.0,
                      num_images=data.shape[0], mean_log_px=mean_log_px)
    result["peak_rss_mib"] = peak_rss_mib()
    print(json.dumps(result))


if __name__ == "__main__":
    main()
