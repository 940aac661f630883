"""Training and evaluation of the analysis models (``cdss train`` / ``cdss evaluate``)."""
