"""The bundled models as package data (see README.md here).

This folder is a package only so that setuptools ships its top-level ``*.pth`` files and README.md in
the wheel; ``models.ZOO_DIR`` finds them through ``importlib.resources.files("model_zoo")``. The logs
and in-progress weights (``logs/``, ``wip/``) are not shipped.
"""
