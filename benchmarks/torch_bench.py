"""PyTorch side of the throughput benchmark; runs in its own environment (benchmarks/.venv-torch), never in
jaxvae's. The same model as throughput.py: MLP VAE 784-512-256-32, ReLU, Bernoulli, Adam 1e-3.

Prints one JSON line: examples_per_sec (steady state, first epoch excluded), compile_seconds (0: eager) and
peak_rss_mib.
"""

from __future__ import annotations

import argparse
import itertools
import json
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


def torch_eager(data: torch.Tensor, batch: int, epochs: int) -> list[float]:
    enc, dec = mlp([D, *HIDDEN, 2 * LATENT]), mlp([LATENT, *reversed(HIDDEN), D])
    opt = torch.optim.Adam([*enc.parameters(), *dec.parameters()], lr=1e-3)
    x_all = data.reshape(data.shape[0], -1)
    times = []
    for _ in range(epochs):
        t0 = time.perf_counter()
        perm = torch.randperm(x_all.shape[0])
        for b in range(x_all.shape[0] // batch):
            x = x_all[perm[b * batch:(b + 1) * batch]]
            mu, log_sigma = enc(x).chunk(2, dim=-1)
            z = mu + log_sigma.exp() * torch.randn_like(mu)
            logits = dec(z)
            rec = nn.functional.binary_cross_entropy_with_logits(logits, x, reduction="none").sum(-1)
            kl = (0.5 * (mu**2 + (2 * log_sigma).exp() - 1) - log_sigma).sum(-1)
            loss = (rec + kl).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        times.append(time.perf_counter() - t0)
    return times


def pythae_trainer(data: torch.Tensor, batch: int, epochs: int) -> list[float]:
    from pythae.data.datasets import BaseDataset
    from pythae.models import VAE, VAEConfig
    from pythae.models.base.base_utils import ModelOutput
    from pythae.models.nn import BaseDecoder, BaseEncoder
    from pythae.trainers import BaseTrainer, BaseTrainerConfig
    from pythae.trainers.training_callbacks import TrainingCallback

    class Encoder(BaseEncoder):
        def __init__(self):
            super().__init__()
            self.net = mlp([D, *HIDDEN, 2 * LATENT])

        def forward(self, x):
            mu, log_var = self.net(x.reshape(x.shape[0], -1)).chunk(2, dim=-1)
            return ModelOutput(embedding=mu, log_covariance=log_var)

    class Decoder(BaseDecoder):
        def __init__(self):
            super().__init__()
            self.net = mlp([LATENT, *reversed(HIDDEN), D])

        def forward(self, z):
            return ModelOutput(reconstruction=torch.sigmoid(self.net(z)).reshape(z.shape[0], 1, 28, 28))

    class Timer(TrainingCallback):
        def __init__(self):
            self.times, self._t0 = [], None

        def on_epoch_begin(self, training_config, **kwargs):
            self._t0 = time.perf_counter()

        def on_epoch_end(self, training_config, **kwargs):
            self.times.append(time.perf_counter() - self._t0)

    model = VAE(VAEConfig(input_dim=(1, 28, 28), latent_dim=LATENT, reconstruction_loss="bce"),
                encoder=Encoder(), decoder=Decoder())
    timer = Timer()
    with tempfile.TemporaryDirectory() as out:
        cfg = BaseTrainerConfig(output_dir=out, num_epochs=epochs, per_device_train_batch_size=batch,
                                learning_rate=1e-3, optimizer_cls="Adam", steps_saving=None, no_cuda=True)
        dataset = BaseDataset(data, torch.zeros(data.shape[0]))
        BaseTrainer(model, dataset, training_config=cfg, callbacks=[timer]).train()
    return timer.times


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--kind", choices=["torch-eager", "pythae-trainer"], required=True)
    p.add_argument("--batch", type=int, required=True)
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--data", required=True)
    args = p.parse_args()
    torch.manual_seed(0)
    data = torch.from_numpy(np.load(args.data, allow_pickle=False)).permute(0, 3, 1, 2).contiguous()  # NCHW
    fn = torch_eager if args.kind == "torch-eager" else pythae_trainer
    times = fn(data, args.batch, args.epochs)
    examples = (data.shape[0] // args.batch) * args.batch
    steady = examples * (len(times) - 1) / sum(times[1:])
    print(json.dumps({"examples_per_sec": steady, "compile_seconds": 0.0, "epoch_seconds": times,
                      "torch_threads": torch.get_num_threads(),
                      "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


if __name__ == "__main__":
    main()
