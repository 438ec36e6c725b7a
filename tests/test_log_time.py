"""The log's `time` (seconds since the run started) continues on resume instead of restarting."""
import json
import sys

import pytest

from memcore.logs import RunLog


@pytest.fixture(autouse=True)
def no_tensorboard(monkeypatch):
    """Only the JSONL file matters here; importing TensorBoard would take seconds."""
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)


pytestmark = pytest.mark.filterwarnings("ignore:TensorBoard logging off")


def test_time_continues_from_the_last_record(tmp_path):
    (tmp_path / "log.jsonl").write_text(json.dumps({"step": 4, "time": 120.5, "loss/D": 1.0}) + "\n")
    log = RunLog(tmp_path, total_steps=8, start_step=4, progress=False, enabled=True)
    log.write(5, {"loss/D": 0.9})
    log.close()
    last = json.loads((tmp_path / "log.jsonl").read_text().splitlines()[-1])
    assert last["step"] == 5 and 120.5 <= last["time"] < 180


def test_a_new_run_starts_at_zero(tmp_path):
    log = RunLog(tmp_path, total_steps=8, start_step=0, progress=False, enabled=True)
    log.write(1, {})
    log.close()
    assert json.loads((tmp_path / "log.jsonl").read_text())["time"] < 60
