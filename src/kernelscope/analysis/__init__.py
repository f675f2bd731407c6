"""Analyses of trained networks: kernel atlas, feature maps, top patches, receptive fields,
concept detectors (Network Dissection) and distribution shift. Each module imports torch lazily."""
