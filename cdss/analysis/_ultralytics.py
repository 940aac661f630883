"""The only place cdss imports Ultralytics: offline, no telemetry, no downloads.

Ultralytics phones home in several places: an online probe at import time (DNS), usage
events and Sentry when ``settings['sync']`` is on, the pip auto-update of missing
requirements, a font download (``check_font``) every time a dataset YAML is checked or a plot
is drawn, an AMP self-test that downloads ``yolo26n.pt`` on CUDA, and weight downloads when a
model is constructed from a hub name such as ``"yolo11n-seg.pt"``. A clinical node must do none
of that. :func:`ultralytics` prepares the environment *before* the first import:

* ``YOLO_OFFLINE=1`` (the import-time probe returns "offline" without touching the network);
* ``YOLO_CONFIG_DIR`` → a private directory (``[models] ultralytics_dir`` of the settings, i.e.
  ``CDSS_MODELS_ULTRALYTICS_DIR``, or the directory given to :func:`configure`; else
  ``<tmp>/cdss-ultralytics-<uid>``) so nothing is written to ``~/.config``;
* settings ``sync`` and every third-party logger integration off; ``runs_dir`` /
  ``weights_dir`` / ``datasets_dir`` inside that directory;
* ``check_font`` replaced by a local lookup (matplotlib's bundled DejaVu Sans);
* ``check_amp`` replaced by an offline decision (AMP on CUDA, off elsewhere) — the upstream
  check downloads a model;
* ``check_requirements`` replaced by a no-op that never runs pip.

Models are only ever built from a bundled architecture YAML (``"yolo11n-seg.yaml"``) or loaded
from an existing local ``.pt`` file: :func:`load_yolo` refuses anything else.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
from pathlib import Path
from types import ModuleType
from typing import Any

from cdss.config import load_settings

__all__ = [
    "ARCHITECTURES",
    "UltralyticsSetupError",
    "build_yolo",
    "config_dir",
    "configure",
    "load_yolo",
    "ultralytics",
]

#: Architectures cdss trains (name → bundled Ultralytics model YAML).
ARCHITECTURES: dict[str, str] = {
    "yolo11n-seg": "yolo11n-seg.yaml",
    "yolo11s-seg": "yolo11s-seg.yaml",
    "yolov8n-seg": "yolov8n-seg.yaml",
    "yolov8s-seg": "yolov8s-seg.yaml",
}

_lock = threading.Lock()
_module: ModuleType | None = None
_directory: Path | None = None


class UltralyticsSetupError(RuntimeError):
    """Ultralytics cannot be used as requested (unknown architecture, missing weights file, ...)."""


def configure(directory: Path | None) -> None:
    """Use ``directory`` (``settings.models.ultralytics_dir``) for Ultralytics' files.

    Call before the first :func:`ultralytics` (the node does, with its effective settings);
    later calls do not move a setup that already ran.
    """
    global _directory
    with _lock:
        _directory = None if directory is None else Path(directory)


def config_dir() -> Path:
    """Directory that Ultralytics uses for its settings, fonts and default run folders.

    The one given to :func:`configure`, else ``[models] ultralytics_dir`` of
    :func:`cdss.config.load_settings` (``CDSS_MODELS_ULTRALYTICS_DIR``), else
    ``<tmp>/cdss-ultralytics-<uid>``.
    """
    explicit = _directory if _directory is not None else load_settings().models.ultralytics_dir
    if explicit is not None:
        return Path(explicit)
    return Path(tempfile.gettempdir()) / f"cdss-ultralytics-{os.getuid() if hasattr(os, 'getuid') else 0}"


def _local_font(font: str = "Arial.ttf") -> Path:
    """Offline replacement for ``ultralytics.utils.checks.check_font``: a font that ships with matplotlib."""
    import matplotlib

    target = config_dir() / "Ultralytics" / Path(font).name
    if not target.exists():
        source = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
    return target


def _offline_amp(model: Any) -> bool:
    """Offline replacement for ``check_amp``: AMP on CUDA devices only (no self-test download)."""
    try:
        device = next(model.parameters()).device
    except (StopIteration, AttributeError):
        return False
    return device.type == "cuda"


def _no_requirements(*args: Any, **kwargs: Any) -> bool:
    """Offline replacement for ``check_requirements``: never pip-installs anything."""
    return True


def ultralytics() -> ModuleType:
    """Import Ultralytics configured for offline, telemetry-free use and return the module.

    Safe to call many times and from several threads; the setup runs once per process.
    """
    global _module
    with _lock:
        if _module is not None:
            return _module
        base = config_dir()
        base.mkdir(parents=True, exist_ok=True)
        os.environ["YOLO_CONFIG_DIR"] = str(base)
        os.environ["YOLO_OFFLINE"] = "1"
        os.environ.setdefault("YOLO_VERBOSE", "False")
        import ultralytics as ul
        from ultralytics.utils import SETTINGS, checks

        SETTINGS.update(
            {
                "sync": False,
                "clearml": False,
                "comet": False,
                "dvc": False,
                "mlflow": False,
                "raytune": False,
                "tensorboard": False,
                "wandb": False,
                "vscode_msg": False,
                "openvino_msg": False,
                "runs_dir": str(base / "runs"),
                "weights_dir": str(base / "weights"),
                "datasets_dir": str(base / "datasets"),
            }
        )
        import ultralytics.data.utils as data_utils
        import ultralytics.engine.trainer as trainer_mod
        import ultralytics.utils.plotting as plotting

        checks.check_font = _local_font
        data_utils.check_font = _local_font
        plotting.check_font = _local_font
        checks.check_amp = _offline_amp
        trainer_mod.check_amp = _offline_amp
        checks.check_requirements = _no_requirements
        for name in ("Arial.ttf", "Arial.Unicode.ttf"):
            _local_font(name)
        _module = ul
        return ul


def build_yolo(architecture: str) -> Any:
    """A fresh (randomly initialised) YOLO segmentation model from a bundled architecture YAML.

    Parameters
    ----------
    architecture
        One of :data:`ARCHITECTURES` (e.g. ``"yolo11n-seg"``).
    """
    if architecture not in ARCHITECTURES:
        raise UltralyticsSetupError(
            f"unknown architecture {architecture!r}; choose one of {', '.join(sorted(ARCHITECTURES))}"
        )
    ul = ultralytics()
    return ul.YOLO(ARCHITECTURES[architecture], task="segment")


def load_yolo(weights: Path | str) -> Any:
    """Load a YOLO model from an existing local ``.pt`` file (never a hub name, never a download).

    Raises
    ------
    UltralyticsSetupError
        The path does not exist or is not a ``.pt`` file.
    """
    path = Path(weights)
    if path.suffix != ".pt":
        raise UltralyticsSetupError(f"weights {path} must be a PyTorch .pt file trained with Ultralytics")
    if not path.is_file():
        raise UltralyticsSetupError(
            f"weights file {path} does not exist (cdss never downloads weights; give a local path)"
        )
    ul = ultralytics()
    return ul.YOLO(str(path.resolve()), task="segment")
