"""maskrt.export."""
