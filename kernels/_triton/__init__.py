"""The ``@triton.jit`` bodies. Launchers live in :mod:`kernels.launch`; nothing here checks arguments."""
