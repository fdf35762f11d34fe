"""``ddrm report`` on a synthetic MLflow experiment: values and stars against a direct scipy computation."""

import math
import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient
from scipy.stats import ttest_rel

from ddrm.cli import main
from ddrm.report import collect_runs, summarize

SEEDS = [0, 1, 2, 3, 4]
METRICS = ["test_recall_at_10", "test_recall_at_20", "test_ndcg_at_10", "test_ndcg_at_20"]


def make_experiment(uri: str, name: str = "synthetic") -> tuple[str, dict]:
    """Parent run + trial runs: variants base / better (clearly +) / same (noise only) / ratio sweep."""
    client = MlflowClient(tracking_uri=uri)
    experiment = client.create_experiment(name)
    parent = client.create_run(experiment, tags={"role": "study", "reference": "base"}).info.run_id
    rng = np.random.default_rng(0)
    truth: dict = {}
    variants = {"base": (0.0, 0.10), "better": (0.0, 0.12), "same": (0.0, 0.10), "ratio_0.2": (0.2, 0.09),
                "ratio_0.4": (0.4, 0.08)}
    for variant, (ratio, level) in variants.items():
        for seed in SEEDS:
            run = client.create_run(experiment, tags={"role": "trial", "parent_run": parent, "variant": variant,
                                                      "seed": str(seed), "mlflow.parentRunId": parent})
            run_id = run.info.run_id
            for key, value in {"backend.name": "mf", "data.noise_ratio": ratio, "seed": seed,
                               "ddrm.enabled": variant != "same"}.items():
                client.log_param(run_id, key, value)
            for metric in METRICS:
                value = level + 0.002 * seed + rng.normal(0, 0.001)  # seed effect shared by all variants
                truth[(variant, seed, metric)] = value
                client.log_metric(run_id, metric, value)
            if ratio > 0:
                client.log_metric(run_id, "diag_ddrm_noise_auc", 0.6 + ratio)
            client.set_terminated(run_id)
    failed = client.create_run(experiment, tags={"role": "trial", "parent_run": parent, "variant": "base",
                                                 "seed": "9"}).info.run_id
    client.log_param(failed, "backend.name", "mf")
    client.set_terminated(failed, status="FAILED")
    return parent, truth


def test_report_values_and_stars_match_scipy(tmp_path, capsys):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    parent, truth = make_experiment(uri)
    out = tmp_path / "report"
    assert main(["report", "synthetic", "--tracking-uri", uri, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "1 failed trial(s) not counted" in printed
    table = pd.read_csv(out / "table.csv")
    assert list(table["variant"]) == ["base", "better", "same", "ratio_0.2", "ratio_0.4"]
    assert (table["n_seeds"] == 5).all()
    for _, row in table.iterrows():
        for metric in METRICS:
            values = [truth[(row["variant"], s, metric)] for s in SEEDS]
            assert row[f"{metric}_mean"] == pytest.approx(np.mean(values), abs=1e-6)
            assert row[f"{metric}_std"] == pytest.approx(np.std(values, ddof=1), abs=1e-6)
            if row["variant"] == "base":
                assert np.isnan(row[f"{metric}_p"])
                continue
            base = [truth[("base", s, metric)] for s in SEEDS]
            assert row[f"{metric}_p"] == pytest.approx(ttest_rel(values, base).pvalue, rel=1e-4)
    markdown = (out / "table.md").read_text()
    better = next(line for line in markdown.splitlines() if line.startswith("| mf | better |"))
    same = next(line for line in markdown.splitlines() if line.startswith("| mf | same |"))
    assert better.count("*") == 4 and "*" not in same  # +0.02 on every seed vs noise of 0.001
    assert "| mf | base (reference) | 5 |" in markdown and "ddrm_noise_auc" in markdown
    for name in ("bars.png", "vs_data.noise_ratio.png"):
        assert (out / name).stat().st_size > 5000
    with open(out / "bars.png", "rb") as handle:
        assert handle.read(8) == b"\x89PNG\r\n\x1a\n"


def test_parent_run_target_reference_override_and_dedup(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    parent, truth = make_experiment(uri)
    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("synthetic").experiment_id
    rerun = client.create_run(experiment, tags={"role": "trial", "parent_run": parent, "variant": "base",
                                                "seed": "0"}).info.run_id  # a later rerun of (base, seed 0)
    client.log_param(rerun, "backend.name", "mf")
    client.log_metric(rerun, "test_recall_at_20", 0.5)
    client.set_terminated(rerun)
    frame, facts = collect_runs(uri, parent)
    assert facts["parent_run"] == parent and facts["failed"] == 1
    assert len(frame) == 25 and frame.loc[(frame.variant == "base") & (frame.seed == 0), "test_recall_at_20"].item() == 0.5
    summary = summarize(frame, reference="better")
    assert np.isnan(summary.set_index("variant").loc["better", "test_recall_at_20_p"])
    assert not np.isnan(summary.set_index("variant").loc["base", "test_recall_at_20_p"])


def test_unknown_target_and_reference_are_one_clear_error(tmp_path, capsys):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    make_experiment(uri)
    assert main(["report", "nope", "--tracking-uri", uri, "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "'nope' is neither an MLflow experiment nor a run id" in err and "synthetic" in err
    assert main(["report", "synthetic", "--tracking-uri", uri, "--reference", "zzz", "--out", str(tmp_path / "r")]) == 2
    assert "--reference 'zzz' is not a variant" in capsys.readouterr().err
    missing = tmp_path / "missing.db"
    assert main(["report", "synthetic", "--tracking-uri", f"sqlite:///{missing}"]) == 2
    assert "no MLflow store" in capsys.readouterr().err and not missing.exists()
    assert main(["report", "--tracking-uri", uri]) == 2
    assert "give one experiment name" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()
    assert main(["report", "--experiment", "synthetic", "--tracking-uri", uri, "--out", str(tmp_path / "r")]) == 0


def test_a_single_seed_shows_its_value_without_a_fake_spread(tmp_path):
    from ddrm.report.table import markdown

    frame = pd.DataFrame({"model": ["mf"] * 3, "variant": ["base", "base", "other"], "seed": [0, 1, 0],
                          "recall_at_20": [0.10, 0.12, 0.2]})
    summary = summarize(frame, "base", ["recall_at_20"])
    assert np.isnan(summary.loc[1, "recall_at_20_std"]) and np.isnan(summary.loc[1, "recall_at_20_p"])
    table = markdown(summary, ["recall_at_20"], "base")
    assert "| mf | other | 1 | 0.2000 |" in table  # one seed: no "± 0.0000"
    assert "0.1100 ± 0.0141" in table  # two seeds: mean ± sample std


def test_sweep_lines_are_named_by_what_their_variants_share():
    from ddrm.report.plots import _series_name

    keys = ["model", "param.ddrm.enabled"]
    swept = pd.DataFrame({"variant": ["r0_ddrm", "r10_ddrm", "r20_ddrm"]})
    assert _series_name(("mf", "True"), swept, keys) == "mf, ddrm"
    unnamed = pd.DataFrame({"variant": ["steps10", "steps20"]})  # shared "0" is the sweep value, not a name
    assert _series_name(("mf", "True"), unnamed, keys) == "mf, ddrm.enabled=True"


def test_sweep_series_with_identical_points_are_drawn_as_one_line():
    from ddrm.report.plots import _distinct_lines

    def series(values, x=(0.1, 0.2)):
        return pd.DataFrame({"_x": list(x), "m": values})

    lines = _distinct_lines([("backend", series([0.88, 0.89])), ("ddrm", series([0.88, 0.89])),
                             ("mean", series([0.90, 0.91])), ("shifted", series([0.88, 0.89], x=(0.2, 0.3))),
                             ("empty", series([None, None]))], "m")
    assert [names for names, _ in lines] == [["backend", "ddrm"], ["mean"], ["shifted"]]
    assert lines[1][1]["mean"].tolist() == [0.90, 0.91]


def test_the_reference_row_leads_each_model_even_when_its_runs_came_later():
    from ddrm.report import reference_first

    # a second study added `alone` after `tce` and `rce` had been run (first-seen order: tce, rce, alone, deca)
    frame = pd.DataFrame({"model": ["lgn", "lgn", "sgl", "lgn", "sgl", "lgn"],
                          "variant": ["tce", "rce", "tce", "alone", "alone", "deca"],
                          "seed": [0, 0, 0, 0, 0, 0], "test_recall_at_20": [0.1, 0.2, 0.3, 0.4, 0.5, 0.6]})
    ordered = reference_first(frame, "alone")
    assert list(zip(ordered["model"], ordered["variant"])) == [
        ("lgn", "alone"), ("lgn", "tce"), ("lgn", "rce"), ("lgn", "deca"), ("sgl", "alone"), ("sgl", "tce")]
    assert sorted(ordered["test_recall_at_20"]) == sorted(frame["test_recall_at_20"])  # rows kept whole
    assert list(summarize(ordered, "alone")["variant"][:2]) == ["alone", "tce"]
    assert reference_first(frame, None).equals(frame)


def test_a_setting_that_differs_only_between_models_is_not_plotted_as_a_sweep():
    from ddrm.report.plots import swept_numeric

    frame = pd.DataFrame({"model": ["lgn", "lgn", "sgl", "sgl"], "variant": ["a", "b", "a", "b"],
                          "param.ddrm.noise_scale": ["0.01", "0.01", "0.001", "0.001"],  # per model
                          "param.data.noise_ratio": ["0.0", "0.2", "0.0", "0.0"]})  # swept on lgn
    assert swept_numeric(frame) == ["param.data.noise_ratio"]


def test_a_baseline_row_is_tested_against_every_other_row(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    _, truth = make_experiment(uri)
    out = tmp_path / "report"
    assert main(["report", "synthetic", "--tracking-uri", uri, "--out", str(out), "--baseline", "mf/better"]) == 0
    table = pd.read_csv(out / "table.csv")
    for _, row in table.iterrows():
        for metric in METRICS:
            if row["variant"] == "better":
                assert np.isnan(row[f"{metric}_p_vs_mf/better"])
                continue
            values = [truth[(row["variant"], s, metric)] for s in SEEDS]
            best = [truth[("better", s, metric)] for s in SEEDS]
            assert row[f"{metric}_p_vs_mf/better"] == pytest.approx(ttest_rel(values, best).pvalue, rel=1e-4)
            assert row[f"{metric}_diff_vs_mf/better"] == pytest.approx(np.mean(values) - np.mean(best), abs=1e-6)
    markdown = (out / "table.md").read_text()
    base_line = next(line for line in markdown.splitlines() if line.startswith("| mf | base (reference) |"))
    assert base_line.count("†") == 4 and "`†` against `mf/better`: paired t-test over the shared seeds" in markdown
    assert main(["report", "synthetic", "--tracking-uri", uri, "--out", str(tmp_path / "x"),
                 "--baseline", "ease/tuned"]) == 2  # not a row: one error line, nothing written
    assert not (tmp_path / "x").exists()


def test_plots_skip_a_sweep_with_nothing_to_draw(tmp_path):
    """A search varies many keys at once: holding the others at their most common value can leave no run with a
    test metric (ASHA-stopped trials have none); that plot is skipped, the report still written."""
    from ddrm.report import write_plots

    frame = pd.DataFrame({"model": ["mf"] * 4, "variant": [f"trial{i}" for i in range(4)], "seed": [0] * 4,
                          "param.ddrm.steps": ["10", "10", "20", "30"], "param.ddrm.lr": ["0.1", "0.1", "0.2", "0.3"],
                          "test_recall_at_20": [np.nan, np.nan, 0.1, 0.2], "test_ndcg_at_20": [np.nan, np.nan, 0.05, 0.1]})
    written = write_plots(frame, tmp_path)
    assert tmp_path / "bars.png" in written and all(p.is_file() for p in written)
    assert written == [tmp_path / "bars.png"]  # each key's partner at its mode leaves only ASHA-stopped trials


def test_a_difference_that_is_the_same_on_every_seed_gets_no_t_test():
    """Two deterministic rows (ItemKNN vs EASE): the gap is exact, not a seed effect; no p, no mark."""
    import pandas as pd

    from ddrm.report.table import paired_p_value

    frame = pd.DataFrame({"seed": [0, 1, 2], "test_recall_at_20": [0.13, 0.13, 0.13]})
    reference = pd.DataFrame({"seed": [0, 1, 2], "test_recall_at_20": [0.12, 0.12, 0.12]})
    assert math.isnan(paired_p_value(frame, reference, "test_recall_at_20"))
    assert paired_p_value(reference, reference, "test_recall_at_20") == 1.0
    varied = pd.DataFrame({"seed": [0, 1, 2], "test_recall_at_20": [0.14, 0.15, 0.16]})
    assert paired_p_value(varied, reference, "test_recall_at_20") < 0.05


def test_pairs_csv_tests_every_pair_of_variants_within_a_model(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    _, truth = make_experiment(uri)
    out = tmp_path / "report"
    assert main(["report", "synthetic", "--tracking-uri", uri, "--out", str(out)]) == 0
    pairs = pd.read_csv(out / "pairs.csv")
    variants = ["base", "better", "same", "ratio_0.2", "ratio_0.4"]
    assert len(pairs) == 10 * len(METRICS)  # 5 variants: 10 unordered pairs, each metric
    row = pairs[(pairs["a"] == "same") & (pairs["b"] == "better") & (pairs["metric"] == "test_ndcg_at_20")].iloc[0]
    same = [truth[("same", s, "test_ndcg_at_20")] for s in SEEDS]
    better = [truth[("better", s, "test_ndcg_at_20")] for s in SEEDS]
    assert row["n_seeds"] == 5 and row["mean_diff"] == pytest.approx(np.mean(same) - np.mean(better), rel=1e-4)
    assert row["p"] == pytest.approx(ttest_rel(same, better).pvalue, rel=1e-4)
    assert set(pairs["a"]) | set(pairs["b"]) == set(variants)


def test_pairs_csv_leaves_out_pairs_that_share_fewer_than_two_seeds():
    from ddrm.report.table import pairwise

    frame = pd.DataFrame({"model": "mf", "variant": ["a", "a", "b", "b", "trial1", "trial2"],
                          "seed": [0, 1, 0, 1, 7, 8], "test_recall_at_20": [0.10, 0.12, 0.11, 0.12, 0.2, 0.3]})
    pairs = pairwise(frame, ["test_recall_at_20"])
    assert pairs[["a", "b"]].values.tolist() == [["b", "a"]]  # trials of a search share no seed: no test
    assert pairs["n_seeds"].tolist() == [2] and pairs["mean_diff"].iloc[0] == pytest.approx(0.005)
    assert pairwise(frame[frame["variant"].str.startswith("trial")], ["test_recall_at_20"]).empty


def test_table_md_names_the_hosts_its_runs_ran_on(tmp_path):
    from ddrm.report.table import hosts_line, write_tables

    frame = pd.DataFrame({"model": ["mf"] * 4, "variant": ["base", "base", "other", "other"], "seed": [0, 1, 0, 1],
                          "test_recall_at_20": [0.10, 0.12, 0.2, 0.21],
                          "cpu_model": ["CPU A", "CPU A", "CPU B", ""],
                          "cpu_capability": ["AVX512", "AVX512", "AVX2", ""],
                          "torch_version": ["2.13.0", "2.13.0", "2.13.0", ""]})
    text = write_tables(frame, tmp_path, "base")
    line = ("Measured on: CPU A (AVX512, torch 2.13.0): 2 runs; CPU B (AVX2, torch 2.13.0): 1 run; "
            "not recorded (replayed or older runs): 1.")
    assert hosts_line(frame) == line and line in text
    assert hosts_line(frame.assign(cpu_model="")) is None  # no run tagged: no line
    assert hosts_line(frame.drop(columns=["cpu_model"])) is None


def test_the_studys_declared_family_and_claims_reach_the_report(tmp_path):
    """A study declares baselines, a family and claims (its parent run's tags, written when it starts): the report
    tests every row against each baseline, Holm-adjusts over that family and gives each claim its verdict."""
    from ddrm.report.significance import holm
    from ddrm.tuning.comparisons import Claim, Declared, Family

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    parent, truth = make_experiment(uri)
    claims = (Claim("better beats base", "mf/better", "mf/base", "test_recall_at_20"),
              Claim("same beats base", "mf/same", "mf/base", "test_recall_at_20"),
              Claim("more noise helps", "mf/ratio_0.4", "mf/base", "test_ndcg_at_20"),
              Claim("an absent row", "mf/nope", "mf/base", "test_recall_at_20"))
    declared = Declared(("mf/better", "mf/same"), Family(("reference", "baselines"), ("test_recall_at_20",)), claims)
    client = MlflowClient(tracking_uri=uri)
    for key, value in declared.tags().items():
        client.set_tag(parent, key, value)
    out = tmp_path / "report"
    assert main(["report", "synthetic", "--tracking-uri", uri, "--out", str(out)]) == 0
    verdicts = pd.read_csv(out / "claims.csv").set_index("name")["verdict"].to_dict()
    assert verdicts == {"better beats base": "supported", "same beats base": "not shown",
                        "more noise helps": "contradicted", "an absent row": "not shown"}
    # the family: R@20 pairs among base (reference), better, same (baselines) and the ratio rows: 9 unordered pairs,
    # plus the N@20 claim: 10 tests
    pairs = pd.read_csv(out / "pairs.csv")
    tested = pairs[pairs["in_family"] & pairs["p_holm"].notna()]
    assert len(tested) == 10
    values = lambda v, m: [truth[(v, s, m)] for s in SEEDS]  # noqa: E731
    raw = [ttest_rel(values(r.a, r.metric), values(r.b, r.metric)).pvalue for r in tested.itertuples()]
    assert tested["p"].to_numpy() == pytest.approx(raw, rel=1e-4)
    assert tested["p_holm"].to_numpy() == pytest.approx(holm(raw), rel=1e-4)
    table = pd.read_csv(out / "table.csv").set_index("variant")
    assert table.loc["same", "test_recall_at_20_p_holm_vs_mf/better"] == pytest.approx(
        tested.set_index(["a", "b"]).loc[("better", "same"), "p_holm"], rel=1e-6)
    assert np.isnan(table.loc["same", "test_ndcg_at_10_p_holm"])  # outside the declared family
    markdown = (out / "table.md").read_text()
    assert "Family (declared by the study before it ran): each row against its model's `base` row and against " \
           "every baseline (`mf/better`, `mf/same`) on R@20; and the 4 claims below: 10 paired t-tests" in markdown
    assert "## Claims" in markdown and "| better beats base | `mf/better` above `mf/base` on R@20 |" in markdown
    line = next(row for row in markdown.splitlines() if row.startswith("| mf | ratio_0.4 |"))
    assert line.split("|")[5].strip().endswith("*†‡")  # R@20: below base, better and same, all at Holm p < .01
    assert "*" not in line.split("|")[4]  # R@10: outside the family, no mark
    # --spec reads the declaration from a spec file instead, and says so
    spec = tmp_path / "spec.yaml"
    spec.write_text("name: synthetic\nbase: {}\nvariants: {base: {}}\nbaseline: mf/better\nfamily: [reference]\n")
    assert main(["report", "synthetic", "--tracking-uri", uri, "--out", str(tmp_path / "s"), "--spec", str(spec),
                 "--baseline", "mf/same,mf/better"]) == 0
    text = (tmp_path / "s" / "table.md").read_text()
    assert f"Family (read from `{spec}` when this report was built): each row against its model's `base` row on " \
           "R@10, R@20, N@10, N@20: 16 paired t-tests" in text
    assert "`†` against `mf/same`, `‡` against `mf/better`" in text and not (tmp_path / "s" / "claims.csv").exists()
