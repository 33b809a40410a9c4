"""DetectNet's Python layers, as NVCaffe ships them for its KITTI nets: `clustering` (grid -> box lists) and
`mean_ap` (scoring and precision/recall/mAP)."""
