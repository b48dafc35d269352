"""Pictures of a run: image grids of reconstructions and samples, written as PNG (Pillow, atomic)."""

from __future__ import annotations

import math
import os

import numpy as np

from jaxvae.writers import atomic_write_bytes


def image_grid(images: np.ndarray, *, ncols: int | None = None, pad: int = 1, min_tile: int = 32) -> np.ndarray:
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


def reconstruction_grid(originals: np.ndarray, reconstructions: np.ndarray, ncols: int = 8) -> np.ndarray:
    """Alternating rows of originals and their reconstructions (``[N, H, W, C]`` each)."""
    ncols = max(1, min(ncols, originals.shape[0]))  # fewer examples than columns: one row of each
    n = originals.shape[0] - originals.shape[0] % ncols
    rows = []
    for start in range(0, n, ncols):
        rows.append(originals[start:start + ncols])
        rows.append(reconstructions[start:start + ncols])
    return image_grid(np.concatenate(rows), ncols=ncols)


def plot_rate_distortion(models: list[dict], path: str | os.PathLike, *, title: str = "") -> None:
    r"""Rate (KL) vs distortion (reconstruction loss), one point per model, with ELBO iso-lines.

    On these axes :math:`-\mathrm{ELBO} = D + R`, so models on one line of slope -1 have the same ELBO
    (Alemi et al. 2018, "Fixing a Broken ELBO"). Failed (non-finite) models are listed in the title area.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [m for m in models if not m.get("failed")]
    failed = [m for m in models if m.get("failed")]
    fig, ax = plt.subplots(figsize=(6.4, 4.8), dpi=120)
    if ok:
        rate = np.array([m["test_kl"] for m in ok])
        dist = np.array([m["test_recon"] for m in ok])
        lo, hi = 0.0, max(rate.max(), 1e-3) * 1.15
        for level in np.unique(np.round(np.quantile(rate + dist, [0.0, 0.5, 1.0]), 1)):
            r = np.linspace(lo, hi, 50)
            ax.plot(r, level - r, color="0.8", lw=0.8, zorder=0)
            ax.annotate(f"-ELBO={level:g}", (r[5], level - r[5]), fontsize=7, color="0.5")
        sc = ax.scatter(rate, dist, c=np.arange(len(ok)), cmap="viridis", zorder=2)
        for m, x, y in zip(ok, rate, dist):
            ax.annotate(m["label"], (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
        del sc
        ax.set_xlim(lo, hi)
        ax.set_ylim(dist.min() - 0.1 * abs(np.ptp(dist) + 1), dist.max() + 0.1 * abs(np.ptp(dist) + 1))
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
    import io

    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def kl_bar_chart(kl_per_dim: list[float], active: list[bool], title: str = "KL per dimension") -> bytes:
    """Bars of the data-averaged KL per latent dimension; inactive units in grey."""
    plt = _pyplot()
    # One bar per dimension up to ~40 dimensions; wider latent spaces (a top-down hierarchy's thousands) get a
    # fixed-width figure with thin bars instead of an image as wide as the dimension count.
    fig, ax = plt.subplots(figsize=(min(14.0, max(4.0, 0.35 * len(kl_per_dim) + 1.5)), 2.8))
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
    plt = _pyplot()
    names = list(kl_per_group)
    fig, ax = plt.subplots(figsize=(max(4.0, 0.8 * len(names) + 2.0), 2.8))
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
    plt = _pyplot()
    means = np.asarray(means, np.float64)
    if means.shape[1] == 1:
        xy, axes = np.concatenate([means, np.zeros_like(means)], 1), ("z0", "")
    elif means.shape[1] == 2:
        xy, axes = means, ("z0", "z1")
    else:
        centred = means - means.mean(0)
        _, _, vt = np.linalg.svd(centred, full_matrices=False)
        xy, axes = means @ vt[:2].T, ("principal axis 1", "principal axis 2")
    fig, ax = plt.subplots(figsize=(4.6, 4.2))
    ax.scatter(xy[:, 0], xy[:, 1], s=4, c=labels if labels is not None else "tab:blue",
               cmap="tab10" if labels is not None else None, alpha=0.6)
    if outliers is not None and len(outliers):
        ax.scatter(xy[outliers, 0], xy[outliers, 1], s=30, facecolors="none", edgecolors="red", label="outliers")
        ax.legend(fontsize=7, loc="upper right")
    t = np.linspace(0, 2 * np.pi, 200)
    for r in (1, 2, 3):
        ax.plot(r * np.cos(t), r * np.sin(t), color="k", lw=0.6, alpha=0.5)
    ax.set_xlabel(axes[0])
    ax.set_ylabel(axes[1])
    ax.set_aspect("equal", adjustable="datalim")
    ax.set_title("posterior means (colour: label) and prior contours", fontsize=9)
    return figure_png(fig)


def write_html(path: str | os.PathLike, title: str, sections: list[tuple[str, str]]) -> None:
    """A self-contained HTML page (images inline as data URIs); ``sections`` are ``(heading, html)`` pairs."""
    import html

    body = "\n".join(f"<section><h2>{html.escape(h)}</h2>\n{content}</section>" for h, content in sections)
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
body {{ font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; color: #222; }}
section {{ margin-bottom: 2em; }} h2 {{ border-bottom: 1px solid #ddd; padding-bottom: .2em; }}
table {{ border-collapse: collapse; }}
td, th {{ padding: .2em .8em; border-bottom: 1px solid #eee; text-align: left; }}
img {{ max-width: 100%; image-rendering: pixelated; }} .warn {{ color: #b00; font-weight: bold; }}
.row {{ display: flex; gap: 2em; flex-wrap: wrap; align-items: flex-start; }} figcaption {{ font-size: .85em; }}
</style></head><body><h1>{html.escape(title)}</h1>
{body}
</body></html>
"""
    from jaxvae.writers import atomic_write_text

    atomic_write_text(path, page)


def img_tag(png: bytes, caption: str = "", width: int | None = None) -> str:
    import html

    style = f' style="width:{width}px"' if width else ""
    cap = f"<figcaption>{html.escape(caption)}</figcaption>" if caption else ""
    return f'<figure><img src="{data_uri(png)}"{style} alt="{html.escape(caption)}">{cap}</figure>'


def text_block(texts: list[str], ncols: int = 8, caption: str = "") -> str:
    """Decoded texts (token data) as an HTML ``<pre>`` block, ``ncols`` to a row, padded into columns."""
    import html

    width = max((len(t) for t in texts), default=0) + 2
    rows = ["".join(t.ljust(width) for t in texts[i:i + ncols]).rstrip() for i in range(0, len(texts), ncols)]
    cap = f"<figcaption>{html.escape(caption)}</figcaption>" if caption else ""
    return f'<figure><pre>{html.escape(chr(10).join(rows))}</pre>{cap}</figure>'


def html_table(rows: list[tuple[str, str]]) -> str:
    import html

    return "<table>" + "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in rows) + \
        "</table>"
