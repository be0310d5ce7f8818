"""The main job, run by `make quickstart`: everything offline on the embedded demo corpus.

    python experiments/quickstart.py --out runs/quickstart [--size small] [--seed 0] [--train_s 480]

Stages (each resumes from what already exists):
  1. build the demo corpus (eSpeak NG speech, procedural noise / wind / RIRs) in the official Track 1
     layout and print its summary table;
  2. draw a validation meta.tsv from the held-out sources with the official validation settings
     (`urgent_jax.simulation.generate_params`) and render it with the batched jit simulator
     (`urgent_jax.data.presimulate`);
  3. train `configs/se/bsrnn.py:tiny` (jit dynamic mixing in the loader) for --train_s seconds
     (`urgent_jax.enhance.train`);
  4. enhance the validation set (`urgent_jax.enhance.infer`);
  5. score noisy and enhanced speech with the offline metric suite (`urgent_jax.evaluate.score`:
     RESULTS.txt, BREAKDOWN.md, report.md) and print them side by side;
  6. Track 2: build a multi-metric SQA set from the training speech (`urgent_jax.sqa.build_dataset`:
     degraded speech and its clean references at 16 kHz, labelled with DNSMOS, SDR and SI-SDR, a
     held-out quarter split by utterance), train `configs/sqa/universa_ext.py:tiny` for --sqa_train_s seconds
     (`urgent_jax.sqa.train`), predict the held-out part (`urgent_jax.sqa.infer`) and print its
     correlations (`urgent_jax.sqa.eval`);
  7. curation: score the training speech (`urgent_jax.curation.score`) and filter it with
     `configs/curation/urgent2025.py` (`urgent_jax.curation.filter`), printing what is kept.
results.json holds {"noisy": {metric: mean}, "enhanced": {metric: mean}, "sqa": {...},
"curation": {...}, "wall_s": ...}.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from urgent_jax import prepare_runtime  # noqa: E402
from urgent_jax.curation.filter import filter_scores  # noqa: E402
from urgent_jax.curation.filter import format_summary as format_curation  # noqa: E402
from urgent_jax.curation.score import score_corpus  # noqa: E402
from urgent_jax.data import demo_corpus, presimulate  # noqa: E402
from urgent_jax.data.manifest import write_meta_tsv  # noqa: E402
from urgent_jax.enhance import infer  # noqa: E402
from urgent_jax.enhance import train as train_cli  # noqa: E402
from urgent_jax.evaluate import score as score_cli  # noqa: E402
from urgent_jax.evaluate.breakdown import json_safe  # noqa: E402
from urgent_jax.simulation.generate_params import generate_meta  # noqa: E402
from urgent_jax.sqa import eval as sqa_eval  # noqa: E402
from urgent_jax.sqa import infer as sqa_infer  # noqa: E402
from urgent_jax.sqa import train as sqa_train  # noqa: E402
from urgent_jax.sqa.build_dataset import build_dataset  # noqa: E402
from urgent_jax.sqa.data import read_jsonl  # noqa: E402
from urgent_jax.sqa.results import read_predictions  # noqa: E402
from urgent_jax.train.config_file import load_config  # noqa: E402

REPO = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")


def build_validation_set(corpus_dir: str, out_dir: str, seed: int) -> dict:
    """Stage 2: meta.tsv from the validation sources, rendered into out_dir (official layout)."""
    meta_path = os.path.join(out_dir, "log", "meta.tsv")
    if not os.path.exists(meta_path):
        cfg = load_config(os.path.join(REPO, "configs", "simulation", "validation.py"))
        rows = generate_meta(
            os.path.join(corpus_dir, "validation_sources"),
            output_dir=os.path.abspath(out_dir),
            seed=seed,
            sample_params=cfg.sample_params.to_dict(),
            **cfg.selection.to_dict(),
        )
        write_meta_tsv(meta_path, rows)
    summary = presimulate.presimulate(
        meta_path, os.path.join(corpus_dir, "validation_sources"), out_dir, batch_size=8, num_workers=0
    )
    print(presimulate.format_summary(summary))
    return summary


def train_model(corpus_dir: str, workdir: str, train_s: float, seed: int) -> dict:
    """Stage 3: the tiny BSRNN with dynamic mixing, for at most train_s seconds (skipped when done)."""
    done = os.path.join(workdir, "train_summary.json")
    if os.path.exists(done):
        with open(done) as f:
            return json.load(f)
    config = load_config(os.path.join(REPO, "configs", "se", "bsrnn.py") + ":tiny")
    config.data.sources_dir = os.path.abspath(os.path.join(corpus_dir, "train_sources"))
    config.train.max_train_s = float(train_s)
    config.train.seed = seed
    return train_cli.train(config, workdir)


def sqa_stage(corpus_dir: str, out_dir: str, train_s: float, seed: int) -> dict:
    """Stage 6: build a labelled SQA set, train the tiny SQA model, evaluate it on held-out items."""
    set_dir = os.path.join(out_dir, "set")
    built = build_dataset(
        os.path.join(corpus_dir, "train_sources"), set_dir, seed=seed, repeat_per_utt=1,
        metrics=("dnsmos", "sdr", "si_sdr"), sample_rate=16000, include_clean=True,
        heldout_fraction=0.25,
    )  # fmt: skip
    print(f"SQA set: {built['num_train']} training / {built['num_heldout']} held-out clips, "
          f"{built['num_systems']} systems, {built['hours'] * 60:.1f} min", flush=True)
    workdir = os.path.join(out_dir, "train")
    done = os.path.join(workdir, "train_summary.json")
    if os.path.exists(done):
        with open(done) as f:
            trained = json.load(f)
    else:
        config = load_config(os.path.join(REPO, "configs", "sqa", "universa_ext.py") + ":tiny")
        config.data.train_jsonl = (os.path.abspath(os.path.join(set_dir, "train", "data.jsonl")),)
        config.train.max_train_s = float(train_s)
        config.train.seed = seed
        trained = sqa_train.train(config, workdir)
    print(f"trained {trained['step']} steps ({trained['audio_s']:.0f} s of audio, {trained['compiles']} "
          f"compiles)", flush=True)
    heldout = os.path.join(set_dir, "heldout", "data.jsonl")
    predicted = sqa_infer.infer(workdir, os.path.join(out_dir, "heldout_pred"), data_jsonl=heldout,
                                max_batch_size=16)
    stats = sqa_eval.evaluate(read_predictions(os.path.join(out_dir, "heldout_pred", "results.jsonl")),
                              read_jsonl(heldout))
    print("held-out correlations (prediction vs the metric-suite label):")
    print(sqa_eval.format_table(stats))
    return {"set": built, "train": trained, "predicted": predicted["num_predicted"],
            "heldout": sqa_eval.to_json(stats),
            "heldout_srcc_dnsmos_ovrl": stats["dnsmos_ovrl"]["utterance"]["SRCC"]}


def curation_stage(corpus_dir: str, out_dir: str) -> dict:
    """Stage 7: score the training speech and keep what passes configs/curation/urgent2025.py:demo."""
    sources = os.path.join(corpus_dir, "train_sources")
    scored = score_corpus(os.path.join(sources, "speech_sources.scp"), os.path.join(out_dir, "scores.tsv"))
    print(f"scored {scored['num_scored']} utterances ({scored['num_skipped']} already done, "
          f"{scored['num_errors']} errors) at {scored['hours_per_hour']:.1f} h of audio per hour", flush=True)
    kept = filter_scores(os.path.join(out_dir, "scores.tsv"),
                         os.path.join(REPO, "configs", "curation", "urgent2025.py") + ":demo",
                         os.path.join(out_dir, "curated"), utt2lang=os.path.join(sources, "utt2lang"),
                         resample=True)
    print(format_curation(kept))
    return {"score": scored, "filter": kept}


def score_stage(validation_dir: str, enhanced_dir: str, scores_dir: str, **kwargs) -> dict:
    """Stage 5: score enhanced and noisy speech against the validation targets, with the
    validation meta.tsv and utt2lang for the breakdown (`score_cli.score` keyword arguments in
    kwargs, e.g. metrics)."""
    return score_cli.score(
        os.path.join(validation_dir, "spk1.scp"), os.path.join(enhanced_dir, "inf.scp"), scores_dir,
        meta_tsv=os.path.join(validation_dir, "log", "meta.tsv"),
        utt2lang=os.path.join(validation_dir, "utt2lang"),
        noisy_scp=os.path.join(validation_dir, "wav.scp"), **kwargs,
    )  # fmt: skip


def side_by_side(summary: dict) -> str:
    """Noisy vs enhanced means, one metric a row."""
    rows = [f"{'metric':<14}{'noisy':>10}{'enhanced':>10}{'delta':>10}"]
    for name, enhanced in summary["means"].items():
        noisy = summary["noisy_means"].get(name, float("nan"))
        rows.append(f"{name:<14}{noisy:>10.3f}{enhanced:>10.3f}{enhanced - noisy:>+10.3f}")
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/quickstart", help="output directory")
    parser.add_argument("--size", default="small", choices=("small", "medium"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--train_s", type=float, default=480.0, help="SE training time budget, seconds")
    parser.add_argument("--sqa_train_s", type=float, default=120.0, help="SQA training time budget, seconds")
    args = parser.parse_args()

    prepare_runtime()
    train_cli.quiet_logs()
    t0 = time.time()
    corpus_dir = os.path.join(args.out, "corpus")
    print(f"[1/7] demo corpus -> {corpus_dir}", flush=True)
    summary = demo_corpus.build_demo_corpus(corpus_dir, seed=args.seed, size=args.size)
    demo_corpus.print_summary(summary)

    validation_dir = os.path.join(args.out, "validation")
    print(f"\n[2/7] validation set (generate_params + presimulate) -> {validation_dir}", flush=True)
    validation = build_validation_set(corpus_dir, validation_dir, args.seed)

    workdir = os.path.join(args.out, "train")
    print(f"\n[3/7] train configs/se/bsrnn.py:tiny for up to {args.train_s:.0f} s -> {workdir}", flush=True)
    trained = train_model(corpus_dir, workdir, args.train_s, args.seed)
    print(f"trained {trained['step']} steps ({trained['audio_s']:.0f} s of audio, {trained['compiles']} "
          f"compiles, stop: {trained['stop_reason']})", flush=True)

    enhanced_dir = os.path.join(args.out, "enhanced")
    print(f"\n[4/7] enhance the validation set -> {enhanced_dir}", flush=True)
    model, variables = infer.load_model_and_variables(workdir)
    enhanced = infer.enhance_scp(model, variables, os.path.join(validation_dir, "wav.scp"), enhanced_dir)
    print(json.dumps(enhanced), flush=True)

    scores_dir = os.path.join(args.out, "scores")
    print(f"\n[5/7] score noisy and enhanced speech -> {scores_dir}", flush=True)
    scored = score_stage(validation_dir, enhanced_dir, scores_dir)
    print(score_cli.format_summary(scored))
    print("\n" + side_by_side(scored))

    sqa_dir = os.path.join(args.out, "sqa")
    print(f"\n[6/7] SQA: build a multi-metric set, train the tiny model for up to {args.sqa_train_s:.0f} s, "
          f"evaluate on held-out clips -> {sqa_dir}", flush=True)
    sqa = sqa_stage(corpus_dir, sqa_dir, args.sqa_train_s, args.seed)

    curation_dir = os.path.join(args.out, "curation")
    print(f"\n[7/7] curation: score and filter the training speech -> {curation_dir}", flush=True)
    curation = curation_stage(corpus_dir, curation_dir)

    results = {
        "noisy": scored["noisy_means"], "enhanced": scored["means"], "sqa": sqa, "curation": curation,
        "wall_s": round(time.time() - t0, 1),
        "train": trained, "enhance": enhanced, "corpus": summary, "validation": validation,
        "report": os.path.join(scores_dir, "report.md"),
    }  # fmt: skip
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump(json_safe(results), f, indent=2)
    gain = results["enhanced"].get("SI_SDR", float("nan")) - results["noisy"].get("SI_SDR", float("nan"))
    print(f"\nSI-SDR gain over the noisy input: {gain:+.2f} dB")
    print(f"SQA held-out utterance SRCC against DNSMOS OVRL labels: {sqa['heldout_srcc_dnsmos_ovrl']:.3f}")
    print(f"quickstart done in {results['wall_s']} s; results in {args.out}/results.json")


if __name__ == "__main__":
    main()
