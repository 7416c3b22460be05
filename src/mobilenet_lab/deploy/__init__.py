"""Deployment parts: a trained network loaded from its checkpoint, the run's image
preprocessing that travels with an exported file, the ONNX file and its int8 variant, the
image files to predict. ``mobilenet_lab.export`` and ``mobilenet_lab.predict`` use them."""
