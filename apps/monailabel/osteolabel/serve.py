"""Start Orthanc (DICOMweb) and osteoscreen's MONAI Label server, load studies, serve OHIF.

``make label-server`` runs ``python -m osteolabel.serve``: it generates the demo study (DICOM),
starts Orthanc bound to loopback with its DICOMweb plugin and a generated password, uploads the
demo study and any DICOM folders given (``--studies``), starts MONAI Label against Orthanc's
DICOMweb root and prints the URL of OHIF. Ctrl-C stops both. ``--local DIR`` serves a folder of
NIfTI images instead (no Orthanc).

The same functions start the servers in the integration tests.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

APP_DIR = Path(__file__).resolve().parents[1]
REPO = APP_DIR.parents[1]
ORTHANC = os.environ.get("ORTHANC_BIN", "/usr/sbin/Orthanc")
DICOMWEB_PLUGIN = os.environ.get(
    "ORTHANC_DICOMWEB_PLUGIN", "/usr/share/orthanc/plugins/libOrthancDicomWeb.so"
)


def free_port() -> int:
    """A free TCP port on the loopback interface."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait(
    url: str, timeout: float, proc: subprocess.Popen[bytes], headers: dict[str, str] | None = None
) -> None:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args[0]} exited with status {proc.returncode} before it was ready")
        try:
            req = urllib.request.Request(url, headers=headers or {})
            with urllib.request.urlopen(req, timeout=5) as r:
                if r.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.5)
    raise TimeoutError(f"{url} did not answer within {timeout:g} s")


def _stop(proc: subprocess.Popen[bytes] | None, timeout: float = 20.0) -> None:
    if proc is None or proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)


@dataclass
class Orthanc:
    """A private Orthanc: loopback only, authentication on, no DIMSE port, DICOMweb enabled."""

    work: Path
    port: int = 0
    user: str = "osteoscreen"
    password: str = field(default_factory=lambda: secrets.token_urlsafe(18))
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def dicomweb(self) -> str:
        return f"{self.url}/dicom-web"

    def _auth(self) -> dict[str, str]:
        token = base64.b64encode(f"{self.user}:{self.password}".encode()).decode()
        return {"Authorization": f"Basic {token}"}

    def config(self) -> dict[str, object]:
        db = self.work / "db"
        return {
            "Name": "osteoscreen",
            "StorageDirectory": str(db),
            "IndexDirectory": str(db),
            "HttpPort": self.port,
            # Orthanc 1.10 has no bind address: refuse every non-loopback client instead.
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": True,
            "RegisteredUsers": {self.user: self.password},
            # The DIMSE port would listen on all interfaces; DICOMweb is all we use.
            "DicomServerEnabled": False,
            "Plugins": [DICOMWEB_PLUGIN],
            "DicomWeb": {
                "Enable": True,
                "Root": "/dicom-web/",
                "EnableWado": True,
                "WadoRoot": "/wado",
                "Host": f"127.0.0.1:{self.port}",
                "Ssl": False,
                "StudiesMetadata": "Full",
                "SeriesMetadata": "Full",
            },
        }

    def start(self, timeout: float = 60.0) -> Orthanc:
        if not Path(ORTHANC).is_file() or not Path(DICOMWEB_PLUGIN).is_file():
            raise FileNotFoundError(
                f"Orthanc ({ORTHANC}) or its DICOMweb plugin ({DICOMWEB_PLUGIN}) is not installed: "
                "apt-get install orthanc orthanc-dicomweb (make label-deps)"
            )
        self.port = self.port or free_port()
        self.work.mkdir(parents=True, exist_ok=True)
        cfg = self.work / "orthanc.json"
        cfg.write_text(json.dumps(self.config(), indent=2))
        cfg.chmod(0o600)
        log = open(self.work / "orthanc.log", "wb")  # noqa: SIM115 - the child keeps it
        self.proc = subprocess.Popen(
            [ORTHANC, str(cfg)], stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        _wait(f"{self.url}/system", timeout, self.proc, self._auth())
        return self

    def request(self, method: str, path: str, data: bytes | None = None, ctype: str | None = None) -> bytes:
        headers = self._auth()
        if ctype:
            headers["Content-Type"] = ctype
        req = urllib.request.Request(f"{self.url}{path}", data=data, method=method, headers=headers)
        with urllib.request.urlopen(req, timeout=60) as r:
            return bytes(r.read())

    def upload(self, folder: Path) -> int:
        """Store every DICOM file under ``folder``; returns how many Orthanc accepted."""
        n = 0
        for f in sorted(Path(folder).rglob("*")):
            if not f.is_file():
                continue
            try:
                self.request("POST", "/instances", f.read_bytes(), "application/dicom")
                n += 1
            except urllib.error.HTTPError:  # not DICOM: Orthanc says 400
                continue
        return n

    def series(self, modality: str | None = None) -> list[dict[str, object]]:
        out = []
        for sid in json.loads(self.request("GET", "/series")):
            s = json.loads(self.request("GET", f"/series/{sid}"))
            if modality is None or s["MainDicomTags"].get("Modality") == modality:
                out.append(s)
        return out

    def stop(self) -> None:
        _stop(self.proc)


@dataclass
class LabelServer:
    """osteoscreen's MONAI Label app in a server process."""

    studies: str
    work: Path
    port: int = 0
    models: Path | None = None
    conf: dict[str, str] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    #: the Python of the MONAI Label environment (.venv-label); its bin/ has monailabel and dcmqi
    python: Path = field(default_factory=lambda: Path(sys.executable))
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        exe = self.python.parent / "monailabel"
        cmd = [
            str(exe),
            "start_server",
            "--app",
            str(APP_DIR),
            "--studies",
            self.studies,
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--uvicorn_app",
            "osteolabel.asgi:app",
        ]
        conf = {
            "work_dir": str(self.work),
            **({"models": str(self.models)} if self.models else {}),
            **self.conf,
        }
        for k, v in conf.items():
            cmd += ["--conf", k, v]
        return cmd

    def start(self, timeout: float = 120.0) -> LabelServer:
        self.port = self.port or free_port()
        self.work.mkdir(parents=True, exist_ok=True)
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(APP_DIR), os.environ.get("PYTHONPATH", "")]).rstrip(
                os.pathsep
            ),
            # itkimage2segimage (dcmqi wheel) for DICOM SEG lives beside this Python.
            "PATH": os.pathsep.join([str(self.python.parent), os.environ.get("PATH", "")]),
            "MONAI_LABEL_DICOMWEB_CACHE_PATH": str(self.work / "dicom-cache"),
            "MONAI_LABEL_DATASTORE_CACHE_PATH": str(self.work / "dicom-cache"),
            # Lists of studies and labels refresh within a minute instead of two hours.
            "MONAI_LABEL_DICOMWEB_CACHE_EXPIRY": "60",
            "MONAI_LABEL_AUTO_UPDATE_SCORING": "false",
            "PYTHONWARNINGS": "ignore",
            **self.env,
        }
        log = open(self.work / "monailabel.log", "wb")  # noqa: SIM115 - the child keeps it
        self.proc = subprocess.Popen(
            self.command(),
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=self.work,
            start_new_session=True,
        )
        _wait(f"{self.url}/info/", timeout, self.proc)
        return self

    def stop(self) -> None:
        _stop(self.proc)


def demo_study(out: Path) -> Path:
    """The generated example study (DICOM and NIfTI), made once."""
    if not (out / "dicom").is_dir():
        from osteoscreen.synth.example import write_example

        write_example(out, seed=2024, nifti=True)
    return out


@contextlib.contextmanager
def running(
    work: Path,
    dicom_folders: list[Path],
    *,
    port: int = 0,
    orthanc_port: int = 0,
    models: Path | None = None,
    conf: dict[str, str] | None = None,
    python: Path | None = None,
) -> Iterator[tuple[Orthanc, LabelServer]]:
    """Orthanc holding ``dicom_folders`` and MONAI Label on it; both stopped on exit."""
    orthanc = Orthanc(work / "orthanc", port=orthanc_port)
    server: LabelServer | None = None
    try:
        orthanc.start()
        for f in dicom_folders:
            orthanc.upload(f)
        server = LabelServer(
            orthanc.dicomweb,
            work / "monailabel",
            port=port,
            models=models,
            conf=conf or {},
            env={
                "MONAI_LABEL_DICOMWEB_USERNAME": orthanc.user,
                "MONAI_LABEL_DICOMWEB_PASSWORD": orthanc.password,
            },
        )
        server.start()
        yield orthanc, server
    finally:
        if server is not None:
            server.stop()
        orthanc.stop()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="osteolabel.serve", description=__doc__.split("\n\n")[0])
    p.add_argument("--studies", nargs="*", type=Path, default=[], help="DICOM folders to load into Orthanc")
    p.add_argument("--local", type=Path, help="serve this folder of NIfTI images instead (no Orthanc)")
    p.add_argument("--work", type=Path, default=REPO / "build" / "label-server", help="state and logs")
    p.add_argument(
        "--port", type=int, default=8000, help="MONAI Label / OHIF port (OHIF's panel expects 8000)"
    )
    p.add_argument("--orthanc-port", type=int, default=8042)
    p.add_argument("--models", type=Path, help="models folder to start from (default: the shipped models)")
    p.add_argument("--no-demo", action="store_true", help="do not load the generated demo study")
    a = p.parse_args(argv)
    for f in a.studies:
        if not f.is_dir():
            print(f"osteolabel: error: not a folder: {f}", file=sys.stderr)
            return 2
    work = a.work.resolve()
    stop = {"now": False}

    def on_signal(signum: int, frame: object) -> None:
        stop["now"] = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        if a.local:
            a.local.mkdir(parents=True, exist_ok=True)
            if not a.no_demo:
                demo = demo_study(work / "demo_study")
                shutil.copy2(demo / "ct.nii.gz", a.local / "osteoscreen_demo.nii.gz")
            server = LabelServer(str(a.local.resolve()), work / "monailabel", port=a.port, models=a.models)
            server.start()
            print(f"MONAI Label (local datastore {a.local}): {server.url}/  (Ctrl-C stops it)", flush=True)
            while not stop["now"] and server.proc and server.proc.poll() is None:
                time.sleep(0.5)
            server.stop()
            return 0
        folders = list(a.studies)
        if not a.no_demo:
            folders.insert(0, demo_study(work / "demo_study") / "dicom")
        with running(work, folders, port=a.port, orthanc_port=a.orthanc_port, models=a.models) as (
            orthanc,
            server,
        ):
            n = len(orthanc.series("CT"))
            print(
                f"Orthanc: {orthanc.url}/ (user {orthanc.user}, password in {orthanc.work / 'orthanc.json'})"
            )
            print(f"MONAI Label API: {server.url}/   ({n} CT series from Orthanc's DICOMweb)")
            print(f"open OHIF: {server.url}/ohif/   (Ctrl-C stops everything)", flush=True)
            while not stop["now"] and server.proc and server.proc.poll() is None:
                time.sleep(0.5)
        print("stopped", flush=True)
        return 0
    except (FileNotFoundError, RuntimeError, TimeoutError) as exc:
        print(f"osteolabel: error: {exc} (logs in {work})", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
