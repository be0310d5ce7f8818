"""Track 2 (speech-quality assessment, Uni-VERSA-Ext; REFERENCE.md §1.5, §3.7, §4.5).

Modules:
  data           data.jsonl reader/writer and the Grain loader (16 kHz mono, duration-sorted dynamic
                 batches capped by total samples, padding masks, optional on-the-fly degradation)
  prepare        per-corpus preparation: official corpus layouts -> data/<corpus>/<split>/data.jsonl
                 (`python -m urgent_jax.sqa.prepare --corpus NAME --root DIR --out DIR`)
  task           init, loss_fn and predict_fn of the multi-metric regressor for train/loop.py
  build_dataset  pseudo-label metrics (DNSMOS, Distill-MOS, intrusive metrics) into data.jsonl
  infer          results.jsonl and <metric>.scp from a checkpoint
  eval           utterance- and system-level MSE / LCC / SRCC / KTAU against references
"""
