"""raftkv's benchmarks. ``python -m bench`` is the harness that compares raftkv with etcd (see bench/README.md);
``bench.loadgen`` is its load generator, ``bench.etcd`` starts etcd, ``bench.plots`` draws the figures. The other
modules here are stand-alone micro-benchmarks (``python bench/codec_bench.py`` ...)."""
