"""Family B: a second, independently designed synthetic radiograph generator.

Family A (:mod:`cdss.synth`) and family B share only the DICOM writing helpers (UIDs, synthetic
patients, transfer syntaxes) and the slip definition (:mod:`cdss.analysis.geometry`); anatomy,
shape model, rendering, textures, detector physics, processing and header variation are built
separately, so a model trained on one family and tested on the other measures generalisation to
an unseen generator (see docs/synthetic-data.md, "Family B").

>>> from cdss.synth import generate
>>> ds, truth = generate("lumbar_lateral", seed=0, index=0, family="b")
"""

from cdss.synth.family_b.generator import GENERATOR, GENERATOR_VERSION, OptionsB, generate_b
from cdss.synth.family_b.transfer import prepare_for_transfer

__all__ = ["GENERATOR", "GENERATOR_VERSION", "OptionsB", "generate_b", "prepare_for_transfer"]
