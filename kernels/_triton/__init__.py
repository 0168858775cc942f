"""The `@triton.jit` bodies. Launchers live in [`nvfp4_kvcache_triton.launch`][nvfp4_kvcache_triton.launch]; nothing here checks arguments."""
