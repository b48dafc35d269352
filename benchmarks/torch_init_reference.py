"""pythae's VAE in the Flax example's setting (MLP 784-500-20, ReLU, Bernoulli, Adam 1e-3, batch 128), trained
by a plain PyTorch loop with PyTorch's default initialization; prints the test -ELBO as JSON.

Runs in benchmarks/.venv-torch (``make bench-torch-env``); called by ``python -m benchmarks init_compare``."""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch
from pythae.models import VAE, VAEConfig
from pythae.models.base.base_utils import ModelOutput
from pythae.models.nn import BaseDecoder, BaseEncoder
from torch import nn


class Encoder(BaseEncoder):
    def __init__(self, hidden: int, latent: int):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(784, hidden), nn.ReLU())
        self.mean, self.log_var = nn.Linear(hidden, latent), nn.Linear(hidden, latent)

    def forward(self, x):
        h = self.net(x.reshape(x.shape[0], -1))
        return ModelOutput(embedding=self.mean(h), log_covariance=self.log_var(h))


class Decoder(BaseDecoder):
    def __init__(self, hidden: int, latent: int):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(latent, hidden), nn.ReLU(), nn.Linear(hidden, 784), nn.Sigmoid())

    def forward(self, z):
        return ModelOutput(reconstruction=self.net(z).reshape(z.shape[0], 1, 28, 28))


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--train", required=True, help=".npy [N, 28, 28] of 0/1")
    p.add_argument("--test", required=True)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    torch.manual_seed(args.seed)
    torch.set_num_threads(2)
    train = torch.from_numpy(np.load(args.train).astype(np.float32)).reshape(-1, 1, 28, 28)
    test = torch.from_numpy(np.load(args.test).astype(np.float32)).reshape(-1, 1, 28, 28)
    cfg = VAEConfig(input_dim=(1, 28, 28), latent_dim=20, reconstruction_loss="bce")
    model = VAE(cfg, encoder=Encoder(500, 20), decoder=Decoder(500, 20))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(args.seed)
    for _ in range(args.epochs):
        model.train()
        perm = torch.randperm(train.shape[0], generator=g)
        for i in range(train.shape[0] // args.batch):
            x = train[perm[i * args.batch:(i + 1) * args.batch]]
            loss = model({"data": x}).loss  # batch mean of (BCE summed over pixels + KL), nats
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    total = 0.0
    with torch.no_grad():
        for i in range(0, test.shape[0], 500):
            x = test[i:i + 500]
            total += float(model({"data": x}).loss) * x.shape[0]
    print(json.dumps({"test_neg_elbo": total / test.shape[0]}))


if __name__ == "__main__":
    main()
