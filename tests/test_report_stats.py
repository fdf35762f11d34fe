"""The statistics of the tuned comparison (DESIGN §4a) on small synthetic frames: Holm, the paired difference and
its interval, the verdict rule, several baselines, the declared family and claims, and their spec keys."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy.stats import ttest_rel

from ddrm.errors import ConfigError
from ddrm.report.significance import Comparisons, holm, paired, verdict
from ddrm.report.table import markdown, summarize, write_tables
from ddrm.tuning.comparisons import Claim, Declared, Family, parse_declared
from ddrm.tuning.spec import load_ablation_spec, load_declared

R20 = "test_recall_at_20"


def test_holm_matches_a_hand_computed_example():
    # m = 4 tests (NaN: no test, not counted). Sorted: .005 .01 .03 .04
    # steps: 4 x .005 = .02; 3 x .01 = .03; 2 x .03 = .06; 1 x .04 = .04 -> max(.06, .04) = .06 (monotone)
    adjusted = holm([0.01, 0.04, 0.03, 0.005, float("nan")])
    assert adjusted[:4] == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert math.isnan(adjusted[4])
    assert holm([0.5, 0.6]).tolist() == [1.0, 1.0]  # 2 x .5 = 1 (capped); .6 may not fall below 1
    assert holm([0.02]).tolist() == [0.02] and holm([]).size == 0  # one test: unadjusted


def test_holm_agrees_with_its_definition_on_random_p():
    rng = np.random.default_rng(1)
    p = rng.uniform(0, 0.2, size=12)
    order = np.argsort(p)
    m = len(p)
    expected = np.empty(m)
    for rank, i in enumerate(order):  # p~_(i) = max_{j <= i} min(1, (m - j + 1) p_(j)), ranks from 1
        expected[i] = max(min(1.0, (m - j) * p[order[j]]) for j in range(rank + 1))
    assert holm(p) == pytest.approx(expected)


def _frame(values: dict[tuple[str, str], list[float]], metric: str = R20) -> pd.DataFrame:
    return pd.DataFrame([{"model": m, "variant": v, "seed": s, metric: x}
                         for (m, v), xs in values.items() for s, x in enumerate(xs, start=1)])


def test_paired_difference_interval_and_p_by_hand():
    a = pd.DataFrame({"seed": [1, 2, 3, 4, 5, 9], R20: [0.11, 0.12, 0.13, 0.14, 0.15, 0.5]})  # seed 9: unpaired
    b = pd.DataFrame({"seed": [1, 2, 3, 4, 5], R20: [0.10, 0.10, 0.10, 0.10, 0.10]})
    result = paired(a, b, R20)
    # differences .01 .02 .03 .04 .05: mean .03, sd .0158114, se .00707107, t(.975, 4) = 2.776445
    assert result.n_seeds == 5 and result.mean_diff == pytest.approx(0.03)
    assert result.ci_low == pytest.approx(0.03 - 2.776445 * 0.00707107, rel=1e-5)
    assert result.ci_high == pytest.approx(0.03 + 2.776445 * 0.00707107, rel=1e-5)
    assert result.p == pytest.approx(ttest_rel(a[R20][:5], b[R20]).pvalue)  # t = 4.2426 on 4 df
    assert result.p == pytest.approx(0.013236, rel=1e-3) and not result.exact
    flipped = paired(b, a, R20)
    assert (flipped.mean_diff, flipped.ci_low, flipped.ci_high) == pytest.approx(
        (-result.mean_diff, -result.ci_high, -result.ci_low))


def test_a_constant_gap_is_exact_and_one_seed_has_no_interval():
    a = pd.DataFrame({"seed": [1, 2, 3], R20: [0.13, 0.13, 0.13]})
    b = pd.DataFrame({"seed": [1, 2, 3], R20: [0.12, 0.12, 0.12]})
    exact = paired(a, b, R20)
    assert exact.exact and math.isnan(exact.p) and exact.ci_low == exact.ci_high == pytest.approx(0.01)
    assert paired(b, b, R20).p == 1.0 and paired(b, b, R20).exact
    one = paired(a.head(1), b, R20)
    assert one.n_seeds == 1 and math.isnan(one.p) and math.isnan(one.ci_low)
    assert paired(a, b.assign(seed=[7, 8, 9]), R20).n_seeds == 0


@pytest.mark.parametrize("diff, p_holm, direction, exact, expected", [
    (0.01, 0.001, "higher", False, "supported"),
    (-0.01, 0.001, "higher", False, "contradicted"),
    (0.01, 0.02, "higher", False, "not shown"),  # p 0.02 > alpha 0.01
    (0.01, 0.01, "higher", False, "not shown"),  # strictly below alpha
    (-0.01, 0.001, "lower", False, "supported"),  # a claimed decrease
    (0.01, float("nan"), "higher", False, "not shown"),  # no test
    (0.01, float("nan"), "higher", True, "supported"),  # exact: decides by its sign
    (-0.01, float("nan"), "higher", True, "contradicted"),
    (0.0, float("nan"), "higher", True, "not shown"),
])
def test_the_verdict_rule(diff, p_holm, direction, exact, expected):
    assert verdict(diff, p_holm, 0.01, direction, exact) == expected


def _table_frame() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    noise = lambda scale: rng.normal(0, scale, 5)  # noqa: E731
    return _frame({("mf", "alone"): list(0.110 + noise(0.002)), ("mf", "ddrm"): list(0.113 + noise(0.002)),
                   ("mf", "mean"): list(0.121 + noise(0.001)),
                   ("ease", "tuned"): [0.134] * 5, ("itemknn", "tuned"): [0.133] * 5})


def test_every_row_is_tested_against_each_baseline():
    frame = _table_frame()
    summary = summarize(frame, "alone", [R20], ["ease/tuned", "itemknn/tuned"]).set_index(["model", "variant"])
    values = {key: group.sort_values("seed")[R20].to_numpy() for key, group in frame.groupby(["model", "variant"])}
    for base in ("ease/tuned", "itemknn/tuned"):
        base_key = tuple(base.split("/"))
        for key in [("mf", "alone"), ("mf", "ddrm"), ("mf", "mean")]:
            assert summary.loc[key, f"{R20}_p_vs_{base}"] == pytest.approx(
                ttest_rel(values[key], values[base_key]).pvalue)
            assert summary.loc[key, f"{R20}_diff_vs_{base}"] == pytest.approx(
                np.mean(values[key] - values[base_key]))
        assert math.isnan(summary.loc[base_key, f"{R20}_p_vs_{base}"])  # not against itself
    # EASE against ItemKNN: the same gap on every seed, exact, both directions
    assert summary.loc[("ease", "tuned"), f"{R20}_diff_vs_itemknn/tuned"] == pytest.approx(0.001)
    assert summary.loc[("itemknn", "tuned"), f"{R20}_diff_vs_ease/tuned"] == pytest.approx(-0.001)
    assert math.isnan(summary.loc[("ease", "tuned"), f"{R20}_p_vs_itemknn/tuned"])
    # the default family: 2 reference + 2 x 3 baseline tests (the exact one is not a test) -> Holm over 8
    p = [summary.loc[("mf", v), f"{R20}_p"] for v in ("ddrm", "mean")] + [
        summary.loc[("mf", v), f"{R20}_p_vs_{b}"] for b in ("ease/tuned", "itemknn/tuned")
        for v in ("alone", "ddrm", "mean")]
    adjusted = holm(p)
    assert summary.loc[("mf", "mean"), f"{R20}_p_holm"] == pytest.approx(adjusted[1])
    assert summary.loc[("mf", "ddrm"), f"{R20}_p_holm_vs_itemknn/tuned"] == pytest.approx(adjusted[6])
    table = markdown(summary.reset_index(), [R20], "alone", 0.01, [("ease", "tuned"), ("itemknn", "tuned")])
    mean_line = next(line for line in table.splitlines() if line.startswith("| mf | mean |"))
    assert mean_line.endswith("*†‡ |")  # +.011 over alone, -.013/-.012 under the baselines: all significant


def test_the_declared_family_sets_what_holm_counts_and_claims_join_it():
    frame = _table_frame().assign(test_ndcg_at_20=lambda f: f[R20] / 2)
    claims = [Claim("DDRM improves MF", "mf/ddrm", "mf/alone", R20),
              Claim("the mean is the gain", "mf/mean", "mf/ddrm", "test_ndcg_at_20"),
              Claim("DDRM beats EASE", "mf/ddrm", "ease/tuned", R20)]
    only_reference = Comparisons(frame, [R20, "test_ndcg_at_20"], "alone", [("ease", "tuned")],
                                 Family(("reference",), (R20,)), claims)
    keys = {(r.a, r.b, r.metric) for r in only_reference.tests()}
    # reference on R@20 (2; the first claim is one of them), claim 2 (N@20, mean vs ddrm), claim 3 (vs EASE)
    assert keys == {(("mf", "ddrm"), ("mf", "alone"), R20), (("mf", "mean"), ("mf", "alone"), R20),
                    (("mf", "mean"), ("mf", "ddrm"), "test_ndcg_at_20"), (("mf", "ddrm"), ("ease", "tuned"), R20)}
    p = [r.result.p for r in only_reference.tests()]
    assert [r.p_holm for r in only_reference.tests()] == pytest.approx(list(holm(p)))
    outside = only_reference.get(("mf", "mean"), ("mf", "alone"), "test_ndcg_at_20")
    assert not math.isnan(outside[0].p) and math.isnan(outside[1])  # computed, not in the family: no Holm p
    rows = only_reference.claim_rows(0.01).set_index("name")
    assert rows.loc["DDRM beats EASE", "verdict"] == "contradicted"  # .113 vs .134
    assert rows.loc["the mean is the gain", "verdict"] == "supported"
    assert rows.loc["DDRM beats EASE", "mean_diff"] == pytest.approx(-0.021, abs=0.003)
    missing = Comparisons(frame, [R20], "alone", claims=[Claim("x", "mf/nope", "mf/alone", R20)]).claim_rows(0.01)
    assert missing.loc[0, "verdict"] == "not shown" and missing.loc[0, "note"] == "no runs of mf/nope"


def test_table_md_states_the_family_and_the_claims(tmp_path):
    frame = _table_frame()
    claims = [Claim("DDRM improves MF", "mf/ddrm", "mf/alone", R20), Claim("kNN under EASE", "itemknn/tuned",
                                                                            "ease/tuned", R20, "lower")]
    text = write_tables(frame, tmp_path, "alone", baselines="ease/tuned,itemknn/tuned",
                        family=Family(("reference", "baselines"), (R20,)), claims=claims,
                        declared_by="declared by the study before it ran")
    assert ("Family (declared by the study before it ran): each row against its model's `alone` row and against "
            "every baseline (`ease/tuned`, `itemknn/tuned`) on R@20; and the 2 claims below: 8 paired t-tests, "
            "Holm-adjusted together; 1 more comparison in it without a test") in text
    assert "over the shared seeds, Holm-adjusted p < 0.01 over the family" in text and "## Claims" in text
    claims_csv = pd.read_csv(tmp_path / "claims.csv")
    assert list(claims_csv.columns) == ["name", "row", "over", "metric", "direction", "n_seeds", "mean_diff",
                                        "ci_low", "ci_high", "p", "p_holm", "verdict", "note"]
    assert claims_csv.set_index("name").loc["kNN under EASE", "verdict"] == "supported"  # exact, lower
    pairs = pd.read_csv(tmp_path / "pairs.csv")
    assert {"p", "p_holm", "ci_low", "ci_high", "mean_diff", "in_family"} <= set(pairs.columns)
    assert pairs["in_family"].sum() == 9 and pairs["p_holm"].notna().sum() == 8
    table = pd.read_csv(tmp_path / "table.csv")
    assert f"{R20}_p_holm_vs_itemknn/tuned" in table.columns and f"{R20}_ci_low" in table.columns


def test_spec_keys_baseline_family_claims(tmp_path):
    text = ("name: a\nbase: {data: {name: tiny}}\nseeds: [0, 1]\nreference: alone\n"
            "baseline: [ease/tuned, itemknn/tuned]\n"
            "family: {tests: [reference, baselines], metrics: [recall_at_20, ndcg_at_20]}\n"
            "claims:\n  - {name: DDRM improves MF, row: mf/ddrm, over: mf/alone, metric: recall_at_20}\n"
            "variants: {alone: {ddrm.enabled: false}, ddrm: {}, tuned: {}}\n"
            "models: {mf: {backend.name: mf, variants: [alone, ddrm]}, ease: {model.name: ease, variants: [tuned]},\n"
            "         itemknn: {model.name: itemknn, variants: [tuned]}}\n")
    path = tmp_path / "spec.yaml"
    path.write_text(text)
    spec = load_ablation_spec(path)
    assert spec.baseline == ("ease/tuned", "itemknn/tuned")
    assert spec.declared.family == Family(("reference", "baselines"), (R20, "test_ndcg_at_20"))
    assert spec.declared.claims == (Claim("DDRM improves MF", "mf/ddrm", "mf/alone", R20),)
    tags = spec.report_tags()
    assert tags["reference"] == "alone" and tags["baseline"] == "ease/tuned,itemknn/tuned"
    assert Declared.from_tags(tags) == spec.declared  # the study's tags carry the declaration unchanged
    assert load_declared(path) == ("alone", spec.declared)
    assert load_ablation_spec(path, only_models=["mf"]).declared == spec.declared  # --models keeps the declaration
    for bad, message in [("baseline: [ease/tuned, itemknn/tuned]", "baseline: [ease/nope]"),
                         ("family: {tests: [reference, baselines]", "family: {tests: [reference, pairs]"),
                         ("metric: recall_at_20}", "metric: recall_at_7x}"),
                         ("over: mf/alone", "over: mf/ddrm")]:
        path.write_text(text.replace(*([bad, message])))
        with pytest.raises(ConfigError):
            load_ablation_spec(path)
    assert parse_declared({"baseline": "ease/tuned"}, "x").baselines == ("ease/tuned",)  # one string stays valid
    assert parse_declared({"family": ["reference"]}, "x").family == Family(("reference",), None)
    assert Declared.from_tags({"baseline": "ease/tuned"}) == Declared(("ease/tuned",))  # a study before the keys
    with pytest.raises(ConfigError, match="claims"):
        parse_declared({"claims": [{"name": "x", "row": "a/b", "over": "a/c", "metric": "recall_at_20",
                                    "direction": "up"}]}, "x")


def test_declarations_too_long_for_a_tag_and_many_baselines():
    from ddrm.report.table import baseline_marks

    many = [{"name": f"claim {i} " + "x" * 200, "row": "a/b", "over": "a/c", "metric": "recall_at_20"}
            for i in range(40)]
    with pytest.raises(ConfigError, match="MLflow keeps 8000"):
        parse_declared({"claims": many}, "x")
    assert baseline_marks(8) == ["†", "‡", "§", "¶", "‖", "⁑", "†7", "†8"]
