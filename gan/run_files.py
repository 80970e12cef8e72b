"""The files of a GAN run folder that other commands read (no heavy imports: the study plans with them).

`gan_train_state.pth` is the training state `--continue-train` reads; `latest_net_G.pth` (+ its
JSON) the latest generator, what `generate.py` and `train_nadsnet.py --generator-weights auto`
take from a run folder.
"""

STATE_FILE = "gan_train_state.pth"
LATEST_GENERATOR = "latest_net_G.pth"
