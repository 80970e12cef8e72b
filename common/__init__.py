"""Code shared by the GAN and NADS-Net trainings, in rooms named for their job:

- `errors`: the project's error types (the user's mistakes, reported in one line).
- `parallel/`: devices, precision, processes (torch.distributed) and their collectives.
- `training/`: a training's life: the command line, options, the run folder, the loop skeleton,
  its log, stopping on a signal, checkpoints and atomic files.
- `posedata/`: pose conventions, label maps, the data set, augmentation, pose libraries,
  image helpers, sampling and pictures.
- `models/`: every network and loss, building and loading them, rendering frames from poses.
- `synthetic/`: the synthetic in-cabin renderer (data sets and the oracle's frames).
- `presets`: the data and input sizes both trainings' presets share.
"""
