"""Data layer (rank 2): URGENT manifests, Grain sources and pipelines, the offline demo corpus."""
