"""Interchange: models that travel. ``export_model`` writes a model of any shape as a
sentence-transformers folder, a PEFT adapter folder or an ONNX pipeline, with a model card;
foreign folders are read by the artifacts layer (PEFT) and the encoder (Dense modules).

Imports inference, shapes, catalog and artifacts; never imported by them.
"""
