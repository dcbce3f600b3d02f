"""strangler's gateway. Importing the package first picks the data path's build (`proxy.compiled`)."""

from proxy.compiled import choose as _choose

_choose()
