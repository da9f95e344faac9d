"""The applications built on the cuconv library: `python -m cuconv COMMAND` (cli), CIFAR-10
training (train, data, models, metrics, plots), the benchmark against the native kernels (bench),
the SASS audit (audit) and the self-check (selfcheck). `import cuconv` loads none of this."""
