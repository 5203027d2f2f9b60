"""osteoscreen's MONAI Label app (monailabel 0.8.5).

Start it with ``make label-server`` (Orthanc + this app + OHIF), or by hand::

    monailabel start_server --app apps/monailabel --studies DIR_OR_DICOMWEB_URL \\
        --uvicorn_app osteolabel.asgi:app --conf models models

with ``apps/monailabel`` on PYTHONPATH. Conf keys (``--conf KEY VALUE``):

- ``models``: the models folder to start from (default: osteoscreen's shipped models);
- ``work_dir``: scratch space and the model store (default ``apps/monailabel/work``);
- ``model_store``: where new versions go (default ``WORK_DIR/models``): ``v001``, ``v002``...,
  each a complete models folder for ``osteoscreen run --models``;
- ``replay_cohort``: a synthetic cohort.csv replayed while fine-tuning (default: the training
  cohort of ``make models`` if present, else a small one generated on first use);
- ``reference_csv``: reference BMD per vertebra for the ``osteoscreen_bmd`` trainer.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from osteolabel import compat

compat.install()

from monailabel.interfaces.app import MONAILabelApp  # noqa: E402
from monailabel.interfaces.datastore import Datastore  # noqa: E402
from monailabel.tasks.activelearning.first import First  # noqa: E402
from monailabel.tasks.activelearning.random import Random  # noqa: E402
from osteolabel.errors import BadRequest, NotFound  # noqa: E402
from osteolabel.tasks import (  # noqa: E402
    MODEL_NAME,
    BmdScoring,
    BmdTraining,
    ModelRegistry,
    SegmenterTraining,
    UncertaintyStrategy,
    VertebraBodies,
)

import osteoscreen  # noqa: E402
from osteoscreen.labeling import validate_label_file, vertebra_label_names  # noqa: E402
from osteoscreen.models import default_models_dir  # noqa: E402

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[2]


class OsteoscreenLabelApp(MONAILabelApp):
    def __init__(self, app_dir: str, studies: str, conf: dict[str, str]):
        self.work = Path(conf.get("work_dir") or Path(app_dir) / "work").resolve()
        shipped = Path(conf.get("models") or default_models_dir()).resolve()
        store = Path(conf.get("model_store") or self.work / "models").resolve()
        self.registry = ModelRegistry(shipped, store)
        self.replay_cohort = conf.get("replay_cohort")
        self.reference_csv = conf.get("reference_csv")
        super().__init__(
            app_dir=app_dir,
            studies=studies,
            conf=conf,
            name="osteoscreen",
            description="Vertebral bodies, levels and trabecular BMD from routine CT (osteoscreen)",
            version=osteoscreen.__version__,
            labels=vertebra_label_names(),
        )
        # Scoring all studies at start-up (the stock default) would run the segmenter on each.
        self._auto_update_scoring = False
        self._guard_labels()

    # -- tasks
    def init_infers(self) -> dict[str, Any]:
        return {MODEL_NAME: VertebraBodies(self.registry, self.work / "infer")}

    def init_trainers(self) -> dict[str, Any]:
        return {
            MODEL_NAME: SegmenterTraining(self.registry, self.work / "train", self.replay),
            "osteoscreen_bmd": BmdTraining(
                self.registry, self.work / "train", self.replay, self.reference_csv
            ),
        }

    def init_strategies(self) -> dict[str, Any]:
        return {
            "osteoscreen_uncertainty": UncertaintyStrategy(self.registry, self.work / "activelearning"),
            "random": Random(),
            "first": First(),
        }

    def init_scoring_methods(self) -> dict[str, Any]:
        return {"osteoscreen_bmd": BmdScoring(self.registry, self.work / "scoring")}

    # -- requests
    def infer(self, request: dict[str, Any], datastore: Datastore | None = None) -> dict[str, Any]:
        image = request.get("image")
        ds = datastore or self.datastore()
        if isinstance(image, str) and not os.path.exists(image) and image not in ds.list_images():
            raise NotFound(f"unknown study (image id) {image!r}")
        return super().infer(request, datastore)

    def replay(self, n: int) -> Path:
        """A synthetic cohort to replay while fine-tuning (generated once where none is given)."""
        if self.replay_cohort:
            return Path(self.replay_cohort)
        trained = REPO / "build" / "models" / "cohort" / "cohort.csv"
        if trained.is_file():
            return trained
        own = self.work / "replay" / "cohort.csv"
        if not own.is_file():
            from osteoscreen.synth.cohort import write_cohort

            log.info("generating %d synthetic replay cases into %s (once)", n, own.parent)
            write_cohort(own.parent, n, seed=7, profile="train", progress=False)
        return own

    def _guard_labels(self) -> None:
        """Refuse a label upload that is no vertebra label map on its image's grid (400)."""
        ds = self.datastore()
        save = ds.save_label

        def checked(image_id: str, label_filename: str, label_tag: str, label_info: dict[str, Any], *a, **k):  # type: ignore[no-untyped-def]
            if image_id not in ds.list_images():
                raise NotFound(f"unknown study (image id) {image_id!r}")
            if not str(label_filename).endswith(".bin"):
                try:
                    validate_label_file(Path(label_filename), Path(ds.get_image_uri(image_id)))
                except ValueError as exc:
                    raise BadRequest(f"label not saved: {exc}") from exc
            return save(image_id, label_filename, label_tag, label_info, *a, **k)

        ds.save_label = checked  # type: ignore[method-assign]
