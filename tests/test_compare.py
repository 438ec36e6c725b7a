"""`memcore compare` on runs whose logs the test writes itself, against hand-computed numbers.

Reference values: t quantiles from printed t tables; the Welch p-values were computed with
mpmath's regularised incomplete beta function (30 digits), independently of memcore's own.
"""
import json

import pytest
from PIL import Image

from memcore.cli import main
from memcore.compare import summary, t_quantile, welch

# final fid of each seed; the step-100 values make "best" differ from "final"
BASE = {0: (9.0, 10.0), 1: (13.0, 12.0), 2: (16.0, 14.0)}       # best 9, 12, 14 at 100, 200, 200
MOCA = {0: (25.0, 20.0), 1: (22.0, 22.0), 2: (30.0, 27.0)}       # best 20, 22, 27
SAME = {0: (12.0, 12.0), 1: (13.0, 13.0), 2: (11.5, 11.5)}       # final 12, 13, 11.5


def write_run(folder, seed, values, img_per_s=(100.0, 120.0, 110.0), extractor="net",
              last_step=200):
    folder.mkdir(parents=True)
    (folder / "recipe.resolved.toml").write_text(f"[train]\nseed = {seed}\nsteps = 200\n")
    lines = []
    for step, value, rate in zip((100, 200), values, img_per_s):
        if step > last_step:
            break
        lines.append({"step": step, "loss/D": 1.0 + seed, "loss/G": 0.5, "img_per_s": rate})
        lines.append({"step": step, f"metric/fid@{extractor}": value})
        with open(folder / "metrics.jsonl", "a") as fh:
            fh.write(json.dumps({"step": step, "metric": "fid", "values": {"fid": value},
                                 "protocol": {"extractor": extractor}}) + "\n")
    (folder / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    (folder / "samples").mkdir()
    Image.new("RGB", (32, 32), (seed * 60, 0, 0)).save(folder / "samples" / "step-0000100.png")


@pytest.fixture
def experiment(tmp_path):
    root = tmp_path / "runs" / "exp"
    for name, table in (("base", BASE), ("moca", MOCA), ("same", SAME)):
        for seed, values in table.items():
            write_run(root / name / f"seed-{seed}", seed, values)
    (root / "experiment.json").write_text(json.dumps({"variants": ["base", "moca", "same"],
                                                      "baseline": "base"}))
    return root


def report_of(capsys, *argv):
    assert main(["compare", *map(str, argv), "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_t_quantiles_match_the_tables():
    assert t_quantile(0.975, 1) == pytest.approx(12.7062, abs=1e-4)
    assert t_quantile(0.975, 2) == pytest.approx(4.3027, abs=1e-4)
    assert t_quantile(0.975, 4) == pytest.approx(2.7764, abs=1e-4)
    assert t_quantile(0.975, 1e6) == pytest.approx(1.9600, abs=1e-4)


def test_summary_and_welch_by_hand():
    s = summary([10.0, 12.0, 14.0])                   # mean 12, std 2, 4.30265 * 2 / sqrt 3
    assert (s["mean"], s["std"]) == (12.0, 2.0)
    assert s["ci95"] == pytest.approx([12 - 4.968275, 12 + 4.968275], abs=1e-5)
    test = welch([20.0, 22.0, 27.0], [10.0, 12.0, 14.0])   # t = 11 / sqrt(4/3 + 13/3)
    assert test["t"] == pytest.approx(4.620924, abs=1e-5)
    assert test["df"] == pytest.approx(3.124324, abs=1e-5)
    assert test["p"] == pytest.approx(0.0174406, abs=1e-6)
    assert summary([3.0])["ci95"] is None and welch([1.0], [1.0, 2.0]) is None


def test_compare_gives_means_intervals_best_and_verdicts(experiment, capsys):
    report = report_of(capsys, experiment)
    assert list(report["variants"]) == ["base", "moca", "same"]      # experiment.json order
    rows = {r["variant"]: r for r in report["metrics"]["fid@net"]}
    base, moca, same = rows["base"], rows["moca"], rows["same"]
    assert base["final"]["mean"] == 12.0 and base["final"]["std"] == 2.0
    assert base["final"]["ci95"] == pytest.approx([7.031725, 16.968275], abs=1e-5)
    # fid: lower is better (the fid component says so), so best is the minimum over steps
    assert base["best"]["mean"] == pytest.approx((9 + 12 + 14) / 3)
    assert base["best_step"] == [100, 200, 200]
    assert base["vs_baseline"] == "baseline"
    assert moca["welch"]["p"] == pytest.approx(0.0174406, abs=1e-6)
    assert moca["vs_baseline"] == "higher (p = 0.017)"
    assert same["welch"]["p"] == pytest.approx(0.902583, abs=1e-5)
    assert same["vs_baseline"] == "indistinguishable (p = 0.9)"
    assert base["img_per_s"]["mean"] == 110.0          # median of 100 and 120 per run


def test_markdown_report_and_figures(experiment, tmp_path, capsys):
    out = tmp_path / "cmp" / "report.md"
    assert main(["compare", str(experiment), "--out", str(out)]) == 0
    text = out.read_text()
    assert "Welch's two-sided t-test" in text and "## fid@net" in text
    assert "| base | 3 | 200 | 12 ± 2 | [7.032, 16.97] | 11.67 ± 2.5 |" in text
    assert "| same | 3 | 200 | 12.17 ± 0.76 |" in text and "indistinguishable (p = 0.9)" in text
    for figure in ("report-fid_net.png", "report-losses.png", "report-samples.png"):
        assert (out.parent / figure).stat().st_size > 1000
        assert f"({figure})" in text


def test_extractors_never_share_a_table(experiment, tmp_path, capsys):
    write_run(experiment / "base" / "seed-3", 3, (1.0, 1.0), extractor="other-net")
    report = report_of(capsys, experiment)
    assert sorted(report["metrics"]) == ["fid@net", "fid@other-net"]
    assert [r["variant"] for r in report["metrics"]["fid@other-net"]] == ["base"]
    assert report["metrics"]["fid@net"][0]["seeds"] == [0, 1, 2]
    assert report_of(capsys, experiment, "--metric", "fid@other-net")["metrics"].keys() == \
        {"fid@other-net"}


def test_runs_in_progress_any_runs_and_baseline(tmp_path, capsys):
    write_run(tmp_path / "0001-dcgan", 0, (5.0, 4.0))
    write_run(tmp_path / "0002-dcgan", 1, (7.0, 6.0), last_step=100)    # still training
    write_run(tmp_path / "0003-sagan", 0, (3.0, 2.0))
    report = report_of(capsys, tmp_path / "0001-dcgan", tmp_path / "0002-dcgan",
                       tmp_path / "0003-sagan", "--baseline", "sagan")
    rows = {r["variant"]: r for r in report["metrics"]["fid@net"]}
    assert rows["dcgan"]["steps"] == [200, 100] and rows["dcgan"]["final"]["mean"] == 5.5  # 4 and 7
    assert rows["sagan"]["vs_baseline"] == "baseline"
    assert rows["dcgan"]["vs_baseline"] == "n/a (needs 2+ seeds each)"


def test_evaluation_json_files_are_read_with_their_extractor(experiment, capsys):
    run = experiment / "base" / "seed-0"
    (run / "eval-step-0000200.json").write_text(json.dumps(
        [{"metric": "kid", "step": 200, "kid": 0.25, "extractor": "net"}]))
    (run / "mfh-eval-step-0000200.json").write_text(json.dumps(
        {"step": 200, "extractor": {"extractor": "net"}, "fid_mean": 3.5,
         "protonet": {"accuracy": 0.5}, "per_class": {"a": {"fid": 1.0}}}))
    report = report_of(capsys, experiment)
    for name, value in (("eval/kid@net", 0.25), ("mfh-eval/fid_mean@net", 3.5),
                        ("mfh-eval/protonet/accuracy@net", 0.5)):
        assert report["metrics"][name][0]["final"]["mean"] == value
    assert not any("per_class" in name for name in report["metrics"])


def test_bad_arguments_are_clear(experiment, tmp_path, capsys):
    assert main(["compare", str(tmp_path / "nowhere")]) == 2
    assert "no such run or folder" in capsys.readouterr().err
    assert main(["compare", str(experiment), "--baseline", "basee"]) == 2
    assert "did you mean 'base'" in capsys.readouterr().err
    assert main(["compare", str(experiment), "--metric", "kid"]) == 2
    assert "no run logged it" in capsys.readouterr().err
