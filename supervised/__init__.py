"""supervised package."""
