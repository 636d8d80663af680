"""The table of a method comparison: statistics over seeds, pure functions of run summaries.

Per method: final accuracy (the method's result metric at the last round, REFERENCE.md
decision 2) as mean ± sample std over seeds, best-round mean, wall time, the global model's
final accuracy where the runs record it (``eval.global``) and the uplink bits per parameter per
participant-round (``uplink_bpp`` of the run summaries; FedAvg sends 32). Per method against
the first one, paired by seed (same partition, same initial weights): mean difference with a
95% t-interval, the two-sided paired t-test, and how many clients (pooled over seeds) end
with a higher accuracy. With one seed, std, interval and p are undefined and shown as "—".
"""

from __future__ import annotations

import csv
import io
import json
import math
import statistics
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from rich import box
from rich.table import Table
from scipy import stats

from fedlab_cli.atomic import atomic_write_text
from fedlab_cli.report.live import clock

CONFIDENCE = 0.95
DASH = "—"
RESULT_COLUMNS = (
    "method",
    "seed",
    "final_accuracy",
    "best_accuracy",
    "final_metric",
    "global_accuracy",
    "uplink_bpp",
    "status",
    "wall_seconds",
    "run_dir",
    "init_sha256",
    "partition_sha256",
)

PAIRED_FIELDS = (
    "diff_mean",
    "ci_low",
    "ci_high",
    "p_value",
    "clients_better",
    "clients_tied",
    "clients_worse",
    "clients_total",
)


@dataclass(frozen=True)
class RunResult:
    """The numbers of one finished run that the comparison needs."""

    method: str
    seed: int
    final_accuracy: float | None  # None: the run diverged before any evaluated round
    best_accuracy: float | None
    final_metric: str
    wall_seconds: float
    run_dir: str
    clients: tuple[float, ...]
    init_sha256: str | None = None
    partition_sha256: str | None = None
    global_accuracy: float | None = None
    uplink_bpp: float | None = None
    status: str = "complete"  # or "diverged": a NaN/inf loss stopped it (summary.json says)
    global_variants: dict[str, float] = field(default_factory=dict)  # acc_global_<name>

    @property
    def diverged(self) -> bool:
        return self.status == "diverged"

    @classmethod
    def from_summary(
        cls,
        summary: dict,
        run_dir: str | Path,
        init_sha256: str | None = None,
        partition_sha256: str | None = None,
    ) -> RunResult:
        return cls(
            method=summary["method"],
            seed=summary["seed"],
            final_accuracy=summary["final_accuracy"],
            best_accuracy=summary["best_accuracy"],
            final_metric=summary["final_metric"],
            wall_seconds=summary["wall_seconds"],
            run_dir=str(run_dir),
            clients=tuple(summary["final_acc_clients"]),
            init_sha256=init_sha256,
            partition_sha256=partition_sha256,
            global_accuracy=summary.get("final", {}).get("acc_global"),
            uplink_bpp=summary.get("uplink_bpp"),
            status=summary.get("status", "complete"),
            global_variants={
                key.removeprefix("acc_global_"): value
                for key, value in summary.get("final", {}).items()
                if key.startswith("acc_global_") and value is not None
            },
        )


@dataclass(frozen=True)
class MethodStats:
    """One method over its seeds; ``final_std`` is the sample std (ddof=1), None for one seed;
    ``global_*`` and ``uplink_bpp_mean`` are None unless every run records them. Statistics are
    over the runs that completed; ``diverged`` names the seeds whose run diverged (all of them:
    the accuracies are None)."""

    method: str
    final_metric: str
    seeds: tuple[int, ...]
    final_mean: float | None
    final_std: float | None
    best_mean: float | None
    wall_mean: float
    global_mean: float | None = None
    global_std: float | None = None
    uplink_bpp_mean: float | None = None
    diverged: tuple[int, ...] = ()
    variants: dict[str, tuple[float, float | None]] = field(default_factory=dict)
    """Per global variant every run records (FedPM's ``threshold``): mean and sample std."""


@dataclass(frozen=True)
class PairedStats:
    """A method against the baseline, paired by seed; None where a single seed leaves it open."""

    method: str
    baseline: str
    n: int
    diff_mean: float
    ci_low: float | None
    ci_high: float | None
    p_value: float | None
    clients_better: int
    clients_tied: int
    clients_worse: int

    @property
    def clients_total(self) -> int:
        return self.clients_better + self.clients_tied + self.clients_worse


@dataclass(frozen=True)
class Comparison:
    """Everything the tables and files show."""

    baseline: str
    seeds: tuple[int, ...]
    methods: list[MethodStats]
    paired: dict[str, PairedStats]
    identical_partitions: bool | None
    identical_initial_weights: bool | None
    notes: list[str] = field(default_factory=list)


def method_stats(results: list[RunResult]) -> MethodStats:
    """Mean and sample std of the final accuracy over the seeds whose run completed, best-round
    and wall-time means; diverged runs are named, not averaged."""
    ordered = sorted(results, key=lambda r: r.seed)
    complete = [r for r in ordered if not r.diverged]
    final_mean, final_std = _mean_and_std([r.final_accuracy for r in complete])
    global_mean, global_std = _mean_and_std(_all_or_none([r.global_accuracy for r in complete]))
    bpps = _all_or_none([r.uplink_bpp for r in complete])
    return MethodStats(
        method=ordered[0].method,
        final_metric=ordered[0].final_metric,
        seeds=tuple(r.seed for r in ordered),
        final_mean=final_mean,
        final_std=final_std,
        best_mean=statistics.fmean(r.best_accuracy for r in complete) if complete else None,
        wall_mean=round(statistics.fmean(r.wall_seconds for r in ordered), 3),
        global_mean=global_mean,
        global_std=global_std,
        uplink_bpp_mean=statistics.fmean(bpps) if bpps else None,
        diverged=tuple(r.seed for r in ordered if r.diverged),
        variants=_variant_stats(complete),
    )


def _variant_stats(runs: list[RunResult]) -> dict[str, tuple[float, float | None]]:
    if not runs:
        return {}
    names = set.intersection(*(set(r.global_variants) for r in runs))
    return {n: _mean_and_std([r.global_variants[n] for r in runs]) for n in sorted(names)}


def _mean_and_std(values: list[float] | None) -> tuple[float | None, float | None]:
    """Mean and sample std (ddof=1); None where there are no values / fewer than two."""
    if not values:
        return None, None
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else None


def variant_names(c: Comparison) -> list[str]:
    """The global variants any method records, in name order (a column each)."""
    return sorted({name for m in c.methods for name in m.variants})


def format_variant(m: MethodStats, name: str) -> str:
    return _mean_std(*m.variants[name]) if name in m.variants else DASH


def _all_or_none(values: list[float | None]) -> list[float] | None:
    return None if any(v is None for v in values) else list(values)  # type: ignore[arg-type]


def paired_stats(results: list[RunResult], baseline: list[RunResult]) -> PairedStats | None:
    """The method minus the baseline, seed by seed: t-interval, paired t-test, client wins —
    over the seeds where both runs completed (None if there is none)."""
    mine = {r.seed: r for r in results}
    theirs = {r.seed: r for r in baseline}
    if set(mine) != set(theirs):
        raise ValueError(f"seeds differ: {sorted(mine)} vs {sorted(theirs)}")
    seeds = sorted(s for s in mine if not (mine[s].diverged or theirs[s].diverged))
    if not seeds:
        return None
    a = np.array([mine[s].final_accuracy for s in seeds])
    b = np.array([theirs[s].final_accuracy for s in seeds])
    diffs = a - b
    n = len(seeds)
    mean = float(diffs.mean())
    ci_low = ci_high = p_value = None
    if n > 1:
        sd = float(diffs.std(ddof=1))
        half = float(stats.t.ppf(0.5 + CONFIDENCE / 2, n - 1)) * sd / math.sqrt(n)
        ci_low, ci_high = mean - half, mean + half
        if sd > 0:
            p_value = float(stats.ttest_rel(a, b).pvalue)
    better, tied, worse = client_wins(
        [mine[s].clients for s in seeds], [theirs[s].clients for s in seeds]
    )
    return PairedStats(
        method=results[0].method,
        baseline=baseline[0].method,
        n=n,
        diff_mean=mean,
        ci_low=ci_low,
        ci_high=ci_high,
        p_value=p_value,
        clients_better=better,
        clients_tied=tied,
        clients_worse=worse,
    )


def client_wins(
    mine: list[tuple[float, ...]], theirs: list[tuple[float, ...]]
) -> tuple[int, int, int]:
    """Clients (pooled over seeds) whose final accuracy is higher / equal / lower."""
    a = np.concatenate([np.asarray(c, dtype=float) for c in mine])
    b = np.concatenate([np.asarray(c, dtype=float) for c in theirs])
    if a.shape != b.shape:
        raise ValueError("the runs being paired have different numbers of clients")
    return int((a > b).sum()), int((a == b).sum()), int((a < b).sum())


def compare(results: list[RunResult], methods: list[str] | None = None) -> Comparison:
    """The comparison of ``methods`` (default: in order of appearance), the first as baseline."""
    order = methods or list(dict.fromkeys(r.method for r in results))
    by_method = {m: [r for r in results if r.method == m] for m in order}
    for m, runs in by_method.items():
        if not runs:
            raise ValueError(f"no runs of method {m!r}")
    baseline = order[0]
    per_method = [method_stats(by_method[m]) for m in order]
    pairs = {m: paired_stats(by_method[m], by_method[baseline]) for m in order[1:]}
    paired = {m: p for m, p in pairs.items() if p is not None}
    seeds = per_method[0].seeds
    comparison = Comparison(
        baseline=baseline,
        seeds=seeds,
        methods=per_method,
        paired=paired,
        identical_partitions=_identical(results, "partition_sha256"),
        identical_initial_weights=_identical(results, "init_sha256"),
    )
    comparison.notes.extend(_notes(comparison))
    return comparison


def _identical(results: list[RunResult], attribute: str) -> bool | None:
    """Whether every method saw the same value for each seed; None if a value is unknown."""
    values = [getattr(r, attribute) for r in results]
    if any(v is None for v in values):
        return None
    per_seed: dict[int, set[str]] = {}
    for r, v in zip(results, values, strict=True):
        per_seed.setdefault(r.seed, set()).add(v)
    return all(len(v) == 1 for v in per_seed.values())


def _notes(c: Comparison) -> list[str]:
    metrics = {m.method: m.final_metric for m in c.methods}
    usual = max(set(metrics.values()), key=list(metrics.values()).count)
    others = [f"{m}: {k}" for m, k in metrics.items() if k != usual]
    notes = [
        f"Final accuracy in %: {usual} at the last round"
        + (f" ({'; '.join(others)})" if others else "")
        + f", mean ± sample std (ddof=1) over seeds {', '.join(map(str, c.seeds))}."
    ]
    if c.paired:
        notes.append(
            f"Δ: paired mean difference vs {c.baseline} over seeds, {CONFIDENCE:.0%} CI from the "
            "t distribution with n−1 degrees of freedom; p: two-sided paired t-test; wins: "
            f"clients, pooled over seeds, whose final accuracy is higher than with {c.baseline}, "
            "out of all (ties: equal)."
        )
    if len(c.seeds) == 1:
        notes.append(f"One seed: std, CI and p are undefined and shown as {DASH}.")
    for m in c.methods:
        if m.diverged:
            seeds = ", ".join(map(str, m.diverged))
            notes.append(
                f"{m.method}: DIVERGED with seed {seeds} (a NaN/inf loss; status diverged in its "
                "summary.json); its statistics and differences use the other seeds only."
            )
    for p in c.paired.values():
        if len(c.seeds) > 1 and p.p_value is None:
            notes.append(
                f"{p.method}: the difference to {c.baseline} is the same for every seed, so the "
                f"t-test is undefined (p shown as {DASH})."
            )
    checks = {
        "partitions": c.identical_partitions,
        "initial weights": c.identical_initial_weights,
    }
    for what, same in checks.items():
        if same is False:
            notes.append(f"WARNING: the {what} differ between methods for the same seed.")
        elif same is None:
            notes.append(f"The {what} could not be checked for every run.")
    return notes


def _num(value: float | None, digits: int = 2, sign: bool = False) -> str:
    if value is None:
        return DASH
    return f"{value:+.{digits}f}" if sign else f"{value:.{digits}f}"


def format_bpp(bpp: float | None) -> str:
    """Four significant digits: FedPM's 0.9998 must not read as 1.00."""
    return DASH if bpp is None else f"{bpp:.4g}"


def format_p(p: float | None) -> str:
    if p is None:
        return DASH
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def format_mean_std(m: MethodStats) -> str:
    if m.final_mean is None:
        return "diverged"
    flag = f" ({len(m.diverged)} diverged)" if m.diverged else ""
    return _mean_std(m.final_mean, m.final_std) + flag


def format_global(m: MethodStats) -> str:
    return _mean_std(m.global_mean, m.global_std)


def _mean_std(mean: float | None, std: float | None) -> str:
    return _num(mean) if std is None else f"{mean:.2f} ± {std:.2f}"


def has_global(c: Comparison) -> bool:
    return any(m.global_mean is not None for m in c.methods)


def format_diff(p: PairedStats) -> str:
    if p.ci_low is None or p.ci_high is None:
        return _num(p.diff_mean, sign=True)
    return f"{p.diff_mean:+.2f} [{p.ci_low:+.2f}, {p.ci_high:+.2f}]"


def format_wins(p: PairedStats) -> str:
    return f"{p.clients_better}/{p.clients_total} ({p.clients_tied})"


def comparison_table(c: Comparison, title: str = "") -> Table:
    """The terminal table: one row per method; the baseline's paired cells are empty."""
    table = Table(
        title=title or None,
        title_justify="left",
        caption_justify="left",
        box=box.SIMPLE_HEAD,
    )
    table.add_column("method", no_wrap=True)
    table.add_column("final % ± std", justify="right", no_wrap=True)
    table.add_column("best %", justify="right", no_wrap=True)
    if has_global(c):
        table.add_column("global % ± std", justify="right", no_wrap=True)
    for name in variant_names(c):
        table.add_column(f"global {name} %", justify="right", no_wrap=True)
    table.add_column("uplink bpp", justify="right", no_wrap=True)
    table.add_column("wall", justify="right", no_wrap=True)
    table.add_column(f"Δ vs {c.baseline} [95% CI]", justify="right")
    table.add_column("p", justify="right", no_wrap=True)
    table.add_column("wins (ties)", justify="right", no_wrap=True)
    for m in c.methods:
        p = c.paired.get(m.method)
        table.add_row(
            m.method,
            format_mean_std(m),
            _num(m.best_mean),
            *([format_global(m)] if has_global(c) else []),
            *[format_variant(m, name) for name in variant_names(c)],
            format_bpp(m.uplink_bpp_mean),
            clock(m.wall_mean),
            format_diff(p) if p else ("baseline" if m.method == c.baseline else DASH),
            format_p(p.p_value) if p else "",
            format_wins(p) if p else "",
        )
    table.caption = "\n".join(
        [
            *c.notes,
            "best: best-round value, mean over seeds; wall: mean wall time per run.",
            *_column_notes(c),
        ]
    )
    return table


def _column_notes(c: Comparison) -> list[str]:
    notes = []
    if has_global(c):
        notes.append(
            "global: the global model's final accuracy on the union of the clients' test "
            "splits (acc_global), mean ± sample std over seeds."
        )
    for name in variant_names(c):
        notes.append(
            f"global {name}: the same for the method's variant acc_global_{name} (FedPM's "
            "threshold: the fixed mask θ > 0.5); — where a method has none."
        )
    notes.append("uplink bpp: uplink bits per model parameter per participant-round, mean.")
    return notes


def summary_markdown(c: Comparison) -> str:
    """A paper-ready markdown table with its footnotes."""
    extra = (["global acc"] if has_global(c) else []) + [
        f"global {name} acc" for name in variant_names(c)
    ]
    header = ["method", "acc (mean ± std)", f"Δ vs {c.baseline} [95% CI]", "p", "wins"]
    header += [*extra, "uplink bpp"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for m in c.methods:
        p = c.paired.get(m.method)
        cells = [format_diff(p), format_p(p.p_value), format_wins(p)] if p else [DASH, DASH, DASH]
        cells += [format_global(m)] if has_global(c) else []
        cells += [format_variant(m, name) for name in variant_names(c)]
        cells.append(format_bpp(m.uplink_bpp_mean))
        lines.append(f"| {m.method} | {format_mean_std(m)} | " + " | ".join(cells) + " |")
    notes = [*c.notes, *_column_notes(c)]
    return "\n".join(lines) + "\n\n" + "\n".join(f"- {n}" for n in notes) + "\n"


def results_csv(results: list[RunResult]) -> str:
    """One row per run."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(RESULT_COLUMNS)
    for r in results:
        writer.writerow(["" if getattr(r, k) is None else getattr(r, k) for k in RESULT_COLUMNS])
    return buffer.getvalue()


def summary_rows(c: Comparison) -> list[dict]:
    """One record per method; undefined statistics are None (empty in CSV, null in JSON)."""
    rows = []
    for m in c.methods:
        p = c.paired.get(m.method)
        row = {**asdict(m), "seeds": list(m.seeds), "baseline": c.baseline}
        row.pop("variants")
        for name in variant_names(c):
            mean, std = m.variants.get(name, (None, None))
            row[f"global_{name}_mean"], row[f"global_{name}_std"] = mean, std
        row.update({k: getattr(p, k) if p else None for k in PAIRED_FIELDS})
        rows.append(row)
    return rows


def summary_csv(c: Comparison) -> str:
    rows = summary_rows(c)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow(
            {
                k: " ".join(map(str, v)) if isinstance(v, list) else ("" if v is None else v)
                for k, v in row.items()
            }
        )
    return buffer.getvalue()


def summary_json(c: Comparison, context: dict | None = None) -> dict:
    return {
        **(context or {}),
        "baseline": c.baseline,
        "seeds": list(c.seeds),
        "confidence": CONFIDENCE,
        "std_ddof": 1,
        "identical_partitions": c.identical_partitions,
        "identical_initial_weights": c.identical_initial_weights,
        "methods": summary_rows(c),
        "notes": c.notes,
    }


def write_files(
    out: Path, results: list[RunResult], c: Comparison, context: dict | None = None
) -> list[Path]:
    """``results.csv``, ``summary.csv``, ``summary.md``, ``summary.json``, each atomically."""
    out = Path(out)
    files = {
        "results.csv": results_csv(results),
        "summary.csv": summary_csv(c),
        "summary.md": summary_markdown(c),
        "summary.json": json.dumps(summary_json(c, context), indent=2) + "\n",
    }
    for name, text in files.items():
        atomic_write_text(out / name, text)
    return [out / name for name in files]
