"""osteoscreen: opportunistic osteoporosis screening from routine CT."""

from __future__ import annotations

__version__ = "0.1.0"

import warnings as _warnings

# holoscan (pulled in by the MONAI Deploy SDK when monai is imported) warns about the stack size
# at import; the MAP and `make` targets raise the limit, other users need not see it.
_warnings.filterwarnings("ignore", message="Current stack size", category=RuntimeWarning)


def _preload_cudart() -> None:
    """Make libcudart.so.13 from the nvidia-cuda-runtime wheel visible to holoscan.

    holoscan (imported with monai once the MONAI Deploy SDK is installed) needs the CUDA
    runtime library even on CPU. Where no CUDA toolkit provides it, the wheel does; loading it
    here by path lets holoscan's later load by name find it without LD_LIBRARY_PATH.
    """
    import contextlib
    import ctypes
    import importlib.util
    from pathlib import Path

    spec = importlib.util.find_spec("nvidia")
    if spec is None or not spec.submodule_search_locations:
        return
    for root in spec.submodule_search_locations:
        lib = Path(root) / "cu13" / "lib" / "libcudart.so.13"
        if lib.is_file():
            # If it fails to load, holoscan reports the missing library itself.
            with contextlib.suppress(OSError):
                ctypes.CDLL(str(lib), mode=ctypes.RTLD_GLOBAL)
            return


_preload_cudart()
