"""maskrt.runtime."""
