"""Portable numerics: the settings under which the book's stored numbers are computed.

Training a network is chaotic: a difference in the last bit of one sum grows, over thousands of
steps, into a different model (on one machine the book's classifier scored 0.973 with 2 threads
and 0.971 with 1; on a machine of another CPU generation, 0.976). The last bits depend on which
kernels the libraries pick at run time, and they pick by the CPU's instruction sets and by the
number of threads. So the book pins both, for every process that computes its numbers:

==========================  ==========  =====================================================
setting                     pinned to   what it fixes
==========================  ==========  =====================================================
``torch.set_num_threads``   1           how reductions and matrix products are split
``ATEN_CPU_CAPABILITY``     ``avx2``    PyTorch's own vectorised kernels (not AVX-512/AMX)
``ONEDNN_MAX_CPU_ISA``      ``AVX2``    oneDNN's convolution kernels
``MKL_CBWR``                ``AVX2``    MKL's matrix products (conditional numerical repro.)
``NPY_DISABLE_CPU_FEATURES``  AVX-512   NumPy's SIMD loops (AVX2 at most)
==========================  ==========  =====================================================

One thread, because the book runs two chapters at once on the 2-core machine (``python -m
robustvae.runs book``, one chapter per core) instead of one chapter on two threads: two
one-thread processes did 1.39x the work of one two-thread process in the same time on the book's
workloads (training, PGD, L-BFGS-B margins; measured side by side, ``benchmarks/bench_threads.py``).

Every x86-64 CPU with AVX2 (Intel since 2013, AMD since 2015) then runs the same kernels in the
same order, whatever its generation and core count, and the numbers match to the bit. The cost,
measured on the 2-core machine (``benchmarks/bench_numerics.py``): about 1.2x the CPU time of
the fastest native kernels on an AVX-512 machine, none on an AVX2 one. What cannot be pinned
(another architecture such as ARM, a CPU without AVX2, another torch build, a GPU) gives other
numbers; the regression tests then compare floats within :data:`RTOL` (``tests/nbval_plugin.py``),
which absorbs summation-order noise in the analysis but not a differently trained model.

The pins are environment variables that the libraries read once, when they first run a kernel,
so they must be in place before any computation: ``python -m robustvae.runs`` (``make book``) and
the notebook regression tests (``tests/nbval_plugin.py``) put them into the environment of every
notebook kernel they start, and :func:`robustvae.setup` (the first call of every chapter) applies
them too, then checks them and warns when a kernel was started without them (for instance a
notebook opened in Jupyter after torch had already run a kernel). Set ``ROBUSTVAE_NUMERICS=native``
to run with the fastest kernels of your machine instead; models trained that way are cached
under other keys (:func:`signature` is part of every cache key).
"""

from __future__ import annotations

import logging
import os
from typing import MutableMapping

__all__ = ["PINNED_ENV", "THREADS", "RTOL", "pinned", "pin_environment", "apply", "check", "signature"]

log = logging.getLogger("robustvae.numerics")

#: Intra-op threads of every computation of the book (training and evaluation); the book runs
#: ``cores // THREADS`` chapters at once (:func:`robustvae.runs.execute_book`).
THREADS = 1

#: Environment of every process that computes the book's numbers (read by the libraries on first use).
PINNED_ENV: dict[str, str] = {
    "ATEN_CPU_CAPABILITY": "avx2",
    "ONEDNN_MAX_CPU_ISA": "AVX2",
    "MKL_CBWR": "AVX2",
    "NPY_DISABLE_CPU_FEATURES": "X86_V4 AVX512_ICL AVX512_SPR",
}

#: Relative tolerance of the notebook regression tests for floats (on top of one unit in the last
#: printed digit, a rounding flip): what cannot be pinned (see the module docstring).
RTOL = 1e-4

_SWITCH = "ROBUSTVAE_NUMERICS"


def pinned(environ: MutableMapping[str, str] | None = None) -> bool:
    """True unless ``ROBUSTVAE_NUMERICS=native`` asks for the machine's own fastest kernels."""
    env = os.environ if environ is None else environ
    value = env.get(_SWITCH, "pinned").strip().lower()
    if value not in ("pinned", "native"):
        raise ValueError(f"{_SWITCH}={value!r}: use 'pinned' (the default, the book's numbers) or 'native'.")
    return value == "pinned"


def pin_environment(environ: MutableMapping[str, str] | None = None) -> MutableMapping[str, str]:
    """Write :data:`PINNED_ENV` into ``environ`` (default ``os.environ``), overriding what is there.

    Child processes (notebook kernels) started afterwards inherit the pins. With
    ``ROBUSTVAE_NUMERICS=native`` nothing is changed. Returns ``environ``.
    """
    env = os.environ if environ is None else environ
    if pinned(env):
        env.update(PINNED_ENV)
        env["OMP_NUM_THREADS"] = str(THREADS)
        env["MKL_NUM_THREADS"] = str(THREADS)
    return env


def apply() -> list[str]:
    """Pin this process (environment and torch's thread count) and return what could not be pinned.

    Called by :func:`robustvae.setup`. A library that already read its setting (torch picks its CPU
    capability at the first kernel it runs) keeps it; such settings are returned, as readable
    strings, and a warning says that this process's numbers may differ from the book's.
    """
    import torch

    if not pinned():
        return []
    pin_environment()
    torch.set_num_threads(THREADS)
    problems = check()
    if problems:
        log.warning(
            "robustvae.numerics: this process could not be fully pinned (%s), so its numbers may differ "
            "from the book's stored outputs. Start Jupyter or Python with the pins in the environment "
            "(python -m robustvae.numerics env prints them) or run chapters through `make book`.",
            "; ".join(problems),
        )
    return problems


def check() -> list[str]:
    """The pinned settings that this process does not have (empty when every pin holds)."""
    import torch

    problems = []
    cap = torch.backends.cpu.get_cpu_capability()
    want = PINNED_ENV["ATEN_CPU_CAPABILITY"].upper()
    if cap != want:
        problems.append(f"torch CPU capability {cap}, not {want}")
    if torch.get_num_threads() != THREADS:
        problems.append(f"torch uses {torch.get_num_threads()} threads, not {THREADS}")
    for key, value in PINNED_ENV.items():
        if key != "ATEN_CPU_CAPABILITY" and os.environ.get(key) != value:
            problems.append(f"{key}={os.environ.get(key)!r}, not {value!r}")
    return problems


def signature() -> str:
    """What decides this process's numerics, for cache keys: ``"pinned-v2"`` (v1 was two threads) or
    the native settings."""
    import torch

    if pinned() and not check():
        return "pinned-v2"
    return (f"native:{torch.backends.cpu.get_cpu_capability()}:threads={torch.get_num_threads()}:"
            f"onednn={os.environ.get('ONEDNN_MAX_CPU_ISA', '-')}:mkl={os.environ.get('MKL_CBWR', '-')}")


def _main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m robustvae.numerics",
                                     description="The book's pinned numerics settings.")
    parser.add_argument("what", choices=["env", "check"],
                        help="env: print the pins as shell exports; check: pin this process and report")
    args = parser.parse_args(argv)
    if args.what == "env":
        for key, value in pin_environment(dict(os.environ)).items():
            if key in PINNED_ENV or key in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
                print(f"export {key}='{value}'")
        return 0
    problems = apply()
    print("pinned: every setting holds" if not problems else "not pinned: " + "; ".join(problems))
    print("signature:", signature())
    return 1 if problems else 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(_main())
