"""HTTP/1.1 vocabulary shared by both sides: header types, framing rules, protocol errors. No I/O."""
