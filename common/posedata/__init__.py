"""Pose data: keypoint and limb conventions (`pose`), label maps (`maps`), the data set in the
seed's layout (`dataset`), augmentation (`augment`), pose libraries (`pose_library`), image
helpers (`imaging`), sampling (`sampling`) and pictures (`visualize`)."""
