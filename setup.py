"""urgent_jax: a JAX/Flax codebase for the URGENT 2026 speech-enhancement and quality-assessment challenge."""

from setuptools import find_packages, setup

CORE = [
    "jax>=0.10.2,<0.11",
    "flax>=0.12.8,<0.13",
    "optax>=0.2.8,<0.3",
    "orbax-checkpoint>=0.12.8,<0.13",
    "grain==0.2.18",
    "numpy>=2.0,<3",
    "soundfile>=0.13",
    "ml-collections>=1.1",
    "absl-py>=2.1",
    "tqdm>=4.60",
    "tensorboardX>=2.6",  # TensorBoard event files without TensorFlow
]

EXTRAS = {
    # Reference packages the tests compare against (test-only; never imported by shipped code).
    "test": [
        "pytest>=8",
        "pytest-xdist>=3.8",
        "scipy>=1.13",
        "librosa>=0.10.2",
        "soxr>=0.5",
        "pystoi==0.4.1",
        "pesq==0.0.4",
        "onnxruntime>=1.18",
        "pysptk>=1.0",
        "fastdtw==0.3.4",
        "fast-bss-eval==0.1.4",
        "resampy>=0.4",  # librosa kaiser_* methods, for the mixing benchmark's reference
        "transformers==5.24.0",  # torch WavLMModel: parity of our Flax WavLM and its weight conversion
        "safetensors>=0.4",
        "webrtcvad-wheels==2.0.14.post1",  # WebRTC VAD (binary wheels of `webrtcvad`): our VAD's reference
    ],
    # eSpeak NG library + voice data, for the offline demo corpus.
    "demo": ["espeakng-loader==0.2.4"],
    # Host-side pieces of the evaluation: the PESQ C library, soxr (the reference's resampler for
    # PESQ above 16 kHz) and matplotlib (report figures).
    "metrics": ["pesq==0.0.4", "soxr>=0.5", "matplotlib>=3.8"],
    # Pretrained metric weights shipped inside wheels (DNSMOS ONNX files, Distill-MOS checkpoint).
    # The Makefile installs these two with --no-deps: only their weight files are used.
    "eval": ["pesq==0.0.4", "soxr>=0.5", "matplotlib>=3.8", "speechmos==0.0.1.1", "distillmos==0.9.1"],
    # PyTorch, only for converting reference checkpoints (CPU build).
    "convert": ["torch==2.13.0"],
}

setup(
    name="urgent_jax",
    version="0.1.0",
    description=__doc__,
    python_requires=">=3.11",
    packages=find_packages(include=["urgent_jax", "urgent_jax.*"]),
    install_requires=CORE,
    extras_require=EXTRAS,
)
