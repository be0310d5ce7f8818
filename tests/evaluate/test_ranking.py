"""ranking: dense ranks with ties, lower-is-better outputs, re-ranked vs plain means, dropped
metrics and categories; hand-computed answers; CLI files."""

import json
import math

import pytest

from urgent_jax.evaluate.ranking import DEFAULT_CATEGORIES, dense_rank, main, rank_systems

CATEGORIES = {"Quality": ["PESQ", "LSD"], "Non-intrusive": ["DNSMOS_OVRL"]}  # LSD: lower is better
RESULTS = {
    "A": {"PESQ": 3.0, "LSD": 1.0, "DNSMOS_OVRL": 3.0},
    "B": {"PESQ": 2.5, "LSD": 1.0, "DNSMOS_OVRL": 3.2},
    "C": {"PESQ": 2.5, "LSD": 2.0, "DNSMOS_OVRL": 3.1},
    "D": {"PESQ": 2.0, "LSD": 0.5, "DNSMOS_OVRL": 3.1},
}


def test_dense_rank():
    assert dense_rank([3.0, 2.5, 2.5, 2.0], higher_is_better=True) == [1, 2, 2, 3]
    assert dense_rank([3.0, 2.5, 2.5, 2.0], higher_is_better=False) == [3, 2, 2, 1]
    assert dense_rank([1.0, math.nan, 0.5], higher_is_better=True) == [1, 3, 2]


def test_reranked_procedure():
    r = rank_systems(RESULTS, CATEGORIES)
    # PESQ (desc) 1,2,2,3 ; LSD (asc) 2,2,3,1 ; DNSMOS_OVRL (desc) 3,1,2,2
    assert {s: r.metric_ranks[s]["PESQ"] for s in "ABCD"} == {"A": 1, "B": 2, "C": 2, "D": 3}
    assert {s: r.metric_ranks[s]["LSD"] for s in "ABCD"} == {"A": 2, "B": 2, "C": 3, "D": 1}
    assert {s: r.metric_ranks[s]["DNSMOS_OVRL"] for s in "ABCD"} == {"A": 3, "B": 1, "C": 2, "D": 2}
    # Quality means 1.5, 2, 2.5, 2 -> ranks 1, 2, 3, 2 ; Non-intrusive ranks 3, 1, 2, 2
    assert {s: r.category_scores[s]["Quality"] for s in "ABCD"} == {"A": 1, "B": 2, "C": 3, "D": 2}
    assert {s: r.category_scores[s]["Non-intrusive"] for s in "ABCD"} == {
        "A": 3,
        "B": 1,
        "C": 2,
        "D": 2,
    }
    # overall means 2, 1.5, 2.5, 2 -> dense ranks 2, 1, 3, 2
    assert r.overall == {"A": 2, "B": 1, "C": 3, "D": 2}
    assert r.place == r.overall
    assert r.order() == ["B", "A", "D", "C"]
    assert r.dropped_metrics == [] and r.dropped_categories == []


def test_plain_means_without_reranking_differ():
    r = rank_systems(RESULTS, CATEGORIES, rerank=False)
    assert {s: r.category_scores[s]["Quality"] for s in "ABCD"} == {
        "A": 1.5,
        "B": 2.0,
        "C": 2.5,
        "D": 2.0,
    }
    # overall = mean(1.5, 3), mean(2, 1), mean(2.5, 2), mean(2, 2)
    assert r.overall == {"A": 2.25, "B": 1.5, "C": 2.25, "D": 2.0}
    # places = dense ranks of the overall means: B 1.5 -> 1, D 2.0 -> 2, A and C tie at 2.25 -> 3
    assert r.place == {"A": 3, "B": 1, "C": 3, "D": 2}
    assert r.order() == ["B", "D", "A", "C"]


def test_default_categories_drop_missing_metrics_and_empty_categories():
    results = {
        "X": {"DNSMOS_OVRL": 3.0, "PESQ": 2.0, "ESTOI": 0.8, "SpkSim": 0.9, "SDR": 10.0},
        "Y": {"DNSMOS_OVRL": 3.1, "PESQ": 2.0, "ESTOI": 0.7},  # no SpkSim: last on it
        "Z": {"DNSMOS_OVRL": 2.9, "PESQ": 1.5, "ESTOI": math.nan, "SpkSim": 0.95},
    }
    r = rank_systems(results)
    assert r.categories == {
        "Non-intrusive SE": ["DNSMOS_OVRL"],
        "Intrusive SE": ["PESQ", "ESTOI"],
        "Downstream-task-dependent": ["SpkSim"],
    }
    assert r.dropped_categories == ["Downstream-task-independent"]
    assert set(r.dropped_metrics) == {
        "NISQA",
        "UTMOS",
        "SCOREQ",
        "POLQA",
        "SpeechBERTScore",
        "LPS",
        "EmoSim",
        "LID_ACC",
        "CAcc",
    }
    assert {s: r.metric_ranks[s]["SpkSim"] for s in "XYZ"} == {"X": 2, "Y": 3, "Z": 1}
    assert {s: r.metric_ranks[s]["ESTOI"] for s in "XYZ"} == {"X": 1, "Y": 2, "Z": 3}
    # Intrusive: X (1+1)/2=1, Y (1+2)/2=1.5, Z (2+3)/2=2.5 -> 1, 2, 3
    # Non-intrusive: X 2, Y 1, Z 3 ; task-dependent: X 2, Y 3, Z 1
    # overall means: X 5/3, Y 2, Z 7/3 -> 1, 2, 3
    assert r.overall == {"X": 1, "Y": 2, "Z": 3}
    assert math.isnan(r.means["Y"]["SpkSim"])
    assert list(DEFAULT_CATEGORIES) == [
        "Non-intrusive SE",
        "Intrusive SE",
        "Downstream-task-independent",
        "Downstream-task-dependent",
    ]


def test_no_metric_at_all_is_an_error():
    with pytest.raises(ValueError, match="no metric"):
        rank_systems({"X": {"SDR": 1.0}})


def test_cli_writes_markdown_and_json(tmp_path, capsys):
    paths = []
    for name, means in RESULTS.items():
        d = tmp_path / f"sys{name}"
        d.mkdir()
        (d / "RESULTS.txt").write_text("".join(f"{k}: {v:.4f}\n" for k, v in means.items()))
        paths.append(str(d / "RESULTS.txt"))
    categories = tmp_path / "categories.json"
    categories.write_text(json.dumps(CATEGORIES | {"Empty": ["UTMOS"]}))
    md, js = tmp_path / "ranking.md", tmp_path / "ranking.json"
    main(
        [
            "--results",
            *paths,
            "--categories",
            str(categories),
            "--output",
            str(md),
            "--json",
            str(js),
            "--no_rerank",
        ]
    )
    printed = capsys.readouterr().out
    assert "dropped category 'Empty'" in printed
    text = md.read_text()
    assert text.splitlines()[0].startswith("| place | system | PESQ ↑ | LSD ↓ | DNSMOS_OVRL ↑ |")
    assert "| 1 | sysB | 2.5000 (2) | 1.0000 (2) | 3.2000 (1) | 2 | 1 | 1.500 |" in text
    data = json.loads(js.read_text())
    assert [s["name"] for s in data["systems"]] == ["sysB", "sysD", "sysA", "sysC"]
    assert data["rerank"] is False and data["dropped_categories"] == ["Empty"]
    main(
        [
            "--results",
            *paths,
            "--names",
            "a",
            "b",
            "c",
            "d",
            "--categories",
            str(categories),
            "--json",
            str(js),
        ]
    )
    data = json.loads(js.read_text())
    assert [s["name"] for s in data["systems"]] == ["b", "a", "d", "c"]
    assert data["systems"][0]["overall"] == 1
