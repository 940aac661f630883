"""Ultralytics through cdss never touches the network: build, train-free save/load and predict.

Runs in a fresh interpreter whose socket layer raises on any connection attempt or DNS
lookup *before* cdss imports Ultralytics, and records every attempt.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = r"""
import json, socket, sys
attempts = []

def _refuse(kind):
    def inner(*args, **kwargs):
        attempts.append([kind, repr(args[:2])])
        raise OSError("network disabled by test")
    return inner

socket.socket.connect = _refuse("connect")
socket.socket.connect_ex = _refuse("connect_ex")
socket.getaddrinfo = _refuse("getaddrinfo")
socket.create_connection = _refuse("create_connection")

from pathlib import Path
import numpy as np
from cdss.analysis._ultralytics import build_yolo, load_yolo, ultralytics, UltralyticsSetupError, config_dir

tmp = Path(sys.argv[1])
ul = ultralytics()
from ultralytics.utils import SETTINGS
model = build_yolo("yolo11n-seg")
ckpt = tmp / "m.pt"
model.save(str(ckpt))
loaded = load_yolo(ckpt)
res = loaded.predict(np.zeros((96, 80, 3), np.uint8), imgsz=64, device="cpu", verbose=False)
refused = []
for bad in ("yolo11n-seg.pt", tmp / "missing.pt"):
    try:
        load_yolo(bad)
    except UltralyticsSetupError as exc:
        refused.append(str(exc))
print(json.dumps({"attempts": attempts, "sync": SETTINGS["sync"], "predictions": len(res),
                  "refused": len(refused), "config_dir": str(config_dir()),
                  "yolo_config": __import__("os").environ["YOLO_CONFIG_DIR"]}))
"""


def test_no_network_attempts_when_building_loading_predicting(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
        env={
            "PATH": "/usr/bin:/bin",
            "HOME": str(tmp_path),
            "CDSS_MODELS_ULTRALYTICS_DIR": str(tmp_path / "cfg"),
        },
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["attempts"] == [], report["attempts"]
    assert report["sync"] is False
    assert report["predictions"] == 1
    assert report["refused"] == 2  # hub names and missing files are refused, never downloaded
    assert report["yolo_config"] == str(tmp_path / "cfg")
    assert not (tmp_path / ".config" / "Ultralytics").exists()  # nothing written to the user's config
