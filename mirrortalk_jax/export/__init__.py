"""Portable artifacts of trained or converted models: jax.export (StableHLO) computations + weights + a manifest.

    export.artifact.export_model(model, spec, out_dir)          # any model and ExportSpec
    export.renderers.export_renderer(checkpoint_dir, out_dir)   # renderers (PIRenderer), by registry name
    mirrortalk export renderer --checkpoint DIR --out DIR       # the same from the command line

Artifacts are read by `runtime.py`, which needs only jax and numpy and can be copied out of this package.
Nothing is imported here so that `import mirrortalk_jax.export.runtime` stays light.
"""
