"""Pictures of a run: image grids of reconstructions and samples (PNG, Pillow, atomic), the plots of the
latent-health report and of sweeps (matplotlib's object-oriented API), and the report's HTML."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

import numpy as np

from jaxvae.rundir.writers import atomic_write_bytes


def image_grid(images: np.ndarray, *, ncols: int | None = None, pad: int = 1, min_tile: int = 64) -> np.ndarray:
    """Tiles ``images [N, H, W, C]`` (values in [0, 1]) into one uint8 image ``[rows*H', cols*W', C]``.

    Small images (e.g. 8x8 digits) are enlarged by an integer factor (nearest neighbour) to at least
    ``min_tile`` pixels so that the grid is readable.
    """
    images = np.clip(np.asarray(images, np.float32), 0.0, 1.0)
    if images.ndim == 3:
        images = images[..., None]
    n, h, w, c = images.shape
    factor = max(1, math.ceil(min_tile / max(h, w)))
    images = images.repeat(factor, axis=1).repeat(factor, axis=2)
    h, w = h * factor, w * factor
    ncols = ncols or math.ceil(math.sqrt(n))
    nrows = math.ceil(n / ncols)
    grid = np.ones((nrows * (h + pad) + pad, ncols * (w + pad) + pad, c), np.float32)
    for i in range(n):
        r, col = divmod(i, ncols)
        top, left = pad + r * (h + pad), pad + col * (w + pad)
        grid[top:top + h, left:left + w] = images[i]
    return (grid * 255).round().astype(np.uint8)


def to_images(x: np.ndarray, event_shape: tuple[int, ...], *, scale: float = 1.0) -> np.ndarray | None:
    """``[N, *E]`` data as ``[N, H, W, C]`` images in [0, 1], or ``None`` when the data is not image-like.

    Flat vectors whose length is a square (784 -> 28x28) are shown as square grey images.
    """
    x = np.asarray(x, np.float32) / scale
    if len(event_shape) == 3 and event_shape[-1] in (1, 3):
        return x
    if len(event_shape) == 2:
        return x[..., None]
    if len(event_shape) == 1 and math.isqrt(event_shape[0]) ** 2 == event_shape[0]:
        side = math.isqrt(event_shape[0])
        return x.reshape(-1, side, side, 1)
    return None


def save_png(path: str | os.PathLike, image: np.ndarray) -> None:
    """Saves a uint8 ``[H, W]`` / ``[H, W, 1]`` / ``[H, W, 3]`` array as PNG atomically."""
    atomic_write_bytes(path, png_bytes(image))


def value_scale(data_scale: str) -> float:
    """What data values are divided by to show them as images in [0, 1] (``data.scale`` = unit or uint8)."""
    return 255.0 if data_scale == "uint8" else 1.0


def reconstruction_grid(originals: np.ndarray, reconstructions: np.ndarray, ncols: int = 8, *,
                        title: str = "") -> np.ndarray:
    """Alternating rows of originals and their reconstructions (``[N, H, W, C]`` each), each row labelled, under
    ``title`` (when given)."""
    ncols = max(1, min(ncols, originals.shape[0]))  # fewer examples than columns: one row of each
    n = originals.shape[0] - originals.shape[0] % ncols
    rows = []
    for start in range(0, n, ncols):
        rows.append(originals[start:start + ncols])
        rows.append(reconstructions[start:start + ncols])
    grid = image_grid(np.concatenate(rows), ncols=ncols)
    return annotate_grid(grid, title=title, row_labels=["original", "reconstruction"] * (len(rows) // 2))


def annotate_grid(grid: np.ndarray, *, title: str = "", row_labels: Sequence[str] = (),
                  col_labels: Sequence[str] = (), font_size: int = 12) -> np.ndarray:
    """A uint8 grid image (from :func:`image_grid`) with ``title`` above it, ``row_labels`` left of its rows and
    ``col_labels`` above its columns (rows and columns are found from the label counts); RGB out."""
    from PIL import Image, ImageDraw, ImageFont

    if not (title or row_labels or col_labels):
        return grid
    font = ImageFont.load_default(size=font_size)
    image = Image.fromarray(grid[..., 0] if grid.ndim == 3 and grid.shape[-1] == 1 else grid).convert("RGB")
    measure = ImageDraw.Draw(image)
    line = font_size + 6
    left = max((measure.textlength(t, font=font) for t in row_labels), default=0)
    left = int(left) + 8 if row_labels else 0
    top = (line if title else 0) + (line if col_labels else 0)
    width = max(image.width + left, int(measure.textlength(title, font=font)) + 8 if title else 0)
    canvas = Image.new("RGB", (width, image.height + top), "white")
    canvas.paste(image, (left, top))
    draw = ImageDraw.Draw(canvas)
    if title:
        draw.text((4, 3), title, fill=(30, 30, 30), font=font)
    if col_labels:
        pitch = (image.width - 1) / len(col_labels)
        for j, text in enumerate(col_labels):
            x = left + 1 + (j + 0.5) * pitch - measure.textlength(text, font=font) / 2
            draw.text((x, top - line + 2), text, fill=(80, 80, 80), font=font)
    if row_labels:
        pitch = (image.height - 1) / len(row_labels)
        for i, text in enumerate(row_labels):
            draw.text((4, top + 1 + (i + 0.5) * pitch - font_size / 2 - 1), text, fill=(80, 80, 80), font=font)
    return np.asarray(canvas)


def plot_rate_distortion(models: list[dict], path: str | os.PathLike, *, title: str = "") -> None:
    r"""Rate (KL) vs distortion (reconstruction loss), one point per model, with ELBO iso-lines.

    On these axes :math:`-\mathrm{ELBO} = D + R`, so models on one line of slope -1 have the same ELBO
    (Alemi et al. 2018, "Fixing a Broken ELBO"). Failed (non-finite) models are listed in the title area.
    """
    ok = [m for m in models if not m.get("failed")]
    failed = [m for m in models if m.get("failed")]
    fig, ax = _subplots(figsize=(7.6, 4.8), dpi=120)
    if ok:
        rate = np.array([m["test_kl"] for m in ok])
        dist = np.array([m["test_recon"] for m in ok])
        lo, hi = 0.0, max(rate.max(), 1e-3) * 1.15
        margin = 0.1 * abs(np.ptp(dist) + 1)
        bottom, top = dist.min() - margin, dist.max() + margin
        for j, level in enumerate(np.unique(np.round(np.quantile(rate + dist, [0.0, 0.5, 1.0]), 1))):
            r = np.linspace(lo, hi, 50)
            ax.plot(r, level - r, color="0.75", lw=0.8, ls="--", zorder=0,
                    label="equal ELBO (slope -1)" if j == 0 else None)
            # The label sits where the line enters the plot: at the top edge, or else at the left edge.
            x = min(max(level - top, lo), hi)
            if bottom <= level - x <= top:
                ax.text(x, level - x, f" -ELBO={level:g}", fontsize=7, color="0.4", va="top", ha="left",
                        rotation=-25, rotation_mode="anchor")
        colors = _colors(len(ok))
        markers = "osD^v<>pPX*h"
        for i, (m, x, y) in enumerate(zip(ok, rate, dist)):  # a legend entry per model: labels never overlap
            ax.scatter([x], [y], color=colors[i], marker=markers[i % len(markers)], s=36, zorder=2,
                       label=m["label"])
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0,
                  title="model", title_fontsize=8)
        ax.set_xlim(lo, hi)
        ax.set_ylim(bottom, top)
    ax.set_xlabel("rate: KL(q(z|x) || p(z)) [nats]")
    ax.set_ylabel("distortion: -E_q log p(x|z) [nats]")
    note = f"  (failed: {', '.join(m['label'] for m in failed)})" if failed else ""
    ax.set_title((title + note) or "rate-distortion", fontsize=9)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    atomic_write_bytes(path, figure_png(fig))


# ------------------------------------------------------------------------------------------- HTML report

def png_bytes(image: np.ndarray) -> bytes:
    """PNG encoding of a uint8 image (``[H, W]``, ``[H, W, 1]`` or ``[H, W, 3]``)."""
    import io

    from PIL import Image

    if image.ndim == 3 and image.shape[-1] == 1:
        image = image[..., 0]
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return buf.getvalue()


def data_uri(png: bytes) -> str:
    import base64

    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def figure_png(fig) -> bytes:
    """PNG encoding of a matplotlib ``Figure``."""
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    return buf.getvalue()


def _figure(**figure_kwargs):
    """A ``Figure`` made without pyplot: no global figure registry and no change of matplotlib's backend, so a
    notebook's inline plots keep working after jaxvae drew its own (``Figure.savefig`` renders PNGs with Agg by
    itself)."""
    from matplotlib.figure import Figure

    return Figure(**figure_kwargs)


def _subplots(**figure_kwargs):
    """A ``(Figure, Axes)`` pair from :func:`_figure`."""
    fig = _figure(**figure_kwargs)
    return fig, fig.subplots()


def kl_bar_chart(kl_per_dim: list[float], active: list[bool], title: str = "KL per dimension") -> bytes:
    """Bars of the data-averaged KL per latent dimension; inactive units in grey."""
    # One bar per dimension up to ~40 dimensions; wider latent spaces (a top-down hierarchy's thousands) get a
    # fixed-width figure with thin bars instead of an image as wide as the dimension count.
    fig, ax = _subplots(figsize=(min(14.0, max(4.0, 0.35 * len(kl_per_dim) + 1.5)), 2.8))
    colors = ["tab:blue" if a else "0.7" for a in active]
    ax.bar(range(len(kl_per_dim)), kl_per_dim, color=colors, width=0.8 if len(kl_per_dim) <= 200 else 1.0)
    ax.set_xlabel("latent dimension")
    ax.set_ylabel("KL [nats]")
    ax.set_title(f"{title} (grey: inactive unit)", fontsize=9)
    ax.grid(axis="y", alpha=0.3)
    return figure_png(fig)


def layer_chart(kl_per_group: dict[str, float], active: dict[str, int], sizes: dict[str, int]) -> bytes:
    """Per latent group (layer of a hierarchy, bottom first): its KL (bars, left axis) and the share of its units
    that are active (dots, right axis) -- where a collapsed layer shows at a glance."""
    names = list(kl_per_group)
    fig, ax = _subplots(figsize=(max(4.0, 0.8 * len(names) + 2.0), 2.8))
    ax.bar(range(len(names)), [kl_per_group[g] for g in names], color="tab:blue")
    ax.set_xticks(range(len(names)), names)
    ax.set_xlabel("latent group (bottom first)")
    ax.set_ylabel("KL [nats]", color="tab:blue")
    ax.grid(axis="y", alpha=0.3)
    share = ax.twinx()
    share.plot(range(len(names)), [active[g] / max(sizes[g], 1) for g in names], "o", color="tab:orange")
    share.set_ylim(0, 1.05)
    share.set_ylabel("active units (share)", color="tab:orange")
    ax.set_title("KL and active units per layer", fontsize=9)
    return figure_png(fig)


def latent_scatter(means: np.ndarray, labels: np.ndarray | None = None, *,
                   outliers: np.ndarray | None = None) -> bytes:
    """Posterior means projected on their two principal axes, with the N(0, I) prior's 1-2-3 sigma circles.

    An orthonormal projection of a standard normal is a standard normal, so the circles are exact prior
    contours in this plane (for a standard normal prior).
    """
    means = np.asarray(means, np.float64)
    if means.shape[1] == 1:
        xy, axes = np.concatenate([means, np.zeros_like(means)], 1), ("z0", "")
    elif means.shape[1] == 2:
        xy, axes = means, ("z0", "z1")
    else:
        centred = means - means.mean(0)
        _, _, vt = np.linalg.svd(centred, full_matrices=False)
        xy, axes = means @ vt[:2].T, ("principal axis 1", "principal axis 2")
    fig, ax = _subplots(figsize=(5.6, 4.6))
    if labels is None:
        ax.scatter(xy[:, 0], xy[:, 1], s=4, color="tab:blue", alpha=0.6, label="posterior means")
    else:
        classes = np.unique(labels)
        colors = _colors(len(classes))
        for c, color in zip(classes, colors):
            pick = labels == c
            ax.scatter(xy[pick, 0], xy[pick, 1], s=4, color=color, alpha=0.6, label=f"class {c}")
    if outliers is not None and len(outliers):
        ax.scatter(xy[outliers, 0], xy[outliers, 1], s=30, facecolors="none", edgecolors="red",
                   label="latent outliers")
    t = np.linspace(0, 2 * np.pi, 200)
    for r in (1, 2, 3):
        ax.plot(r * np.cos(t), r * np.sin(t), color="k", lw=0.6, alpha=0.5,
                label="N(0, I) at 1, 2, 3 sd" if r == 1 else None)
    ax.set_xlabel(axes[0])
    ax.set_ylabel(axes[1])
    ax.set_aspect("equal", adjustable="datalim")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0, markerscale=3)
    ax.set_title("posterior means of training examples" + (", by class" if labels is not None else ""), fontsize=9)
    return figure_png(fig)


def _colors(n: int) -> list:
    """``n`` distinguishable colours (tab10, then tab20, then a continuous map)."""
    from matplotlib import colormaps

    if n <= 10:
        return [colormaps["tab10"](i) for i in range(n)]
    if n <= 20:
        return [colormaps["tab20"](i) for i in range(n)]
    return [colormaps["viridis"](i / max(n - 1, 1)) for i in range(n)]


def training_curves(records: list[dict]) -> bytes | None:
    """The training history of ``metrics.jsonl`` as four panels: the loss with the training and validation
    -ELBO; the KL with the KL weight beta; the KL of each latent dimension over time (a heat map); and, when the
    latent-health monitor ran, its active units and mutual information. ``None`` without training records."""
    train = [r for r in records if "split" not in r and "loss" in r]
    if not train:
        return None
    valid = [r for r in records if r.get("split") == "valid" and "elbo" in r]
    health = [r for r in records if r.get("split") == "monitor"]
    fig = _figure(figsize=(11.0, 6.4))
    (a, b), (c, d) = fig.subplots(2, 2)
    steps = [r["step"] for r in train]

    def series(rows, key):
        return [float(r[key]) if isinstance(r.get(key), int | float) else np.nan for r in rows]

    a.plot(steps, series(train, "loss"), label="loss (training objective)", color="tab:blue")
    a.plot(steps, [-v for v in series(train, "elbo")], label="-ELBO, training batches", color="tab:orange", lw=0.8)
    if valid:
        a.plot([r["step"] for r in valid], [-v for v in series(valid, "elbo")], "o-", ms=3,
               label="-ELBO, validation", color="tab:green")
    a.set_title("loss and -ELBO [nats]", fontsize=9)
    a.legend(fontsize=7)
    b.plot(steps, series(train, "kl"), label="KL (rate)", color="tab:purple")
    b.set_title("KL [nats] and its weight beta", fontsize=9)
    beta = b.twinx()
    beta.plot(steps, series(train, "beta"), color="0.5", lw=0.8, ls="--", label="beta")
    beta.set_ylabel("beta", fontsize=8)
    lines = b.get_legend_handles_labels()[0] + beta.get_legend_handles_labels()[0]
    b.legend(lines, [h.get_label() for h in lines], fontsize=7, loc="best")
    per_dim = [r.get("kl_per_dim") for r in train]
    if all(isinstance(p, list) and p for p in per_dim) and len({len(p) for p in per_dim}) == 1:
        matrix = np.array(per_dim, np.float64).T  # [D, T]
        image = c.imshow(matrix, aspect="auto", origin="lower", cmap="magma", interpolation="nearest",
                         extent=(steps[0], steps[-1], -0.5, matrix.shape[0] - 0.5))
        fig.colorbar(image, ax=c, label="KL [nats]")
        if matrix.shape[0] <= 32:
            c.set_yticks(range(matrix.shape[0]))
            c.tick_params(axis="y", labelsize=7)
        c.set_ylabel("latent dimension", fontsize=8)
        c.set_title("KL of each latent dimension over training (dark: inactive)", fontsize=9)
    else:
        c.text(0.5, 0.5, "no per-dimension KL in metrics.jsonl", ha="center", va="center", transform=c.transAxes)
        c.set_axis_off()
    if health:
        hsteps = [r["step"] for r in health]
        d.plot(hsteps, series(health, "active_units"), "o-", ms=3, label="active units", color="tab:red")
        d.set_ylabel("active units", fontsize=8)
        mi = d.twinx()
        mi.plot(hsteps, series(health, "mi"), "s--", ms=3, color="tab:cyan",
                label="mutual information I(x; z)")
        mi.set_ylabel("nats", fontsize=8)
        lines = d.get_legend_handles_labels()[0] + mi.get_legend_handles_labels()[0]
        d.legend(lines, [h.get_label() for h in lines], fontsize=7, loc="best")
        d.set_title("latent-health monitor (held-out batch)", fontsize=9)
    else:
        d.text(0.5, 0.5, "the latent-health monitor was off\n(monitor.every=0)", ha="center", va="center",
               transform=d.transAxes)
        d.set_axis_off()
    for ax in (a, b, c, d):
        if ax.axison:
            ax.set_xlabel("step", fontsize=8)
            ax.grid(alpha=0.3 if ax is not c else 0.0)
    fig.tight_layout()
    return figure_png(fig)


def write_html(path: str | os.PathLike, title: str, sections: list[tuple[str, str]]) -> None:
    """A self-contained HTML page (images inline as data URIs); ``sections`` are ``(heading, html)`` pairs."""
    import html

    body = "\n".join(f"<section><h2>{html.escape(h)}</h2>\n{content}</section>" for h, content in sections)
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
body {{ font-family: system-ui, sans-serif; max-width: 1500px; margin: 1.5em auto; padding: 0 1.5em;
  color: #222; }}
section {{ margin-bottom: 2em; }} h2 {{ border-bottom: 1px solid #ddd; padding-bottom: .2em; }}
table {{ border-collapse: collapse; width: 100%; }}
td, th {{ padding: .3em .8em; border-bottom: 1px solid #eee; text-align: left; vertical-align: top; }}
th {{ white-space: nowrap; }} td.note {{ color: #555; font-size: .9em; }}
figure {{ margin: 0; }} figure img {{ width: 100%; height: auto; }} img.pixels {{ image-rendering: pixelated; }}
.warn {{ color: #b00; font-weight: bold; }} figcaption {{ font-size: .85em; color: #444; margin-top: .3em; }}
.row, .grid {{ display: grid; gap: 1.5em; align-items: start;
  grid-template-columns: repeat(auto-fit, minmax(min(100%, 420px), 1fr)); }}
.wide {{ grid-column: 1 / -1; }}
</style></head><body><h1>{html.escape(title)}</h1>
{body}
</body></html>
"""
    from jaxvae.rundir.writers import atomic_write_text

    atomic_write_text(path, page)


def img_tag(png: bytes, caption: str = "", width: int | None = None, *, pixels: bool = False) -> str:
    """A figure with the PNG inline; it fills its grid cell (``width`` in px caps it); ``pixels``: an image grid
    of data, enlarged without smoothing."""
    import html

    style = f' style="max-width:{width}px"' if width else ""
    cls = ' class="pixels"' if pixels else ""
    cap = f"<figcaption>{html.escape(caption)}</figcaption>" if caption else ""
    return f'<figure><img src="{data_uri(png)}"{cls}{style} alt="{html.escape(caption)}">{cap}</figure>'


def text_block(texts: list[str], ncols: int = 8, caption: str = "") -> str:
    """Decoded texts (token data) as an HTML ``<pre>`` block, ``ncols`` to a row, padded into columns."""
    import html

    width = max((len(t) for t in texts), default=0) + 2
    rows = ["".join(t.ljust(width) for t in texts[i:i + ncols]).rstrip() for i in range(0, len(texts), ncols)]
    cap = f"<figcaption>{html.escape(caption)}</figcaption>" if caption else ""
    return f'<figure><pre>{html.escape(chr(10).join(rows))}</pre>{cap}</figure>'


def html_table(rows: Sequence[tuple[str, ...]], header: Sequence[str] = ()) -> str:
    """A table of ``(name, value)`` or ``(name, value, what it means)`` rows."""
    import html

    head = "<tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in header) + "</tr>" if header else ""
    body = "".join("<tr><th>" + html.escape(row[0]) + "</th><td>" + html.escape(row[1]) + "</td>"
                   + "".join(f'<td class="note">{html.escape(n)}</td>' for n in row[2:]) + "</tr>" for row in rows)
    return f"<table>{head}{body}</table>"
