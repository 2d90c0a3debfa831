"""The framework-free core both builders and all tools stand on.

Schema and presets (``config``), torchvision's weights catalog (``catalog``),
the torch <-> Keras name map (``names``), layout transforms (``layouts``),
``.weights.h5`` reading and writing (``h5file``), the converted-file format
(``weights_file``), safe checkpoint reading (``checkpoint``), atomic writes
(``atomic``) and errors (``errors``). Importing any of it loads neither torch
nor TensorFlow, and nothing here imports ``vgg_keras``, ``vgg_torch`` or the
tools in ``parity`` (``tests/test_layering.py`` checks).
"""
