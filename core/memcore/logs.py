"""Run logging: a JSONL file, TensorBoard scalars and a progress bar, all on the main process."""
from __future__ import annotations

import json
import time
import warnings
from pathlib import Path

from . import safewrite
from .errors import MemcoreError


class RunLog:
    def __init__(self, run_dir: Path, total_steps: int, start_step: int, progress: bool,
                 enabled: bool):
        self.enabled = enabled
        self.path = Path(run_dir) / "log.jsonl"
        self.tb = None
        self.bar = None
        if not enabled:
            return
        try:
            from torch.utils.tensorboard import SummaryWriter
            # event files get fresh, unguessable names: the folder is what must not be a link
            folder = safewrite.folder(Path(run_dir) / "tensorboard", inside=run_dir)
            self.tb = SummaryWriter(str(folder))
        except MemcoreError:
            raise
        except Exception as exc:  # tensorboard is optional at run time
            warnings.warn(f"TensorBoard logging off: {type(exc).__name__}: {exc}", stacklevel=2)
        if progress:
            from tqdm.auto import tqdm
            self.bar = tqdm(total=total_steps, initial=start_step, unit="step", dynamic_ncols=True,
                            smoothing=0.1)
        self._t0 = time.perf_counter() - _last_time(run_dir)  # a resumed run's clock continues

    def write(self, step: int, values: dict) -> None:
        if not self.enabled:
            return
        record = {"step": step, "time": round(time.perf_counter() - self._t0, 3), **values}
        with safewrite.open_append(self.path) as fh:
            fh.write(json.dumps(record) + "\n")
        if self.tb is not None:
            for k, v in values.items():
                if isinstance(v, (int, float)):
                    self.tb.add_scalar(k, v, step)

    def progress(self, steps: int, postfix: str) -> None:
        if self.bar is not None:
            self.bar.update(steps)
            self.bar.set_postfix_str(postfix, refresh=False)

    def message(self, text: str) -> None:
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.write(text)
        else:
            print(text, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        if self.tb is not None:
            self.tb.close()


def read_log(run_dir: Path, name: str = "log.jsonl") -> list[dict]:
    """The records of a run's JSONL file; a torn last line (a kill during a write) is dropped.

    Any other line that is not a JSON record with a ``step`` means the file is not memcore's.
    """
    path = Path(run_dir) / name
    if not path.exists():
        return []
    lines = path.read_text(errors="replace").splitlines()
    records = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        record = _record(line)
        if record is None and number == len(lines) and _torn(line):
            break
        if record is None:
            raise MemcoreError(f"{path}, line {number}: not a memcore log record "
                               f"({line[:60]!r}); move the file away or choose another run.dir")
        records.append(record)
    return records


def _last_time(run_dir: Path) -> float:
    """The ``time`` of the log's last record: 0 for a new run, where a resumed one continues."""
    return float(next((r["time"] for r in reversed(read_log(run_dir)) if "time" in r), 0.0))


def torn_last_line(run_dir: Path, name: str = "log.jsonl") -> bool:
    """Whether the file's last line is a cut-off record (what a kill during a write leaves)."""
    path = Path(run_dir) / name
    lines = path.read_text(errors="replace").splitlines() if path.exists() else []
    return bool(lines) and _record(lines[-1]) is None and _torn(lines[-1])


_START = '{"step": '  # every record begins so (RunLog.write)


def _torn(line: str) -> bool:
    return line.startswith(_START) or _START.startswith(line)


def _record(line: str) -> dict | None:
    try:
        record = json.loads(line)
    except ValueError:
        return None
    return record if isinstance(record, dict) and isinstance(record.get("step"), int) else None
