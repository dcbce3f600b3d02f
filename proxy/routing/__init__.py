"""routes.yaml: the model, validation with line numbers, path templates, canonical paths.

No I/O but reading the routes file, except `strangler routes discover` (``discover``: runs the app in
Node; ``cli``: reads access logs and writes the draft), which the gateway never imports.
"""
