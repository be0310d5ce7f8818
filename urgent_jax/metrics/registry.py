"""Metric registry: every metric by name, built-in (weights ship offline) or plug-in (local weights).

A registered `MetricSpec` builds a `MetricFn` for given options:

    fn = get_metric("estoi").build(MetricOptions())
    values, reasons = fn(ref, est, lengths, sample_rate)   # {output name: np.ndarray [B]}, [B] str

Arrays are float32 [B, T] padded batches with lengths [B] (non-intrusive metrics ignore `ref`, which
may be None). Outputs use the official names of `<METRIC>.scp` / RESULTS.txt (PESQ, ESTOI,
DNSMOS_OVRL, ...). A value that cannot be computed is NaN with its reason ('' otherwise). A MetricFn
with a `context_labels` attribute (a tuple of label names, `LABELS`) is called with a keyword
`context=MetricContext(uids, labels)` as well: the utterance ids [B] and, per label name, the
per-utterance labels [B].

Plug-ins (UTMOS, NISQA, SCOREQ, SpeechBERTScore, LPS, speaker / emotion similarity, LID, character
accuracy) are metrics whose pretrained weights are not redistributable offline. Their registry entry
names the outputs and what the weights are; the user gives a local weights path, a loader and
optional loader options (strings):

    MetricOptions(weights={"utmos": "/models/utmos22_strong.ckpt"},
                  loaders={"utmos": "my_package.utmos:make_metric"},
                  plugin_options={"utmos": {"device": "cpu"}})

(command line: --metric_weights utmos=PATH --metric_loader utmos=my_package.utmos:make_metric
--plugin_option utmos.device=cpu), where `make_metric(weights_path: str, **options) -> PluginFn` and

    PluginFn(est, lengths, sample_rate, ref=None) -> {output name: array [B]}

(NumPy arrays on the host; resample inside as the metric requires). A plug-in that needs to know
which utterances it scores declares it with an attribute `context_labels` on the returned function,
the label names it needs (`()` for the uids only), and is then called with `context=` as well:

    def make_metric(weights_path, **options):
        model = load(weights_path, **options)
        def run(est, lengths, sample_rate, ref=None, *, context):
            hyp = model.language_of(est, lengths, sample_rate)
            return {"LID_ACC": [float(h == t) for h, t in zip(hyp, context.labels["lang"])]}
        run.context_labels = ("lang",)
        return run

Labels come from per-utterance files given to the scorer (`LABELS`: `lang` from --utt2lang, `text`
from --text, `uid value` lines). The `lid` and `char_acc` entries need `lang` and `text`, so their
plug-ins must take `context`. A missing path, loader or context support raises
`MetricUnavailableError` with what to pass; nothing is ever downloaded.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import math
import os
from collections.abc import Callable, Mapping

import numpy as np

MetricFn = Callable[..., tuple[dict[str, np.ndarray], list[str]]]

# Per-utterance labels a metric may need -> the scorer's flag giving the `uid value` file.
LABELS = {"lang": "--utt2lang", "text": "--text"}


class MetricUnavailableError(RuntimeError):
    """A metric that cannot be built here (missing weights, loader or package); says what to do."""


@dataclasses.dataclass(frozen=True)
class MetricOptions:
    weights: dict[str, str] = dataclasses.field(default_factory=dict)  # metric -> local path
    loaders: dict[str, str] = dataclasses.field(default_factory=dict)  # metric -> "module:function"
    pesq_workers: int | None = None  # processes for PESQ (default: all cores)
    # plug-in metric -> keyword options of its loader (`make_metric(path, **options)`)
    plugin_options: dict[str, dict[str, str]] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class MetricContext:
    """Which utterances a batch holds: uids [B] and labels {name: [B] str} (`LABELS`)."""

    uids: tuple[str, ...]
    labels: Mapping[str, tuple[str, ...]]


@dataclasses.dataclass(frozen=True)
class MetricSpec:
    name: str  # registry key (lower case)
    outputs: tuple[str, ...]  # official output names
    intrusive: bool  # needs the reference signal
    higher_is_better: bool
    min_duration_s: float  # shorter signals get NaN ("too short")
    description: str
    builder: Callable[[MetricOptions], MetricFn] | None = None  # None: a plug-in
    weights_hint: str = ""  # plug-ins: what the weights are
    min_num_samples: int = 0  # at every rate, e.g. one analysis frame; shorter gets NaN too
    labels: tuple[str, ...] = ()  # per-utterance labels it needs (`LABELS`), e.g. ("lang",)

    @property
    def is_plugin(self) -> bool:
        return self.builder is None

    def min_samples(self, sample_rate: int) -> int:
        """Fewest samples scored at sample_rate: min_duration_s, and at least min_num_samples."""
        by_duration = math.ceil(round(self.min_duration_s * sample_rate, 6))
        return max(by_duration, self.min_num_samples)

    def build(self, options: MetricOptions | None = None) -> MetricFn:
        options = options or MetricOptions()
        if not self.is_plugin:
            return self.builder(options)
        return _build_plugin(self, options)


def _jitted(fn: Callable, intrusive: bool, **arrays) -> MetricFn:
    """Wrap a jax metric (ref, est, lengths, sample_rate) -> array or dict into a MetricFn;
    `arrays` (e.g. params=...) are passed as traced keyword arguments."""
    import jax

    compiled = jax.jit(fn, static_argnames="sample_rate")

    def run(ref, est, lengths, sample_rate: int):
        args = (ref, est) if intrusive else (est,)
        out = jax.device_get(compiled(*args, lengths, sample_rate=sample_rate, **arrays))
        n = len(lengths)
        return out, [""] * n

    return run


def _named(outputs: tuple[str, ...], fn: Callable) -> Callable:
    """Map a function returning one array or a dict with lower-case keys onto the output names."""

    def run(*args, **kwargs):
        out = fn(*args, **kwargs)
        if isinstance(out, dict):
            by_lower = {k.lower(): v for k, v in out.items()}
            return {name: by_lower[name.split("_", 1)[-1].lower()] for name in outputs}
        return {outputs[0]: out}

    return run


def _build_pesq(options: MetricOptions) -> MetricFn:
    from urgent_jax.metrics.pesq import PesqPool

    pool = PesqPool(options.pesq_workers)

    def run(ref, est, lengths, sample_rate: int):
        values, reasons = pool(ref, est, lengths, sample_rate)
        return {"PESQ": values}, reasons

    run.close = pool.close  # type: ignore[attr-defined]
    return run


def _builtin(module: str, attr: str, outputs: tuple[str, ...], intrusive: bool, **fixed):
    def build(options: MetricOptions) -> MetricFn:
        fn = getattr(importlib.import_module(f"urgent_jax.metrics.{module}"), attr)
        if fixed:
            fn = functools.partial(fn, **fixed)
        return _jitted(_named(outputs, fn), intrusive)

    return build


def _build_distill_mos(options: MetricOptions) -> MetricFn:
    from urgent_jax.metrics import distillmos

    params = distillmos.load_params(options.weights.get("distill_mos"))
    # params go in as an argument: closed over, XLA would constant-fold the CNN over its weights
    return _jitted(_named(("DISTILL_MOS",), distillmos.distill_mos), intrusive=False, params=params)


def _build_dnsmos(options: MetricOptions) -> MetricFn:
    """DNSMOS is called un-jitted with host lengths: `dnsmos.dnsmos` then compiles its own kernel
    with the segment count and the repeated-clip shortcuts these lengths allow, weights as
    arguments (a jit around it would see traced lengths and constant weights)."""
    import jax

    from urgent_jax.metrics import dnsmos

    params = dnsmos.load_dnsmos_params()
    named = _named(("DNSMOS_SIG", "DNSMOS_BAK", "DNSMOS_OVRL", "DNSMOS_P808"), dnsmos.dnsmos)

    def run(ref, est, lengths, sample_rate: int):
        del ref
        return jax.device_get(named(est, lengths, sample_rate, params=params)), [""] * len(lengths)

    return run


def _build_plugin(spec: MetricSpec, options: MetricOptions) -> MetricFn:
    path = options.weights.get(spec.name)
    loader = options.loaders.get(spec.name)
    if not path:
        raise MetricUnavailableError(
            f"metric '{spec.name}' needs local weights ({spec.weights_hint}); pass "
            f"--metric_weights {spec.name}=/path/to/weights (nothing is downloaded at run time)"
        )
    if not os.path.exists(path):
        raise MetricUnavailableError(f"metric '{spec.name}': weights path {path} does not exist")
    if not loader or ":" not in loader:
        raise MetricUnavailableError(
            f"metric '{spec.name}' needs a loader: --metric_loader {spec.name}=package.module:function "
            "where function(weights_path, **options) returns fn(est, lengths, sample_rate, "
            "ref=None) -> {output: array} (see the module docstring of urgent_jax.metrics.registry)"
        )
    module_name, func_name = loader.split(":", 1)
    try:
        factory = getattr(importlib.import_module(module_name), func_name)
    except (ImportError, AttributeError) as e:
        raise MetricUnavailableError(f"metric '{spec.name}': cannot import loader {loader} ({e})") from e
    plugin = factory(path, **options.plugin_options.get(spec.name, {}))
    declared = getattr(plugin, "context_labels", None)
    if declared is None and spec.labels:
        raise MetricUnavailableError(
            f"metric '{spec.name}' needs per-utterance labels {list(spec.labels)}: its plug-in "
            f"({loader}) must take context= and declare them in fn.context_labels (see the module "
            "docstring of urgent_jax.metrics.registry)"
        )
    labels = tuple(dict.fromkeys((*spec.labels, *(declared or ()))))
    unknown = [name for name in labels if name not in LABELS]
    if unknown:
        raise MetricUnavailableError(
            f"plug-in {loader} asks for unknown labels {unknown}; known: {sorted(LABELS)}"
        )

    def run(ref, est, lengths, sample_rate: int, context: MetricContext | None = None):
        kwargs = {} if declared is None else {"context": context}
        ref = None if ref is None else np.asarray(ref)
        out = plugin(np.asarray(est), np.asarray(lengths), sample_rate, ref=ref, **kwargs)
        missing = [o for o in spec.outputs if o not in out]
        if missing:
            raise MetricUnavailableError(f"plug-in {loader} did not return outputs {missing}")
        return {o: np.asarray(out[o], np.float64) for o in spec.outputs}, [""] * len(lengths)

    if declared is not None:
        run.context_labels = labels  # type: ignore[attr-defined]
    return run


_REGISTRY: dict[str, MetricSpec] = {}


def register(spec: MetricSpec) -> MetricSpec:
    """Add (or replace) a metric; returns it."""
    _REGISTRY[spec.name] = spec
    return spec


def get_metric(name: str) -> MetricSpec:
    key = name.lower()
    if key not in _REGISTRY:
        raise KeyError(f"unknown metric {name!r}; known: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[key]


def list_metrics(include_plugins: bool = True) -> list[MetricSpec]:
    return [s for s in _REGISTRY.values() if include_plugins or not s.is_plugin]


def output_direction(output: str) -> bool:
    """higher_is_better of the metric producing an output name (for rankings and reports)."""
    for spec in _REGISTRY.values():
        if output in spec.outputs:
            return spec.higher_is_better
    return True


# --- built-in metrics (weights ship in wheels, or none needed) ----------------------------------

register(MetricSpec("pesq", ("PESQ",), True, True, 0.25,
                    "ITU-T P.862 via the pesq C package (nb at 8 kHz, wb at 16 kHz, >16 kHz resampled)",
                    _build_pesq))
register(MetricSpec("estoi", ("ESTOI",), True, True, 0.4,
                    "extended STOI (pystoi-equivalent, 10 kHz)", _builtin("stoi", "estoi", ("ESTOI",), True)))
register(MetricSpec("sdr", ("SDR",), True, True, 0.1,
                    "bss_eval SDR, 512-tap distortion filter, clamped to +-50 dB",
                    _builtin("sdr", "sdr", ("SDR",), True)))
register(MetricSpec("si_sdr", ("SI_SDR",), True, True, 0.01, "scale-invariant SDR (dB)",
                    _builtin("sdr", "si_sdr", ("SI_SDR",), True)))
register(MetricSpec("lsd", ("LSD",), True, False, 0.1, "log-spectral distance",
                    _builtin("lsd", "lsd", ("LSD",), True)))
# MCD needs one 1024-sample frame (mcd.FRAME_LENGTH) at every rate: 0.128 s at 8 kHz, > 0.1 s.
register(MetricSpec("mcd", ("MCD",), True, False, 0.1,
                    "mel-cepstral distortion (SPTK mel-cepstra, DTW-aligned)",
                    _builtin("mcd", "mcd", ("MCD",), True), min_num_samples=1024))
register(MetricSpec("dnsmos", ("DNSMOS_SIG", "DNSMOS_BAK", "DNSMOS_OVRL", "DNSMOS_P808"), False, True, 0.1,
                    "DNSMOS P.835 + P.808 (ONNX weights from the speechmos wheel)",
                    _build_dnsmos))
register(MetricSpec("distill_mos", ("DISTILL_MOS",), False, True, 0.1,
                    "Distill-MOS (weights from the distillmos wheel)", _build_distill_mos))

# --- plug-ins (local weights + loader) ------------------------------------------------------------

for _name, _outputs, _intrusive, _hint, _labels in [
    ("utmos", ("UTMOS",), False, "SpeechMOS utmos22_strong checkpoint", ()),
    ("nisqa", ("NISQA",), False, "NISQA v2.0 weights (nisqa.tar)", ()),
    ("scoreq", ("SCOREQ",), False, "SCOREQ natural-speech no-reference checkpoint", ()),
    ("speechbert_score", ("SpeechBERTScore",), True, "MHuBERT-147 checkpoint (layer 8)", ()),
    ("lps", ("LPS",), True, "wav2vec2-lv-60-espeak-cv-ft checkpoint", ()),
    ("spk_sim", ("SpkSim",), True, "ESPnet RawNet3 speaker model", ()),
    ("emo_sim", ("EmoSim",), True, "emotion2vec base checkpoint", ()),
    ("lid", ("LID_ACC",), False, "OWSM-CTC v4 1B checkpoint", ("lang",)),  # true language
    ("char_acc", ("CAcc",), False, "OWSM v3.1 checkpoint", ("text",)),  # true transcript
]:
    register(MetricSpec(_name, _outputs, _intrusive, True, 0.1, f"plug-in: {_hint}", None, _hint,
                        labels=_labels))
