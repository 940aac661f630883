"""What a lumbar segmentation model's classes mean (the shipped scheme and the seed-000 one).

Two class schemes are accepted, both read from the weights' own class names:

* **anatomical** (cdss ≥ 3.0, the training default): ``0: vertebra`` (every vertebral body
  in the field — T11, T12, L1 … L5) and ``1: sacrum`` (the first sacral segment's body). The
  model only says *where* bodies are; names come from counting up from the sacrum
  (:mod:`cdss.analysis.lumbar.chain`);
* **levels** (seed 000, BUU-LSPINE-style site weights): ``0: L1 … 4: L5, 5: S1``. The lumbar
  classes are read as "vertebra" and S1 as "sacrum": the names the model gives are *not*
  used, the same anatomical counting names the bodies.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path

from cdss.analysis.types import Vertebra

__all__ = ["ANATOMICAL_CLASSES", "LEVEL_CLASSES", "ClassScheme", "LumbarClassError", "class_scheme"]

#: Class names of the anatomical scheme, in class-id order.
ANATOMICAL_CLASSES: tuple[str, ...] = ("vertebra", "sacrum")
#: Class names of the seed-000 scheme, in class-id order.
LEVEL_CLASSES: tuple[str, ...] = tuple(v.value for v in Vertebra)


class LumbarClassError(ValueError):
    """The weights' classes are neither scheme."""


class ClassScheme(StrEnum):
    ANATOMICAL = "anatomical"
    LEVELS = "levels"

    @property
    def names(self) -> tuple[str, ...]:
        return ANATOMICAL_CLASSES if self is ClassScheme.ANATOMICAL else LEVEL_CLASSES

    def is_sacrum(self, class_id: int) -> bool:
        """Whether ``class_id`` is the sacrum (S1) in this scheme."""
        return class_id == (1 if self is ClassScheme.ANATOMICAL else Vertebra.S1.class_id)

    def is_body(self, class_id: int) -> bool:
        """Whether ``class_id`` is a vertebral body above the sacrum in this scheme."""
        return 0 <= class_id < len(self.names) and not self.is_sacrum(class_id)


def class_scheme(names: dict[int, str], source: Path | str) -> ClassScheme:
    """The scheme of a model's ``{class id: name}`` map.

    Raises
    ------
    LumbarClassError
        The names are neither ``vertebra, sacrum`` nor ``L1 … L5, S1``; the message says which
        file and what was found.
    """
    ordered = tuple(str(names[k]) for k in sorted(names))
    for scheme in ClassScheme:
        if tuple(n.lower() for n in ordered) == tuple(n.lower() for n in scheme.names):
            return scheme
    raise LumbarClassError(
        f"{source}: model classes {dict(sorted(names.items()))} are neither the anatomical scheme "
        f"{dict(enumerate(ANATOMICAL_CLASSES))} nor the seed-000 scheme {dict(enumerate(LEVEL_CLASSES))}; "
        "train with `cdss train lumbar` or convert the labels to one of them"
    )
