"""streaq's benchmarks: each module in :data:`benchmarks.__main__.MODULES` has a ``main()``."""
