"""Reproduce published VAE numbers: train each configured run with ``jaxvae train``, evaluate it with
``jaxvae evaluate --num-samples 5000``, compare with the paper, and record one section per target in RESULTS.md.

Usage (as a user runs it; each step is a plain ``jaxvae`` command, printed before it runs)::

    python -m benchmarks reproduce                      # all targets, the short (CPU-sized) schedules
    python -m benchmarks reproduce c_iwae_table1 --schedule full --workdir /scratch/repro   # a GPU/TPU host
    python -m benchmarks reproduce --dry-run            # print the commands only

Targets are the JSON files in ``benchmarks/reproduce/configs/``. A finished run (its ``summary.json`` exists)
is not trained again, an interrupted one resumes from its checkpoint, and an ``eval.json`` computed with the same
settings is reused, so an interrupted reproduction continues where it stopped. Every figure is written next to
exactly what produced it: schedule, epochs, seed, k and the number of test images; shortened schedules are
labelled as such.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks import common

CONFIGS = Path(__file__).resolve().parent / "configs"


def load_targets(names: list[str]) -> dict[str, dict[str, Any]]:
    available = {p.stem: p for p in sorted(CONFIGS.glob("*.json"))}
    chosen = names or list(available)
    unknown = [n for n in chosen if n not in available]
    if unknown:
        sys.exit(f"unknown reproduction target(s) {unknown}; available: {', '.join(available)}")
    return {n: json.loads(available[n].read_text()) for n in chosen}


def _run(cmd: list[str], log_path: Path, dry_run: bool) -> tuple[float, float]:
    """Runs ``cmd`` with its output in ``log_path``; returns (seconds, peak RSS MiB of that process)."""
    print("  $ " + " ".join(cmd), flush=True)
    if dry_run:
        return 0.0, 0.0
    t0 = time.perf_counter()
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - t0
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        tail = log_path.read_text(errors="replace")[-2000:]
        raise RuntimeError(f"command failed with exit code {code}: {' '.join(cmd)}\n{tail}")
    return seconds, usage.ru_maxrss / 1024


def run_target(name: str, target: dict[str, Any], args: argparse.Namespace) -> list[dict[str, Any]]:
    schedule = target["schedules"][args.schedule]
    ev = target["eval"]
    max_examples = args.max_eval_examples or ev.get("max_examples")
    data_dir = Path(args.data_root) / target["dataset_dir"]
    if not data_dir.exists() and not args.dry_run:
        sys.exit(f"{data_dir} does not exist: pass --data-root pointing at a folder with {target['dataset_dir']}/ "
                 "(the shared data folder ../shared/data on the development machines).")
    rows = []
    for run in target["runs"]:
        slug = run["label"].lower().replace(" ", "_").replace("=", "").replace(",", "")
        workdir = Path(args.workdir) / name / args.schedule / slug
        if not args.dry_run:
            workdir.parent.mkdir(parents=True, exist_ok=True)
        log_path = workdir.parent / f"{slug}.log"
        print(f"[{name}] {run['label']} ({args.schedule} schedule) -> {workdir}", flush=True)
        sets = [*run["set"], *schedule["set"], f"data.dir={data_dir}",
                # The final report's quick estimate only; the reproduction number comes from `evaluate` below.
                "eval.num_samples=100", "eval.max_examples=500", *args.set]
        train = [sys.executable, "-m", "jaxvae", "train", "--preset", run["preset"], "--workdir", str(workdir)]
        for s in sets:
            train += ["--set", s]
        if (workdir / "summary.json").exists() and not args.dry_run:  # written last: the run finished
            print("  (finished run: training skipped; delete the folder to train again)")
            train_s = math.nan
        else:
            train_s, _ = _run(train, log_path, args.dry_run)

        evaluate = [sys.executable, "-m", "jaxvae", "evaluate", "--workdir", str(workdir),
                    "--num-samples", str(ev["num_samples"]), "--seed", "0",
                    "--batch-size", str(args.eval_batch_size)]
        if max_examples:
            evaluate += ["--max-examples", str(max_examples)]
        eval_json = workdir / "eval.json"
        reuse = False
        if eval_json.exists() and not args.dry_run:
            old = json.loads(eval_json.read_text())
            summary = json.loads((workdir / "summary.json").read_text())
            reuse = (old.get("nll_num_samples") == ev["num_samples"] and old.get("step") == _reported_step(summary)
                     and (not max_examples or old.get("num_examples") == max_examples))
        cost_file = workdir.parent / f"{slug}.eval-cost.json"  # how long the evaluation took, for the table
        if reuse:
            print("  (eval.json with the same settings exists; reused)")
            cost = json.loads(cost_file.read_text()) if cost_file.exists() else {}
            eval_s, eval_rss = cost.get("seconds", math.nan), cost.get("peak_rss_mib", math.nan)
        else:
            eval_s, eval_rss = _run(evaluate, log_path, args.dry_run)
            if not args.dry_run:
                cost_file.write_text(json.dumps({"seconds": eval_s, "peak_rss_mib": eval_rss}))
        if args.dry_run:
            continue
        result = json.loads(eval_json.read_text())
        summary = json.loads((workdir / "summary.json").read_text())
        cfg = json.loads((workdir / "config.json").read_text())
        value = -result["elbo"] if target["metric"] == "neg_elbo" else result["nll_iwae"]
        rows.append({
            "target": name, "label": run["label"], "published": run.get("published"), "peer": run.get("peer"),
            "value": value, "nll_iwae": result["nll_iwae"], "nll_stderr": result["nll_iwae_stderr"],
            "neg_elbo": -result["elbo"], "kl": result["kl"], "num_examples": result["num_examples"],
            "num_samples": result["nll_num_samples"], "epochs": cfg["train"]["epochs"],
            "steps": summary["steps"], "seed": cfg["train"]["seed"], "batch_size": cfg["train"]["batch_size"],
            "active_units": _active_units(summary), "train_seconds": summary.get("train_seconds", train_s),
            "active_units_per_group": summary.get("latent", {}).get("active_units_per_group"),
            "published_active_units": run.get("published_active_units"),
            "eval_seconds": eval_s, "eval_peak_rss_mib": eval_rss, "workdir": str(workdir),
            "early_stopping": summary.get("early_stopping"),
        })
        print(f"  -> {target['metric']} {value:.2f} (IWAE NLL {result['nll_iwae']:.2f} ± "
              f"{result['nll_iwae_stderr']:.2f}, k={result['nll_num_samples']}, {result['num_examples']:,} "
              f"test images; eval {eval_s:.0f} s, peak RSS {eval_rss:,.0f} MiB)", flush=True)
    return rows


def _reported_step(summary: dict[str, Any]) -> int:
    """The step `jaxvae evaluate` evaluates by default: the best validation's with early stopping."""
    best = (summary.get("early_stopping") or {}).get("best_step")
    return int(summary["steps"] if best is None else best)


def _schedule_cell(schedule: str, r: dict[str, Any]) -> str:
    cell = f"{schedule}: {r['epochs']} epochs, batch {r['batch_size']}, {r['steps']:,} steps"
    es = r.get("early_stopping") or {}
    if es.get("stopped_at_step") is not None:
        cell += f", early-stopped at step {es['stopped_at_step']:,}"
    if es.get("best_step") is not None:
        cell += f", best validation (evaluated) at step {es['best_step']:,}"
    return cell


def _active_units(summary: dict[str, Any]) -> str:
    """Active units as the IWAE paper writes them for a hierarchy, bottom layer first (``16+5``)."""
    per_group = summary.get("latent", {}).get("active_units_per_group")
    return "+".join(str(v) for v in per_group.values()) if per_group else str(summary.get("active_units"))


def verdicts(target: dict[str, Any], rows: list[dict[str, Any]]) -> list[str]:
    """Plain-language checks: value within tolerance, or the published ordering and gap."""
    by_label = {r["label"]: r for r in rows}
    out = []
    if target["check"] == "value":
        for r in rows:
            diff = r["value"] - r["published"]
            ok = abs(diff) <= target["tolerance"]
            out.append(f"{r['label']}: ours {r['value']:.2f} vs published {r['published']:.2f} "
                       f"(difference {diff:+.2f}, tolerance ±{target['tolerance']}): "
                       f"{'within tolerance' if ok else 'OUTSIDE tolerance'}")
    for a, op, b in target.get("ordering", []):
        if a in by_label and b in by_label:
            va, vb = by_label[a]["value"], by_label[b]["value"]
            holds = va < vb if op == "<" else va > vb
            out.append(f"ordering {a} {op} {b}: {va:.2f} {op} {vb:.2f} {'holds' if holds else 'DOES NOT hold'}")
    for label in target.get("fewer_active_on_top", []):
        groups = (by_label.get(label) or {}).get("active_units_per_group")
        if groups:
            counts = list(groups.values())
            holds = counts[-1] < counts[0]
            out.append(f"{label}: active units per layer (bottom first) {'+'.join(map(str, counts))}; the top "
                       f"layer has fewer active units than the bottom: {'holds' if holds else 'DOES NOT hold'}")
    if "gap" in target and all(g in by_label for g in target["gap"]):
        hi, lo = (by_label[g] for g in target["gap"])
        pub = (f"{hi['published'] - lo['published']:.2f}" if hi["published"] is not None
               and lo["published"] is not None else "n/a")
        ours = hi["value"] - lo["value"]
        out.append(f"gap {hi['label']} − {lo['label']}: ours {ours:.2f} nats, published {pub}")
    return out


def format_table(target: dict[str, Any], rows: list[dict[str, Any]], schedule: str) -> str:
    metric = "test −ELBO" if target["metric"] == "neg_elbo" else "test NLL (IWAE)"
    lines = [f"| run | {metric}, ours | published | IWAE NLL ± s.e. | −ELBO | KL | active units | schedule | "
             "k | test images | seed | train s | eval s | eval peak RSS MiB |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        pub = "—" if r["published"] is None else f"{r['published']:.2f}"
        if r.get("peer"):
            pub += " (" + ", ".join(f"{k} {v}" for k, v in r["peer"].items()) + ")"
        if r.get("published_active_units"):
            pub += f" (active units {r['published_active_units']})"
        lines.append(
            f"| {r['label']} | {r['value']:.2f} | {pub} | {r['nll_iwae']:.2f} ± {r['nll_stderr']:.2f} | "
            f"{r['neg_elbo']:.2f} | {r['kl']:.2f} | {r['active_units']} | {_schedule_cell(schedule, r)} | "
            f"{r['num_samples']} | {r['num_examples']:,} | "
            f"{r['seed']} | {r['train_seconds']:.0f} | {r['eval_seconds']:.0f} | {r['eval_peak_rss_mib']:,.0f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks reproduce", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("targets", nargs="*", help="config names (default: all), e.g. a_flax_example c_iwae_table1")
    p.add_argument("--schedule", choices=["short", "full"], default="short",
                   help="short: CPU-sized, labelled SHORTENED where it differs from the paper; full: the paper's")
    p.add_argument("--data-root", default=str(common.SHARED_DATA),
                   help="folder holding mnist/ and binarized_mnist/ (default: ../shared/data)")
    p.add_argument("--workdir", default="runs/reproduce", help="where the run directories go")
    p.add_argument("--max-eval-examples", type=int, default=None,
                   help="evaluate on a random subset of this many test images (default: per target)")
    p.add_argument("--eval-batch-size", type=int, default=20, help="examples per compiled IWAE call")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="extra config override applied to every run (e.g. mesh.shape=8)")
    p.add_argument("--dry-run", action="store_true", help="print the commands without running them")
    p.add_argument("--no-record", action="store_true", help="do not record the run in RESULTS.md")
    args = p.parse_args(argv)
    for name, target in load_targets(args.targets).items():
        print(f"== {name}: {target['title']}\n   reference: {target['reference']}", flush=True)
        rows = run_target(name, target, args)
        if args.dry_run:
            continue
        table = format_table(target, rows, args.schedule)
        checks = verdicts(target, rows)
        print(table)
        print("\n".join(checks))
        (Path(args.workdir) / name / args.schedule / "reproduction.json").write_text(
            json.dumps({"target": name, "schedule": args.schedule, "rows": rows, "checks": checks}, indent=1))
        if not args.no_record:
            schedule_note = target["schedules"][args.schedule]["note"]
            notes = "\n".join([f"Reference: {target['reference']}.", f"Schedule: {schedule_note}.",
                               *( [f"Note: {target['notes']}"] if target.get("notes") else []),
                               "", *[f"- {c}" for c in checks]])
            common.record_results(f"reproduce-{name}", f"Reproduction {name}: {target['title']}",
                                  common.command_line(), table, notes)


if __name__ == "__main__":
    main()
