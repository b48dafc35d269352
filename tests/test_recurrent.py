"""The recurrent (GRU) VAE for token sequences and the text dataset: the teacher-forced log-likelihood equals a
step-by-step reference through flax's own GRUCell and ignores padding, p(x|z) is normalized over every sequence
of a tiny vocabulary and its ancestral samples follow it, word dropout replaces the documented share of input
tokens in training only, the words dataset (a generated corpus in a fake wamerican file) loads and fails clearly,
and the words preset runs end to end (train, evaluate, sample, diagnose) with decoded texts."""

import dataclasses
import hashlib
import itertools
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxvae import cli, config, testing
from jaxvae.data import DATASETS, load_dataset, text
from jaxvae.data.registry import WORDS
from jaxvae.data.storage import FileSpec
from jaxvae.distributions import likelihoods
from jaxvae.errors import ConfigError, DataError
from jaxvae.evaluation import likelihood as evaluate
from jaxvae.models import factory
from jaxvae.models import protocol as model_lib
from jaxvae.models.recurrent import GRUDecoder, RecurrentVAE, word_dropout_inputs

VOCAB = text.char_vocabulary("abc")  # 5 tokens: pad, eos, a, b, c


def _model(length=6, vocab=VOCAB, latent=3, word_dropout=0.0, seed=0):
    lik = likelihoods.get("categorical", num_classes=len(vocab))
    return RecurrentVAE.gru(length, latent, lik, embed=5, hidden=7, word_dropout=word_dropout,
                            rngs=nnx.Rngs(seed))


def _reference_log_likelihood(model, z, seq):
    """log p(seq | z) one step at a time through the decoder's nnx.GRUCell, reading the sequence's own tokens up
    to and including its end token, and nothing after it."""
    dec = model.decoder
    h = jnp.tanh(dec.init(z[None]))
    prev, total = dec.start, 0.0
    for tok in seq:
        h, _ = dec.cell(h, jnp.concatenate([dec.embed(jnp.array([prev])), z[None]], axis=-1))
        logits = np.asarray(dec.head(h))[0].astype(np.float64)
        logits[text.PAD] = -np.inf  # a position never holds padding
        total += logits[tok] - np.log(np.sum(np.exp(logits - logits.max()))) - logits.max()
        if tok == text.EOS:
            break
        prev = tok
    return total


def test_log_likelihood_equals_a_step_by_step_reference_and_ignores_padding():
    model = _model(length=6)
    words = ["", "a", "cab", "abcab"]
    x = jnp.asarray(text.encode(words, VOCAB, 6), jnp.float32)
    z = jax.random.normal(jax.random.key(1), (len(words), 3))
    got = np.asarray(model.log_likelihood({"z": z}, x))
    want = [_reference_log_likelihood(model, z[i], np.asarray(x[i], int)) for i in range(len(words))]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    # The same words padded to 11 positions: the same values (padding scores 0 and nothing reads it).
    longer = jnp.asarray(text.encode(words, VOCAB, 11), jnp.float32)
    np.testing.assert_allclose(np.asarray(model.log_likelihood({"z": z}, longer)), got, rtol=1e-6, atol=1e-6)
    # A sequence that fills every position has no end token; it is scored up to its last position.
    full = jnp.asarray([[2, 3, 4, 2, 3, 4]], jnp.float32)
    np.testing.assert_allclose(model.log_likelihood({"z": z[:1]}, full),
                               [_reference_log_likelihood(model, z[0], [2, 3, 4, 2, 3, 4])], rtol=1e-5)


def _all_sequences(length, num_chars):
    """Every distinct value of x: n characters (n < length) then <eos> and padding, or `length` characters."""
    seqs = []
    for n in range(length + 1):
        for chars in itertools.product(range(2, 2 + num_chars), repeat=n):
            row = list(chars) + ([text.EOS] if n < length else [])
            seqs.append(row + [text.PAD] * (length - len(row)))
    return np.array(seqs, np.float32)


def test_p_x_given_z_sums_to_one_over_all_sequences_and_ancestral_samples_follow_it():
    length = 3
    model = _model(length=length, seed=2)
    seqs = _all_sequences(length, 3)  # 1 + 3 + 9 + 27 = 40 sequences
    z = jax.random.normal(jax.random.key(3), (1, 3))
    log_p = np.asarray(model.log_likelihood({"z": jnp.broadcast_to(z, (len(seqs), 3))}, jnp.asarray(seqs)))
    np.testing.assert_allclose(np.exp(log_p).sum(), 1.0, rtol=1e-5)
    # 20,000 ancestral samples: the frequencies of the 40 sequences match exp(log p) (chi-square, 39 dof).
    n = 20_000
    samples = np.asarray(model.sample_tokens({"z": jnp.broadcast_to(z, (n, 3))}, jax.random.key(4)))
    index = {tuple(s): i for i, s in enumerate(seqs.astype(int).tolist())}
    counts = np.bincount([index[tuple(s)] for s in samples.astype(int).tolist()], minlength=len(seqs))
    expected = n * np.exp(log_p)
    keep = expected > 5
    chi2 = np.sum((counts[keep] - expected[keep]) ** 2 / expected[keep])
    assert chi2 < keep.sum() + 6 * np.sqrt(2 * keep.sum()), chi2  # mean dof, sd sqrt(2 dof)
    # Greedy decoding is deterministic and ends with padding after its end token.
    greedy = np.asarray(model.decode_mean({"z": z}, None))[0].astype(int)
    after = list(greedy).index(text.EOS) + 1 if text.EOS in greedy else length
    assert all(t == text.PAD for t in greedy[after:])


def test_word_dropout_replaces_the_documented_share_of_input_tokens_in_training_only():
    rate, unk = 0.3, 99
    prev = jnp.full((400, 50), 7, jnp.int32)
    out = np.asarray(word_dropout_inputs(prev, rate, jax.random.key(0), unk))
    assert np.all(out[:, 0] == 7)  # the start token is never replaced
    dropped = out[:, 1:] == unk
    assert np.all((out[:, 1:] == 7) | dropped)
    share, m = dropped.mean(), dropped.size
    assert abs(share - rate) < 4 * np.sqrt(rate * (1 - rate) / m), share  # binomial, 4 standard deviations
    # The decoder applies it only with a key (the training forward pass) and only with word_dropout > 0.
    dec = GRUDecoder(2, 5, 5, embed=3, hidden=4, word_dropout=rate, rngs=nnx.Rngs(0))
    tokens = jnp.asarray(text.encode(["abca"], VOCAB, 5), jnp.int32)
    assert np.array_equal(dec.inputs(tokens), [[dec.start, 2, 3, 4, 2]])
    # The built models: the trained one drops words, the evaluated one does not, with the same parameters.
    cfg = config.apply_overrides(config.get_preset("words"), ["model.rnn.word_dropout=0.5", "model.rnn.hidden=8",
                                                              "model.rnn.embed=4", "model.latent_dim=2"])
    evaluated = factory.build_model(cfg, (8,))
    trained = factory.build_training_model(cfg, evaluated, (8,))
    params = jax.jit(evaluated.init)(jax.random.key(0))
    # One word_dropout, two modes (NNX's `deterministic`): build_model gives the evaluation view.
    assert evaluated.merge(params).decoder.deterministic and not trained.merge(params).decoder.deterministic
    assert trained.merge(params).decoder.word_dropout == evaluated.merge(params).decoder.word_dropout == 0.5
    assert evaluated.evaluation() is evaluated and trained.evaluation() == evaluated
    assert factory.build_model(cfg, (8,), training=True) == trained and trained.training() is trained
    x = jnp.asarray(text.encode(["hello", "world", "abcdefg"], WORDS.vocabulary, 8), jnp.float32)
    key = jax.random.key(5)
    a, b = evaluated.forward(params, x, key).log_px_z, trained.forward(params, x, key).log_px_z
    assert not np.allclose(a, b)  # the trained model scored corrupted prefixes
    z = {"z": jnp.zeros((3, 2))}
    np.testing.assert_array_equal(evaluated.log_likelihood(params, z, x), trained.log_likelihood(params, z, x))


def test_word_dropout_is_off_in_every_evaluation_from_python():
    """Issue 36 (6): a model built with word_dropout > 0 dropped tokens inside forward, so jv.iwae_log_likelihood
    (and the ELBO evaluation) of it from Python was biased (0.84 nats on a small case; up to 0.44 here). Now every
    evaluation entry point evaluates the model's evaluation view: the estimate equals that of the same parameters
    without word dropout (the ELBO evaluator: tests/test_evaluate.py, with a user's nnx.Dropout); the split module
    as built (NNX's training mode) is what trains, with word dropout."""
    def builder(word_dropout):  # for PureModel.from_builder: no eager initialization
        return lambda rngs: RecurrentVAE.gru(8, 3, likelihoods.get("categorical", num_classes=len(VOCAB)), embed=5,
                                             hidden=7, word_dropout=word_dropout, rngs=rngs)

    pure, reference = (model_lib.PureModel.from_builder(builder(p)) for p in (0.5, 0.0))
    # Random parameters of the right shapes (compiling the GRU's orthogonal initializers would cost 5 s); word
    # dropout has no parameters, so they are the same model's for both.
    rng = np.random.default_rng(0)
    params = jax.tree.map(lambda s: jnp.asarray(0.5 * rng.normal(size=s.shape), s.dtype), pure.abstract_params())
    x = text.encode(["abc", "cab", "a", "bcabca", "", "ccc"], VOCAB, 8).astype(np.float32)
    key = jax.random.key(3)
    got = evaluate.iwae_log_likelihood(pure, params, x, key, num_samples=16, batch_size=3)
    want = evaluate.iwae_log_likelihood(reference, params, x, key, num_samples=16, batch_size=3)
    np.testing.assert_allclose(got.log_px, want.log_px, rtol=1e-6, atol=1e-6)
    # Training keeps word dropout (the test above: the training view's forward differs with the same key).
    assert pure.training() is pure and pure.evaluation().merge(params).decoder.deterministic


@pytest.mark.slow  # moved to the slow tier to keep `make test` well under 10 minutes on 2 cores
def test_the_recurrent_vae_satisfies_the_model_protocol():
    model = _model(length=6)
    x = jnp.asarray(text.encode(["", "ab", "cabca"], VOCAB, 6), jnp.float32)
    testing.check_model(model, x)


def test_text_encoding_round_trips_and_rejects_what_it_cannot_hold():
    words = ["", "a", "abc", "cba"]
    tokens = text.encode(words, VOCAB, 4)
    assert tokens.dtype == np.uint8 and tokens.tolist()[2] == [2, 3, 4, 1]
    assert text.decode(tokens, VOCAB) == words
    with pytest.raises(DataError, match="at most 3"):
        text.encode(["abcd"], VOCAB, 4)
    with pytest.raises(DataError, match="'d'"):
        text.encode(["ad"], VOCAB, 4)


def _fake_words(tmp_path, monkeypatch, words):
    folder = tmp_path / "dict"
    folder.mkdir()
    path = folder / "american-english"
    path.write_text("\n".join(words) + "\n")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    source = dataclasses.replace(WORDS.sources[0], files=(FileSpec("american-english", {"sha256": digest}),))
    spec = dataclasses.replace(WORDS, sources=(source,), system_dirs=(str(folder),), valid_size=20, test_size=20)
    monkeypatch.setitem(DATASETS, "words", spec)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("JAXVAE_DATA_DIR", raising=False)
    return path


def _generated_corpus(n=400, seed=0):
    """Pronounceable lowercase words (consonant-vowel syllables) plus entries the dataset must drop."""
    rng = np.random.default_rng(seed)
    cons, vows = "bcdfglmnprst", "aeiou"
    words = {"".join(rng.choice(list(cons)) + rng.choice(list(vows)) for _ in range(rng.integers(1, 5)))
             for _ in range(n)}
    return sorted(words), ["Boston", "don't", "café", "a" * 17]


def test_the_words_dataset_reads_a_word_list_keeps_lowercase_words_and_splits_them(tmp_path, monkeypatch):
    words, dropped = _generated_corpus()
    _fake_words(tmp_path, monkeypatch, words + dropped)
    ds = load_dataset("words")
    assert ds.support == "tokens" and ds.vocabulary == WORDS.vocabulary and ds.event_shape == (17,)
    assert sum(ds.sizes.values()) == len(words) and ds.sizes["test"] == 20 and ds.sizes["valid"] == 20
    decoded = sorted(text.decode(np.concatenate([ds.train, ds.valid, ds.test]), ds.vocabulary))
    assert decoded == words  # every kept word, once; nothing of the dropped entries
    with pytest.raises(DataError, match="token ids"):
        load_dataset("words", dynamic_binarization=True)


def test_a_missing_or_altered_word_list_fails_with_the_fix(tmp_path, monkeypatch):
    path = _fake_words(tmp_path, monkeypatch, ["abc"])
    path.write_text("abd\n")
    with pytest.raises(DataError, match="sha256"):
        load_dataset("words")
    path.unlink()
    with pytest.raises(DataError, match="apt-get install -y wamerican"):
        load_dataset("words", download=False)


def test_config_rejects_a_recurrent_decoder_without_token_data_settings():
    with pytest.raises(ConfigError, match=r"model\.likelihood=categorical"):
        config.validate(config.apply_overrides(config.get_preset("digits"), ["model.decoder=gru"]))
    with pytest.raises(ConfigError, match=r"model\.num_classes"):
        config.validate(config.apply_overrides(config.get_preset("digits"), ["model.likelihood=categorical"]))
    with pytest.raises(ConfigError, match="word_dropout"):
        config.validate(config.apply_overrides(config.get_preset("words"), ["model.rnn.word_dropout=1.0"]))
    with pytest.raises(ConfigError, match=r"model\.decoder=gru"):
        config.validate(config.apply_overrides(config.get_preset("digits"), ["model.rnn.word_dropout=0.2"]))


TINY = ["model.latent_dim=4", "model.rnn.embed=8", "model.rnn.hidden=16", "train.steps=30", "train.batch_size=32",
        "train.log_every=10", "train.checkpoint_every=10", "eval.num_samples=5", "eval.max_examples=20",
        "monitor.every=10", "monitor.batch_size=64", "model.rnn.word_dropout=0.25"]


@pytest.mark.slow
def test_the_words_preset_trains_evaluates_samples_and_diagnoses_with_decoded_texts(tmp_path, monkeypatch, capsys):
    words, _ = _generated_corpus(600)
    _fake_words(tmp_path, monkeypatch, words)
    workdir = tmp_path / "run"
    sets = [a for s in TINY for a in ("--set", s)]
    assert cli.main(["train", "--preset", "words", "--workdir", str(workdir), "--no-progress", *sets]) == 0
    summary = json.loads((workdir / "summary.json").read_text())
    assert summary["dataset"] == "words" and np.isfinite(summary["test_nll_iwae"])
    recon = (workdir / "reconstructions.txt").read_text().splitlines()
    assert recon and all(" -> " in line for line in recon)
    originals = {line.split(" -> ")[0] for line in recon}
    assert originals <= set(words)  # the test words, decoded back to their text
    assert len((workdir / "samples.txt").read_text().splitlines()) == 16
    interp = (workdir / "interpolations.txt").read_text().splitlines()
    assert interp and all(line.count(" -> ") == 7 and line.count(" : ") == 2 for line in interp)
    assert cli.main(["evaluate", "--workdir", str(workdir), "--num-samples", "5", "--max-examples", "20"]) == 0
    result = json.loads((workdir / "eval.json").read_text())  # bits per token: end tokens count, padding not
    tokens = text.mean_length(load_dataset("words").test)  # all 20 test words
    assert tokens < 17 and result["bits_per_dim"] == pytest.approx(result["nll_iwae"] / (tokens * np.log(2)))
    assert cli.main(["sample", "--workdir", str(workdir), "--num", "8"]) == 0
    sampled = (workdir / "samples-prior-t1-seed0.txt").read_text().splitlines()
    assert len(sampled) == 8 and all(set(w) <= set("abcdefghijklmnopqrstuvwxyz") for w in sampled)
    assert cli.main(["diagnose", "--workdir", str(workdir), "--max-examples", "40"]) == 0
    page = (workdir / "report.html").read_text()
    assert "<pre>" in page and "Interpolations" in page
