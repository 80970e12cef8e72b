"""Where a training runs: devices and precision (`devices`), processes under torchrun
(`distributed`) and the collectives the networks call (`distributed_ops`)."""
