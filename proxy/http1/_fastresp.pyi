# The C module proxy/http1/_fastresp.c (built with the compiled data path): its one function's types.
from proxy.http1.headers import Headers

def read_plain(data: bytes, pos: int, cap: int, /) -> tuple[int, bytes, Headers, bytes, bool, int] | None: ...
