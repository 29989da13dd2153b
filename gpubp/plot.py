"""Loss and accuracy curves of a training run, as a PNG (needs the `plot` extra: matplotlib)."""

from __future__ import annotations

import io

from . import atomic
from .errors import MissingDependency


def require_matplotlib():
    try:
        import matplotlib

        matplotlib.use("Agg")  # files only: no window, no display needed
        import matplotlib.pyplot as plt
    except ImportError:
        raise MissingDependency("plotting needs matplotlib: pip install 'gpubp[plot]'") from None
    return plt


def plot_history(history, path, title: str | None = None):
    """Draw loss (left) and accuracy (right) per epoch, training and validation, into `path`."""
    plt = require_matplotlib()
    from matplotlib import ticker

    has_accuracy = any(a is not None for a in history.accuracy)
    has_layers = any(layers for layers in getattr(history, "layers", []))
    count = 1 + has_accuracy + has_layers
    fig, axes = plt.subplots(1, count, figsize=(5 * count + 0.5, 4), squeeze=False)
    panels = [("loss", "val_loss", "loss")] + ([("accuracy", "val_accuracy", "accuracy")] if has_accuracy else [])
    if has_layers:
        _plot_speeds(axes[0][-1], history, ticker)
    for ax, (train_key, val_key, label) in zip(axes[0], panels):
        for key, name in ((train_key, "training"), (val_key, "validation")):
            points = [(e, v) for e, v in zip(history.epoch, getattr(history, key)) if v is not None]
            if points:
                ax.plot(*zip(*points), marker="o", markersize=3, label=name)
        ax.xaxis.set_major_locator(ticker.MaxNLocator(integer=True))
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend()
    if has_accuracy:
        axes[0][1].yaxis.set_major_formatter(ticker.PercentFormatter(1.0))
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    return atomic.write_bytes(path, buffer.getvalue())


def _plot_speeds(ax, history, ticker):
    """Each layer's speed of learning per epoch, on a log scale (Nielsen's figure of the vanishing gradient)."""
    epochs = [(e, layers) for e, layers in zip(history.epoch, history.layers) if layers]
    count = len(epochs[0][1])
    for l in range(count):
        label = f"layer {l}" + (" (output)" if l == count - 1 else "")
        ax.plot([e for e, _ in epochs], [layers[l]["speed"] for _, layers in epochs], label=label)
    ax.set_yscale("log")
    ax.xaxis.set_major_locator(ticker.MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel("speed of learning ‖∂E/∂b‖")
    ax.grid(alpha=0.3, which="both")
    ax.legend()
