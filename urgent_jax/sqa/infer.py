"""Predict quality scores with a trained SQA model (REFERENCE.md §1.5 output formats).

    python -m urgent_jax.sqa.infer --workdir exp/sqa --data data/chime-7-udase-eval/test/data.jsonl \
        --out OUT
    python -m urgent_jax.sqa.infer --workdir exp/sqa --wav_scp wav.scp [--utt2sys utt2sys] --out OUT

Writes OUT/results.jsonl ({"sample_id", "system_id", "metrics"} per utterance), one
OUT/<metric>.scp per predicted metric, and the challenge submission OUT/mos.scp: the model's `mos`;
a model that predicts no `mos` writes --submission_metric there (default: its first metric).
--submission_metric other than mos on a model that predicts mos, or naming a metric the model
does not predict, is an error. Sample ids must be unique across systems (the scp files are keyed
by sample_id alone). Inputs go through the training loader in inference mode: 16 kHz mono,
duration-sorted batches of at most --max_total_samples samples (official: 4,800,000), padded to a
bounded set of shapes. Files that cannot be predicted (missing, unreadable, empty, non-finite,
longer than their data.jsonl duration, above the batch cap) are skipped and listed with the reason
in OUT/errors.tsv (uid, path, reason).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
from collections.abc import Sequence

import ml_collections

from urgent_jax.audio.io import AudioFileError, audio_info
from urgent_jax.data.manifest import read_kv
from urgent_jax.sqa.data import make_sqa_loader, read_jsonl, write_jsonl
from urgent_jax.sqa.results import check_unique_sample_ids, submission_source, write_results
from urgent_jax.sqa.task import SqaTask, merge_variables
from urgent_jax.train.checkpoint import restore_on_host

log = logging.getLogger(__name__)


def load_task_and_variables(workdir: str, step: int | None = None) -> tuple[SqaTask, dict]:
    """(task, variables) from a training workdir: config.json and its newest (or `step`) checkpoint."""
    path = os.path.join(workdir, "config.json")
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: missing; --workdir must be a `urgent_jax.sqa.train` run")
    with open(path) as f:
        config = ml_collections.ConfigDict(json.load(f))
    task = SqaTask(config)
    state, chosen = restore_on_host(os.path.join(workdir, "checkpoints"), step)
    log.info("loaded %s (%s) step %d from %s", config.model.name, task.model.frontend, chosen, workdir)
    return task, merge_variables(state["params"], state.get("constants") or {})


def records_from_scp(wav_scp: str, utt2sys: str | None = None) -> tuple[list[dict], list[tuple]]:
    """Track 2 records (no labels) for a wav.scp; (records, [(uid, path, reason)] unreadable)."""
    paths = read_kv(wav_scp, resolve_relative=True)
    systems = read_kv(utt2sys) if utt2sys else {}
    records, errors = [], []
    for uid, path in paths.items():
        try:
            fs, frames, _ = audio_info(path)
        except (AudioFileError, OSError) as e:
            errors.append((uid, path, f"unreadable: {e}"))
            continue
        records.append({"audio_path": path, "system_id": systems.get(uid, "unknown"), "sample_id": uid,
                        "duration": frames / fs, "metrics": {}})
    return records, errors


def infer(
    workdir: str,
    out_dir: str,
    *,
    data_jsonl: str | None = None,
    wav_scp: str | None = None,
    utt2sys: str | None = None,
    step: int | None = None,
    max_total_samples: int = 4_800_000,
    max_batch_size: int = 128,
    submission_metric: str | None = None,
) -> dict:
    """Predict every utterance of `data_jsonl` (or `wav_scp`) into out_dir; returns a summary."""
    if bool(data_jsonl) == bool(wav_scp):
        raise ValueError("give exactly one of data_jsonl / wav_scp")
    task, variables = load_task_and_variables(workdir, step)
    names = task.metric_names
    if submission_metric is None:
        submission_metric = "mos" if "mos" in names else names[0]
    submission_source(names, submission_metric)  # a wrong choice fails before predicting
    os.makedirs(out_dir, exist_ok=True)
    errors: list[tuple] = []
    with tempfile.TemporaryDirectory() as tmp:
        if wav_scp:
            records, errors = records_from_scp(wav_scp, utt2sys)
            data_jsonl = os.path.join(tmp, "data.jsonl")
            write_jsonl(data_jsonl, records)
        else:
            records = read_jsonl(data_jsonl)
        check_unique_sample_ids(records, wav_scp or data_jsonl)
        loader = make_sqa_loader([data_jsonl], names, max_total_samples=max_total_samples,
                                 max_batch_size=max_batch_size, seed=0, num_epochs=1, shuffle=False,
                                 num_workers=0)
        try:
            predicted = task.predict_loader(variables, loader)
        finally:
            loader.close()
        # Why each left-out item was not predicted: the loader's skip reason per path (missing,
        # unreadable, empty, non_finite, duration_mismatch), or dropped above the batch cap.
        reasons = dict(loader.source.counter.paths)
        dropped = {int(i) for i in loader.plan.dropped}
    done = {(r["sample_id"], r["system_id"]) for r in predicted}
    for i, r in enumerate(records):
        if (r["sample_id"], r["system_id"]) not in done:
            reason = ("above the batch cap (--max_total_samples)" if i in dropped
                      else reasons.get(r["audio_path"], "skipped by the loader (see the log)"))
            errors.append((r["sample_id"], r["audio_path"], f"not predicted: {reason}"))
    written = write_results(out_dir, predicted, submission_metric=submission_metric)
    with open(os.path.join(out_dir, "errors.tsv"), "w", encoding="utf-8") as f:
        f.write("uid\tpath\treason\n")
        for row in errors:
            f.write("\t".join(str(x).replace("\t", " ") for x in row) + "\n")
    summary = {"num_predicted": len(predicted), "num_errors": len(errors), "metrics": list(names),
               "files": written, "submission_metric": submission_metric, "out_dir": out_dir}
    log.info("predicted %d utterances (%d errors) into %s", len(predicted), len(errors), out_dir)
    return summary


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m urgent_jax.sqa.infer", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", required=True, help="a urgent_jax.sqa.train run directory")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--data", help="Track 2 data.jsonl")
    source.add_argument("--wav_scp", help="uid path list")
    parser.add_argument("--utt2sys", help="uid system list (with --wav_scp)")
    parser.add_argument("--out", required=True)
    parser.add_argument("--step", type=int, help="checkpoint step (default: newest)")
    parser.add_argument("--max_total_samples", type=int, default=4_800_000)
    parser.add_argument("--max_batch_size", type=int, default=128)
    parser.add_argument("--submission_metric",
                        help="for a model without a mos output: the metric written as mos.scp "
                             "(default: its first metric)")  # fmt: skip
    args = parser.parse_args(argv)
    from urgent_jax import prepare_runtime
    from urgent_jax.train.launch import quiet_logs

    prepare_runtime()
    quiet_logs()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        summary = infer(args.workdir, args.out, data_jsonl=args.data, wav_scp=args.wav_scp,
                        utt2sys=args.utt2sys, step=args.step, max_total_samples=args.max_total_samples,
                        max_batch_size=args.max_batch_size, submission_metric=args.submission_metric)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
