"""The bottom layer: errors and settings every layer shares (castfinder.core). It imports
nothing of the layers above it."""
