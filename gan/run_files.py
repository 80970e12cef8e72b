"""The files of a GAN run folder that other commands read (no heavy imports: the study plans with them).

`gan_train_state.pth` is the training state `--continue-train` reads. The latest generator
(`common.models.factory.LATEST_GENERATOR`, with its JSON) is named below the trainings, since
train_nadsnet.py reads it too.
"""

STATE_FILE = "gan_train_state.pth"
