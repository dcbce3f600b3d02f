"""Helpers shared by the test folders: real loopback upstreams, gateways in process and as processes."""
