"""MAP entry point: what `monai-deploy package` is pointed at (and the container runs).

Reads DICOM from HOLOSCAN_INPUT_PATH (or -i), writes to HOLOSCAN_OUTPUT_PATH (or -o), loads
models from HOLOSCAN_MODEL_PATH (or -m). Exit status: 0 screened, 3 not screenable (the
reason in summary.json and on stderr), 2 bad setup (missing models or folders).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def main() -> int:
    from osteoscreen.app import OsteoScreenApp
    from osteoscreen.errors import OsteoscreenError

    try:
        app = OsteoScreenApp()
        app.run()
    except OsteoscreenError as exc:
        sys.stderr.write(f"osteoscreen: error: {exc}\n")
        return 2
    writer = app.writer
    if writer is None:
        sys.stderr.write("osteoscreen: error: the application graph did not run\n")
        return 1
    if writer.result is None:
        summary = writer.output_folder / "summary.json"
        reason = json.loads(summary.read_text()).get("reason") if summary.exists() else writer.reason
        sys.stderr.write(f"osteoscreen: not screenable: {reason}\n")
        return 3
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "src"))
    raise SystemExit(main())
