"""The bottom layer: errors, atomic files, cache folder, chunks, cores (imports none of ours)."""
