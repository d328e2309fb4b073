"""The benchmark suite behind `streamrisk bench` (DESIGN.md section 8)."""
