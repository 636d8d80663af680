"""The terminal view of a run: a live table while training, a summary table at the end."""

from __future__ import annotations

import time
from collections import deque

from rich.console import Console, Group
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from fedlab_cli.engine.federation import RoundRecord

_SHOWN_ROUNDS = 8


def _fmt(value: float | None, digits: int = 2) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def clock(seconds: float) -> str:
    """Seconds as m:ss or h:mm:ss, for elapsed and wall times."""
    seconds = round(seconds)
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


class LiveRoundView:
    """Shows the latest rounds with elapsed time and ETA; plain lines when not on a terminal."""

    def __init__(self, console: Console, title: str, total_rounds: int, start_round: int) -> None:
        self.console = console
        self.title = title
        self.total = total_rounds
        self.start_round = start_round
        self.done = start_round
        self.rows: deque[RoundRecord] = deque(maxlen=_SHOWN_ROUNDS)
        self.started = time.perf_counter()
        self.live: Live | None = None
        self.plain_every = max(1, total_rounds // 20)

    def __enter__(self) -> LiveRoundView:
        if self.console.is_terminal:
            self.live = Live(self._render(), console=self.console, refresh_per_second=4)
            self.live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.live is not None:
            self.live.__exit__(*exc)

    def update(self, record: RoundRecord) -> None:
        self.done = record.round + 1
        self.rows.append(record)
        if self.live is not None:
            self.live.update(self._render())
        elif self.done % self.plain_every == 0 or self.done == self.total:
            self.console.print(
                f"round {record.round:>3} [{self.done}/{self.total}] loss {_fmt(record.loss, 4)} "
                f"local {_fmt(record.acc_local)} agg {_fmt(record.acc_agg)} "
                f"{clock(self.elapsed)} eta {clock(self.eta)}",
                highlight=False,
            )

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    @property
    def eta(self) -> float:
        finished = self.done - self.start_round
        return self.elapsed / finished * (self.total - self.done) if finished else 0.0

    def _render(self) -> Group:
        table = Table(expand=False)
        for column in ("round", "loss", "acc_local %", "acc_agg %", "s/round"):
            table.add_column(column, justify="right")
        for r in self.rows:
            table.add_row(
                f"{r.round}", _fmt(r.loss, 4), _fmt(r.acc_local), _fmt(r.acc_agg), _fmt(r.seconds)
            )
        status = (
            f"{self.done}/{self.total} rounds done   elapsed {clock(self.elapsed)}   "
            f"ETA {clock(self.eta)}"
        )
        footer = Table.grid(padding=(0, 2))
        footer.add_row(ProgressBar(total=self.total, completed=self.done, width=40), status)
        return Group(Text(self.title, style="bold"), table, footer)


def summary_table(summary: dict, run_dir: str) -> Table:
    """The final numbers of one run, the method's own result first."""
    table = Table(
        title=f"{summary['method']} on {summary['dataset']} — {run_dir}", title_justify="left"
    )
    table.add_column("")
    table.add_column("final %", justify="right")
    table.add_column("best % (round)", justify="right")
    metric = summary["final_metric"]
    for key in (metric, *(k for k in ("acc_agg", "acc_local") if k != metric)):
        best = summary["best"][key]
        label = f"{key} (result)" if key == metric else key
        table.add_row(
            label, _fmt(summary["final"][key]), f"{_fmt(best['value'])} ({best['round']})"
        )
    table.caption = (
        f"{summary['rounds']} rounds, {clock(summary['wall_seconds'])} wall, "
        f"device {summary['device']}, seed {summary['seed']}; "
        f"client std of the result {summary['client_std']:.2f}"
    )
    return table
