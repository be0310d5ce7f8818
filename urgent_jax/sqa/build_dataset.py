"""Build your own multi-metric SQA dataset: degrade clean speech with the simulator, optionally enhance
it with trained SE models, label everything with the metric suite, write Track 2 data.jsonl.

    python -m urgent_jax.sqa.build_dataset --sources_dir data/train_sources --out data/my_sqa \
        [--sim_config configs/simulation/train.py] [--repeat_per_utt 2] [--seed 0] \
        [--metrics dnsmos,distill_mos,pesq,estoi,sdr,si_sdr,lsd,mcd] [--sample_rate 16000] \
        [--speech_sample_rates 16000,48000] \
        [--enhance_workdir exp/bsrnn --enhance_workdir exp/tfgridnet] [--include_clean] \
        [--heldout_fraction 0.1]

Stages (each resumes from what exists):
  0. with --speech_sample_rates, keep only the clean speech at those rates;
  1. draw simulation parameters for every clean utterance of --sources_dir (a Track 1 source
     directory: speech_sources.scp, noise / wind / RIR lists) with --sim_config
     (`urgent_jax.simulation.generate_params`) and render them (`urgent_jax.data.presimulate`);
  2. with --sample_rate, resample degraded and clean audio to that rate (one rate = fewer compiled
     metric shapes; SQA models read 16 kHz anyway), trimmed to whole 10 ms;
  3. for every --enhance_workdir (a `urgent_jax.enhance.train` run, or a directory written by
     `python -m urgent_jax.models.convert`), enhance the degraded audio (`python -m
     urgent_jax.enhance.infer`, run as a command so this package stays independent of the SE one);
  4. label degraded and enhanced audio against the clean reference with the batched metric suite
     (`urgent_jax.evaluate.score`);
  5. write OUT/data.jsonl (REFERENCE.md §1.5: audio_path, system_id, sample_id, duration, metrics;
     unscorable values are NaN) with the intermediate wav.scp, utt2sys, utt2dur and <metric>.scp,
     and, with --heldout_fraction, OUT/train/data.jsonl + OUT/heldout/data.jsonl split by clean
     utterance (all versions of one utterance fall on the same side).

With --include_clean the clean references join as system `clean` (sample ids `clean-<fileid>`), labelled
with the non-intrusive metrics only (intrusive ones are NaN). System ids: degraded audio gets its
distortion types, e.g. `noise+reverb+clipping+codec` (additive
noise or wind, reverberation, then the augmentations in sorted order); enhanced audio gets
`enhanced:<workdir name>` and sample ids `<workdir name>-<fileid>` (so the folder names of the
--enhance_workdir paths must differ, and differ from `degraded` and `clean`). Labels carry the
Track 2 metric names (REFERENCE.md §1.5): lower-case output names (dnsmos_ovrl, si_sdr, ...), with
the plug-ins' NISQA -> nisqa_mos and SpeechBERTScore -> sbert.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import re
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from urgent_jax.audio.io import audio_info, read_audio, write_audio
from urgent_jax.data import presimulate as presimulate_lib
from urgent_jax.data.manifest import read_kv, read_meta_tsv, write_kv, write_meta_tsv
from urgent_jax.evaluate import score as score_lib
from urgent_jax.metrics.registry import get_metric
from urgent_jax.simulation.generate_params import generate_meta
from urgent_jax.sqa.data import write_jsonl
from urgent_jax.train.config_file import load_config

log = logging.getLogger(__name__)

DEFAULT_METRICS = ("dnsmos", "distill_mos", "pesq", "estoi", "sdr", "si_sdr", "lsd", "mcd")
# Registry outputs whose Track 2 data.jsonl name (REFERENCE.md §1.5) is not their lower-case form.
TRACK2_NAMES = {"NISQA": "nisqa_mos", "SpeechBERTScore": "sbert"}
RESERVED_VERSIONS = ("degraded", "clean")  # label dirs / sample-id prefixes of the other versions
REPO_CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def system_id(row) -> str:
    """Distortion types of a meta.tsv row: noise|wind, +reverb, +sorted augmentation names."""
    parts = [p for p in row.augmentation.split("/") if p and p != "none"]
    names = [re.match(r"[a-z_]+", p).group(0) for p in parts]
    kinds = ["wind" if "wind_noise" in names else "noise"]
    if row.rir_uid != "none":
        kinds.append("reverb")
    kinds += sorted({n for n in names if n != "wind_noise"})
    return "+".join(kinds)


SPEECH_LISTS = ("speech_sources.scp", "source_length.scp", "text", "utt2lang", "utt2spk")


def select_speech(sources_dir: str, out_dir: Path, sample_rates: Sequence[int]) -> str:
    """A copy of the source directory's lists keeping only speech at `sample_rates` (noise, wind
    and RIR lists unchanged); returns its path."""
    src = Path(sources_dir)
    speech = read_kv(src / "speech_sources.scp")  # uid -> "fs path"
    keep = {uid for uid, value in speech.items() if int(value.split()[0]) in set(sample_rates)}
    if not keep:
        raise ValueError(f"{src / 'speech_sources.scp'}: no speech at {list(sample_rates)} Hz")
    out_dir.mkdir(parents=True, exist_ok=True)
    for path in sorted(p for p in src.iterdir() if p.is_file()):
        lines = path.read_text(encoding="utf-8").splitlines()
        if path.name in SPEECH_LISTS:
            lines = [x for x in lines if x.split(maxsplit=1)[0] in keep
                     or x.split(maxsplit=1)[0] not in speech]
        (out_dir / path.name).write_text("\n".join(lines) + "\n", encoding="utf-8")
    return str(out_dir)


def _render(sources_dir: str, out_dir: Path, sim_config: str, seed: int, repeat_per_utt: int) -> list:
    meta_path = out_dir / "log" / "meta.tsv"
    if not meta_path.exists():
        cfg = load_config(sim_config)
        selection = {**cfg.selection.to_dict(), "repeat_per_utt": repeat_per_utt}
        rows = generate_meta(sources_dir, output_dir=str(out_dir.resolve()), seed=seed,
                             sample_params=cfg.sample_params.to_dict(), **selection)
        write_meta_tsv(meta_path, rows)
    presimulate_lib.presimulate(str(meta_path), sources_dir, str(out_dir), batch_size=8,
                                num_workers=0, policy="skip", seed=seed)
    return read_meta_tsv(meta_path)


def _resample_set(rows, out_dir: Path, sample_rate: int) -> tuple[dict, dict]:
    """(noisy, clean) uid -> path at `sample_rate` (WAV, written once)."""
    noisy, clean = {}, {}
    for row in rows:
        for kind, src, table in (("noisy", row.noisy_path, noisy), ("clean", row.clean_path, clean)):
            dst = out_dir / kind / f"{row.id}.wav"
            if not dst.exists():
                if not os.path.exists(src):
                    continue  # not rendered (skipped source): left out, reported by the caller
                x, _ = read_audio(src, sample_rate=sample_rate, first_channel=True)
                # Whole 10 ms: DNSMOS then finds the repetition period of short clips and scores
                # their repeated segments once (metrics.dnsmos), several times faster.
                write_audio(dst, x[:, : x.shape[-1] // (sample_rate // 100) * (sample_rate // 100)],
                            sample_rate)
            table[row.id] = str(dst)
    return noisy, clean


def _enhance(workdir: str, noisy_scp: Path, out_dir: Path) -> Path:
    inf_scp = out_dir / "inf.scp"
    if not inf_scp.exists():
        # A training run (config.json + checkpoints) or a converted checkpoint (model.json).
        flag = "--params" if (Path(workdir) / "model.json").exists() else "--workdir"
        cmd = [sys.executable, "-m", "urgent_jax.enhance.infer", flag, str(workdir),
               "--input_scp", str(noisy_scp), "--output_dir", str(out_dir)]
        log.info("enhancing with %s: %s", workdir, " ".join(cmd))
        subprocess.run(cmd, check=True)
    return inf_scp


def track2_name(output: str) -> str:
    """The data.jsonl metric name of a metric-suite output: its Track 2 name (REFERENCE.md §1.5;
    NISQA -> nisqa_mos, SpeechBERTScore -> sbert), else the output name in lower case
    (DNSMOS_OVRL -> dnsmos_ovrl, SI_SDR -> si_sdr)."""
    return TRACK2_NAMES.get(output, output.lower())


def _label(ref_scp: Path | None, inf_scp: Path, out_dir: Path, metrics: Sequence[str], batch_size: int,
           use_progress_bar: bool) -> dict[str, dict[str, float]]:
    """{uid: {metric: value}} with Track 2 metric names (`track2_name`; NaN where unscorable);
    kept in out_dir/labels.json, reused when it covers the same utterances and metrics."""
    uids = read_kv(inf_scp)
    cache = out_dir / "labels.json"
    if cache.exists():
        with open(cache) as f:
            cached = json.load(f)
        names = {track2_name(o) for m in metrics for o in get_metric(m).outputs}
        if (cached.get("metrics") == list(metrics) and set(cached["labels"]) == set(uids)
                and all(set(v) <= names for v in cached["labels"].values())):  # not pre-Track-2 names
            return cached["labels"]
    result = score_lib.score(None if ref_scp is None else str(ref_scp), str(inf_scp), str(out_dir), metrics=list(metrics),
                             batch_size=batch_size, make_report=False,
                             use_progress_bar=use_progress_bar)
    labels = {uid: {} for uid in uids}
    for output, values in result["scores"].items():
        for uid in uids:
            labels[uid][track2_name(output)] = float(values.get(uid, float("nan")))
    with open(cache, "w") as f:
        json.dump({"metrics": list(metrics), "labels": labels}, f)
    return labels


def _heldout(speech_uid: str, seed: int, fraction: float) -> bool:
    digest = hashlib.sha256(f"{seed}:{speech_uid}".encode()).digest()
    return int.from_bytes(digest[:8], "little") / 2**64 < fraction


def _write_corpus(records: list[dict], out_dir: Path) -> None:
    """data.jsonl plus the §1.5 intermediate lists (wav.scp, utt2sys, utt2dur, <metric>.scp)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    records = sorted(records, key=lambda r: r["sample_id"])
    write_kv(out_dir / "wav.scp", {r["sample_id"]: r["audio_path"] for r in records})
    write_kv(out_dir / "utt2sys", {r["sample_id"]: r["system_id"] for r in records})
    write_kv(out_dir / "utt2dur", {r["sample_id"]: f"{r['duration']:.3f}" for r in records})
    names = sorted({n for r in records for n in r["metrics"]})
    for name in names:
        values = {r["sample_id"]: r["metrics"].get(name, float("nan")) for r in records}
        write_kv(out_dir / f"{name}.scp", {k: "NaN" if np.isnan(v) else f"{v:.4f}"
                                           for k, v in values.items()})
    write_jsonl(out_dir / "data.jsonl", records)


def _check_enhancer_names(enhance_workdirs: Sequence[str]) -> None:
    """An enhancer's folder name names its outputs (enhanced/<name>, labels/<name>, system
    `enhanced:<name>`, sample ids `<name>-<fileid>`): two workdirs with one name would share them."""
    seen: dict[str, str] = {}
    for workdir in enhance_workdirs:
        name = Path(workdir).resolve().name
        if name in seen:
            raise ValueError(f"--enhance_workdir {seen[name]} and {workdir} have the same folder "
                             f"name {name!r}, which names their outputs (enhanced/{name}, system "
                             f"'enhanced:{name}'); give each a distinct name (e.g. a symlink)")
        if name in RESERVED_VERSIONS:
            raise ValueError(f"--enhance_workdir {workdir}: folder name {name!r} is taken by the "
                             f"{name} audio's outputs; rename it (e.g. a symlink)")
        seen[name] = workdir


def build_dataset(
    sources_dir: str,
    out_dir: str,
    *,
    sim_config: str = str(REPO_CONFIGS / "simulation" / "train.py"),
    seed: int = 0,
    repeat_per_utt: int = 1,
    metrics: Sequence[str] = DEFAULT_METRICS,
    sample_rate: int | None = None,
    speech_sample_rates: Sequence[int] = (),
    enhance_workdirs: Sequence[str] = (),
    include_clean: bool = False,
    heldout_fraction: float = 0.0,
    batch_size: int = 16,
    use_progress_bar: bool = True,
) -> dict:
    """Run every stage (module docstring); returns a summary dict."""
    if not 0.0 <= heldout_fraction < 1.0:
        raise ValueError(f"heldout_fraction must be in [0, 1), got {heldout_fraction}")
    _check_enhancer_names(enhance_workdirs)
    out = Path(out_dir)
    if speech_sample_rates:
        sources_dir = select_speech(sources_dir, out / "sources", speech_sample_rates)
    rows = _render(sources_dir, out / "degraded", sim_config, seed, repeat_per_utt)
    if sample_rate:
        noisy, clean = _resample_set(rows, out / f"degraded_{sample_rate}", sample_rate)
    else:
        noisy = {r.id: r.noisy_path for r in rows if os.path.exists(r.noisy_path)}
        clean = {r.id: r.clean_path for r in rows if os.path.exists(r.clean_path)}
    missing = [r.id for r in rows if r.id not in noisy or r.id not in clean]
    rows = [r for r in rows if r.id in noisy and r.id in clean]
    lists = out / "lists"
    lists.mkdir(parents=True, exist_ok=True)
    write_kv(lists / "noisy.scp", {r.id: noisy[r.id] for r in rows})
    write_kv(lists / "clean.scp", {r.id: clean[r.id] for r in rows})

    # (audio scp, label dir, system id of a row, sample id of a row)
    versions = [(lists / "noisy.scp", out / "labels" / "degraded", system_id, lambda r: r.id)]
    for workdir in enhance_workdirs:
        name = Path(workdir).resolve().name
        inf_scp = _enhance(workdir, lists / "noisy.scp", out / "enhanced" / name)
        versions.append((inf_scp, out / "labels" / name, lambda r, n=name: f"enhanced:{n}",
                         lambda r, n=name: f"{n}-{r.id}"))

    records, heldout, num_unlabelled = [], [], 0
    if include_clean:  # the references themselves: non-intrusive labels only (the rest NaN)
        versions.append((lists / "clean.scp", out / "labels" / "clean", lambda r: "clean",
                         lambda r: f"clean-{r.id}"))
    for scp, label_dir, sys_fn, uid_fn in versions:
        is_clean = scp == lists / "clean.scp"
        names = [m for m in metrics if not (is_clean and get_metric(m).intrusive)]
        labels = _label(None if is_clean else lists / "clean.scp", scp, label_dir, names,
                        batch_size, use_progress_bar) if names else {}
        paths = read_kv(scp)
        for row in rows:
            if row.id not in paths:
                num_unlabelled += 1
                continue
            fs, num_samples, _ = audio_info(paths[row.id])
            record = {"audio_path": os.path.abspath(paths[row.id]), "system_id": sys_fn(row),
                      "sample_id": uid_fn(row), "duration": num_samples / fs,
                      "metrics": labels.get(row.id, {})}
            is_heldout = heldout_fraction > 0 and _heldout(row.speech_uid, seed, heldout_fraction)
            (heldout if is_heldout else records).append(record)
    _write_corpus(records + heldout, out)
    if heldout_fraction > 0:
        _write_corpus(records, out / "train")
        _write_corpus(heldout, out / "heldout")
    systems = sorted({r["system_id"] for r in records + heldout})
    summary = {
        "out_dir": str(out), "num_records": len(records) + len(heldout), "num_train": len(records),
        "num_heldout": len(heldout), "num_systems": len(systems), "systems": systems,
        "metrics": sorted({n for r in records + heldout for n in r["metrics"]}),
        "num_not_rendered": len(missing), "num_unlabelled": num_unlabelled,
        "hours": round(sum(r["duration"] for r in records + heldout) / 3600, 4),
    }  # fmt: skip
    with open(out / "build_summary.json", "w") as f:
        json.dump(summary, f, indent=2)
    return summary


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m urgent_jax.sqa.build_dataset", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sources_dir", required=True, help="Track 1 source directory (clean speech)")
    parser.add_argument("--out", required=True)
    parser.add_argument("--sim_config", default=str(REPO_CONFIGS / "simulation" / "train.py"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeat_per_utt", type=int, default=1)
    parser.add_argument("--metrics", default=",".join(DEFAULT_METRICS),
                        help="metric registry names, comma separated")
    parser.add_argument("--sample_rate", type=int, default=None,
                        help="resample degraded / clean audio to this rate before labelling")
    parser.add_argument("--speech_sample_rates", default="",
                        help="use only speech at these rates (comma separated; default all)")
    parser.add_argument("--enhance_workdir", action="append", default=[])
    parser.add_argument("--include_clean", action="store_true",
                        help="add the clean references (system 'clean', non-intrusive labels only)")
    parser.add_argument("--heldout_fraction", type=float, default=0.0)
    parser.add_argument("--batch_size", type=int, default=16)
    args = parser.parse_args(argv)
    from urgent_jax import prepare_runtime
    from urgent_jax.train.launch import quiet_logs

    prepare_runtime()
    quiet_logs()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    summary = build_dataset(
        args.sources_dir, args.out, sim_config=args.sim_config, seed=args.seed,
        repeat_per_utt=args.repeat_per_utt, metrics=[m for m in args.metrics.split(",") if m],
        sample_rate=args.sample_rate,
        speech_sample_rates=[int(x) for x in args.speech_sample_rates.split(",") if x],
        enhance_workdirs=args.enhance_workdir, include_clean=args.include_clean,
        heldout_fraction=args.heldout_fraction, batch_size=args.batch_size,
    )  # fmt: skip
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
