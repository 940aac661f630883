"""Synthetic radiographs with exact ground truth, written as real DICOM (see docs/synthetic-data.md).

>>> ds, truth = generate("lumbar_lateral", seed=0, index=0)
>>> write_dataset("out", "lumbar_lateral", count=100, seed=0, variant="standard", workers=2)
"""

from cdss.synth.acquisition import Variant
from cdss.synth.dataset import write_dataset
from cdss.synth.generator import Kind, generate, generate_pair
from cdss.synth.transfer import TransferSyntax

__all__ = ["Kind", "TransferSyntax", "Variant", "generate", "generate_pair", "write_dataset"]
