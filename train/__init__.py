"""maskrt.train."""
