"""The latent-health monitor: collapse detection while training.

Every ``monitor.every`` steps the host loop calls one jitted function on a FIXED held-out batch (the first
``monitor.batch_size`` validation examples, or training examples when there is no validation split): it encodes
the batch and returns the KL per dimension, the variance of the posterior means per dimension (active units,
Burda et al. 2016) and the minibatch mutual-information estimate (Hoffman & Johnson 2016; He et al. 2019). The
numbers go into ``metrics.jsonl`` as ``"split": "monitor"`` records; when collapse sets in (no active unit, or
the total KL or the MI below their thresholds) the console gets one warning that names the collapsed dimensions
and the remedies, repeated only when the set of collapsed dimensions changes.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxvae.data.batches import num_examples, take
from jaxvae.distributions import kl
from jaxvae.evaluation import diagnostics
from jaxvae.models.protocol import Params, PureModel, flatten_posteriors

Array = jax.Array


def make_monitor_fn(model: PureModel) -> Callable[[Params, Array, Array], dict[str, Array]]:
    """A jitted ``(params, x [M, *E], key) -> {kl_per_dim [D], mean_variance [D], kl, mi}``.

    Works from the model protocol: the posteriors of every latent group (flattened, groups concatenated) and the
    analytic KL per dimension where the model has one (otherwise the KL to N(0, I) per dimension as a proxy).
    The model is evaluated as every estimate is: in evaluation mode (no word dropout or dropout).
    """
    model = model.evaluation()

    @jax.jit
    def monitor(params: Params, x: Array, key: Array) -> dict[str, Array]:
        out = model.forward(params, x, jax.random.fold_in(key, 1))  # XLA drops the unused decoder
        # The model's own posteriors(): for a hierarchy, each conditional layer moment-matched over many parent
        # samples, so that the spread of one parent sample does not pass for active units.
        q = flatten_posteriors(model.posteriors(params, x, jax.random.fold_in(key, 2)), model.groups,
                               "The latent-health monitor")  # [M, D]
        kl_terms = out.kl_per_dim()
        if kl_terms is None:  # mixture priors: KL per dimension against N(0, I) as a proxy
            kl_terms = kl.kl_standard_normal_per_dim(q)
        kl_per_dim = jnp.mean(kl_terms, axis=0)
        result = {
            "kl_per_dim": kl_per_dim,
            "mean_variance": jnp.var(q.loc, axis=0),
            "kl": jnp.sum(kl_per_dim),
            "mi": diagnostics.mutual_information(q, key),
        }
        per_group = out.kl_per_group()  # analytic, or Monte Carlo per layer (hierarchies)
        if len(model.groups) > 1 and per_group is not None:
            result["kl_per_group"] = {g: jnp.mean(v) for g, v in per_group.items()}
            result["kl"] = sum(result["kl_per_group"].values())  # the model's own KL, not the N(0, I) proxy
        return result

    return monitor


def summarize_dims(dims: list[int], limit: int = 12) -> str:
    """``[0, 1, 2, 3, 7, 9, 10]`` -> ``"0-3, 7, 9-10"``, at most ``limit`` ranges (then ``", ... (N in all)"``)."""
    ranges: list[str] = []
    for d in sorted(dims):
        if ranges and d == ranges[-1][1] + 1:
            ranges[-1] = (ranges[-1][0], d)
        else:
            ranges.append((d, d))
    parts = [f"{a}" if a == b else f"{a}-{b}" for a, b in ranges]
    text = ", ".join(parts[:limit])
    return text + (f", ... ({len(dims)} in all)" if len(parts) > limit else "")


def rising_until(cfg: Any, step: int, total_steps: int | None) -> tuple[int, str] | None:
    """``(step, what)`` when the KL weight or target of ``cfg`` is still rising at ``step`` (a KL warm-up, a
    cyclical schedule's ramp, a capacity schedule), so a small KL is the schedule's doing; else None."""
    ob = cfg.objective
    if ob.name == "capacity" and step < ob.capacity.steps:
        return ob.capacity.steps, "the capacity schedule (objective.capacity.steps)"
    if ob.controller != "none" or ob.beta_start >= ob.beta:
        return None
    if ob.beta_schedule in ("linear", "sigmoid", "cosine") and step < ob.warmup_steps:
        return ob.warmup_steps, f"the KL warm-up (objective.beta_schedule={ob.beta_schedule}, warmup_steps)"
    if ob.beta_schedule == "cyclical" and total_steps and step < total_steps:
        cycle = total_steps / ob.num_cycles
        start = int(step // cycle * cycle)
        ramp_end = math.ceil(start + ob.cycle_ratio * cycle)
        if step < ramp_end:
            return ramp_end, "the rising part of this KL cycle (objective.beta_schedule=cyclical)"
    return None


def remedies(cfg: Any) -> list[str]:
    """The collapse remedies that apply to the model and objective of ``cfg`` and are not already on, each as a
    phrase with its ``--set`` (the collapse lab, benchmarks/RESULTS.md, measured them on PixelCNN and GRU
    decoders)."""
    m, ob = cfg.model, cfg.objective
    builtin = ":" not in m.network
    hierarchy = m.network == "hierarchical"
    out = []
    if ob.name in ("elbo", "elbo_stl") and (m.prior in ("standard_normal", "learned_gaussian") or not builtin):
        out.append("free bits (--set objective.name=free_bits objective.free_bits.nats=0.25"
                   + (" objective.free_bits.per_layer=true)" if hierarchy else ")"))
    if ob.controller == "none" and ob.name in ("elbo", "free_bits", "elbo_stl"):
        out.append("PI control of the KL (--set objective.controller=pi objective.pi.kl_target=5)")
    if (builtin and not m.committed_rate and m.network in ("mlp", "conv") and m.posterior == "diagonal"
            and m.prior == "standard_normal" and m.conditional == "none"):
        out.append("a committed minimum rate (--set model.committed_rate=0.1)")
    if m.decoder == "gru" and not m.rnn.word_dropout:
        out.append("word dropout (--set model.rnn.word_dropout=0.5)")
    if ob.beta_schedule == "constant" and ob.controller == "none" and ob.name != "capacity":
        out.append("KL annealing (--set objective.beta_schedule=linear objective.warmup_steps=5000)")
    if not cfg.train.aggressive.enabled and m.conditional == "none" and not hierarchy:
        out.append("aggressive inference training (--set train.aggressive.enabled=true)")
    if ob.beta > 0.5 and ob.controller == "none":
        out.append(f"a smaller objective.beta (now {ob.beta:g})")
    if m.decoder == "pixelcnn":
        out.append(f"a weaker decoder (fewer than model.pixelcnn.layers={m.pixelcnn.layers} layers)")
    return out


class CollapseMonitor:
    """Host-side bookkeeping: turns monitor outputs into records and (de-duplicated) warnings.

    While a KL warm-up, a cyclical ramp or a capacity schedule is still rising, collapse is recorded but not
    warned about (the schedule keeps the KL small on purpose); the first such check says so once. The warning
    names only the remedies that apply to the configured model and are not already on (:func:`remedies`)."""

    def __init__(self, cfg: Any, latent_dim: int, groups: tuple[tuple[str, int], ...] | None = None, *,
                 total_steps: int | None = None):
        self.run_cfg = cfg
        self.cfg = cfg.monitor
        self.conditional = cfg.model.conditional  # a conditional model's z holds what the label does not
        self.latent_dim = latent_dim
        self.groups = tuple(groups) if groups else (("z", latent_dim),)
        self.total_steps = total_steps
        self._last_warned: tuple | None = None
        self._said_quiet = False

    def record(self, step: int, out: dict[str, Any]) -> tuple[dict[str, Any], str | None]:
        """``(metrics record, warning text or None)`` for one monitor evaluation."""
        m = self.cfg
        variances = np.asarray(out["mean_variance"])
        kl_per_dim = np.asarray(out["kl_per_dim"])
        active = variances > m.active_threshold
        inactive = [int(d) for d in np.flatnonzero(~active)]
        record = {"step": step, "split": "monitor", "kl": float(out["kl"]), "mi": float(out["mi"]),
                  "active_units": int(active.sum()), "inactive_dims": inactive,
                  "kl_per_dim": kl_per_dim.tolist(), "posterior_mean_variance": variances.tolist()}
        reasons = []
        collapsed_layers = []
        if len(self.groups) > 1:  # per layer: active units (the IWAE paper's "16+5") and KL
            start, per_layer = 0, {}
            for name, d in self.groups:
                per_layer[name] = int(active[start:start + d].sum())
                start += d
            record["active_units_per_group"] = per_layer
            if "kl_per_group" in out:
                record["kl_per_group"] = {g: float(v) for g, v in out["kl_per_group"].items()}
            for name, d in self.groups:
                kl_g = record.get("kl_per_group", {}).get(name)
                if per_layer[name] == 0 and (kl_g is None or kl_g < m.min_kl):
                    collapsed_layers.append(name)
                    reasons.append(f"layer {name} has collapsed (0 of {d} units active"
                                   + (f", KL {kl_g:.3f} nats)" if kl_g is not None else ")"))
        if active.sum() < m.min_active_units:
            reasons.append(f"{int(active.sum())} of {self.latent_dim} latent units are active "
                           f"(Cov_x(E_q[z_d]) > {m.active_threshold:g})")
        if record["kl"] < m.min_kl:
            reasons.append(f"the total KL is {record['kl']:.3f} nats (< {m.min_kl:g})")
        if record["mi"] < m.min_mi:
            reasons.append(f"the mutual information I(x; z) is {record['mi']:.3f} nats (< {m.min_mi:g})")
        record["collapse"] = bool(reasons)
        if not reasons:
            self._last_warned = None
            return record, None
        rising = rising_until(self.run_cfg, step, self.total_steps)
        if rising is not None:
            record["schedule_rising"] = True
            if self._said_quiet:
                return record, None
            self._said_quiet = True
            until, what = rising
            return record, (f"Note: the latent-health monitor sees a small KL at step {step:,} while {what} is "
                            f"still rising (until step {until:,}); that is the schedule's doing, so it warns "
                            "about collapse only after the schedule has risen (the monitor records in "
                            "metrics.jsonl continue).")
        # Warn again when the situation changes: which layers collapsed (hierarchies), else which dimensions.
        key = ("layers", tuple(collapsed_layers)) if collapsed_layers else ("dims", tuple(inactive))
        if key == self._last_warned:
            return record, None
        self._last_warned = key
        dims = (f"{len(inactive)} of {self.latent_dim} dimensions inactive ({summarize_dims(inactive)})"
                if inactive else "no single dimension inactive")
        ignored = (f"Layer{'s' if len(collapsed_layers) > 1 else ''} {', '.join(collapsed_layers)} carr"
                   f"{'y' if len(collapsed_layers) > 1 else 'ies'} no information about the data"
                   if collapsed_layers and len(collapsed_layers) < len(self.groups)
                   else "The decoder is ignoring the latent code")
        options = remedies(self.run_cfg)
        if self.run_cfg.model.decoder == "factorized" and not collapsed_layers and active.sum() > 0:
            ignored += (" in some dimensions, which is usual when the latent space is larger than the data needs "
                        "(a factorized decoder cannot model the data without z)")
        text = f"WARNING posterior collapse at step {step:,}: {'; '.join(reasons)}; {dims}. {ignored}."
        if options:
            text += (" Remedies for this model (measured in jaxvae's collapse lab, benchmarks/RESULTS.md): "
                     + "; ".join(options) + ".")
        if self.conditional != "none":
            text += (f" Note: this is a conditional model (model.conditional={self.conditional}): its decoder "
                     "reads the label, so z carries only what the label leaves unexplained (style), and a small "
                     "KL, early in training above all, need not be a failure.")
        return record, text


def monitor_batch(dataset: Any, size: int) -> np.ndarray:
    """The fixed held-out batch: the first ``size`` validation examples (training examples if none)."""
    source = dataset.valid if num_examples(dataset.valid) else dataset.train
    rows = take(source, slice(0, min(size, num_examples(source))))
    return np.asarray(rows) if isinstance(rows, np.ndarray) else rows  # a conditioned batch stays a pytree
