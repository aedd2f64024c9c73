"""sparkann."""
