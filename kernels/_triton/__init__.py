"""The ``@triton.jit`` bodies. Launchers live in :mod:`nvfp4_kvcache_triton.launch`; nothing here checks arguments."""
