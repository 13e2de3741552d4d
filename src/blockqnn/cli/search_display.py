"""The progress of `blockqnn search` as it runs: a rich bar on a terminal, one plain line per
finished trial otherwise.

Owns: the running display only. Must not read the store or print the final result
(`blockqnn.cli.search` does). Not a command: `blockqnn.cli.COMMANDS` does not list it.
"""

from __future__ import annotations

from typing import Any


def info_text(info: dict[str, Any]) -> str:
    """A strategy's info for one line: `epsilon 0.90`, `population 20`, or nothing."""
    return "  ".join(
        f"{k} {v:.2f}" if isinstance(v, float) else f"{k} {v}" for k, v in info.items()
    )


class SearchDisplay:
    """A rich progress bar on a terminal; one plain line per finished trial otherwise."""

    def __init__(self, out: Any, run_dir: str) -> None:
        self.out = out
        self.run_dir = run_dir
        self._progress: Any = None
        self._task: Any = None

    def event(self, e: Any) -> None:
        if self.out.isatty():
            self._bar(e)
        elif e.kind == "start":
            print(
                f"search in {self.run_dir}: {e.trained}/{e.budget} trained, "
                f"{e.reused} reused so far",
                file=self.out,
                flush=True,
            )
        else:
            self._line(e)

    def _bar(self, e: Any) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        best = "-" if e.best is None else f"{e.best.reward:.4f}"
        if self._progress is None:
            self._progress = Progress(
                TextColumn("search"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("best {task.fields[best]}  {task.fields[info]}"),
                TextColumn("reused {task.fields[reused]}  failed {task.fields[failed]}"),
                TimeElapsedColumn(),
                TextColumn("ETA"),
                TimeRemainingColumn(),
                transient=False,
            )
            self._progress.start()
            self._task = self._progress.add_task(
                "search",
                total=e.budget,
                completed=e.trained,
                best=best,
                info=info_text(e.info),
                reused=e.reused,
                failed=e.failed,
            )
            return
        self._progress.update(
            self._task,
            completed=e.trained,
            best=best,
            info=info_text(e.info),
            reused=e.reused,
            failed=e.failed,
        )
        if e.kind == "requeued":
            self._progress.console.print(f"trial {e.trial.id}: worker lost, queued again")

    def _line(self, e: Any) -> None:
        t = e.trial
        if e.kind == "requeued":
            text = f"trial {t.id} requeued ({t.error})"
        else:
            flops = (t.flops or 0) / 1e6
            text = (
                f"[{e.trained}/{e.budget}] trial {t.id} {e.kind:8s} reward {t.reward:.4f} "
                f"acc {t.accuracy or 0:.4f} {flops:.2f} MFLOPs {info_text(t.info)}"
            ).rstrip()
            if t.status == "failed":
                text += f" error: {t.error}"
            best = "-" if e.best is None else f"{e.best.reward:.4f}"
            text += f" best {best} | {t.candidate}"
        print(text, file=self.out, flush=True)

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
