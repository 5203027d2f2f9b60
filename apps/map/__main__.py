"""MAP entry point: what `monai-deploy package` is pointed at (and the container runs).

Reads DICOM from HOLOSCAN_INPUT_PATH (or -i), writes to HOLOSCAN_OUTPUT_PATH (or -o), loads
models from HOLOSCAN_MODEL_PATH (or -m); OSTEOSCREEN_DEVICE=cuda screens on the GPU (default
cpu). Exit status: 0 screened, 3 not screenable (the reason in summary.json and on stderr),
2 bad setup (missing input, unwritable output folder, missing models), 1 internal error.
Each failure ends with one line on stderr, ``osteoscreen: ...``.
"""

from __future__ import annotations

import gc
import json
import os
import sys
import tempfile
from pathlib import Path


def _preflight(input_path: Path, output_path: Path) -> str | None:
    """The reason the run cannot start, or None.

    Checked before the graph runs, so that a wrong mount fails with one line, not with
    holoscan's operator error report.
    """
    if not input_path.exists():
        return f"input path does not exist: {input_path}"
    try:
        output_path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=output_path):
            pass
    except OSError as exc:
        return f"output folder {output_path} is not writable ({exc.strerror or exc})"
    return None


def main() -> int:
    from monai.deploy.core.app_context import init_app_context

    from osteoscreen.app import OsteoScreenApp
    from osteoscreen.errors import OsteoscreenError

    ctx = init_app_context(sys.argv)
    problem = _preflight(Path(ctx.input_path), Path(ctx.output_path))
    if problem is not None:
        sys.stderr.write(f"osteoscreen: error: {problem}\n")
        return 2
    device = os.environ.get("OSTEOSCREEN_DEVICE", "cpu")
    try:
        code, message = _run(OsteoScreenApp, device)
    except OsteoscreenError as exc:
        code, message = 2, f"error: {exc}"
    except Exception as exc:  # the entry point's last resort; holoscan's log above has the details
        code, message = 1, f"internal error: {type(exc).__name__}: {exc}"
    # The application is gone by now (holoscan logs its teardown), so the reason is the last line.
    gc.collect()
    if message:
        sys.stderr.write(f"osteoscreen: {message}\n")
    return code


def _run(app_class: type, device: str) -> tuple[int, str | None]:
    """Run the graph once (it reads sys.argv itself); the exit status and the message for stderr."""
    app = app_class(device=device)
    app.run()
    writer = app.writer
    if writer is None:
        return 1, "error: the application graph did not run"
    if writer.result is not None:
        return 0, None
    summary = writer.output_folder / "summary.json"
    reason = json.loads(summary.read_text()).get("reason") if summary.exists() else writer.reason
    if reason is None:
        return 1, "error: the screening failed (see the log above)"
    return 3, f"not screenable: {reason}"


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "src"))
    raise SystemExit(main())
