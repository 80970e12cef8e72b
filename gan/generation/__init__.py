"""generate.py: frames rendered from poses with a trained SPADE generator, written as data sets.

- `commands`: the two commands (`dataset`, `poses`), top to bottom, and `main`;
- `options`: the command line and the checks that refuse what cannot work;
- `frames`: the source frames, their poses and belts, and poses written back in source pixels;
- `rendering`: batches of poses -> uint8 frames (common.models.rendering.GeneratedSamples underneath);
- `output`: the output folder, its progress record (resume, refusals) and the annotation file;
- `sheet`: the contact sheet OUT/index.html.
"""
