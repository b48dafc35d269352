"""Text as token sequences: a fixed character vocabulary, encoding with end-of-sequence and padding, decoding.

A sequence of ``L`` positions holds the characters of one text, then one end-of-sequence token, then padding:
``"cat" -> [c, a, t, <eos>, <pad>, ...]``. Token 0 is ``<pad>`` (the categorical likelihood scores it 0, so a
sequence's likelihood is that of its characters and its end), token 1 is ``<eos>``, the characters follow in the
vocabulary's order. The recurrent decoder adds two tokens of its own that never occur in data: a start token
that begins every sequence and the unknown token that word dropout substitutes (:mod:`jaxvae.models.recurrent`).

Datasets store token ids like every dataset stores its values, as integers ``0..max_value`` (here
``len(vocabulary) - 1``), so they load, split and batch like images do (float32 holding exact small integers).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from jaxvae.errors import DataError

PAD, EOS = 0, 1
SPECIAL = ("<pad>", "<eos>")


def char_vocabulary(alphabet: str) -> tuple[str, ...]:
    """``("<pad>", "<eos>", *alphabet)``: the vocabulary of a character-level dataset."""
    if len(set(alphabet)) != len(alphabet) or not alphabet:
        raise DataError(f"A character alphabet must be non-empty with no repeated character; got {alphabet!r}.")
    return (*SPECIAL, *alphabet)


def encode(texts: Iterable[str], vocabulary: Sequence[str], length: int) -> np.ndarray:
    """uint8 ``[N, length]`` token ids: each text's characters, ``<eos>``, then ``<pad>`` (see the module doc).

    Raises DataError for a character outside the vocabulary or a text longer than ``length - 1``."""
    if len(vocabulary) > 256:
        raise DataError(f"Token ids are stored as uint8 (256 tokens at most); got {len(vocabulary)} tokens.")
    index = {c: i for i, c in enumerate(vocabulary) if i >= len(SPECIAL)}
    texts = list(texts)
    out = np.full((len(texts), length), PAD, np.uint8)
    for n, text in enumerate(texts):
        if len(text) > length - 1:
            raise DataError(f"{text!r} has {len(text)} characters; sequences of length {length} hold at most "
                            f"{length - 1} (one position is the end-of-sequence token).")
        try:
            out[n, :len(text)] = [index[c] for c in text]
        except KeyError as e:
            raise DataError(f"{text!r} has the character {e.args[0]!r}, which is not in the vocabulary "
                            f"{''.join(vocabulary[len(SPECIAL):])!r}.") from None
        out[n, len(text)] = EOS
    return out


def mean_length(tokens: np.ndarray) -> float:
    """The mean number of tokens a sequence holds, its end token included and its padding not: the ``D`` of bits
    per token, ``NLL / (D ln 2)`` (what ``bits_per_dim`` reports for token data)."""
    tokens = np.asarray(tokens)
    return float(np.mean(np.sum(tokens != PAD, axis=-1)))


def decode(tokens: np.ndarray, vocabulary: Sequence[str]) -> list[str]:
    """The texts of token ids ``[N, L]`` (or ``[L]``): characters up to the first ``<eos>`` or ``<pad>``; ids
    outside the vocabulary (the decoder's own start and unknown tokens) show as ``?``."""
    tokens = np.asarray(tokens)
    rows = tokens[None] if tokens.ndim == 1 else tokens.reshape(-1, tokens.shape[-1])
    texts = []
    for row in np.rint(rows).astype(np.int64):
        chars = []
        for t in row:
            if t in (PAD, EOS):
                break
            chars.append(vocabulary[t] if 0 <= t < len(vocabulary) else "?")
        texts.append("".join(chars))
    return texts
