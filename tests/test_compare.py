"""`memcore compare` on runs whose logs the test writes itself, against hand-computed numbers.

Reference values: t quantiles from printed t tables; the Welch p-values were computed with
mpmath's regularised incomplete beta function (30 digits), independently of memcore's own; the
paired values by the closed forms of Student's t with 2 degrees of freedom, written out here.
"""
import json

import pytest
from PIL import Image

from memcore.cli import main
from memcore_experiments.compare import summary, t_quantile, welch

# final fid of each seed; the step-100 values make "best" differ from "final"
BASE = {0: (9.0, 10.0), 1: (13.0, 12.0), 2: (16.0, 14.0)}       # best 9, 12, 14 at 100, 200, 200
MOCA = {0: (25.0, 20.0), 1: (22.0, 22.0), 2: (30.0, 27.0)}       # best 20, 22, 27
SAME = {0: (12.0, 12.0), 1: (13.0, 13.0), 2: (11.5, 11.5)}       # final 12, 13, 11.5


def write_run(folder, seed, values, img_per_s=(100.0, 120.0, 110.0), extractor="net",
              last_step=200, start=None):
    """A run's files as the trainer writes them; ``start``: what its first log line adds."""
    folder.mkdir(parents=True)
    (folder / "recipe.resolved.toml").write_text(f"[train]\nseed = {seed}\nsteps = 200\n")
    lines = []
    for step, value, rate in zip((100, 200), values, img_per_s):
        if step > last_step:
            break
        lines.append({"step": step, "time": step * 0.5, "loss/D": 1.0 + seed, "loss/G": 0.5,
                      "img_per_s": rate, "peak_rss_mb": 400.0 + step, **(start or {})})
        start = None
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
    # the three variants ran seeds 0, 1, 2: paired by seed (checked by hand below)
    assert moca["paired"]["p"] == pytest.approx(paired_df2([20, 22, 27], [10, 12, 14])[1])
    assert moca["vs_baseline"] == "higher (paired t, p = 0.0082)"
    assert same["vs_baseline"] == "indistinguishable (paired t, p = 0.91)"
    assert "welch" not in moca and moca["seeds_needed"] is None
    assert report["cost"]["base"]["img_per_s"]["mean"] == 110.0   # median of 100 and 120 per run


def paired_df2(a, b):
    """t, two-sided p and 95% interval of the paired t-test of three pairs, by hand: with 2
    degrees of freedom Student's t has the CDF 1/2 + t / (2 sqrt(t^2 + 2)), so the two-sided p is
    1 - |t| / sqrt(t^2 + 2) and the 0.975 quantile 0.95 sqrt(2 / (4 x 0.975 x 0.025))."""
    d = [x - y for x, y in zip(a, b)]
    mean = sum(d) / 3
    sd = (sum((x - mean) ** 2 for x in d) / 2) ** 0.5
    t = mean / (sd / 3 ** 0.5)
    half = 0.95 * (2 / (4 * 0.975 * 0.025)) ** 0.5 * sd / 3 ** 0.5
    return t, 1 - abs(t) / (t * t + 2) ** 0.5, [mean - half, mean + half]


@pytest.mark.parametrize("variant, finals", [("moca", [20, 22, 27]), ("same", [12, 13, 11.5])])
def test_paired_values_by_hand(experiment, capsys, variant, finals):
    row = next(r for r in report_of(capsys, experiment)["metrics"]["fid@net"]
               if r["variant"] == variant)
    t, p, ci = paired_df2(finals, [10, 12, 14])
    test = row["paired"]
    assert test["seeds"] == [0, 1, 2] and test["df"] == 2
    assert test["mean_diff"] == pytest.approx(sum(finals) / 3 - 12)
    assert (test["t"], test["p"]) == (pytest.approx(t), pytest.approx(p))
    assert test["ci95"] == pytest.approx(ci)
    assert test["wilcoxon"] is None                    # 3 pairs cannot reach p < 0.05


def test_seeds_needed_for_an_indistinguishable_row(experiment, capsys):
    """Against the normal approximation of the paired t-test's sample size,
    n = (z_0.975 + z_0.8)^2 / (mean / sd)^2 + z_0.975^2 / 2, which the exact n lies within 1 of."""
    same = next(r for r in report_of(capsys, experiment)["metrics"]["fid@net"]
                if r["variant"] == "same")
    d = [2.0, 1.0, -2.5]                               # same - base per seed
    mean = sum(d) / 3
    sd = (sum((x - mean) ** 2 for x in d) / 2) ** 0.5
    approx = (1.959964 + 0.841621) ** 2 / (mean / sd) ** 2 + 1.959964 ** 2 / 2
    assert abs(same["seeds_needed"] - approx) <= 1
    assert same["paired"]["seeds_needed"] == same["seeds_needed"]


def test_wilcoxon_from_six_pairs(tmp_path, capsys):
    for seed in range(6):                              # b is higher at every seed by 1..6
        write_run(tmp_path / "a" / f"seed-{seed}", seed, (10.0, 10.0))
        write_run(tmp_path / "b" / f"seed-{seed}", seed, (10.0, 11.0 + seed))
    row = report_of(capsys, tmp_path, "--baseline", "a")["metrics"]["fid@net"][1]
    # all six signs positive: the exact two-sided p is 2 / 2^6; the smaller rank sum is 0
    assert row["paired"]["wilcoxon"] == {"statistic": 0.0, "p": pytest.approx(2 / 64)}


def test_unpaired_seeds_fall_back_to_welch(tmp_path, capsys):
    for seed, (b, m) in enumerate(zip((10.0, 12.0, 14.0), (20.0, 22.0, 27.0))):
        write_run(tmp_path / "base" / f"seed-{seed}", seed, (b, b))
        write_run(tmp_path / "moca" / f"seed-{seed + 3}", seed + 3, (m, m))
    row = report_of(capsys, tmp_path, "--baseline", "base")["metrics"]["fid@net"][1]
    assert "paired" not in row and row["welch"]["p"] == pytest.approx(0.0174406, abs=1e-6)
    assert row["vs_baseline"] == "higher (Welch, p = 0.017)"
    assert row["welch"]["mean_diff"] == 11.0


def test_costs_per_variant(tmp_path, capsys):
    start = {"params/G": 1_500_000, "params/D": 250_000, "data_hash": "d0", "latent_hash": "z0"}
    for seed in (0, 1):
        write_run(tmp_path / "a" / f"seed-{seed}", seed, (5.0, 4.0), start=start)
        write_run(tmp_path / "b" / f"seed-{seed}", seed, (5.0, 4.0))     # no start record
    report = report_of(capsys, tmp_path)
    a, b = report["cost"]["a"], report["cost"]["b"]
    assert (a["params_G"], a["params_D"]) == ([1_500_000], [250_000])
    assert a["wall_clock_s"]["mean"] == 100.0 and a["peak_rss_mb"]["mean"] == 600.0
    assert (b["params_G"], b["peak_gpu_mb"]) == ([], None)
    assert main(["compare", str(tmp_path)]) == 0
    text = capsys.readouterr().out
    assert "| a | 2 | 200 | 1.5M | 0.25M | 100 ± 0 | 600 ± 0 MB RSS | 110 ± 0 |" in text
    assert "| b | 2 | 200 | — | — | 100 ± 0 |" in text


@pytest.mark.parametrize("key", ["data_hash", "latent_hash"])
def test_variants_of_one_seed_that_saw_different_data_are_named(tmp_path, capsys, key):
    same = {"data_hash": "d", "latent_hash": "z"}
    for seed in (0, 1):
        write_run(tmp_path / "a" / f"seed-{seed}", seed, (5.0, 4.0), start=same)
        write_run(tmp_path / "b" / f"seed-{seed}", seed, (5.0, 4.0),
                  start={**same, key: "other"} if seed == 1 else same)
    assert main(["compare", str(tmp_path), "--json"]) == 0
    captured = capsys.readouterr()
    warnings = json.loads(captured.out)["different_data"]
    assert len(warnings) == 1 and warnings[0].startswith("seed 1:") and key in warnings[0]
    assert "a: d" in warnings[0] or "a: z" in warnings[0]
    assert "warning: seed 1: the variants saw different" in captured.err


def test_the_same_run_twice_counts_once(experiment, capsys):
    run = experiment / "base" / "seed-0"
    report = report_of(capsys, run, run, experiment, experiment / "base")
    assert [r["seed"] for r in report["variants"]["base"]] == [0, 1, 2]


def test_markdown_report_and_figures(experiment, tmp_path, capsys):
    out = tmp_path / "cmp" / "report.md"
    assert main(["compare", str(experiment), "--out", str(out)]) == 0
    text = out.read_text()
    assert "paired t-test" in text and "## fid@net" in text
    assert "| base | 3 | 200 | 12 ± 2 | [7.032, 16.97] | 11.67 ± 2.5 |" in text
    assert "| same | 3 | 200 | 12.17 ± 0.76 |" in text
    assert "| +0.1667 [-5.703, 6.036] | indistinguishable (paired t, p = 0.91) | 1" in text
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


# -- damaged run contents: each is skipped with a warning naming its file, or refused (exit 2) --
def _append(name, *lines):
    def damage(run, root):
        with open(run / name, "ab") as fh:
            fh.write(b"".join(line + b"\n" for line in lines))
    return damage


def _replace(name, content):
    def damage(run, root):
        (run / name).write_bytes(content)
    return damage


def _folder(name):
    def damage(run, root):
        target = run / name
        if target.exists():
            target.unlink()
        target.mkdir()
        (target / "x").write_text("{}")
    return damage


def _experiment(content):
    def damage(run, root):
        (root / "experiment.json").write_bytes(content)
    return damage


DAMAGE = {   # name -> (damage(run, root), the file its warning names)
    "nan metric": (_append("log.jsonl", b'{"step": 300, "metric/fid@net": NaN}'), "log.jsonl"),
    "infinite metric": (_append("log.jsonl", b'{"step": 300, "metric/fid@net": Infinity}'),
                        "log.jsonl"),
    "-infinite loss": (_append("log.jsonl", b'{"step": 300, "loss/D": -Infinity}'), "log.jsonl"),
    "nan img/s": (_append("log.jsonl", b'{"step": 300, "img_per_s": NaN}'), "log.jsonl"),
    "nan time": (_append("log.jsonl", b'{"step": 300, "time": NaN}'), "log.jsonl"),
    "overflowing number": (_append("log.jsonl", b'{"step": 300, "metric/fid@net": 1e400}'),
                           "log.jsonl"),
    "huge number": (_append("log.jsonl", b'{"step": 300, "metric/fid@net": 1e200}'),
                    "log.jsonl"),
    "5000-digit number": (_append("log.jsonl", b'{"step": 300, "metric/fid@net": '
                                  + b"9" * 5000 + b"}"), "log.jsonl"),
    "string metric": (_append("log.jsonl", b'{"step": 300, "metric/fid@net": "12"}'), "log.jsonl"),
    "binary line": (_append("log.jsonl", b"\x00\xff\xfe\x89PNG"), "log.jsonl"),
    "invalid json": (_append("log.jsonl", b'{step: 300, "loss/D": 1'), "log.jsonl"),
    "a list": (_append("log.jsonl", b"[1, 2]"), "log.jsonl"),
    "a number": (_append("log.jsonl", b"5"), "log.jsonl"),
    "a string": (_append("log.jsonl", b'"step"'), "log.jsonl"),
    "null": (_append("log.jsonl", b"null"), "log.jsonl"),
    "deep nesting": (_append("log.jsonl", b"[" * 100000 + b"]" * 100000), "log.jsonl"),
    "string step": (_append("log.jsonl", b'{"step": "300", "metric/fid@net": 1.0}'), "log.jsonl"),
    "bool step": (_append("log.jsonl", b'{"step": true, "metric/fid@net": 1.0}'), "log.jsonl"),
    "negative step": (_append("log.jsonl", b'{"step": -3, "metric/fid@net": 1.0}'), "log.jsonl"),
    "fractional step": (_append("log.jsonl", b'{"step": 2.5, "metric/fid@net": 1.0}'),
                        "log.jsonl"),
    "no step": (_append("log.jsonl", b'{"metric/fid@net": 1.0}'), "log.jsonl"),
    "log.jsonl a folder": (_folder("log.jsonl"), "log.jsonl"),
    "corrupt experiment.json": (_experiment(b'{"variants": ["base", '), "experiment.json"),
    "experiment.json a list": (_experiment(b'["base"]'), "experiment.json"),
    "experiment.json odd variants": (_experiment(b'{"variants": [1, {}], "baseline": 3}'),
                                     "experiment.json"),
    "experiment.json binary": (_experiment(b"\xff\xfe\x00"), "experiment.json"),
    "experiment.json a folder": (lambda run, root: _folder("experiment.json")(root, root),
                                 "experiment.json"),
    "recipe not TOML": (_replace("recipe.resolved.toml", b"[train\nseed = "),
                        "recipe.resolved.toml"),
    "recipe not UTF-8": (_replace("recipe.resolved.toml", b"\xff\xfe[train]"),
                         "recipe.resolved.toml"),
    "recipe seed a string": (_replace("recipe.resolved.toml", b'[train]\nseed = "0"\n'),
                             "recipe.resolved.toml"),
    "recipe train not a table": (_replace("recipe.resolved.toml", b"train = 3\n"),
                                 "recipe.resolved.toml"),
    "recipe a folder": (_folder("recipe.resolved.toml"), "recipe.resolved.toml"),
    "eval json corrupt": (_replace("eval-step-0000200.json", b'[{"step": 200, "kid"'),
                          "eval-step-0000200.json"),
    "eval json odd entries": (_replace("eval-step-0000200.json", b'[3, {"kid": 1.0}, null]'),
                              "eval-step-0000200.json"),
    "plugin json without step": (_replace("mfh-eval-step-0000200.json", b'{"fid": 3.0}'),
                                 "mfh-eval-step-0000200.json"),
    "eval json a folder": (_folder("eval-step-0000200.json"), "eval-step-0000200.json"),
    "metrics.jsonl damaged": (_replace("metrics.jsonl", b'[1]\n{"step": 1, "values": 3}\n'
                                       b'{"step": 2, "metric": ["fid"], "values": {"fid": 1}}\n'),
                              None),   # read only for the metric's direction: best is omitted
    "sample png corrupt": (_replace("samples/step-0000100.png", b"\x89PNG\r\n\x1a\nnot an image"),
                           "step-0000100.png"),
}


@pytest.mark.parametrize("kind", DAMAGE)
def test_damaged_run_contents_warn_or_refuse(experiment, tmp_path, capsys, kind):
    damage, named = DAMAGE[kind]
    damage(experiment / "moca" / "seed-0", experiment)     # seed 0: the sample figure's
    out = tmp_path / "cmp" / "report.json"
    code = main(["compare", str(experiment), "--json", "--out", str(out)])
    err = capsys.readouterr().err
    assert code in (0, 2) and "Traceback" not in err and "bug" not in err, err
    if code == 2:
        assert named in err and not out.parent.exists()
        return
    report = json.loads(out.read_text())
    if named is not None:
        assert any(named in w for w in report["warnings"]), report["warnings"]
        assert "warning: " in err and named in err
    # the undamaged runs are all still there, and every number is a finite one
    assert [r["seed"] for r in report["variants"]["base"]] == [0, 1, 2]
    assert report["metrics"]["fid@net"][0]["final"]["mean"] == 12.0


def test_damage_warnings_are_bounded_per_file(experiment, capsys):
    _append("log.jsonl", *[b"garbage"] * 50)(experiment / "base" / "seed-0", experiment)
    report = report_of(capsys, experiment)
    lines = [w for w in report["warnings"] if "log.jsonl" in w]
    assert len(lines) == 6 and lines[-1].endswith("45 further damaged lines skipped")


def test_a_line_still_being_written_is_no_warning(experiment, capsys):
    with open(experiment / "base" / "seed-0" / "log.jsonl", "a") as fh:
        fh.write('{"step": 300, "loss/D"')                  # no newline yet
    assert report_of(capsys, experiment)["warnings"] == []


# -- compare's own arguments: refused before anything is read or written --------------------
def _read_only(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    return [str(folder / "report.md")]


BAD_ARGUMENTS = {
    "--out a folder": (lambda tmp: ["--out", str(tmp)], "--out"),
    "--out no extension": (lambda tmp: ["--out", str(tmp / "report")], "--out"),
    "--out unknown extension": (lambda tmp: ["--out", str(tmp / "report.png")], "--out"),
    "--out .json without --json": (lambda tmp: ["--out", str(tmp / "r.json")], "--json"),
    "--out .md with --json": (lambda tmp: ["--out", str(tmp / "r.md"), "--json"], "--json"),
    "--out under a file": (lambda tmp: ["--out", str(tmp / "file" / "r.md")], "is a file"),
    "--out read-only": (lambda tmp: ["--out", *_read_only(tmp)], "not writable"),
    "--metric unknown": (lambda tmp: ["--metric", "kid", "--out", str(tmp / "r.md")], "--metric"),
    "--metric empty": (lambda tmp: ["--metric", "", "--out", str(tmp / "r.md")], "--metric"),
    "--baseline unknown": (lambda tmp: ["--baseline", "x", "--out", str(tmp / "r.md")],
                           "--baseline"),
    "--smooth 0": (lambda tmp: ["--smooth", "0", "--out", str(tmp / "r.md")], "--smooth"),
    "--smooth -5": (lambda tmp: ["--smooth", "-5", "--out", str(tmp / "r.md")], "--smooth"),
}


@pytest.mark.parametrize("case", BAD_ARGUMENTS)
def test_bad_arguments_exit_2_and_write_nothing(experiment, tmp_path, capsys, case):
    import os
    make, named = BAD_ARGUMENTS[case]
    if case == "--out read-only" and os.geteuid() == 0:
        pytest.skip("root writes into read-only folders")
    place = tmp_path / "place"
    place.mkdir()
    (place / "file").write_text("x")
    argv = make(place)
    before = sorted(p.name for p in place.rglob("*"))
    assert main(["compare", str(experiment), *argv]) == 2
    err = capsys.readouterr().err
    assert named in err and "Traceback" not in err
    assert sorted(p.name for p in place.rglob("*")) == before


def test_real_runs_log_their_costs_and_data_hashes(tmp_path, monkeypatch, capsys):
    """The trainer's first log line: network sizes and the fingerprints of the first batch and
    latent stream, equal for two runs of one recipe and seed; a run of the same seed on a
    smaller dataset saw other batches from the same latent stream."""
    import tomli_w
    from memcore_kit.testing import tiny_recipe
    monkeypatch.chdir(tmp_path)
    recipe = tiny_recipe()
    recipe["data"]["limit"] = 64
    (tmp_path / "tiny.toml").write_text(tomli_w.dumps(recipe))
    for variant, limit in (("a", 64), ("b", 64), ("c", 32)):
        assert main(["run", "tiny.toml", "--set", f"run.dir=runs/{variant}/seed-0",
                     "--set", f"data.limit={limit}"]) == 0
    first = json.loads((tmp_path / "runs/a/seed-0/log.jsonl").read_text().splitlines()[0])
    assert first["params/G"] > 0 and first["params/D"] > 0 and first["peak_rss_mb"] > 0
    capsys.readouterr()
    report = report_of(capsys, tmp_path / "runs")
    assert len(report["different_data"]) == 1           # the data; the latents are the same
    assert all("a, b: " in w and "c: " in w for w in report["different_data"])
    assert report["cost"]["a"]["params_G"] == [first["params/G"]]


@pytest.mark.parametrize("value", ["nan", "x", "1.5", "", "1e3"])
def test_smooth_of_the_wrong_type_is_refused_by_the_parser(experiment, capsys, value):
    assert main(["compare", str(experiment), "--smooth", value]) == 2
    assert "--smooth" in capsys.readouterr().err


def test_a_huge_smooth_window_averages_everything(experiment, tmp_path, capsys):
    out = tmp_path / "r.md"
    assert main(["compare", str(experiment), "--smooth", str(10 ** 30), "--out", str(out)]) == 0
    assert (tmp_path / "r-losses.png").exists()


def test_a_failed_write_exits_2_and_leaves_no_figures(experiment, tmp_path, capsys, monkeypatch):
    import memcore_experiments.compare

    def full_disk(path, text, inside=None):
        raise OSError(28, "No space left on device", str(path))
    monkeypatch.setattr(memcore_experiments.compare.safewrite, "write_text", full_disk)
    assert main(["compare", str(experiment), "--out", str(tmp_path / "out" / "r.md")]) == 2
    assert "No space left on device" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
