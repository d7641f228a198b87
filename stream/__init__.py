"""Streaming stages: decode → shots → sample → dedup → (detect → embed → index) pipeline."""
