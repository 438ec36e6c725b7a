"""Run logging: a JSONL file, TensorBoard scalars and a progress bar, all on the main process."""
from __future__ import annotations

import json
import time
import warnings
from pathlib import Path


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
            self.tb = SummaryWriter(str(Path(run_dir) / "tensorboard"))
        except Exception as exc:  # tensorboard is optional at run time
            warnings.warn(f"TensorBoard logging off: {type(exc).__name__}: {exc}", stacklevel=2)
        if progress:
            from tqdm.auto import tqdm
            self.bar = tqdm(total=total_steps, initial=start_step, unit="step", dynamic_ncols=True,
                            smoothing=0.1)
        self._t0 = time.perf_counter()

    def write(self, step: int, values: dict) -> None:
        if not self.enabled:
            return
        record = {"step": step, "time": round(time.perf_counter() - self._t0, 3), **values}
        with open(self.path, "a") as fh:
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


def read_log(run_dir: Path) -> list[dict]:
    path = Path(run_dir) / "log.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
