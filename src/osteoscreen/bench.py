"""``make bench``: wall time per stage and peak memory of whole runs on generated DICOM series.

Each case is screened by a fresh ``osteoscreen run`` process (process start to files
written), its peak RSS read from the kernel's accounting of that child. In the same run the
segmentation step of a MONAI model-zoo-like peer is timed on the same volume: SegResNet at
3 mm with a 96^3 sliding window and random weights (a trained one costs the same), so our
segmenter's speed is reported as a ratio to it.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

CASES = {
    "512x512x300 (0.7x0.7x1 mm)": {"slices": 300, "matrix": 512, "spacing": (0.7, 1.0)},
    "512x512x1000 (0.7x0.7x0.5 mm)": {"slices": 1000, "matrix": 512, "spacing": (0.7, 0.5)},
}
GOALS = {"wall_s": 20.0, "peak_rss_gb": 3.0}


def _peer_segmentation_seconds(dicom_dir: Path) -> float:
    """SegResNet (random weights), whole volume at 3 mm, sliding window 96^3 with 0.25 overlap."""
    import torch
    from monai.inferers import sliding_window_inference
    from monai.networks.nets import SegResNet

    from .io.dicom import load_volume
    from .transforms import normalize_hu, resample

    torch.set_num_threads(os.cpu_count() or 1)
    vol, _ = load_volume(dicom_dir)
    canon = vol.canonical().volume
    net = SegResNet(
        spatial_dims=3,
        in_channels=1,
        out_channels=105,
        init_filters=32,
        blocks_down=(1, 2, 2, 4),
        blocks_up=(1, 1, 1),
    ).eval()
    t = time.perf_counter()
    x = normalize_hu(resample(canon.array, canon.spacing, (3.0, 3.0, 3.0)))
    with torch.inference_mode():
        y = sliding_window_inference(x, (96, 96, 96), 1, net, overlap=0.25)
        torch.as_tensor(y).argmax(1)
    return time.perf_counter() - t


def _run_case(name: str, study: Path, out: Path) -> dict[str, object]:
    t = time.perf_counter()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "osteoscreen.cli",
            "run",
            "--input",
            str(study),
            "--output",
            str(out),
            "--quiet",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None
    err = proc.stderr.read()
    # wait4 gives this child's own resource usage (peak RSS in kB on Linux).
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - t
    peak_kb = usage.ru_maxrss
    if proc.returncode != 0:
        return {"case": name, "exit": proc.returncode, "stderr": err.strip()[-300:]}
    summary = json.loads((out / "summary.json").read_text())
    return {
        "case": name,
        "exit": 0,
        "wall_s": round(wall, 2),
        "peak_rss_gb": round(peak_kb / 1024**2, 2),
        "stages_s": summary.get("timings_s", {}),
        "vertebrae": [v["label"] for v in summary.get("vertebrae", [])],
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--work", type=Path, default=Path("build/bench"))
    p.add_argument("--cases", nargs="*", default=list(CASES), help="subset of the case names")
    p.add_argument("--no-peer", action="store_true", help="skip the SegResNet peer timing")
    a = p.parse_args(argv)
    from .synth.example import write_example

    results = []
    for name in a.cases:
        c = CASES[name]
        i = list(CASES).index(name)  # its study folder, whichever subset runs
        study = a.work / f"study{i}"
        if not (study / "dicom").is_dir():
            t = time.perf_counter()
            write_example(study, seed=77 + i, slices=c["slices"], matrix=c["matrix"], spacing=c["spacing"])  # type: ignore[arg-type]
            print(f"generated {name} in {time.perf_counter() - t:.0f} s", flush=True)
        r = _run_case(name, study / "dicom", a.work / f"out{i}")
        if not a.no_peer and r.get("exit") == 0:
            peer = _peer_segmentation_seconds(study / "dicom")
            stages: dict[str, float] = r["stages_s"]  # type: ignore[assignment]
            ours = float(stages.get("segment", float("nan")))
            r["peer_segresnet_3mm_s"] = round(peer, 2)
            r["segment_speed_ratio_peer_over_ours"] = round(peer / ours, 2) if ours else None
        results.append(r)
        print(json.dumps(r, indent=1), flush=True)
    print("\ncase                              wall s  peak GB  segment s  peer s  goal(<= 20 s, <= 3 GB)")
    for r in results:
        if r.get("exit") != 0:
            print(f"{r['case']:<33} failed (exit {r.get('exit')}): {r.get('stderr')}")
            continue
        st: dict[str, float] = r["stages_s"]  # type: ignore[assignment]
        ok = r["wall_s"] <= GOALS["wall_s"] and r["peak_rss_gb"] <= GOALS["peak_rss_gb"]  # type: ignore[operator]
        print(
            f"{r['case']:<33} {r['wall_s']:>6}  {r['peak_rss_gb']:>7}  {st.get('segment', '-')!s:>9}  "
            f"{r.get('peer_segresnet_3mm_s', '-')!s:>6}  {'met' if ok else 'missed'}"
        )
    (a.work / "bench.json").write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
