"""The toy world: procedural cartoon faces, a tiny CLIP and an independent evaluator, all trained by the project.

Submodules are imported on use (``from nada.toy import render``); importing this package does no work.
"""
