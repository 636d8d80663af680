"""Reading ``inertia.csv`` and showing it: terminal heatmaps, per-layer tables, a PNG figure.

A heatmap has one row per conv/linear weight in network order and one column per bucket of
rounds (as many rounds per bucket as it takes to fit the terminal). Several runs are shown side
by side on one row per layer (layers aligned by name), or one under another when the terminal
is too narrow, and each later run gets a difference view against the first one.
"""

from __future__ import annotations

import io
import itertools
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml
from rich.console import Console, Group, RenderableType
from rich.table import Table
from rich.text import Text

from fedlab_cli.atomic import atomic_write_bytes
from fedlab_cli.engine.rundir import INERTIA, SPEC, RunDir
from fedlab_cli.errors import FedlabError

METRICS = ("cos_ref", "cos_prev", "rel_update", "grad_norm")
FIGURE_SUFFIXES = ("png", "pdf", "svg")
"""Figure formats ``--png`` writes (matplotlib's Agg backend, picked by the file suffix)."""
DEFAULT_THRESHOLD = 0.95
VIRIDIS = ("#440154", "#46327e", "#365c8d", "#277f8e", "#1fa187", "#4ac16d", "#a0da39", "#fde725")
SEQUENTIAL_GLYPHS = "▁▂▃▄▅▆▇█"
DIVERGING = ("#2166ac", "#67a9cf", "#d1e5f0", "#f7f7f7", "#fddbc7", "#ef8a62", "#b2182b")
DIVERGING_GLYPHS = "▼▾▿·▵▴▲"
MIN_CELLS = 12  # fewer round columns than this per run and the runs are stacked instead


# ---------------------------------------------------------------- reading


@dataclass
class RunInertia:
    """One run's inertia table as ``[layers, rounds]`` arrays (NaN where undefined)."""

    path: Path
    method: str
    layers: list[str]
    roles: dict[str, str]
    rounds: np.ndarray
    ref_rounds: list[int]
    cos_ref: dict[int, np.ndarray]
    other: dict[str, np.ndarray]
    label: str = ""

    def matrix(self, metric: str, ref_round: int) -> np.ndarray:
        return self.cos_ref[ref_round] if metric == "cos_ref" else self.other[metric]


def load_run(path: Path) -> RunInertia:
    """Read a run directory's inertia data, or fail with one line saying what is missing."""
    run_dir = RunDir(path)
    if not run_dir.is_run:
        raise FedlabError(f"{str(path)!r} is not a run directory (no {SPEC})")
    if not (path / INERTIA).is_file():
        raise FedlabError(f"{str(path)!r} has no inertia data (no {INERTIA})")
    found = run_dir.read_inertia()
    if found.first_damage is not None:
        raise FedlabError(
            f"{path / INERTIA}: {found.first_damage.problem}; the report would be wrong — "
            "fix or remove that line"
        )
    rows = found.records
    if not rows:
        raise FedlabError(f"{str(path)!r} has no inertia data yet ({INERTIA} has no rows)")
    layers = list(dict.fromkeys(r["layer"] for r in rows))
    rounds = sorted({int(r["round"]) for r in rows})
    refs = sorted({int(r["ref_round"]) for r in rows})
    li = {name: i for i, name in enumerate(layers)}
    ri = {t: j for j, t in enumerate(rounds)}
    blank = np.full((len(layers), len(rounds)), np.nan)
    cos_ref = {ref: blank.copy() for ref in refs}
    other = {m: blank.copy() for m in METRICS[1:]}
    for r in rows:
        i, j = li[r["layer"]], ri[int(r["round"])]
        cos_ref[int(r["ref_round"])][i, j] = _number(r["cos_ref"])
        for m in other:
            other[m][i, j] = _number(r[m])
    method = _method_name(path / SPEC)
    roles = {r["layer"]: r["role"] for r in rows}
    return RunInertia(path, method, layers, roles, np.array(rounds), refs, cos_ref, other)


def _method_name(spec_path: Path) -> str:
    """The method named in a run's spec.yaml, or ``?`` when the file cannot be read."""
    try:
        spec = yaml.safe_load(spec_path.read_bytes().decode("utf-8"))
        method = spec.get("method") if isinstance(spec, dict) else None
        return str(method.get("name", "?")) if isinstance(method, dict) else "?"
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return "?"


def load_runs(paths: Sequence[Path]) -> list[RunInertia]:
    """Several runs, labelled by method (and directory name, then position, where they clash)."""
    runs = [load_run(Path(p)) for p in paths]
    methods = [r.method for r in runs]
    for run in runs:
        run.label = (
            run.method if methods.count(run.method) == 1 else f"{run.method}:{run.path.name}"
        )
    labels = [r.label for r in runs]
    for k, run in enumerate(runs):
        if labels.count(run.label) > 1:
            run.label = f"{run.label}#{k + 1}"
    return runs


def _number(cell: str) -> float:
    return float(cell) if cell else math.nan


def pick_ref_round(runs: Sequence[RunInertia], ref_round: int | None) -> int:
    """The reference round to show: the given one (every run must have it), else the first."""
    if ref_round is None:
        return runs[0].ref_rounds[0]
    for run in runs:
        if ref_round not in run.ref_rounds:
            raise FedlabError(
                f"--ref-round: {run.label} recorded reference rounds {run.ref_rounds}, "
                f"not {ref_round}"
            )
    return ref_round


# ---------------------------------------------------------------- summaries


def onset(values: np.ndarray, rounds: np.ndarray, threshold: float) -> int | None:
    """First round from which ``values`` stay above ``threshold`` to the end; None if never."""
    above = np.nan_to_num(values, nan=-np.inf) > threshold
    if not len(above) or not above[-1]:
        return None
    below = np.flatnonzero(~above)
    return int(rounds[below[-1] + 1]) if len(below) else int(rounds[0])


def middle_mean(run: RunInertia, matrix: np.ndarray) -> np.ndarray:
    """The per-round mean over the middle layers (the layers that stop moving in the paper)."""
    rows = [i for i, n in enumerate(run.layers) if run.roles[n] == "middle"]
    return _nanmean(matrix[rows], axis=0) if rows else np.full(matrix.shape[1], np.nan)


@dataclass
class LayerSummary:
    layer: str
    role: str
    final: float  # the chosen metric at the last round
    final_cos_ref: float
    onset: int | None


def summarize(run: RunInertia, metric: str, ref_round: int, threshold: float) -> list[LayerSummary]:
    """One entry per layer, then one for the middle-layer mean (layer ``middle_mean``)."""
    values, cos = run.matrix(metric, ref_round), run.cos_ref[ref_round]
    out = [
        LayerSummary(
            name, run.roles[name], values[i, -1], cos[i, -1], onset(cos[i], run.rounds, threshold)
        )
        for i, name in enumerate(run.layers)
    ]
    mid_cos = middle_mean(run, cos)
    mid_values = middle_mean(run, values)
    out.append(
        LayerSummary(
            "middle_mean", "middle", mid_values[-1], mid_cos[-1],
            onset(mid_cos, run.rounds, threshold),
        )
    )  # fmt: skip
    return out


def to_json(runs: Sequence[RunInertia], metric: str, ref_round: int, threshold: float) -> dict:
    """Everything the terminal report shows, for scripts (null where undefined)."""
    return {
        "metric": metric,
        "ref_round": ref_round,
        "threshold": threshold,
        "runs": [
            {
                "run_dir": str(run.path),
                "label": run.label,
                "method": run.method,
                "rounds": run.rounds.tolist(),
                "layers": [
                    {
                        "layer": s.layer,
                        "role": s.role,
                        "final": _json_float(s.final),
                        "final_cos_ref": _json_float(s.final_cos_ref),
                        "onset": s.onset,
                    }
                    for s in summarize(run, metric, ref_round, threshold)
                ],
                "values": {
                    name: [_json_float(v) for v in row]
                    for name, row in zip(run.layers, run.matrix(metric, ref_round), strict=True)
                },
            }
            for run in runs
        ],
    }


def to_csv(runs: Sequence[RunInertia], metric: str, ref_round: int, threshold: float) -> str:
    """The per-layer table of every run as CSV (empty cells where undefined)."""
    lines = ["run_dir,label,layer,role,metric,final,final_cos_ref,onset"]
    for run in runs:
        for s in summarize(run, metric, ref_round, threshold):
            cells = [
                str(run.path), run.label, s.layer, s.role, metric, _csv_float(s.final),
                _csv_float(s.final_cos_ref), "" if s.onset is None else str(s.onset),
            ]  # fmt: skip
            lines.append(",".join(_csv_quote(c) for c in cells))
    return "\n".join(lines) + "\n"


def _json_float(value: float) -> float | None:
    return None if not math.isfinite(value) else float(value)


def _csv_float(value: float) -> str:
    return "" if math.isnan(value) else f"{value:.10g}"


def _csv_quote(cell: str) -> str:
    return f'"{cell.replace(chr(34), chr(34) * 2)}"' if any(c in cell for c in ',"\n') else cell


def _nanmean(a: np.ndarray, axis: int) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN slices stay NaN
        return np.nanmean(a, axis=axis)


# ---------------------------------------------------------------- colour scales


@dataclass(frozen=True)
class Scale:
    """Bins over value ``edges`` (ascending), each with a colour, a glyph and a legend label."""

    edges: np.ndarray
    colours: tuple[str, ...]
    glyphs: str
    labels: tuple[str, ...]

    def level(self, value: float) -> int | None:
        if not math.isfinite(value):
            return None
        return int(
            np.clip(
                np.searchsorted(self.edges[1:-1], value, side="right"), 0, len(self.colours) - 1
            )
        )


def metric_scale(metric: str, values: np.ndarray) -> Scale:
    """Cosines are binned on log(1 − cos) ("how many nines"), norms on a log scale."""
    finite = values[np.isfinite(values)]
    bins = len(VIRIDIS)
    if metric in ("cos_ref", "cos_prev"):
        gaps = 1.0 - finite
        lo, hi = _log_span(gaps[gaps > 1e-9])  # the reference round itself (cos 1) is left out
        edges = 1.0 - np.geomspace(hi, lo, bins + 1)
        fmt = f".{min(8, max(2, math.ceil(-math.log10(lo)) + 1))}f"
    else:
        lo, hi = _log_span(finite[finite > 0])
        edges = np.geomspace(lo, hi, bins + 1)
        fmt = ".2g"
    labels = tuple(f"{a:{fmt}}…{b:{fmt}}" for a, b in itertools.pairwise(edges))
    return Scale(edges, VIRIDIS, SEQUENTIAL_GLYPHS, labels)


def difference_scale(values: np.ndarray) -> Scale:
    """A symmetric diverging scale around 0 for ``run − first run``."""
    finite = np.abs(values[np.isfinite(values)])
    top = float(finite.max()) if finite.size and finite.max() > 0 else 1e-6
    edges = np.linspace(-top, top, len(DIVERGING) + 1)
    labels = tuple(f"{a:+.2g}…{b:+.2g}" for a, b in itertools.pairwise(edges))
    return Scale(edges, DIVERGING, DIVERGING_GLYPHS, labels)


def _log_span(positive: np.ndarray) -> tuple[float, float]:
    """Bounds of a log scale over positive values, at least one decade wide."""
    lo = float(positive.min()) if positive.size else 1e-3
    hi = float(positive.max()) if positive.size else 1.0
    return lo, max(hi, lo * 10)


# ---------------------------------------------------------------- terminal heatmaps


def buckets(rounds: np.ndarray, cells: int) -> list[np.ndarray]:
    """Column indices grouped into at most ``cells`` consecutive buckets of near-equal size."""
    count = max(1, min(cells, len(rounds)))
    return [b for b in np.array_split(np.arange(len(rounds)), count) if len(b)]


def bucketed(matrix: np.ndarray, groups: list[np.ndarray]) -> np.ndarray:
    """The mean over each bucket's rounds (NaN rounds ignored)."""
    return np.stack([_nanmean(matrix[:, g], axis=1) for g in groups], axis=1)


@dataclass
class Panel:
    """One heatmap block: a title, bucketed rows by layer name (a missing name: blank cells)."""

    title: str
    rows: dict[str, np.ndarray]
    rounds: np.ndarray
    groups: list[np.ndarray]
    scale: Scale
    cell_width: int = 1


def _cell(value: float, scale: Scale, colour: bool, width: int) -> Text:
    level = scale.level(value)
    if level is None:
        return Text(("·" if colour else " ").ljust(width), style="dim")
    if colour:
        return Text(" " * width, style=f"on {scale.colours[level]}")
    return Text(scale.glyphs[level] * width)


def _axis(panel: Panel, width: int) -> Text:
    """Round numbers under the columns, at bucket starts, spaced so that they do not collide."""
    line = [" "] * (len(panel.groups) * width)
    pos = 0
    for k, g in enumerate(panel.groups):
        start = k * width
        label = str(int(panel.rounds[g[0]]))
        if start >= pos and start + len(label) <= len(line):
            line[start : start + len(label)] = label
            pos = start + len(label) + 2
    return Text("".join(line), style="dim")


def render_heatmap(
    panels: Sequence[Panel], layers: list[str], roles: dict[str, str], console: Console
) -> Text:
    """Panels side by side, one line per layer in ``layers`` order, with round axes."""
    colour = console.color_system is not None
    name_w = max([len(n) for n in layers] + [5])
    out = Text()
    gap = "  "
    prefix = " " * (name_w + 8)
    widths = [p.cell_width for p in panels]
    header = Text(prefix)
    for p, w in zip(panels, widths, strict=True):
        block = len(p.groups) * w
        header.append(p.title[:block].ljust(block), style="bold")
        header.append(gap)
    out.append_text(header)
    out.append("\n")
    for name in layers:
        line = Text(name.ljust(name_w) + " ")
        line.append(roles.get(name, "").ljust(7), style="dim")
        for p, w in zip(panels, widths, strict=True):
            row = p.rows.get(name)
            for k in range(len(p.groups)):
                value = math.nan if row is None else row[k]
                line.append_text(_cell(value, p.scale, colour, w))
            line.append(gap)
        out.append_text(line)
        out.append("\n")
    axis = Text(prefix)
    for p, w in zip(panels, widths, strict=True):
        axis.append_text(_axis(p, w))
        axis.append(gap)
    out.append_text(axis)
    return out


def legend(scale: Scale, console: Console, title: str) -> Text:
    """Swatch (or glyph) and value range of every bin, wrapped between items only."""
    colour = console.color_system is not None
    items = []
    for c, g, label in zip(scale.colours, scale.glyphs, scale.labels, strict=True):
        item = Text("  ", style=f"on {c}") if colour else Text(g)
        items.append(item.append(f" {label}"))
    items.append(Text("· undefined" if colour else "blank: undefined", style="dim"))
    text = Text(f"{title}:", style="bold")
    used = len(text)
    for item in items:
        if used + 2 + len(item) > console.width:
            text.append("\n   ")
            used = 3
        else:
            text.append("  ")
            used += 2
        text.append_text(item)
        used += len(item)
    return text


def _fit_panels(
    runs: Sequence[RunInertia],
    matrices: Sequence[np.ndarray],
    titles: Sequence[str],
    scale: Scale,
    cells: int,
    layers_of: Sequence[list[str]],
) -> list[Panel]:
    panels = []
    for run, matrix, title, layers in zip(runs, matrices, titles, layers_of, strict=True):
        groups = buckets(run.rounds, cells)
        values = bucketed(matrix, groups)
        rows = dict(zip(layers, values, strict=True))
        width = max(1, min(3, cells // len(groups)))
        panels.append(Panel(title, rows, run.rounds, groups, scale, width))
    return panels


def union_layers(runs: Sequence[RunInertia]) -> tuple[list[str], dict[str, str]]:
    """Every run's layers, the first run's network order first; roles by name."""
    layers: dict[str, str] = {}
    for run in runs:
        for name in run.layers:
            layers.setdefault(name, run.roles[name])
    return list(layers), layers


def difference(
    base: RunInertia, other: RunInertia, metric: str, ref_round: int
) -> tuple[list[str], np.ndarray, np.ndarray]:
    """``other − base`` on the layers both have (aligned by name, base order) and common rounds."""
    layers = [n for n in base.layers if n in set(other.layers)]
    rounds = np.intersect1d(base.rounds, other.rounds)
    a, b = base.matrix(metric, ref_round), other.matrix(metric, ref_round)
    ai = np.searchsorted(base.rounds, rounds)
    bi = np.searchsorted(other.rounds, rounds)
    rows_a = [base.layers.index(n) for n in layers]
    rows_b = [other.layers.index(n) for n in layers]
    return layers, rounds, b[np.ix_(rows_b, bi)] - a[np.ix_(rows_a, ai)]


def report(
    runs: Sequence[RunInertia],
    console: Console,
    metric: str = "cos_ref",
    ref_round: int | None = None,
    threshold: float = DEFAULT_THRESHOLD,
) -> list[RenderableType]:
    """Heatmap(s), legend, difference view(s) and the per-layer table, ready to print."""
    ref = pick_ref_round(runs, ref_round)
    layers, roles = union_layers(runs)
    matrices = [run.matrix(metric, ref) for run in runs]
    scale = metric_scale(metric, np.concatenate([m.ravel() for m in matrices]))
    what = f"{metric} vs round {ref}" if metric == "cos_ref" else metric
    label_w = max(len(n) for n in layers) + 8
    room = console.width - label_w - 2 * len(runs) - 1
    side_by_side = room // len(runs) >= min(MIN_CELLS, max(len(r.rounds) for r in runs))
    out: list[RenderableType] = [Text(f"Inertia heatmap — {what} (rows: layers in network order)")]
    titles = [f"{r.label}" for r in runs]
    if side_by_side:
        cells = room // len(runs)
        panels = _fit_panels(runs, matrices, titles, scale, cells, [r.layers for r in runs])
        out.append(render_heatmap(panels, layers, roles, console))
    else:
        cells = console.width - label_w - 3
        for run, matrix, title in zip(runs, matrices, titles, strict=True):
            panel = _fit_panels([run], [matrix], [title], scale, cells, [run.layers])
            out.append(render_heatmap(panel, run.layers, run.roles, console))
    out.append(legend(scale, console, what))
    for other in runs[1:]:
        out.extend(difference_view(runs[0], other, metric, ref, console))
    out.append(layer_table(runs, metric, ref, threshold))
    return out


def difference_view(
    base: RunInertia, other: RunInertia, metric: str, ref_round: int, console: Console
) -> list[RenderableType]:
    """``other − base`` per layer (aligned by name) and round, on its own diverging scale."""
    layers, rounds, diff = difference(base, other, metric, ref_round)
    title = f"Difference — {other.label} − {base.label} ({metric}), layers aligned by name"
    only = sorted(set(base.layers) ^ set(other.layers))
    if not layers or not len(rounds):
        return [Text(f"{title}: no layer and round in common", style="yellow")]
    scale = difference_scale(diff)
    label_w = max(len(n) for n in layers) + 8
    cells = console.width - label_w - 3
    proxy = RunInertia(
        other.path, other.method, layers, base.roles, rounds, [ref_round], {}, {}, other.label
    )
    panels = _fit_panels([proxy], [diff], ["Δ"], scale, cells, [layers])
    out: list[RenderableType] = [
        Text(title),
        render_heatmap(panels, layers, base.roles, console),
        legend(scale, console, f"Δ {metric}"),
    ]
    if only:
        out.append(Text(f"in one run only (not compared): {', '.join(only)}", style="dim"))
    return out


def layer_table(runs: Sequence[RunInertia], metric: str, ref_round: int, threshold: float) -> Group:
    """Per layer and run: final value, final cos_ref, inertia onset; the middle mean last."""
    table = Table(
        title=f"Per layer (cos_ref vs round {ref_round}, onset threshold {threshold})",
        title_justify="left",
    )
    table.add_column("layer", no_wrap=True)
    table.add_column("role")
    summaries = [{s.layer: s for s in summarize(r, metric, ref_round, threshold)} for r in runs]
    for run in runs:
        tag = f"\n{run.label}" if len(runs) > 1 else ""
        if metric != "cos_ref":
            table.add_column(f"final {metric}{tag}", justify="right")
        table.add_column(f"final cos_ref{tag}", justify="right")
        table.add_column(f"onset{tag}", justify="right")
    layers, roles = union_layers(runs)
    for name in [*layers, "middle_mean"]:
        cells: list[str] = []
        for s in (by.get(name) for by in summaries):
            if metric != "cos_ref":
                cells.append(_fmt(s.final if s else math.nan, metric))
            cells.append(_fmt(s.final_cos_ref if s else math.nan, "cos_ref"))
            cells.append("—" if s is None or s.onset is None else str(s.onset))
        if name == "middle_mean":
            table.add_section()
            table.add_row("middle mean", "middle", *cells, style="bold")
        else:
            table.add_row(name, roles[name], *cells)
    note = Text(
        f"onset: first round from which cos_ref stays above {threshold} to the last round "
        f"(— never); cos_ref is undefined before round {ref_round}",
        style="dim",
    )
    return Group(table, note)


def _fmt(value: float, metric: str) -> str:
    if not math.isfinite(value):
        return "—"
    return f"{value:.4f}" if metric in ("cos_ref", "cos_prev") else f"{value:.3g}"


# ---------------------------------------------------------------- PNG figure


def write_png(
    runs: Sequence[RunInertia],
    path: Path,
    metric: str = "cos_ref",
    ref_round: int | None = None,
    threshold: float = DEFAULT_THRESHOLD,
) -> None:
    """A heatmap and a per-layer line plot per run; with several runs, a difference row too."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ref = pick_ref_round(runs, ref_round)
    matrices = [run.matrix(metric, ref) for run in runs]
    finite = np.concatenate([m[np.isfinite(m)] for m in matrices])
    vmin, vmax = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    log = metric in ("rel_update", "grad_norm")
    rows = len(runs) + (len(runs) > 1)
    height = max(2.8, 0.32 * max(len(r.layers) for r in runs) + 1.6)
    fig, axes = plt.subplots(
        rows, 2, figsize=(12, height * rows), squeeze=False, gridspec_kw={"width_ratios": [1, 1]}
    )
    what = f"cos to round {ref}" if metric == "cos_ref" else metric
    for row, (run, matrix) in enumerate(zip(runs, matrices, strict=True)):
        _png_heatmap(fig, axes[row, 0], run, matrix, "viridis", vmin, vmax, what)
        undefined = " (grey: undefined)" if metric == "cos_ref" and row == 0 else ""
        axes[row, 0].set_title(f"{run.label} — {what}{undefined}", loc="left")
        _png_lines(axes[row, 1], run, matrix, metric, threshold, log)
        axes[row, 1].set_title(f"{run.label} — per layer", loc="left")
    if len(runs) > 1:
        base, other = runs[0], runs[1]
        layers, rounds, diff = difference(base, other, metric, ref)
        top = float(np.nanmax(np.abs(diff))) if np.isfinite(diff).any() else 1.0
        proxy = RunInertia(base.path, base.method, layers, base.roles, rounds, [ref], {}, {})
        _png_heatmap(fig, axes[-1, 0], proxy, diff, "RdBu_r", -top, top, f"Δ {metric}")
        axes[-1, 0].set_title(f"{other.label} − {base.label} (layers aligned by name)", loc="left")
        ax = axes[-1, 1]
        for run, matrix in zip(runs, matrices, strict=True):
            ax.plot(run.rounds, middle_mean(run, matrix), lw=2, label=run.label)
        _png_axes(ax, metric, threshold, log)
        ax.set_title("middle-layer mean", loc="left")
        ax.legend(fontsize=8, frameon=False, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    buffer = io.BytesIO()  # then one atomic write: a failed save never leaves half a figure
    try:
        fig.savefig(buffer, dpi=150, format=Path(path).suffix.lower().lstrip(".") or "png")
    finally:
        plt.close(fig)
    atomic_write_bytes(Path(path), buffer.getvalue())


_ROLE_MARK = {"first": "first", "middle": "mid", "last": "last"}


def _png_heatmap(fig, ax, run: RunInertia, matrix, cmap, vmin, vmax, label) -> None:
    from matplotlib.ticker import MaxNLocator

    rounds = run.rounds
    half = 0.5 if len(rounds) < 2 else (rounds[1] - rounds[0]) / 2
    extent = (rounds[0] - half, rounds[-1] + half, len(run.layers) - 0.5, -0.5)
    masked = np.ma.masked_invalid(matrix)
    image = ax.imshow(
        masked, aspect="auto", cmap=cmap, vmin=vmin, vmax=vmax, extent=extent,
        interpolation="nearest",
    )  # fmt: skip
    ax.set_facecolor("#dddddd")  # undefined cells (before the reference round)
    ax.set_yticks(range(len(run.layers)))
    ax.set_yticklabels(
        [f"{n}  [{_ROLE_MARK.get(run.roles[n], run.roles[n])}]" for n in run.layers], fontsize=8
    )
    for tick, name in zip(ax.get_yticklabels(), run.layers, strict=True):
        if run.roles[name] == "middle":
            tick.set_fontweight("bold")
    ax.set_xlabel("round")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.colorbar(image, ax=ax, label=label, fraction=0.046, pad=0.02)


def _png_lines(ax, run: RunInertia, matrix, metric, threshold, log) -> None:
    middles = [i for i, n in enumerate(run.layers) if run.roles[n] == "middle"]
    colours = matplotlib_colours(len(middles))
    for i, name in enumerate(run.layers):
        role = run.roles[name]
        if role == "middle":
            colour = colours[middles.index(i)]
            ax.plot(run.rounds, matrix[i], color=colour, lw=1.2, label=name)
        else:
            style = "--" if role == "first" else ":"
            ax.plot(run.rounds, matrix[i], "k" + style, lw=1.4, label=f"{name} ({role})")
    ax.plot(run.rounds, middle_mean(run, matrix), color="#d62728", lw=2.5, label="middle mean")
    _png_axes(ax, metric, threshold, log)
    ax.legend(
        fontsize=7, frameon=False, ncol=1 + len(run.layers) // 14, loc="upper left",
        bbox_to_anchor=(1.01, 1.0),
    )  # fmt: skip


def _png_axes(ax, metric, threshold, log) -> None:
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("round")
    ax.set_ylabel(metric)
    if log:
        ax.set_yscale("log")
    if metric == "cos_ref":
        ax.axhline(threshold, color="grey", lw=0.8, ls="-.", zorder=0)
    ax.grid(alpha=0.3)


def matplotlib_colours(count: int) -> list:
    """Distinct colours for the middle layers (viridis, dark to light in network order)."""
    from matplotlib import colormaps

    return [colormaps["viridis"](x) for x in np.linspace(0.05, 0.85, max(count, 1))][:count]
