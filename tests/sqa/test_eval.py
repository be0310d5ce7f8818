"""Track 2 evaluation command and prediction formats: join rules, statistics vs scipy, JSON layout."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import stats

from urgent_jax.data.manifest import ManifestError, read_kv
from urgent_jax.sqa import eval as sqa_eval
from urgent_jax.sqa.data import write_jsonl
from urgent_jax.sqa.results import read_predictions, write_results


@pytest.fixture
def corpus(tmp_path):
    rng = np.random.default_rng(0)
    refs, preds = [], []
    for i in range(60):
        system = f"sys{i % 6}"
        mos = float(np.round(1 + 4 * rng.random(), 4))
        ovrl = float("nan") if i == 5 else float(np.round(1 + 4 * rng.random(), 4))
        refs.append({"audio_path": f"/x/{i}.wav", "system_id": system, "sample_id": f"utt{i:03d}",
                     "duration": 1.0, "metrics": {"mos": mos, "dnsmos_ovrl": ovrl}})
        preds.append({"sample_id": f"utt{i:03d}", "system_id": system,
                      "metrics": {"mos": mos + float(rng.normal(0, 0.5)),
                                  "dnsmos_ovrl": 3.0 + float(rng.normal(0, 0.5))}})
    write_jsonl(tmp_path / "data.jsonl", refs)
    write_results(tmp_path / "pred", preds)
    return tmp_path, refs, preds


def _expected(p, r, systems):
    p, r = np.asarray(p), np.asarray(r)
    keep = ~(np.isnan(p) | np.isnan(r))
    p, r, systems = p[keep], r[keep], np.asarray(systems)[keep]
    names = sorted(set(systems))
    sp = [p[systems == s].mean() for s in names]
    sr = [r[systems == s].mean() for s in names]

    def four(a, b):
        return {"MSE": np.mean((np.asarray(a) - b) ** 2), "LCC": stats.pearsonr(a, b).statistic,
                "SRCC": stats.spearmanr(a, b).statistic, "KTAU": stats.kendalltau(a, b).statistic}

    return {"utterance": four(p, r), "system": four(sp, sr)}


def test_results_files_round_trip(corpus):
    root, _, preds = corpus
    assert sorted(p.name for p in (root / "pred").iterdir()) == [
        "dnsmos_ovrl.scp", "mos.scp", "results.jsonl"]
    back = read_predictions(root / "pred" / "results.jsonl")
    assert [r["sample_id"] for r in back] == sorted(p["sample_id"] for p in preds)
    for got, want in zip(back, sorted(preds, key=lambda p: p["sample_id"])):
        assert got["system_id"] == want["system_id"]
        assert got["metrics"]["mos"] == pytest.approx(want["metrics"]["mos"], abs=5e-5)
    scp = read_kv(root / "pred" / "mos.scp")
    assert len(scp) == 60 and all(len(v.split(".")[1]) == 4 for v in scp.values())


def test_cli_matches_scipy_and_writes_documented_json(corpus, capsys):
    root, refs, preds = corpus
    out = root / "result.json"
    rc = sqa_eval.main(["--pred", str(root / "pred" / "results.jsonl"), "--ref", str(root / "data.jsonl"),
                        "--pred-metric", "mos", "--output", str(out)])
    assert rc == 0
    result = json.loads(out.read_text())
    assert set(result) == {"utterance", "system"}
    p = [round(x["metrics"]["mos"], 4) for x in preds]
    want = _expected(p, [x["metrics"]["mos"] for x in refs], [x["system_id"] for x in refs])
    for level in ("utterance", "system"):
        assert set(result[level]) == {"MSE", "LCC", "SRCC", "KTAU"}
        for k, v in want[level].items():
            assert result[level][k] == pytest.approx(v, abs=1e-9), (level, k)
    assert "SRCC" in capsys.readouterr().out


def test_several_metrics_nan_reference_and_cross_metric(corpus):
    root, refs, preds = corpus
    records = read_predictions(root / "pred" / "results.jsonl")
    res = sqa_eval.evaluate(records, refs)
    assert set(res) == {"mos", "dnsmos_ovrl"}
    assert res["dnsmos_ovrl"]["utterance"]["num_dropped"] == 1  # utt005 has a NaN reference
    cross = sqa_eval.evaluate(records, refs, sqa_eval.parse_metric_pairs(["dnsmos_ovrl:mos"]))
    want = _expected([round(x["metrics"]["dnsmos_ovrl"], 4) for x in preds],
                     [x["metrics"]["mos"] for x in refs], [x["system_id"] for x in refs])
    assert cross["dnsmos_ovrl"]["utterance"]["SRCC"] == pytest.approx(want["utterance"]["SRCC"])
    assert set(sqa_eval.to_json(res)) == {"mos", "dnsmos_ovrl"}


def test_scp_predictions_join_on_sample_id(corpus):
    root, refs, _ = corpus
    res = sqa_eval.evaluate(read_predictions(root / "pred" / "mos.scp"), refs)
    assert res["mos"]["utterance"]["num_pairs"] == 60 and res["mos"]["system"]["num_pairs"] == 6


def test_missing_reference_is_an_error(corpus, capsys):
    root, refs, _ = corpus
    (root / "extra.scp").write_text("utt999 3.0\n")
    with pytest.raises(KeyError, match="utt999"):
        sqa_eval.evaluate(read_predictions(root / "extra.scp"), refs, [("extra", "mos")])
    rc = sqa_eval.main(["--pred", str(root / "extra.scp"), "--ref", str(root / "data.jsonl"),
                        "--pred-metric", "extra:mos"])
    # The message itself, not the repr of the KeyError (before: "error: \"no reference ...\"" with
    # "system_id None" for an scp, which has no system ids).
    assert rc == 2 and capsys.readouterr().err == "error: no reference for sample_id 'utt999'\n"


def test_empty_predictions_or_references_are_named(corpus, capsys):
    root, refs, _ = corpus
    (root / "empty.jsonl").write_text("")
    rc = sqa_eval.main(["--pred", str(root / "empty.jsonl"), "--ref", str(root / "data.jsonl")])
    assert rc == 2 and "no predictions to evaluate" in capsys.readouterr().err
    rc = sqa_eval.main(["--pred", str(root / "pred" / "results.jsonl"),
                        "--ref", str(root / "empty.jsonl")])  # fmt: skip
    assert rc == 2 and "no references to evaluate" in capsys.readouterr().err


def test_prediction_metric_named_twice_is_an_error(corpus, capsys):
    root, refs, _ = corpus
    with pytest.raises(ValueError, match=r"'mos' twice \('mos' and 'mos:dnsmos_ovrl'\)"):
        sqa_eval.parse_metric_pairs(["mos", "mos:dnsmos_ovrl"])
    records = read_predictions(root / "pred" / "results.jsonl")
    with pytest.raises(ValueError, match=r"\['mos'\] named more than once"):
        sqa_eval.evaluate(records, refs, [("mos", "mos"), ("mos", "dnsmos_ovrl")])
    out = root / "result.json"
    rc = sqa_eval.main(["--pred", str(root / "pred" / "results.jsonl"), "--ref", str(root / "data.jsonl"),
                        "--pred-metric", "mos", "--pred-metric", "mos:dnsmos_ovrl", "--output", str(out)])
    assert rc == 2 and "twice" in capsys.readouterr().err and not out.exists()
    # One reference per prediction name is fine, several names too.
    pairs = sqa_eval.parse_metric_pairs(["mos:dnsmos_ovrl", "dnsmos_ovrl:mos"])
    assert pairs == [("mos", "dnsmos_ovrl"), ("dnsmos_ovrl", "mos")]


def test_duplicate_results_line_is_an_error_naming_path_and_line(corpus):
    root, _, _ = corpus
    path = root / "pred" / "results.jsonl"
    lines = path.read_text().splitlines()
    path.write_text("\n".join([lines[0], *lines[1:4], lines[0], *lines[4:]]) + "\n")
    with pytest.raises(ManifestError, match=r"results\.jsonl:5: duplicate .*'utt000', 'sys0'.* line 1"):
        read_predictions(path)
    # Same sample in another system is another prediction (results.jsonl keys by both ids).
    other = json.loads(lines[0])
    path.write_text("\n".join([*lines, json.dumps({**other, "system_id": "sysX"})]) + "\n")
    assert len(read_predictions(path)) == 61


def _pred(sample_id, system_id, **metrics):
    return {"sample_id": sample_id, "system_id": system_id, "metrics": metrics}


def test_scp_outputs_refuse_a_sample_id_in_two_systems(tmp_path):
    records = [_pred("u1", "s1", mos=3.0), _pred("u1", "s2", mos=4.0), _pred("u2", "s1", mos=2.0)]
    with pytest.raises(ValueError, match=r"sample_id 'u1' occurs for systems 's1' and 's2'"):
        write_results(tmp_path / "a", records)
    with pytest.raises(ValueError, match=r"duplicate \(sample_id, system_id\) \('u1', 's1'\)"):
        write_results(tmp_path / "b", [records[0], records[0]])
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()  # nothing half-written


def test_submission_metric_choices(tmp_path):
    with_mos = [_pred("u1", "s", mos=3.0, dnsmos_ovrl=2.0), _pred("u2", "s", mos=4.0, dnsmos_ovrl=1.0)]
    files = write_results(tmp_path / "a", with_mos, submission_metric="mos")
    assert files == ["results.jsonl", "mos.scp", "dnsmos_ovrl.scp"]
    assert read_kv(tmp_path / "a" / "mos.scp") == {"u1": "3.0000", "u2": "4.0000"}
    # A model with mos: its mos.scp is the submission; another metric may not overwrite it.
    with pytest.raises(ValueError, match="predicts mos.*'dnsmos_ovrl' would overwrite"):
        write_results(tmp_path / "b", with_mos, submission_metric="dnsmos_ovrl")
    without = [{**r, "metrics": {"dnsmos_ovrl": r["metrics"]["dnsmos_ovrl"]}} for r in with_mos]
    with pytest.raises(ValueError, match="'mos' is not predicted by the model"):
        write_results(tmp_path / "c", without, submission_metric="mos")
    with pytest.raises(ValueError, match="'utmos' is not predicted by the model"):
        write_results(tmp_path / "c", without, submission_metric="utmos")
    files = write_results(tmp_path / "d", without, submission_metric="dnsmos_ovrl")
    assert files == ["results.jsonl", "dnsmos_ovrl.scp", "mos.scp"]
    assert read_kv(tmp_path / "d" / "mos.scp") == {"u1": "2.0000", "u2": "1.0000"}
