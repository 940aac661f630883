"""cdss: a DICOM clinical decision support node for spine radiographs."""

__version__ = "0.1.0"
