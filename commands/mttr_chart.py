"""The weekly report's chart: median and p90 time to resolve, and incident count, over 12 weeks.

matplotlib (Agg, no screen) draws it as a PNG; it is imported only when a chart is drawn, so the
bot's start-up does not pay for it.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from typing import Any


def chart_png(series: Sequence[dict[str, Any]], title: str) -> bytes:
    """`series`: one dict per week, oldest first, with `week`, `resolved`, `median` and `p90` (seconds)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    worst = max((week["p90"] or 0 for week in series), default=0)
    unit, divisor = ("hours", 3600) if worst >= 3 * 3600 else ("minutes", 60)
    labels = [week["week"].split("-")[-1] for week in series]
    positions = range(len(series))

    figure = Figure(figsize=(10, 4.6), dpi=110)
    counts = figure.add_subplot()
    durations = counts.twinx()
    counts.bar(positions, [week["resolved"] for week in series], color="#d9dde3", width=0.6,
               label="incidents resolved", zorder=1)
    counts.set_ylabel("incidents resolved")
    counts.yaxis.set_major_locator(MaxNLocator(integer=True))
    counts.set_ylim(0, max(3, max((week["resolved"] for week in series), default=0) * 1.25))

    def line(key: str) -> list[float]:
        return [week[key] / divisor if week[key] is not None else math.nan for week in series]

    durations.plot(positions, line("median"), color="#1f6feb", linewidth=2.2, marker="o", label="median")
    durations.plot(positions, line("p90"), color="#cf222e", linewidth=2.2, marker="o", linestyle="--", label="p90")
    durations.set_ylabel(f"time to resolve ({unit})")
    durations.set_ylim(0, max(1.0, worst / divisor * 1.2))
    # The durations are what the chart is about: draw them over the bars, keep their axis on the left.
    durations.set_zorder(counts.get_zorder() + 1)
    durations.patch.set_visible(False)
    durations.yaxis.tick_left()
    durations.yaxis.set_label_position("left")
    counts.yaxis.tick_right()
    counts.yaxis.set_label_position("right")

    counts.set_xticks(list(positions), labels)
    counts.set_xlabel("ISO week")
    counts.grid(axis="y", color="#eeeeee", zorder=0)
    figure.suptitle(title, fontsize=13)
    handles = durations.get_legend_handles_labels()[0] + counts.get_legend_handles_labels()[0]
    durations.legend(handles, [str(h.get_label()) for h in handles], loc="upper left", frameon=False)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()
