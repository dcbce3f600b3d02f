"""routes.yaml: the model, validation with line numbers, path templates, canonical paths.

No I/O but reading the routes file.
"""
