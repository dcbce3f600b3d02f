"""Load benchmarks: each prints ratios against anchors measured in the same run (see bench/README.md)."""
