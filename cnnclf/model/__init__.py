"""The model: building the config-driven CNN, the pretrained backbone table, and transfer
learning's phases.
"""
