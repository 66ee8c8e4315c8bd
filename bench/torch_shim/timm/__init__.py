"""A minimal stand-in for the parts of timm that the official T2T-ViT models/ folder imports (benchmarks only)."""
