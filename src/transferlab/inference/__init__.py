"""Applying a trained classifier to new inputs: the stored preprocessing, streaming input readers,
the prediction loop, portable exports (ONNX, TorchScript) and the HTTP server's app.

Entry points (`predict`, `export`, `serve`) rebuild the model through `runner.restore`; this
package never reads a checkpoint itself.
"""
