"""urgent_jax: JAX/Flax speech enhancement and quality assessment for the URGENT 2026 challenge."""

__version__ = "0.1.0"


def enable_compilation_cache(path: str | None = None, min_compile_time_s: float = 0.5) -> str:
    """Turn on jax's persistent compilation cache (reruns of a CLI skip recompiling).

    Default location: $URGENT_JAX_CACHE or ~/.cache/urgent_jax/xla. Returns the directory used.
    """
    import os

    import jax

    path = path or os.environ.get("URGENT_JAX_CACHE") or os.path.expanduser("~/.cache/urgent_jax/xla")
    os.makedirs(path, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", min_compile_time_s)
    return path


def configure_host_allocator(mmap_threshold_bytes: int = 1 << 30) -> bool:
    """Keep large freed host buffers in the glibc heap instead of returning them to the OS.

    XLA:CPU allocates fresh multi-megabyte temporaries on every call; by default glibc serves them
    with mmap and unmaps them on free, so every call pays page faults on new memory (measured: a
    third of the simulator's time at 48 kHz). Raising the mmap and trim thresholds (mallopt) reuses
    the memory instead. Process-wide; a no-op (returns False) where glibc is not available.
    """
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    if not name:
        return False
    try:
        libc = ctypes.CDLL(name)
        m_trim_threshold, m_mmap_threshold = -1, -3
        ok = libc.mallopt(m_mmap_threshold, int(mmap_threshold_bytes)) == 1
        ok &= libc.mallopt(m_trim_threshold, int(2 * mmap_threshold_bytes)) == 1
        return bool(ok)
    except (OSError, AttributeError):
        return False


def inference_chunk(cpu_chunk: int) -> int | None:
    """Examples per step for batched inference on the default backend: `cpu_chunk` on CPU, None
    (the whole batch at once) on accelerators.

    On CPU a whole batch of activations outgrows the caches, and XLA:CPU then runs several times
    slower per example; stepping through the batch a few examples at a time (`jax.lax.map` with
    batch_size) keeps each step's working set cache-sized. Measured on 2 cores: Distill-MOS on 16
    crops took 2.76 s one crop per step against 4.29 s all at once; the WavLM-base SQA model on 32
    clips of 4 s ran 1.72-1.96 clips/s two to four clips per step against 1.45 all at once.
    Accelerators want the opposite: as many examples per step as fit.
    """
    import jax

    return int(cpu_chunk) if jax.default_backend() == "cpu" else None


CPU_KERNEL_FLAG = "--xla_cpu_experimental_ynn_fusion_type=dot"


def configure_cpu_kernels() -> bool:
    """Keep XLA:CPU's YNNPACK library fusions to dot products (appends CPU_KERNEL_FLAG to
    XLA_FLAGS); returns whether the flag is now in effect for this process.

    By default jaxlib 0.10 also hands convolutions with the element-wise and pooling ops around
    them to YNNPACK, which on an AVX2 CPU runs them slower than XLA's own kernels. Measured on
    2 cores: the DNSMOS primary network 478 -> 300 ms per segment (its 128 -> 64 channel 3x3
    convolution 106 -> 139 GFLOP/s), DNSMOS on 16 x 4 s clips 3.3 -> 4.1 clips/s, Distill-MOS 5.5
    -> 6.6 clips/s, the BSRNN training step 41.8 -> 37.5 s; outputs agree to float32 rounding.
    XLA reads XLA_FLAGS when it starts its first backend, so call this before any computation;
    afterwards (or where the user's XLA_FLAGS already choose YNN fusion types, or with
    URGENT_JAX_CPU_KERNELS=default, or on a jaxlib outside the 0.10 series this was measured with)
    it changes nothing. Child processes inherit the setting; accelerator backends ignore it.
    """
    import os

    flags = os.environ.get("XLA_FLAGS", "")
    if "xla_cpu_experimental_ynn_fusion_type" in flags:
        return CPU_KERNEL_FLAG in flags.split()
    if os.environ.get("URGENT_JAX_CPU_KERNELS", "ynn") == "default":
        return False
    import jaxlib.version
    from jax._src import xla_bridge

    if not jaxlib.version.__version__.startswith("0.10.") or xla_bridge.backends_are_initialized():
        return False
    os.environ["XLA_FLAGS"] = f"{flags} {CPU_KERNEL_FLAG}".strip()
    return True


def prepare_runtime() -> None:
    """What every urgent_jax command does first: CPU kernel choice, persistent compile cache and
    host allocator tuning."""
    configure_cpu_kernels()
    enable_compilation_cache()
    configure_host_allocator()
