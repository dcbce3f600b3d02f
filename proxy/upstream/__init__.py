"""The upstream side: connect, pooled, pipelined and buffered HTTP/1.1 calls to a backend."""
