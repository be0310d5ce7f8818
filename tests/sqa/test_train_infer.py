"""Smoke run of the SQA task through the shared trainer: train -> infer -> eval, frozen front-ends."""

from __future__ import annotations

import json
import shutil

import jax
import ml_collections
import numpy as np
import pytest
import soundfile as sf

from urgent_jax.sqa import eval as sqa_eval
from urgent_jax.sqa import infer as sqa_infer
from urgent_jax.sqa.data import read_jsonl, write_jsonl
from urgent_jax.sqa.task import FROZEN, SqaTask, merge_variables
from urgent_jax.sqa.train import train
from urgent_jax.train.config_file import load_config
from urgent_jax.train.loop import make_train_fns
from urgent_jax.train.optim import make_optimizer
from urgent_jax.train import sharding

CONFIG = "configs/sqa/universa_ext.py:smoke"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """14 noisy tones at 16 and 8 kHz, labelled by their SNR (some labels missing)."""
    root = tmp_path_factory.mktemp("sqa_corpus")
    rng = np.random.default_rng(0)
    records = []
    for i in range(14):
        fs = 8000 if i % 5 == 0 else 16000
        n = int(fs * (0.6 + 0.1 * (i % 7)))
        t = np.arange(n) / fs
        snr_db = -5.0 + 2.0 * i
        clean = 0.3 * np.sin(2 * np.pi * 220 * t)
        noise = rng.normal(0, 1, n) * 0.3 / np.sqrt(2) / 10 ** (snr_db / 20)
        path = root / f"utt{i:02d}.wav"
        sf.write(path, (clean + noise).astype(np.float32), fs)
        ovrl = 1.0 + 4.0 * i / 13
        records.append({"audio_path": str(path), "system_id": f"sys{i % 3}", "sample_id": f"utt{i:02d}",
                        "duration": n / fs, "metrics": {
                            "dnsmos_ovrl": ovrl, "dnsmos_sig": float("nan") if i % 4 == 0 else ovrl,
                            "sdr": snr_db, "si_sdr": snr_db}})
    write_jsonl(root / "data.jsonl", records)
    return root


@pytest.fixture(scope="module")
def trained(corpus, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("sqa_run")
    config = load_config(CONFIG)
    config.data.train_jsonl = (str(corpus / "data.jsonl"),)
    config.eval.jsonl = (str(corpus / "data.jsonl"),)
    summary = train(config, str(workdir))
    return workdir, summary


def test_train_runs_and_validates(trained):
    _, summary = trained
    assert summary["step"] == 3 and summary["skipped_updates"] == 0
    ev = summary["last_eval"]
    assert np.isfinite(ev["val_loss"])
    for name in ("dnsmos_ovrl", "sdr"):
        assert -1.0 <= ev[f"val_{name}_utt_srcc"] <= 1.0 and ev[f"val_{name}_utt_mse"] >= 0
    # dnsmos_sig has NaN labels: the official CV rule gives NaN statistics for it.
    assert np.isnan(ev["val_dnsmos_sig_utt_lcc"])


def test_infer_outputs_match_direct_apply_and_eval(trained, corpus, tmp_path):
    workdir, _ = trained
    out = tmp_path / "pred"
    summary = sqa_infer.infer(str(workdir), str(out), data_jsonl=str(corpus / "data.jsonl"))
    assert summary["num_predicted"] == 14 and summary["num_errors"] == 0
    names = ["dnsmos_ovrl", "dnsmos_sig", "dnsmos_bak", "dnsmos_p808", "sdr", "si_sdr"]
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["results.jsonl", "errors.tsv", "mos.scp"] + [f"{n}.scp" for n in names])
    # The submission file carries the first metric when the model predicts no MOS.
    assert (out / "mos.scp").read_text() == (out / "dnsmos_ovrl.scp").read_text()

    # One utterance alone, unpadded, at 16 kHz: the batched (padded, masked) prediction must match.
    task, variables = sqa_infer.load_task_and_variables(str(workdir))
    lines = [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines()]
    rec = next(r for r in read_jsonl(corpus / "data.jsonl") if r["sample_id"] == "utt03")
    audio, fs = sf.read(rec["audio_path"], dtype="float32")
    assert fs == 16000
    direct = task.predict(variables, audio[None], np.array([audio.size], np.int32))[0]
    batched = next(x for x in lines if x["sample_id"] == "utt03")["metrics"]
    for j, name in enumerate(task.metric_names):
        assert batched[name] == pytest.approx(float(direct[j]), abs=2e-4), name

    result = tmp_path / "result.json"
    rc = sqa_eval.main(["--pred", str(out / "results.jsonl"), "--ref", str(corpus / "data.jsonl"),
                        "--output", str(result)])
    assert rc == 0
    stats = json.loads(result.read_text())
    assert set(stats) == {"dnsmos_ovrl", "dnsmos_sig", "sdr", "si_sdr"}
    assert set(stats["sdr"]) == {"utterance", "system"}


def test_infer_refuses_a_wrong_submission_metric_or_shared_sample_ids(trained, corpus, tmp_path):
    workdir, _ = trained
    data = str(corpus / "data.jsonl")
    with pytest.raises(ValueError, match="submission metric 'mos' is not predicted by the model"):
        sqa_infer.infer(str(workdir), str(tmp_path / "a"), data_jsonl=data, submission_metric="mos")
    records = read_jsonl(data)[:2]
    assert records[0]["system_id"] != records[1]["system_id"]
    records[1] = {**records[1], "sample_id": records[0]["sample_id"]}
    write_jsonl(tmp_path / "shared.jsonl", records)
    with pytest.raises(ValueError, match=rf"sample_id '{records[0]['sample_id']}' occurs for systems"):
        sqa_infer.infer(str(workdir), str(tmp_path / "b"), data_jsonl=str(tmp_path / "shared.jsonl"))
    assert not (tmp_path / "a" / "results.jsonl").exists()
    assert not (tmp_path / "b" / "results.jsonl").exists()


def test_infer_from_wav_scp_reports_unreadable(trained, corpus, tmp_path):
    workdir, _ = trained
    (tmp_path / "broken.wav").write_bytes(b"not audio")
    (tmp_path / "wav.scp").write_text(f"a {corpus / 'utt01.wav'}\nb {tmp_path / 'broken.wav'}\n")
    summary = sqa_infer.infer(str(workdir), str(tmp_path / "out"), wav_scp=str(tmp_path / "wav.scp"))
    assert summary["num_predicted"] == 1 and summary["num_errors"] == 1
    errors = (tmp_path / "out" / "errors.tsv").read_text().splitlines()
    assert errors[1].startswith("b\t") and "broken.wav" in errors[1]


def _command_line_config(*overrides: str):
    """The config as `python -m urgent_jax.sqa.train --config CONFIG <overrides>` parses it
    (ml_collections config_flags, locked as urgent_jax.train.launch defines the flag)."""
    from absl import flags
    from ml_collections import config_flags

    argv = ["train", f"--config={CONFIG}", *overrides]
    flag_values = flags.FlagValues()
    config_flags.DEFINE_config_file("config", None, "", flag_values=flag_values, lock_config=True,
                                    sys_argv=argv)  # fmt: skip
    flag_values(argv)
    return flag_values.config


def test_degradation_switched_on_from_the_command_line(corpus):
    def first_batches(*overrides):
        config = _command_line_config(*overrides)
        config.data.train_jsonl = (str(corpus / "data.jsonl"),)
        loader = SqaTask(config).train_data(seed=0, shard_index=0, shard_count=1)
        try:
            return [next(loader) for _ in range(3)]
        finally:
            loader.close()

    off = first_batches()  # default: data.degrade.p = 0
    records = {r["sample_id"]: r for r in read_jsonl(corpus / "data.jsonl")}
    num_checked = 0
    for batch in off:  # untouched: the 16 kHz files' samples exactly
        for k in np.flatnonzero(batch["valid"]):
            audio, fs = sf.read(records[batch["sample_id"][k]]["audio_path"], dtype="float32")
            if fs == 16000:
                np.testing.assert_array_equal(batch["audio"][k, : audio.size], audio)
                assert batch["lengths"][k] == audio.size
                num_checked += 1
    assert num_checked >= 3
    on = first_batches("--config.data.degrade.p=1", "--config.data.degrade.kinds=('packet_loss',)",
                       "--config.data.degrade.loss_rate=(0.5,0.5)")  # fmt: skip
    for a, b in zip(off, on):  # same seed: same items, each degraded, labels kept
        assert list(a["sample_id"]) == list(b["sample_id"])
        np.testing.assert_array_equal(a["labels"], b["labels"])
        for k in np.flatnonzero(a["valid"]):
            n = a["lengths"][k]
            assert not np.array_equal(a["audio"][k, :n], b["audio"][k, :n])
            lost = np.abs(b["audio"][k, : n // 320 * 320].reshape(-1, 320)).max(axis=1) == 0
            assert lost.any()  # whole 20 ms packets zeroed
    with pytest.raises(ValueError, match="subset"):
        first_batches("--config.data.degrade.p=0.5", "--config.data.degrade.kinds=('codec',)")


def test_frozen_frontend_gets_no_update(corpus):
    config = load_config(CONFIG)
    config.model.freeze_frontend = True
    config.data.train_jsonl = (str(corpus / "data.jsonl"),)
    task = SqaTask(config)
    loader = task.train_data(0, 0, 1)
    try:
        batch, rate, _ = task.split_batch(next(loader))
    finally:
        loader.close()
    tx, _ = make_optimizer(lr=1e-2, schedule="linear", warmup_steps=0,
                           total_steps=100, clip_norm=1.0, weight_decay=0.01)
    mesh = sharding.make_mesh(1)
    fns = make_train_fns(task, tx, mesh, 0, *task.example_batch())
    state = fns.init()
    assert "frontend" not in state.params and "frontend" in state.constants[FROZEN]
    state_before = jax.device_get(state)  # the jitted step donates its input state
    new_state, metrics = fns.step(state, sharding.global_batch(batch, mesh), rate)
    state = state_before
    assert np.isfinite(float(metrics["loss"]))
    for a, b in zip(jax.tree.leaves(state.constants), jax.tree.leaves(new_state.constants)):
        np.testing.assert_array_equal(a, b)
    moved = [not np.array_equal(a, b) for a, b in
             zip(jax.tree.leaves(state.params), jax.tree.leaves(new_state.params))]
    assert all(moved)
    variables = merge_variables(new_state.params, new_state.constants)
    assert set(variables["params"]) == set(state.params) | {"frontend"}


def test_wavlm_checkpoint_normalisation_reaches_the_model_and_config(tmp_path):
    checkpoint = tmp_path / "wavlm"
    checkpoint.mkdir()
    (checkpoint / "config.json").write_text(json.dumps({"hidden_size": 768}))
    (checkpoint / "preprocessor_config.json").write_text(json.dumps({"do_normalize": True}))
    # An explicit frontend_kwargs setting wins.
    config = _command_line_config(f"--config.model.frontend_weights={checkpoint}",
                                  "--config.model.kwargs.frontend_kwargs=(('do_normalize',False),)")
    config.model.kwargs.frontend = "wavlm"
    assert dict(SqaTask(config).model.frontend_kwargs)["do_normalize"] is False
    config = _command_line_config(f"--config.model.frontend_weights={checkpoint}")
    config.model.kwargs.frontend = "wavlm"
    task = SqaTask(config)
    assert dict(task.model.frontend_kwargs)["do_normalize"] is True
    # Recorded in the config (config.json), so inference without the directory normalises too.
    shutil.rmtree(checkpoint)
    again = SqaTask(ml_collections.ConfigDict(json.loads(config.to_json())))
    assert dict(again.model.frontend_kwargs)["do_normalize"] is True


def test_comma_joined_jsonl_override_reads_every_file(corpus, tmp_path, monkeypatch, caplog):
    # --config.data.train_jsonl=a/data.jsonl,b/data.jsonl (relative paths): ml_collections keeps
    # a string that is no Python literal whole, ("a,b",). Before, the loader opened "a,b"
    # (FileNotFoundError). Absolute paths need the tuple form (a leading / is a SyntaxError there).
    records = read_jsonl(corpus / "data.jsonl")
    write_jsonl(tmp_path / "a.jsonl", records[:7])
    mos_only = [{**r, "metrics": {"mos": 3.0}} for r in records[7:]]  # no label the model predicts
    write_jsonl(tmp_path / "b.jsonl", mos_only)
    tuple_form = f"('{tmp_path / 'a.jsonl'}', '{tmp_path / 'b.jsonl'}')"
    for value in ("a.jsonl,b.jsonl", tuple_form):
        config = _command_line_config(f"--config.data.train_jsonl={value}",
                                      f"--config.eval.jsonl={value}")  # fmt: skip
        caplog.clear()
        with monkeypatch.context() as m, caplog.at_level("WARNING", logger="urgent_jax.sqa.task"):
            m.chdir(tmp_path)  # the relative paths' directory (the config file is found before)
            loader = SqaTask(config).train_data(seed=0, shard_index=0, shard_count=1)
        try:
            assert len(loader.source) == 14
        finally:
            loader.close()
        assert "7 of 14 training items have no label for any of the model's metrics" in caplog.text


def test_infer_errors_tsv_gives_the_skip_reason(trained, corpus, tmp_path):
    # Before: every left-out item had "not predicted: unreadable, silent or too long (see the log)".
    workdir, _ = trained
    (tmp_path / "broken.wav").write_bytes(b"not audio")
    records = read_jsonl(corpus / "data.jsonl")[:3]
    records[1] = {**records[1], "audio_path": str(tmp_path / "gone.wav")}
    records[2] = {**records[2], "audio_path": str(tmp_path / "broken.wav")}
    write_jsonl(tmp_path / "data.jsonl", records)
    summary = sqa_infer.infer(str(workdir), str(tmp_path / "out"),
                              data_jsonl=str(tmp_path / "data.jsonl"))
    assert summary["num_predicted"] == 1 and summary["num_errors"] == 2
    rows = [line.split("\t") for line in (tmp_path / "out" / "errors.tsv").read_text().splitlines()]
    assert rows[0] == ["uid", "path", "reason"]
    assert {r[0]: r[2] for r in rows[1:]} == {records[1]["sample_id"]: "not predicted: missing",
                                              records[2]["sample_id"]: "not predicted: unreadable"}
