"""A stacked bar per block: each block's mean time, split by its layers."""

from __future__ import annotations

from pathlib import Path


def draw(result, path: str | Path, title: str, top_blocks: int = 20) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    blocks = list(result.blocks["block"].head(top_blocks))
    figure, axes = plt.subplots(figsize=(8, max(3.0, 0.35 * len(blocks) + 1.5)))
    for position, block in enumerate(reversed(blocks)):
        left = 0.0
        layers = result.layers[result.layers["block"] == block].sort_values("mean_ms", ascending=False)
        for _, layer in layers.iterrows():
            axes.barh(position, layer["mean_ms"], left=left, height=0.7, edgecolor="white", linewidth=0.5)
            left += layer["mean_ms"]
    axes.set_yticks(range(len(blocks)), list(reversed(blocks)))
    axes.set_xlabel("mean time per run (ms), split by layer")
    axes.set_title(title, fontsize=10)
    axes.grid(axis="x", alpha=0.3)
    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path
