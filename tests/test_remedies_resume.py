"""Every posterior-collapse remedy of the collapse lab resumes bitwise: a run whose last checkpoint is gone resumes
from the one before and ends with exactly the parameters of the uninterrupted run (KL warm-up and cyclical
annealing, free bits, the PI controller's state, the committed rate, with the PixelCNN decoder; word dropout's
masks, with the GRU decoder on a generated corpus). Aggressive inference training has its own resume test
(tests/test_aggressive.py)."""

import pytest

from jaxvae import config, runs
from tests.helpers import straight_and_resumed

PIXELCNN = ["model.decoder=pixelcnn", "model.pixelcnn.layers=1", "model.pixelcnn.features=8", "model.hidden=32",
            "model.latent_dim=4", "model.likelihood=bernoulli"]
STEPS = ["train.steps=40", "train.checkpoint_every=20", "train.log_every=10", "monitor.every=20",
         "monitor.batch_size=64", "eval.num_samples=4", "eval.max_examples=20", "eval.num_images=8"]
REMEDIES = {
    "kl warm-up": ["objective.beta_schedule=linear", "objective.beta_start=0", "objective.warmup_steps=30"],
    "cyclical annealing": ["objective.beta_schedule=cyclical", "objective.num_cycles=2"],
    "free bits": ["objective.name=free_bits", "objective.free_bits.nats=0.25"],
    "pi control": ["objective.controller=pi", "objective.pi.kl_target=3", "objective.pi.kp=0.01",
                   "objective.pi.ki=0.0005"],
    "committed rate": ["model.committed_rate=0.25"],
}


@pytest.mark.slow
@pytest.mark.parametrize("remedy", sorted(REMEDIES))
def test_each_remedy_with_the_pixelcnn_decoder_resumes_bitwise(remedy, tmp_path):
    cfg = config.apply_overrides(config.get_preset("digits"), [*PIXELCNN, *STEPS, *REMEDIES[remedy]])
    straight, resumed = straight_and_resumed(cfg, tmp_path)
    assert resumed["params_sha256"] == straight["params_sha256"]


@pytest.mark.slow
def test_word_dropout_resumes_bitwise(tmp_path, monkeypatch):
    from tests.test_recurrent import _fake_words, _generated_corpus

    _fake_words(tmp_path, monkeypatch, _generated_corpus(600)[0])
    cfg = config.apply_overrides(config.get_preset("words"), [
        "model.latent_dim=4", "model.rnn.embed=8", "model.rnn.hidden=16", "model.rnn.word_dropout=0.5",
        "train.batch_size=32", *STEPS])
    straight, resumed = straight_and_resumed(cfg, tmp_path)
    assert resumed["params_sha256"] == straight["params_sha256"]
    # The masks matter: without word dropout the same run ends elsewhere.
    plain = runs.fit(config.apply_overrides(cfg, ["model.rnn.word_dropout=0"]), tmp_path / "plain",
                     progress=False, log=lambda _: None)
    assert plain["params_sha256"] != straight["params_sha256"]
